//! The HTTP server: routes, middleware and shutdown.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::response::IntoResponse;
use tokio::signal::unix::{SignalKind, signal};
use tower_http::catch_panic::CatchPanicLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use super::drain::drain_request_body;
use super::error::{error_body, route_not_found};
use super::state::Toolbox;
use super::{
    computeruse, env, files, git, info, interpreter, lsp, process, pty, session, stream, system,
};

/// Largest JSON request body, in bytes. Commands and code travel in JSON bodies and may be
/// far longer than ARG_MAX. Uploads are multipart and streamed, so this limit does not apply
/// to them.
const JSON_BODY_LIMIT: usize = 64 * 1024 * 1024;

/// How long requests in progress may continue after a shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Metadata of the toolbox's OpenAPI document; the paths come from the routers.
#[derive(OpenApi)]
#[openapi(info(
    title = "Daytona toolbox",
    description = "The API of the daemon inside each sandbox, reached at `{toolboxProxyUrl}/{sandboxId}`."
))]
struct ToolboxDoc;

/// Every toolbox route with its OpenAPI description.
fn toolbox_routes() -> OpenApiRouter<Arc<Toolbox>> {
    OpenApiRouter::with_openapi(ToolboxDoc::openapi())
        .merge(info::routes())
        .merge(env::routes())
        .merge(process::routes())
        .merge(files::routes())
        .merge(session::routes())
        .merge(pty::routes())
        .merge(interpreter::routes())
        .merge(lsp::routes())
        .merge(git::routes())
        .merge(system::routes())
        .merge(computeruse::routes())
        .merge(stream::routes())
}

/// Builds the router of every toolbox route, and `GET /openapi.json` with their description.
pub fn router(toolbox: Arc<Toolbox>) -> Router {
    let (router, openapi) = toolbox_routes().split_for_parts();
    let openapi_json = openapi
        .to_json()
        .expect("the generated OpenAPI document always serializes");
    router
        .route(
            "/openapi.json",
            axum::routing::get(move || async move {
                (
                    [(axum::http::header::CONTENT_TYPE, "application/json")],
                    openapi_json,
                )
            }),
        )
        .fallback(route_not_found)
        .layer(DefaultBodyLimit::max(JSON_BODY_LIMIT))
        // A panicking handler answers 500 in the error shape instead of dropping the
        // connection, which the proxy could only report as a failed exchange.
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(axum::middleware::from_fn(error_body))
        .layer(axum::middleware::from_fn(drain_request_body))
        .with_state(toolbox)
}

fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> axum::response::Response {
    let message = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("no message");
    tracing::error!(panic = message, "a toolbox request handler panicked");
    (
        axum::http::StatusCode::INTERNAL_SERVER_ERROR,
        "the toolbox failed while handling the request",
    )
        .into_response()
}

/// Serves the toolbox API on `listener` until SIGTERM or SIGINT.
pub async fn serve(
    listener: std::os::unix::net::UnixListener,
    toolbox: Arc<Toolbox>,
) -> anyhow::Result<()> {
    let listener = tokio::net::UnixListener::from_std(listener)?;
    let (stop_sender, stop_receiver) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        wait_for_shutdown_signal().await;
        let _ = stop_sender.send(true);
    });

    let mut graceful_stop = stop_receiver.clone();
    let server = axum::serve(listener, router(toolbox)).with_graceful_shutdown(async move {
        let _ = graceful_stop.wait_for(|stop| *stop).await;
        tracing::info!("shutdown signal received: no longer accepting connections");
    });

    // Graceful shutdown waits for every open connection; a long command or an idle keep-alive
    // connection must not hold the exit for long.
    let mut forced_stop = stop_receiver;
    tokio::select! {
        result = server.into_future() => result?,
        _ = async {
            let _ = forced_stop.wait_for(|stop| *stop).await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => tracing::info!("requests still running after the shutdown grace period: stopping"),
    }
    Ok(())
}

async fn wait_for_shutdown_signal() {
    let (Ok(mut terminate), Ok(mut interrupt)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::warn!("failed to install signal handlers: stop the server with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = terminate.recv() => {}
        _ = interrupt.recv() => {}
    }
}
