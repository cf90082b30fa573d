//! The SDKs' event channel: Socket.IO (protocol 5 over Engine.IO 4, WebSocket transport
//! only) at `/api/socket.io/`.
//!
//! A client opens `GET /api/socket.io/?EIO=4&transport=websocket` without credentials and
//! sends its API key in the CONNECT packet (`40{"token":"<key>"}`). A valid key joins the
//! connection to its organization's room and the server acknowledges with `40{"sid":...}`;
//! any other CONNECT gets `44{"message":...}`. From then on the connection receives
//! `sandbox.created` and `sandbox.state.updated` for the sandboxes of that organization, and
//! of no other.

use std::sync::{Arc, Weak};

use serde::Deserialize;
use socketioxide::extract::{SocketRef, TryData};
use socketioxide::handler::ConnectHandler;
use socketioxide::layer::SocketIoLayer;
use socketioxide::{SocketIo, TransportType};
use tokio::sync::broadcast;

use crate::events::{Event, StateUpdatedPayload};
use crate::state::{AppState, Shared};

/// Path of the endpoint: the API prefix plus Socket.IO's default `/socket.io`.
pub const PATH: &str = "/api/socket.io";

/// The running endpoint: the layer that serves it and the handle that emits on it.
pub struct EventChannel {
    layer: SocketIoLayer,
    io: SocketIo,
}

/// The key a connection authenticated with, kept to disconnect it when the key is revoked.
#[derive(Debug, Clone)]
struct ConnectionKey {
    key_id: String,
    organization_id: String,
}

/// Auth payload of the CONNECT packet.
#[derive(Debug, Deserialize)]
struct ConnectAuth {
    token: String,
}

/// Returns the layer serving the endpoint, starting the endpoint on first use.
pub fn layer(state: &AppState) -> SocketIoLayer {
    state.events.channel(|| start(state)).layer.clone()
}

/// Disconnects the event connections opened with one API key.
pub fn disconnect_key(state: &Shared, key_id: &str) {
    disconnect_where(state, |key| key.key_id == key_id);
}

/// Disconnects the event connections of one organization.
pub fn disconnect_organization(state: &Shared, organization_id: &str) {
    disconnect_where(state, |key| key.organization_id == organization_id);
}

fn disconnect_where(state: &Shared, matches: impl Fn(&ConnectionKey) -> bool) {
    let Some(channel) = state.events.started_channel() else {
        return;
    };
    for socket in channel.io.sockets() {
        if socket
            .extensions
            .get::<ConnectionKey>()
            .is_some_and(|key| matches(&key))
        {
            // A socket that is closing already cannot be disconnected twice; that is fine.
            let _ = socket.disconnect();
        }
    }
}

fn start(state: &AppState) -> EventChannel {
    let (layer, io) = SocketIo::builder()
        .req_path(PATH)
        .transports([TransportType::Websocket])
        .build_layer();

    // The handlers live as long as the endpoint, which the state owns: a strong reference
    // here would keep the state alive forever.
    let weak = Arc::downgrade(state);
    let authenticate = move |socket: SocketRef, TryData(auth): TryData<ConnectAuth>| {
        let weak = weak.clone();
        async move { authenticate(weak, socket, auth.ok()).await }
    };
    io.ns("/", on_connect.with(authenticate));

    tokio::spawn(forward_events(state.events.subscribe(), io.clone()));
    tracing::debug!(path = PATH, "event channel started");
    EventChannel { layer, io }
}

/// Checks the CONNECT packet's token and joins the connection to its organization's room.
async fn authenticate(
    state: Weak<Shared>,
    socket: SocketRef,
    auth: Option<ConnectAuth>,
) -> Result<(), String> {
    let Some(state) = state.upgrade() else {
        return Err("the server is shutting down".to_owned());
    };
    let Some(auth) = auth.filter(|auth| !auth.token.is_empty()) else {
        return Err(
            "Unauthorized: send the API key as the CONNECT packet's auth {\"token\": \"<key>\"}"
                .to_owned(),
        );
    };
    let caller = match state.keys.resolve(&state.store, &auth.token).await {
        Ok(Some(caller)) => caller,
        Ok(None) => return Err("Unauthorized: invalid, revoked or expired API key".to_owned()),
        Err(error) => {
            tracing::error!(
                error = format!("{error:#}"),
                "failed to check an event connection's API key"
            );
            return Err("the server failed to check the API key; retry".to_owned());
        }
    };
    socket.extensions.insert(ConnectionKey {
        key_id: caller.key_id.clone(),
        organization_id: caller.organization_id.clone(),
    });
    // Joining here, before the acknowledgement, means no event is missed between the
    // acknowledgement and the join.
    socket.join(caller.organization_id.clone());
    tracing::debug!(socket_id = %socket.id, organization_id = %caller.organization_id, "event connection opened");
    Ok(())
}

fn on_connect(socket: SocketRef) {
    socket.on_disconnect(|socket: SocketRef| {
        tracing::debug!(socket_id = %socket.id, "event connection closed");
    });
}

/// Emits every published event to its organization's room, in publication order.
async fn forward_events(mut events: broadcast::Receiver<Event>, io: SocketIo) {
    loop {
        let event = match events.recv().await {
            Ok(event) => event,
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::warn!(
                    missed,
                    "the event channel fell behind and dropped sandbox events; SDKs fall back to polling"
                );
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        let room = io.to(event.organization_id().to_owned());
        let sent = match &event {
            Event::Created { sandbox } => room.emit(event.name(), sandbox.as_ref()).await,
            Event::StateUpdated {
                sandbox,
                old_state,
                new_state,
            } => {
                let payload = StateUpdatedPayload {
                    sandbox,
                    old_state: *old_state,
                    new_state: *new_state,
                };
                room.emit(event.name(), &payload).await
            }
        };
        if let Err(error) = sent {
            tracing::debug!(event = event.name(), %error, "failed to deliver a sandbox event to some connections");
        }
    }
}
