//! `POST /process/execute`: one shell command, run to its end.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use daytona_wire::ErrorBody;
use daytona_wire::toolbox::{ExecuteRequest, ExecuteResponse};

use super::command::CommandSpec;
use super::{Finished, finish, timeout_from_seconds};
use crate::toolbox::error::{ApiError, JsonBody};
use crate::toolbox::state::Toolbox;

/// Runs the command with the shell reading it from standard input, not from `-c`: heredocs
/// and multi-line scripts work, and the length is not bound by ARG_MAX.
#[utoipa::path(post, path = "/process/execute", tag = "process", request_body = ExecuteRequest,
    responses((status = 200, body = ExecuteResponse), (status = 400, body = ErrorBody),
        (status = 408, description = "Timed out; the process group was killed", body = ErrorBody)))]
pub async fn execute(
    State(toolbox): State<Arc<Toolbox>>,
    JsonBody(request): JsonBody<ExecuteRequest>,
) -> Result<Json<ExecuteResponse>, ApiError> {
    let env = toolbox.command_env(request.envs.as_ref())?;
    let cwd = toolbox.command_cwd(request.cwd.as_deref())?;
    let timeout = timeout_from_seconds(request.timeout);

    let finished = match &toolbox.shell {
        None => Finished::not_started("no shell found: the image has neither bash nor sh".into()),
        Some(shell) => {
            let spec = CommandSpec {
                program: shell.clone(),
                args: Vec::new(),
                env,
                cwd,
                stdin: Some(normalize_line_endings(&request.command).into_bytes()),
                timeout,
                output_limit: toolbox.output_limit,
            };
            finish(toolbox.launcher.run(spec).await, timeout)?
        }
    };

    Ok(Json(ExecuteResponse {
        exit_code: finished.exit_code,
        result: finished.output.combined,
        stdout: Some(finished.output.stdout),
        stderr: Some(finished.output.stderr),
    }))
}

/// Turns CRLF line endings into LF. A shell would otherwise read the CR as part of the last
/// word of each line (`cd /tmp\r` fails, a heredoc terminator `EOF\r` never matches).
fn normalize_line_endings(command: &str) -> String {
    command.replace("\r\n", "\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crlf_becomes_lf() {
        assert_eq!(normalize_line_endings("a\r\nb\r\n"), "a\nb\n");
    }

    #[test]
    fn lone_cr_is_kept() {
        assert_eq!(normalize_line_endings("printf 'a\rb'\n"), "printf 'a\rb'\n");
    }
}
