//! Sandbox events for the SDKs' event channel (Socket.IO under `/api/socket.io/`).
//!
//! Lifecycle code publishes here; [`crate::socketio`] delivers each event, in publication
//! order, to the connections of the sandbox's organization.

use std::sync::OnceLock;

use daytona_wire::api::{Sandbox, SandboxState};
use serde::Serialize;
use tokio::sync::broadcast;

use crate::socketio::EventChannel;

/// How many events a slow subscriber may fall behind before it misses some.
const CHANNEL_CAPACITY: usize = 1024;

/// One sandbox event.
#[derive(Debug, Clone)]
pub enum Event {
    /// `sandbox.created`, whose payload is the sandbox.
    Created { sandbox: Box<Sandbox> },
    /// `sandbox.state.updated`, whose payload is `{sandbox, oldState, newState}`.
    StateUpdated {
        sandbox: Box<Sandbox>,
        old_state: SandboxState,
        new_state: SandboxState,
    },
}

/// Payload of `sandbox.state.updated`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StateUpdatedPayload<'a> {
    pub sandbox: &'a Sandbox,
    pub old_state: SandboxState,
    pub new_state: SandboxState,
}

impl Event {
    /// Returns the organization whose connections receive the event.
    pub fn organization_id(&self) -> &str {
        match self {
            Self::Created { sandbox } | Self::StateUpdated { sandbox, .. } => {
                &sandbox.organization_id
            }
        }
    }

    /// Returns the Socket.IO event name.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Created { .. } => "sandbox.created",
            Self::StateUpdated { .. } => "sandbox.state.updated",
        }
    }
}

/// The publisher of sandbox events.
pub struct Events {
    sender: broadcast::Sender<Event>,
    /// The Socket.IO endpoint, started with the first router.
    channel: OnceLock<EventChannel>,
}

impl Default for Events {
    fn default() -> Self {
        Self {
            sender: broadcast::channel(CHANNEL_CAPACITY).0,
            channel: OnceLock::new(),
        }
    }
}

impl Events {
    pub fn sandbox_created(&self, sandbox: &Sandbox) {
        // A send without subscribers is not an error: no connection is open yet.
        let _ = self.sender.send(Event::Created {
            sandbox: Box::new(sandbox.clone()),
        });
    }

    pub fn sandbox_state_updated(&self, sandbox: &Sandbox, old_state: SandboxState) {
        let _ = self.sender.send(Event::StateUpdated {
            sandbox: Box::new(sandbox.clone()),
            old_state,
            new_state: sandbox.state,
        });
    }

    /// Returns a receiver of every event published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.sender.subscribe()
    }

    /// Returns the Socket.IO endpoint, which `start` starts on first use.
    pub fn channel(&self, start: impl FnOnce() -> EventChannel) -> &EventChannel {
        self.channel.get_or_init(start)
    }

    /// Returns the Socket.IO endpoint if it was started.
    pub fn started_channel(&self) -> Option<&EventChannel> {
        self.channel.get()
    }
}
