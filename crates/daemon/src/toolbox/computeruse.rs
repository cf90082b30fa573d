//! `/computeruse/*`: Daytona's computer use API (desktop, mouse, keyboard, screenshots,
//! recordings, accessibility), which this daemon does not offer yet.
//!
//! Every route of the published SDKs returns 400 with code `FEATURE_NOT_AVAILABLE`. 400, not
//! 501, because the SDKs turn 400 into a clear exception (`DaytonaBadRequestError`) and 501
//! into none of its own; a route this module does not list would answer a plain 404.

use std::sync::Arc;

use axum::http::StatusCode;
use daytona_wire::ErrorBody;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ApiError;
use super::state::Toolbox;

/// Error code of every route here.
const CODE: &str = "FEATURE_NOT_AVAILABLE";

const MESSAGE: &str = "computer use is not available yet: sandboxes have no desktop (no X server, VNC or window manager); drive programs through process.exec or a PTY instead";

const DESCRIPTION: &str = "Computer use is not available yet (code FEATURE_NOT_AVAILABLE). 400, not 501, because the SDKs map 400 to a clear exception";

fn not_available() -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, CODE, MESSAGE)
}

/// Declares one route that returns [`not_available`]. `$params` lists the path parameters.
macro_rules! unavailable_route {
    ($name:ident, $method:ident, $path:tt $(, $param:tt)*) => {
        #[utoipa::path($method, path = $path, tag = "computer-use",
            params($(($param = String, Path),)*),
            responses((status = 400, description = DESCRIPTION, body = ErrorBody)))]
        async fn $name() -> ApiError {
            not_available()
        }
    };
}

unavailable_route!(start, post, "/computeruse/start");
unavailable_route!(stop, post, "/computeruse/stop");
unavailable_route!(status, get, "/computeruse/status");
unavailable_route!(process_status, get, "/computeruse/process-status");
unavailable_route!(
    process_errors,
    get,
    "/computeruse/process/{processName}/errors",
    "processName"
);
unavailable_route!(
    process_logs,
    get,
    "/computeruse/process/{processName}/logs",
    "processName"
);
unavailable_route!(
    process_state,
    get,
    "/computeruse/process/{processName}/status",
    "processName"
);
unavailable_route!(
    process_restart,
    post,
    "/computeruse/process/{processName}/restart",
    "processName"
);
unavailable_route!(mouse_position, get, "/computeruse/mouse/position");
unavailable_route!(mouse_move, post, "/computeruse/mouse/move");
unavailable_route!(mouse_click, post, "/computeruse/mouse/click");
unavailable_route!(mouse_drag, post, "/computeruse/mouse/drag");
unavailable_route!(mouse_scroll, post, "/computeruse/mouse/scroll");
unavailable_route!(mouse_down, post, "/computeruse/mouse/down");
unavailable_route!(mouse_up, post, "/computeruse/mouse/up");
unavailable_route!(keyboard_type, post, "/computeruse/keyboard/type");
unavailable_route!(keyboard_key, post, "/computeruse/keyboard/key");
unavailable_route!(keyboard_hotkey, post, "/computeruse/keyboard/hotkey");
unavailable_route!(keyboard_down, post, "/computeruse/keyboard/down");
unavailable_route!(keyboard_up, post, "/computeruse/keyboard/up");
unavailable_route!(screenshot, get, "/computeruse/screenshot");
unavailable_route!(screenshot_region, get, "/computeruse/screenshot/region");
unavailable_route!(
    screenshot_compressed,
    get,
    "/computeruse/screenshot/compressed"
);
unavailable_route!(
    screenshot_region_compressed,
    get,
    "/computeruse/screenshot/region/compressed"
);
unavailable_route!(display_info, get, "/computeruse/display/info");
unavailable_route!(display_windows, get, "/computeruse/display/windows");
unavailable_route!(recordings, get, "/computeruse/recordings");
unavailable_route!(recording_start, post, "/computeruse/recordings/start");
unavailable_route!(recording_stop, post, "/computeruse/recordings/stop");
unavailable_route!(recording, get, "/computeruse/recordings/{id}", "id");
unavailable_route!(
    recording_delete,
    delete,
    "/computeruse/recordings/{id}",
    "id"
);
unavailable_route!(
    recording_download,
    get,
    "/computeruse/recordings/{id}/download",
    "id"
);
unavailable_route!(a11y_tree, get, "/computeruse/a11y/tree");
unavailable_route!(a11y_find, post, "/computeruse/a11y/find");
unavailable_route!(a11y_focus, post, "/computeruse/a11y/node/focus");
unavailable_route!(a11y_invoke, post, "/computeruse/a11y/node/invoke");
unavailable_route!(a11y_value, post, "/computeruse/a11y/node/value");

pub fn routes() -> OpenApiRouter<Arc<Toolbox>> {
    OpenApiRouter::new()
        .routes(routes!(start))
        .routes(routes!(stop))
        .routes(routes!(status))
        .routes(routes!(process_status))
        .routes(routes!(process_errors))
        .routes(routes!(process_logs))
        .routes(routes!(process_state))
        .routes(routes!(process_restart))
        .routes(routes!(mouse_position))
        .routes(routes!(mouse_move))
        .routes(routes!(mouse_click))
        .routes(routes!(mouse_drag))
        .routes(routes!(mouse_scroll))
        .routes(routes!(mouse_down))
        .routes(routes!(mouse_up))
        .routes(routes!(keyboard_type))
        .routes(routes!(keyboard_key))
        .routes(routes!(keyboard_hotkey))
        .routes(routes!(keyboard_down))
        .routes(routes!(keyboard_up))
        .routes(routes!(screenshot))
        .routes(routes!(screenshot_region))
        .routes(routes!(screenshot_compressed))
        .routes(routes!(screenshot_region_compressed))
        .routes(routes!(display_info))
        .routes(routes!(display_windows))
        .routes(routes!(recordings))
        .routes(routes!(recording_start))
        .routes(routes!(recording_stop))
        .routes(routes!(recording, recording_delete))
        .routes(routes!(recording_download))
        .routes(routes!(a11y_tree))
        .routes(routes!(a11y_find))
        .routes(routes!(a11y_focus))
        .routes(routes!(a11y_invoke))
        .routes(routes!(a11y_value))
}
