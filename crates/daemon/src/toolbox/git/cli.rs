//! Runs the `git` program for the git routes.
//!
//! Every run goes through the launcher, as the sandbox user, with:
//! - hooks disabled (`core.hooksPath=/dev/null`), so that no hook runs during a clone, a
//!   checkout, a pull or a commit made through the API;
//! - prompts disabled (`GIT_TERMINAL_PROMPT=0`, ssh in batch mode), so that a missing
//!   credential fails at once instead of waiting for input that never comes;
//! - git's messages in English (`LC_ALL=C`), which [`super::errors`] classifies;
//! - credentials, when a request has them, in environment variables that a credential helper
//!   given on the command line prints for the one host they belong to. They never appear in
//!   the arguments, the remote URL, `.git/config` or the logs, and the helper list from the
//!   user's configuration is cleared for that run, so that no `store` helper saves them.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;

use axum::http::StatusCode;

use super::errors::{GitAction, classify};
use super::url::{CredentialScope, redact_urls};
use crate::toolbox::error::ApiError;
use crate::toolbox::process::command::{CommandSpec, Outcome};
use crate::toolbox::state::{Toolbox, find_in_path};

/// Cap on each captured output stream of one git run. Listings such as `status` of a large
/// repository must fit whole, or they cannot be parsed.
const OUTPUT_LIMIT: usize = 16 * 1024 * 1024;

/// A transfer slower than this many bytes per second for [`LOW_SPEED_SECONDS`] is aborted, so
/// that a remote that stops sending data does not hold a request forever.
const LOW_SPEED_BYTES: &str = "1";
const LOW_SPEED_SECONDS: &str = "120";

/// Names of the variables that carry credentials to the helper.
const USERNAME_VAR: &str = "DAYTONA_GIT_USERNAME";
const PASSWORD_VAR: &str = "DAYTONA_GIT_PASSWORD";
const PROTOCOL_VAR: &str = "DAYTONA_GIT_PROTOCOL";
const HOST_VAR: &str = "DAYTONA_GIT_HOST";

/// Credential helper, which git runs with `sh -c` because of the leading `!`. For a `get`
/// request about the expected protocol and host, it prints the username and password from
/// the environment, and it prints nothing for any other request. Because of this scope, a
/// redirect or a submodule on another host does not receive the credentials.
const CREDENTIAL_HELPER: &str = concat!(
    "!f() { test \"$1\" = get || exit 0; protocol=; host=; ",
    "while IFS= read -r line && test -n \"$line\"; do case \"$line\" in ",
    "protocol=*) protocol=${line#protocol=} ;; host=*) host=${line#host=} ;; esac; done; ",
    "test \"$protocol\" = \"$DAYTONA_GIT_PROTOCOL\" && test \"$host\" = \"$DAYTONA_GIT_HOST\" || exit 0; ",
    "printf 'username=%s\\npassword=%s\\n' \"$DAYTONA_GIT_USERNAME\" \"$DAYTONA_GIT_PASSWORD\"; }; f"
);

/// A username and password for one remote, from a request.
#[derive(Clone)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl Credentials {
    /// Takes the credentials of a request: both fields or neither. A value with a line break
    /// or a NUL byte cannot pass through git's credential protocol.
    pub fn from_request<'a>(
        username: Option<&'a str>,
        password: Option<&'a str>,
    ) -> Result<Option<Self>, ApiError> {
        let present = |value: Option<&'a str>| value.filter(|value| !value.is_empty());
        let (username, password) = match (present(username), present(password)) {
            (None, None) => return Ok(None),
            (Some(username), Some(password)) => (username, password),
            (Some(_), None) => {
                return Err(ApiError::bad_request(
                    "a username was given without a password: pass both, or neither",
                ));
            }
            (None, Some(_)) => {
                return Err(ApiError::bad_request(
                    "a password was given without a username: pass both, or neither (any \
                     username works with most token-based hosts)",
                ));
            }
        };
        for (field, value) in [("username", username), ("password", password)] {
            if value.contains(['\n', '\r', '\0']) {
                return Err(ApiError::bad_request(format!(
                    "the {field} contains a line break or a NUL byte, which git cannot pass on"
                )));
            }
        }
        Ok(Some(Self {
            username: username.to_owned(),
            password: password.to_owned(),
        }))
    }
}

/// One run of `git`.
#[derive(Debug)]
pub struct GitCommand {
    action: GitAction,
    args: Vec<OsString>,
    config: Vec<String>,
    cwd: PathBuf,
    stdin: Option<Vec<u8>>,
    env: BTreeMap<String, String>,
    credentials: Option<(Credentials, CredentialScope)>,
}

impl GitCommand {
    /// Starts a run of `git` in `cwd`; `action` names the operation in error messages.
    pub fn new(action: GitAction, cwd: impl Into<PathBuf>) -> Self {
        Self {
            action,
            args: Vec::new(),
            config: Vec::new(),
            cwd: cwd.into(),
            stdin: None,
            env: BTreeMap::new(),
            credentials: None,
        }
    }

    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: Into<OsString>>(mut self, args: I) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets a configuration value for this run only (`git -c key=value`).
    pub fn config(mut self, key: &str, value: &str) -> Self {
        self.config.push(format!("{key}={value}"));
        self
    }

    pub fn stdin(mut self, input: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(input.into());
        self
    }

    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.insert(name.to_owned(), value.to_owned());
        self
    }

    /// Aborts transfers that stall; for runs that contact a remote.
    pub fn network(self) -> Self {
        self.config("http.lowSpeedLimit", LOW_SPEED_BYTES)
            .config("http.lowSpeedTime", LOW_SPEED_SECONDS)
    }

    /// Supplies `credentials` to git's credential requests for `scope`. Remotes that are not
    /// HTTP or HTTPS have no scope and take no credentials this way.
    pub fn credentials(
        mut self,
        credentials: Option<Credentials>,
        scope: Option<CredentialScope>,
    ) -> Self {
        if let (Some(credentials), Some(scope)) = (credentials, scope) {
            self.credentials = Some((credentials, scope));
        }
        self
    }

    /// Runs git to its end. `Err` only when git could not be run at all; a git failure is an
    /// output with a non-zero exit code.
    pub async fn output(self, toolbox: &Toolbox) -> Result<GitOutput, ApiError> {
        let mut env = toolbox.command_env(None)?;
        let program = find_git(&env)?;
        prepare_env(&mut env);
        env.extend(self.env);

        let mut args: Vec<OsString> = vec!["-c".into(), "core.hooksPath=/dev/null".into()];
        let mut secret = None;
        if let Some((credentials, scope)) = self.credentials {
            // An empty value clears the helpers of every configuration file.
            args.extend(["-c".into(), "credential.helper=".into()]);
            args.extend([
                "-c".into(),
                format!("credential.helper={CREDENTIAL_HELPER}").into(),
            ]);
            env.insert(USERNAME_VAR.to_owned(), credentials.username);
            env.insert(PASSWORD_VAR.to_owned(), credentials.password.clone());
            env.insert(PROTOCOL_VAR.to_owned(), scope.protocol);
            env.insert(HOST_VAR.to_owned(), scope.host);
            secret = Some(credentials.password);
        }
        for setting in self.config {
            args.extend(["-c".into(), setting.into()]);
        }
        args.extend(self.args);

        let spec = CommandSpec {
            program,
            args,
            env,
            cwd: self.cwd,
            stdin: self.stdin,
            timeout: None,
            output_limit: OUTPUT_LIMIT,
        };
        match toolbox.launcher.run(spec).await {
            Outcome::Exited { exit_code, output } => Ok(GitOutput {
                action: self.action,
                exit_code,
                stdout: output.stdout,
                stderr: scrub(&output.stderr, secret.as_deref()),
            }),
            // The spec sets no timeout, so this does not happen.
            Outcome::TimedOut { .. } => Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL_SERVER_ERROR",
                format!("git {} timed out", self.action.verb()),
            )),
            Outcome::Failed { error } => Err(ApiError::internal(
                format!("failed to run git {}", self.action.verb()),
                &error,
            )),
        }
    }

    /// Runs git and turns a non-zero exit code into the matching error.
    pub async fn run(self, toolbox: &Toolbox) -> Result<GitOutput, ApiError> {
        self.output(toolbox).await?.checked()
    }
}

/// Output and exit code of a git run.
#[derive(Debug)]
pub struct GitOutput {
    pub action: GitAction,
    pub exit_code: i32,
    pub stdout: String,
    /// Standard error, with URL passwords and the request's password replaced by `***`.
    pub stderr: String,
}

impl GitOutput {
    pub fn success(&self) -> bool {
        self.exit_code == 0
    }

    /// Returns the output when git succeeded, and the classified error otherwise.
    pub fn checked(self) -> Result<Self, ApiError> {
        if self.success() {
            Ok(self)
        } else {
            Err(classify(&self))
        }
    }

    /// Standard output, or an error if it was cut at the capture limit and cannot be parsed.
    pub fn complete_stdout(&self) -> Result<&str, ApiError> {
        if self.stdout.ends_with(" bytes omitted]\n")
            && self.stdout.contains("\n[output truncated: ")
        {
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL_SERVER_ERROR",
                format!(
                    "the output of git {} exceeded {OUTPUT_LIMIT} bytes and cannot be read whole",
                    self.action.verb()
                ),
            ));
        }
        Ok(&self.stdout)
    }
}

/// Finds `git` on the workload's `PATH`.
fn find_git(env: &BTreeMap<String, String>) -> Result<PathBuf, ApiError> {
    let path = env.get("PATH").map_or("", String::as_str);
    find_in_path("git", path).ok_or_else(|| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL_SERVER_ERROR",
            "git is not installed in the sandbox (not found on PATH): install it in the image, \
             for example with apt-get install git",
        )
    })
}

/// Adjusts the workload environment for unattended git runs.
fn prepare_env(env: &mut BTreeMap<String, String>) {
    env.insert("LC_ALL".to_owned(), "C".to_owned());
    env.remove("LANGUAGE");
    env.insert("GIT_TERMINAL_PROMPT".to_owned(), "0".to_owned());
    // Git Credential Manager, when an image installs it, would otherwise open a prompt.
    env.insert("GCM_INTERACTIVE".to_owned(), "never".to_owned());
    if !env.contains_key("GIT_SSH_COMMAND") && !env.contains_key("GIT_SSH") {
        env.insert(
            "GIT_SSH_COMMAND".to_owned(),
            "ssh -o BatchMode=yes".to_owned(),
        );
    }
}

/// Hides secrets in a message from git: passwords in URLs, and the request's password.
/// Passwords shorter than four characters are left alone, because replacing them would
/// garble the message without hiding much.
fn scrub(text: &str, password: Option<&str>) -> String {
    let text = redact_urls(text);
    match password {
        Some(password) if password.len() >= 4 => text.replace(password, "***"),
        _ => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_need_both_fields() {
        assert!(Credentials::from_request(None, None).unwrap().is_none());
        assert!(
            Credentials::from_request(Some(""), Some(""))
                .unwrap()
                .is_none()
        );
        assert!(Credentials::from_request(Some("u"), None).is_err());
        assert!(Credentials::from_request(None, Some("p")).is_err());
        let credentials = Credentials::from_request(Some("user@example.com"), Some("p@ss/w#rd"))
            .unwrap()
            .unwrap();
        assert_eq!(credentials.username, "user@example.com");
        assert_eq!(credentials.password, "p@ss/w#rd");
    }

    #[test]
    fn credentials_reject_line_breaks() {
        assert!(Credentials::from_request(Some("u"), Some("a\nb")).is_err());
        assert!(Credentials::from_request(Some("u\r"), Some("ab")).is_err());
    }

    #[test]
    fn credentials_debug_hides_password() {
        let credentials = Credentials {
            username: "u".to_owned(),
            password: "hunter22".to_owned(),
        };
        assert!(!format!("{credentials:?}").contains("hunter22"));
    }

    #[test]
    fn scrub_hides_password_and_url_secrets() {
        let text = "fatal: Authentication failed for 'https://me:tok3n@host/r.git' (pw hunter22)";
        let scrubbed = scrub(text, Some("hunter22"));
        assert!(!scrubbed.contains("tok3n"), "{scrubbed}");
        assert!(!scrubbed.contains("hunter22"), "{scrubbed}");
    }

    #[test]
    fn prepare_env_keeps_a_configured_ssh_command() {
        let mut env = BTreeMap::from([
            ("GIT_SSH_COMMAND".to_owned(), "ssh -i key".to_owned()),
            ("LANGUAGE".to_owned(), "de".to_owned()),
        ]);
        prepare_env(&mut env);
        assert_eq!(env["GIT_SSH_COMMAND"], "ssh -i key");
        assert_eq!(env["LC_ALL"], "C");
        assert_eq!(env["GIT_TERMINAL_PROMPT"], "0");
        assert!(!env.contains_key("LANGUAGE"));
    }
}
