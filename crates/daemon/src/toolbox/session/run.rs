//! Runs one session command as its own process.
//!
//! Each command is `<shell> <script>`, started through the launcher in the session's saved
//! working directory with the session's saved environment, so commands run in the background
//! side by side without waiting for each other. The script is the command's text. For a
//! command run to its end, a first line installs an EXIT trap. When the shell exits, the trap
//! writes the working directory and the exported environment to a state file, and they become
//! the session's state for the commands that follow. The script is a file, not an argument, so
//! the command's length is not bound by the kernel's limit on one argument.

use std::collections::BTreeMap;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::net::unix::pipe;

use super::log::LogSink;
use super::store::create_user_file;
use super::{Command, Session, ShellState};
use crate::toolbox::process::command::{CommandSpec, launch_error_to_io};
use crate::toolbox::process::interleave::Stream;
use crate::toolbox::process::reader::OutputReader;
use crate::toolbox::state::Toolbox;

/// How long output is still read after the command's main process exited, because background
/// processes may keep the pipes open much longer.
const DRAIN_GRACE: Duration = Duration::from_millis(200);

/// Variables the shell sets itself, which are not part of a session's state.
const SHELL_OWNED_VARS: [&str; 3] = ["_", "SHLVL", "PWD"];

/// A command ready to start.
pub struct Launch {
    pub command: Arc<Command>,
    pub session: Arc<Session>,
    /// Runs to its end and updates the session's state.
    pub sync: bool,
    /// Variables for this command only.
    pub envs: BTreeMap<String, String>,
}

/// Starts the command and the task that waits for it. A command that cannot start ends at
/// once with exit code -1 and the reason in its log.
pub async fn start(toolbox: &Arc<Toolbox>, launch: Launch) {
    let command = Arc::clone(&launch.command);
    match spawn(toolbox, &launch).await {
        Ok(started) => {
            let toolbox = Arc::clone(toolbox);
            tokio::spawn(supervise(toolbox, launch, started));
        }
        Err(error) => {
            command.log.append(
                Stream::Stderr,
                format!("failed to start the command: {error}\n").as_bytes(),
            );
            command.log.finish();
            launch.session.command_ended(toolbox, &command, -1);
        }
    }
}

/// A started command.
struct Started {
    workload: crate::toolbox::process::command::Workload,
    reader: OutputReader<LogSink>,
    script: PathBuf,
    state_file: Option<PathBuf>,
    /// The session's state when the command started.
    before: ShellState,
}

async fn spawn(toolbox: &Arc<Toolbox>, launch: &Launch) -> io::Result<Started> {
    let shell = toolbox.shell.clone().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            "no shell found: the image has neither bash nor sh",
        )
    })?;
    let sessions = &toolbox.sessions;
    sessions.store.ensure()?;
    let command = &launch.command;

    // 1. The session's state, and the directory it names if that still exists.
    let before = launch.session.state();
    let mut cwd = before.cwd.clone();
    if !cwd.is_dir() {
        command.log.append(
            Stream::Stderr,
            format!(
                "the session's directory {} no longer exists: running in {}\n",
                cwd.display(),
                toolbox.work_dir.display()
            )
            .as_bytes(),
        );
        cwd = toolbox.work_dir.clone();
    }
    let mut env = before.env.clone();
    env.extend(launch.envs.clone());

    // 2. The script, and the state file its trap writes.
    let exchange = sessions.store.exchange_dir();
    let script = exchange.join(format!("{}.sh", command.id));
    let state_file = launch
        .sync
        .then(|| exchange.join(format!("{}.state", command.id)));
    if let Some(state_file) = &state_file {
        create_user_file(state_file, b"", toolbox.file_owner)?;
    }
    let text = script_text(&command.command, state_file.as_deref());
    if let Err(error) = create_user_file(&script, text.as_bytes(), toolbox.file_owner) {
        remove_files(&script, state_file.as_deref());
        return Err(error);
    }

    // 3. Input: a pipe for commands in the background. A command run to its end reads
    //    /dev/null, so that it cannot wait for input forever.
    let (stdin_read, stdin_write) = if launch.sync {
        (None, None)
    } else {
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        (Some(read), Some(write))
    };

    // 4. Output into the log, then the process.
    let (reader, pipes) = OutputReader::start_with(LogSink(Arc::clone(&command.log)))?;
    let spec = CommandSpec {
        program: shell,
        args: vec![script.clone().into_os_string()],
        env,
        cwd,
        stdin: None,
        timeout: None,
        output_limit: toolbox.output_limit,
    };
    let request = toolbox.launcher.request(&spec);
    let stdio: [Option<OwnedFd>; 3] = [stdin_read, Some(pipes.stdout), Some(pipes.stderr)];
    let workload = match toolbox.launcher.spawn_request(request, stdio).await {
        Ok(workload) => workload,
        Err(error) => {
            remove_files(&script, state_file.as_deref());
            // Dropping the reader ends its thread once the pipes close.
            drop(reader);
            return Err(launch_error_to_io(error));
        }
    };
    command.set_process_group(workload.pid());
    launch.session.persist(toolbox);
    if let Some(stdin_write) = stdin_write {
        command.set_input(pipe::Sender::from_owned_fd(stdin_write)?);
    }
    Ok(Started {
        workload,
        reader,
        script,
        state_file,
        before,
    })
}

/// Waits for the command to end, then records its exit code and, for a command run to its
/// end, the session's new state.
async fn supervise(toolbox: Arc<Toolbox>, launch: Launch, started: Started) {
    let Started {
        workload,
        reader,
        script,
        state_file,
        before,
    } = started;
    let command = &launch.command;
    let exit_code = match workload.wait().await {
        Ok(status) => exit_code(status),
        Err(error) => {
            tracing::warn!(command_id = %command.id, %error, "failed to wait for a session command");
            let _ = workload.kill_group(libc::SIGKILL);
            -1
        }
    };
    command.close_input();
    let _ = reader.finish_sink(DRAIN_GRACE).await;
    command.log.finish();

    if let Some(state_file) = &state_file
        && let Some(after) = read_state(state_file)
    {
        launch
            .session
            .update_state(&toolbox, before, after, &launch.envs);
    }
    remove_files(&script, state_file.as_deref());
    launch.session.command_ended(&toolbox, command, exit_code);
}

/// The script of a command. For a command run to its end, an EXIT trap writes the working
/// directory and the exported environment, each ending with a NUL byte, to `state_file`, and
/// keeps the command's exit status.
fn script_text(command: &str, state_file: Option<&Path>) -> String {
    let mut script = String::new();
    if let Some(state_file) = state_file {
        let path = shell_quote(&state_file.display().to_string());
        script.push_str(&format!(
            "trap '__daytona_status=$?; {{ printf \"%s\\0\" \"$PWD\"; env -0; }} >{path} 2>/dev/null; exit \"$__daytona_status\"' EXIT\n"
        ));
    }
    // CRLF line endings would leave a CR at the end of each line's last word.
    script.push_str(&command.replace("\r\n", "\n"));
    script.push('\n');
    script
}

/// Quotes a value for a shell inside a single-quoted trap: `'\''` cannot be used there, so
/// the value must not contain a single quote, which state paths never do.
fn shell_quote(value: &str) -> String {
    debug_assert!(!value.contains('\''));
    format!("\"{value}\"")
}

/// Reads what the EXIT trap wrote; `None` when it did not run (the command replaced the
/// shell with `exec`, set its own EXIT trap, or was killed).
fn read_state(path: &Path) -> Option<ShellState> {
    let data = std::fs::read(path).ok()?;
    let mut fields = data.split(|byte| *byte == 0);
    let cwd = fields.next().filter(|cwd| !cwd.is_empty())?;
    let cwd = PathBuf::from(String::from_utf8_lossy(cwd).into_owned());
    let mut env = BTreeMap::new();
    for entry in fields {
        let entry = String::from_utf8_lossy(entry);
        let Some((name, value)) = entry.split_once('=') else {
            continue;
        };
        if name.is_empty() || SHELL_OWNED_VARS.contains(&name) {
            continue;
        }
        env.insert(name.to_owned(), value.to_owned());
    }
    // `env -0` missing leaves the environment out; keep the old one then.
    if env.is_empty() {
        return None;
    }
    Some(ShellState { cwd, env })
}

fn remove_files(script: &Path, state_file: Option<&Path>) {
    let _ = std::fs::remove_file(script);
    if let Some(state_file) = state_file {
        let _ = std::fs::remove_file(state_file);
    }
}

/// Exit code as a shell reports it: the status, or 128 + N when signal N ended the process.
fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(signal)) => 128 + signal,
        (None, None) => -1,
    }
}

/// Stops the process group of a running command: SIGTERM now, SIGKILL after `grace` if the
/// command still runs.
pub fn terminate(command: &Arc<Command>, grace: Duration) {
    let Some(pgid) = command.process_group() else {
        return;
    };
    if command.exit_code().is_some() {
        // NOTE: the group id of an ended command names its background processes as long as
        // one of them runs; once none does, the kernel may reuse the number.
        let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
        return;
    }
    let _ = killpg(Pid::from_raw(pgid), Signal::SIGTERM);
    let command = Arc::clone(command);
    tokio::spawn(async move {
        let mut exit = command.subscribe_exit();
        let ended = tokio::time::timeout(grace, exit.wait_for(Option::is_some)).await;
        if ended.is_err() {
            let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn async_script_is_the_command() {
        assert_eq!(script_text("echo hi\r\nls", None), "echo hi\nls\n");
    }

    #[test]
    fn sync_script_traps_exit() {
        let script = script_text("cd /tmp", Some(Path::new("/run/x/c.state")));
        assert!(script.starts_with("trap '"), "{script}");
        assert!(script.contains(">\"/run/x/c.state\""), "{script}");
        assert!(script.ends_with("\ncd /tmp\n"), "{script}");
    }

    #[test]
    fn state_drops_shell_variables_and_keeps_odd_values() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        std::fs::write(
            &path,
            b"/tmp\0A=1\0_=/usr/bin/env\0SHLVL=2\0PWD=/tmp\0B=x\ny=z\0BASH_FUNC_f%%=() { :; }\0",
        )
        .unwrap();
        let state = read_state(&path).unwrap();
        assert_eq!(state.cwd, PathBuf::from("/tmp"));
        assert_eq!(state.env["A"], "1");
        assert_eq!(state.env["B"], "x\ny=z");
        assert_eq!(state.env["BASH_FUNC_f%%"], "() { :; }");
        assert!(!state.env.contains_key("_"));
        assert!(!state.env.contains_key("SHLVL"));
        assert!(!state.env.contains_key("PWD"));
    }

    #[test]
    fn empty_state_file_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        std::fs::write(&path, b"").unwrap();
        assert!(read_state(&path).is_none());
    }
}
