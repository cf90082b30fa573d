//! State shared by every toolbox route: the sandbox user, the work directory, the workload
//! environment and the launcher.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};

use daytona_wire::daemon::DaemonConfig;

use axum::http::StatusCode;

use super::config_store::ConfigStore;
use super::error::ApiError;
use super::interpreter::Interpreters;
use super::lsp::LspServers;
use super::process::command::Launcher;
use super::pty::Ptys;
use super::session::Sessions;
use super::system::CpuSampler;
use super::user::SandboxUser;

/// `PATH` of workloads unless the sandbox's environment sets another.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Directories searched for the shell, in order.
const SHELL_DIRS: [&str; 3] = ["/usr/local/bin", "/usr/bin", "/bin"];

/// Shells that run commands, in order of preference.
const SHELL_NAMES: [&str; 2] = ["bash", "sh"];

/// The state of one toolbox server.
#[derive(Debug)]
pub struct Toolbox {
    pub sandbox_id: String,
    pub user: SandboxUser,
    /// The user's home directory.
    pub home: PathBuf,
    /// Default directory of commands and base of relative file paths. It is the user's home.
    pub work_dir: PathBuf,
    /// Shell that runs `/process/execute` commands; `None` when the image has none.
    pub shell: Option<PathBuf>,
    /// Base environment of every workload: the create-time variables, then the changes of
    /// `POST /env`.
    pub workload_env: RwLock<BTreeMap<String, String>>,
    /// Cap on the captured output of one command, in bytes.
    pub output_limit: usize,
    pub launcher: Launcher,
    /// The configuration, and where it is kept across restarts of the toolbox server (absent
    /// outside a sandbox).
    pub config: Mutex<(DaemonConfig, Option<ConfigStore>)>,
    pub sessions: Sessions,
    pub ptys: Ptys,
    pub interpreters: Interpreters,
    pub lsp: LspServers,
    /// The last CPU sample of `GET /system/metrics`.
    pub cpu_sampler: CpuSampler,
    /// Owner given to files and directories the daemon creates. `None` when the daemon does not
    /// run as root, so it cannot change owners and new files keep the daemon's own uid.
    pub file_owner: Option<(u32, u32)>,
}

impl Toolbox {
    /// Builds the environment of one command: the workload base, then the request's variables.
    pub fn command_env(
        &self,
        request_env: Option<&BTreeMap<String, String>>,
    ) -> Result<BTreeMap<String, String>, ApiError> {
        let mut env = self.workload_env.read().expect("workload env lock").clone();
        for (name, value) in request_env.into_iter().flatten() {
            check_env_var(name, value)?;
            env.insert(name.clone(), value.clone());
        }
        Ok(env)
    }

    /// Resolves a command's working directory; the work directory when none is given.
    pub fn command_cwd(&self, cwd: Option<&str>) -> Result<PathBuf, ApiError> {
        let cwd = match cwd {
            None | Some("") => return Ok(self.work_dir.clone()),
            Some(cwd) => self.resolve(cwd),
        };
        match std::fs::metadata(&cwd) {
            Ok(metadata) if metadata.is_dir() => Ok(cwd),
            Ok(_) => Err(ApiError::bad_request(format!(
                "working directory {} is not a directory",
                cwd.display()
            ))),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                Err(ApiError::bad_request(format!(
                    "working directory {} does not exist",
                    cwd.display()
                )))
            }
            Err(error) => Err(ApiError::bad_request(format!(
                "working directory {} is not accessible: {error}",
                cwd.display()
            ))),
        }
    }

    /// Makes a path absolute: relative paths are relative to the work directory. `.`
    /// components are dropped; `..` components are kept, because resolving them without the
    /// file system would be wrong across symbolic links.
    pub fn resolve(&self, path: &str) -> PathBuf {
        self.work_dir.join(path).components().collect()
    }
}

/// Builds the base environment of workloads: a clean set for the user, overridden by the
/// sandbox's create-time variables. Variables with invalid names are skipped.
pub fn workload_env(
    user: &SandboxUser,
    home: &Path,
    shell: Option<&Path>,
    create_env: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let shell = shell.unwrap_or(&user.shell);
    let mut env = BTreeMap::from([
        ("PATH".to_owned(), DEFAULT_PATH.to_owned()),
        ("HOME".to_owned(), home.display().to_string()),
        ("USER".to_owned(), user.name.clone()),
        ("LOGNAME".to_owned(), user.name.clone()),
        ("SHELL".to_owned(), shell.display().to_string()),
        ("TERM".to_owned(), "xterm-256color".to_owned()),
        ("LANG".to_owned(), "C.UTF-8".to_owned()),
    ]);
    for (name, value) in create_env {
        match check_env_var(name, value) {
            Ok(()) => {
                env.insert(name.clone(), value.clone());
            }
            Err(error) => {
                tracing::warn!(name, reason = error.message(), "skipping sandbox variable")
            }
        }
    }
    env
}

/// Checks that a variable can be passed to a process: its name matches
/// `[A-Za-z_][A-Za-z0-9_]*` and its value has no NUL byte.
pub fn check_env_var(name: &str, value: &str) -> Result<(), ApiError> {
    let mut chars = name.chars();
    let valid_name = chars
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid_name {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "BAD_REQUEST",
            format!(
                "invalid environment variable name {name:?}: names must match [A-Za-z_][A-Za-z0-9_]*"
            ),
        ));
    }
    if value.contains('\0') {
        return Err(ApiError::bad_request(format!(
            "environment variable {name} contains a NUL byte"
        )));
    }
    Ok(())
}

/// Finds the shell that runs commands: the first of bash and sh in the usual directories.
pub fn find_shell() -> Option<PathBuf> {
    SHELL_NAMES.iter().find_map(|name| {
        SHELL_DIRS
            .iter()
            .map(|dir| Path::new(dir).join(name))
            .find(|path| is_executable(path))
    })
}

/// Finds a program in a `PATH`-style list of directories.
pub fn find_in_path(name: &str, path_var: &str) -> Option<PathBuf> {
    path_var
        .split(':')
        .filter(|dir| !dir.is_empty())
        .map(|dir| Path::new(dir).join(name))
        .find(|path| is_executable(path))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .is_ok_and(|metadata| metadata.is_file() && metadata.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> SandboxUser {
        SandboxUser {
            name: "daytona".to_owned(),
            uid: 1000,
            gid: 1000,
            home: "/home/daytona".into(),
            shell: "/bin/bash".into(),
            groups: vec![1000],
        }
    }

    #[test]
    fn env_names_follow_shell_rules() {
        for valid in ["A", "_", "a_1", "PATH", "_X9"] {
            assert!(check_env_var(valid, "v").is_ok(), "{valid}");
        }
        for invalid in ["", "1A", "A-B", "A=B", "A B", "é"] {
            assert!(check_env_var(invalid, "v").is_err(), "{invalid}");
        }
    }

    #[test]
    fn env_value_with_nul_is_rejected() {
        assert!(check_env_var("A", "a\0b").is_err());
    }

    #[test]
    fn create_env_overrides_base() {
        let create = BTreeMap::from([
            ("LANG".to_owned(), "de_DE.UTF-8".to_owned()),
            ("FOO".to_owned(), "bar".to_owned()),
            ("BAD-NAME".to_owned(), "x".to_owned()),
        ]);
        let env = workload_env(&user(), Path::new("/home/daytona"), None, &create);
        assert_eq!(env["LANG"], "de_DE.UTF-8");
        assert_eq!(env["FOO"], "bar");
        assert_eq!(env["TERM"], "xterm-256color");
        assert_eq!(env["HOME"], "/home/daytona");
        assert_eq!(env["USER"], "daytona");
        assert_eq!(env["SHELL"], "/bin/bash");
        assert!(!env.contains_key("BAD-NAME"));
    }
}
