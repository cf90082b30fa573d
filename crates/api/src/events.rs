//! Sandbox events for the SDKs' event channel (Socket.IO under `/api/socket.io/`).
//!
//! Lifecycle code publishes here; the Socket.IO layer delivers each event to the connections
//! of the sandbox's organization.

use daytona_wire::api::{Sandbox, SandboxState};
use tokio::sync::broadcast;

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

impl Event {
    /// The organization whose connections receive the event.
    pub fn organization_id(&self) -> &str {
        match self {
            Self::Created { sandbox } | Self::StateUpdated { sandbox, .. } => &sandbox.organization_id,
        }
    }
}

/// The publisher of sandbox events.
#[derive(Debug)]
pub struct Events {
    sender: broadcast::Sender<Event>,
}

impl Default for Events {
    fn default() -> Self {
        Self {
            sender: broadcast::channel(CHANNEL_CAPACITY).0,
        }
    }
}

impl Events {
    pub fn sandbox_created(&self, sandbox: &Sandbox) {
        // No subscriber is not an error: nobody listens yet.
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

    /// A receiver of every event published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.sender.subscribe()
    }
}
