//! `/process/*`: running commands and code.

pub mod code_run;
pub mod command;
pub mod execute;
pub mod interleave;
pub mod output;
pub mod reader;

use std::sync::Arc;
use std::time::Duration;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use axum::http::StatusCode;

use self::command::Outcome;
use self::output::OutputText;
use super::error::ApiError;
use super::state::Toolbox;

pub fn routes() -> OpenApiRouter<Arc<Toolbox>> {
    OpenApiRouter::new()
        .routes(routes!(execute::execute))
        .routes(routes!(code_run::code_run))
}

/// Exit code reported when the process could not be started at all.
pub const NOT_STARTED_EXIT_CODE: i32 = -1;

/// A command that ran to its end.
#[derive(Debug)]
pub struct Finished {
    pub exit_code: i32,
    pub output: OutputText,
}

impl Finished {
    /// Creates the result of a command that could not be started: exit code -1 and the
    /// reason as its output.
    pub fn not_started(reason: String) -> Self {
        Self {
            exit_code: NOT_STARTED_EXIT_CODE,
            output: OutputText {
                combined: reason.clone(),
                stdout: String::new(),
                stderr: reason,
            },
        }
    }
}

/// Converts the request's timeout in seconds; absent or 0 means none.
pub fn timeout_from_seconds(seconds: Option<u64>) -> Option<Duration> {
    seconds
        .filter(|seconds| *seconds > 0)
        .map(Duration::from_secs)
}

/// Maps how a command ended to the response: a timeout is HTTP 408 carrying the output
/// captured until then.
pub fn finish(outcome: Outcome, timeout: Option<Duration>) -> Result<Finished, ApiError> {
    match outcome {
        Outcome::Exited { exit_code, output } => Ok(Finished { exit_code, output }),
        Outcome::TimedOut { output } => {
            let seconds = timeout.map_or(0, |timeout| timeout.as_secs());
            Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "PROCESS_EXECUTION_TIMEOUT",
                format!("command timed out after {seconds} seconds and was killed"),
            )
            .with_output(output.combined))
        }
        Outcome::Failed { error } => Ok(Finished::not_started(format!(
            "failed to start the command: {error}"
        ))),
    }
}
