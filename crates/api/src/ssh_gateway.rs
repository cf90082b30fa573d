//! Runs the SSH gateway (`daytona_ssh`) of this server: tokens are checked against the store,
//! and commands start through the sandbox's toolbox socket.

use std::sync::Arc;

use anyhow::Context;
use daytona_ssh::Streams;
use daytona_wire::api::SandboxState;
use daytona_wire::stream::StreamRequest;

use crate::lifecycle::hold_active;
use crate::ssh_access;
use crate::state::AppState;

/// File name of the host key in the data directory.
const HOST_KEY_FILE: &str = "ssh_host_ed25519_key";

/// Binds the gateway's listener and serves it until `shutdown` completes.
pub async fn start(
    state: &AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let host_key =
        daytona_ssh::load_or_generate_host_key(&state.config.data_dir.join(HOST_KEY_FILE))?;
    let listen = state.config.ssh_gateway.listen;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| {
            format!(
                "failed to listen for SSH on {listen}; choose another address with --ssh-listen"
            )
        })?;
    tracing::info!(address = %listen, "SSH gateway listening");
    let backend = Arc::new(Gateway {
        state: state.clone(),
    });
    tokio::spawn(async move {
        if let Err(error) = daytona_ssh::serve(listener, host_key, backend, shutdown).await {
            tracing::error!(%error, "the SSH gateway failed");
        }
    });
    Ok(())
}

struct Gateway {
    state: AppState,
}

impl daytona_ssh::Backend for Gateway {
    async fn authorize(&self, token: &str) -> Option<String> {
        match ssh_access::find_usable(&self.state.store, token).await {
            Ok(record) => record.map(|record| record.sandbox_id),
            Err(error) => {
                tracing::error!(error = %crate::error::error_chain(&error), "failed to look up an SSH access token");
                None
            }
        }
    }

    async fn open(&self, sandbox_id: &str, request: StreamRequest) -> Result<Streams, String> {
        let sandbox = match self.state.store.sandbox_by_id(sandbox_id).await {
            Ok(Some(sandbox)) => sandbox,
            Ok(None) => return Err(format!("sandbox {sandbox_id} no longer exists")),
            Err(error) => {
                tracing::error!(sandbox_id, error = %crate::error::error_chain(&error), "failed to read a sandbox for SSH");
                return Err("the server failed to read the sandbox; try again".to_owned());
            }
        };
        // NOTE: a stopped sandbox is not started here: starting takes the organization's
        // quota, which an SSH login should not do behind the user's back.
        if sandbox.state != SandboxState::Started {
            return Err(format!(
                "sandbox {} is {}: start it first (sandbox.start() in the SDKs, or `daytona sandbox start {}`)",
                sandbox.name,
                sandbox.state.as_str(),
                sandbox.name
            ));
        }
        let socket = self
            .state
            .runner
            .toolbox_socket(sandbox_id)
            .map_err(|error| format!("sandbox {sandbox_id} cannot be reached: {error}"))?;
        let (output, input) = daytona_runner::open_process_stream(&socket, &request)
            .await
            .map_err(|error| {
                tracing::warn!(sandbox_id, error = %crate::error::error_chain(&error), "failed to open a process stream for SSH");
                format!("failed to start the command in sandbox {sandbox_id}: {error}")
            })?;
        // An open SSH channel keeps the sandbox from being auto-stopped, like an open toolbox
        // connection.
        Ok(Streams {
            output,
            input,
            hold: Box::new(hold_active(&self.state, sandbox_id)),
        })
    }
}
