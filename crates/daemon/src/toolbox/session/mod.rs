//! Sessions: named shells whose commands run one after another or side by side, with logs
//! kept for later reads and streaming.
//!
//! A session is a saved state, its working directory and exported environment, not one
//! long-lived shell. Each command is its own process started from that state (see [`run`]), so
//! commands in the background never wait for each other. A command run to its end (sync)
//! leaves its final directory and environment as the state of the commands after it. Shell
//! variables that are not exported, functions and aliases do not carry over.
//!
//! Memory and disk stay bounded: a command's log is a file capped at the sandbox's output
//! limit, and ended commands are forgotten, log included, after [`DEFAULT_COMMAND_TTL`], or
//! earlier, oldest first, when more than [`MAX_ENDED_COMMANDS`] have ended or their logs
//! exceed [`ENDED_LOG_BUDGET`] bytes.

mod log;
mod routes;
mod run;
mod store;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::net::unix::pipe;
use tokio::sync::watch;

use self::log::CommandLog;
use self::store::{CommandRecord, SessionRecord, Store, from_unix_seconds, unix_seconds};
use super::state::Toolbox;

pub use routes::routes;

/// How long an ended command's exit code and log stay readable by default.
pub const DEFAULT_COMMAND_TTL: Duration = Duration::from_secs(60 * 60);

/// Environment variable that overrides [`DEFAULT_COMMAND_TTL`], in seconds (for tests).
pub const COMMAND_TTL_ENV: &str = "DAYTONA_SESSION_COMMAND_TTL";

/// Maximum number of ended commands kept over all sessions.
pub const MAX_ENDED_COMMANDS: usize = 1000;

/// Maximum bytes of logs of ended commands kept over all sessions.
pub const ENDED_LOG_BUDGET: u64 = 1024 * 1024 * 1024;

/// Maximum number of sessions at once.
pub const MAX_SESSIONS: usize = 256;

/// How long the processes of a deleted session get to exit after SIGTERM.
const TERM_GRACE: Duration = Duration::from_secs(5);

/// Every session of the sandbox.
#[derive(Debug)]
pub struct Sessions {
    store: Store,
    sessions: Mutex<BTreeMap<String, Arc<Session>>>,
    command_ttl: Duration,
}

/// A session's working directory and exported environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShellState {
    pub cwd: PathBuf,
    pub env: BTreeMap<String, String>,
}

/// One session.
#[derive(Debug)]
pub struct Session {
    id: String,
    /// Name of its directory in the store.
    dir: String,
    state: Mutex<ShellState>,
    commands: Mutex<Vec<Arc<Command>>>,
}

/// One command of a session.
#[derive(Debug)]
pub struct Command {
    id: String,
    command: String,
    log: Arc<CommandLog>,
    /// Whether input sent to the command is also written to its log.
    echo_input: bool,
    /// Whether the command runs in the background and takes input.
    takes_input: bool,
    live: Mutex<Live>,
    exit: watch::Sender<Option<i32>>,
}

#[derive(Debug, Default)]
struct Live {
    /// The write end of the command's standard input, while it runs.
    input: Option<Arc<tokio::sync::Mutex<pipe::Sender>>>,
    process_group: Option<i32>,
    ended_at: Option<SystemTime>,
}

impl Default for Sessions {
    fn default() -> Self {
        Self::new()
    }
}

impl Sessions {
    /// Opens the store and reloads the sessions an earlier toolbox server left.
    pub fn new() -> Self {
        let command_ttl = match std::env::var(COMMAND_TTL_ENV) {
            Err(_) => DEFAULT_COMMAND_TTL,
            Ok(seconds) => match seconds.parse() {
                Ok(seconds) => Duration::from_secs(seconds),
                Err(_) => {
                    tracing::warn!(
                        value = %seconds,
                        "{COMMAND_TTL_ENV} is not a number of seconds: keeping ended commands for an hour"
                    );
                    DEFAULT_COMMAND_TTL
                }
            },
        };
        Self::with_store(Store::from_environment(), command_ttl)
    }

    fn with_store(store: Store, command_ttl: Duration) -> Self {
        let mut sessions = BTreeMap::new();
        for record in store.load() {
            let session = Session::restore(&store, record);
            store.save(&session.record());
            sessions.insert(session.id.clone(), Arc::new(session));
        }
        if !sessions.is_empty() {
            tracing::info!(count = sessions.len(), "reloaded sessions");
        }
        Self {
            store,
            sessions: Mutex::new(sessions),
            command_ttl,
        }
    }

    pub fn command_ttl(&self) -> Duration {
        self.command_ttl
    }

    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Arc<Session>>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `session` is still registered (not deleted, nor replaced by a new session of
    /// the same id); unlike [`Sessions::get`], it expires no command.
    fn contains(&self, session: &Session) -> bool {
        self.map()
            .get(&session.id)
            .is_some_and(|current| current.dir == session.dir)
    }

    pub fn get(&self, id: &str) -> Option<Arc<Session>> {
        self.expire();
        self.map().get(id).cloned()
    }

    pub fn list(&self) -> Vec<Arc<Session>> {
        self.expire();
        self.map().values().cloned().collect()
    }

    /// Adds a session; `None` when the id is taken, `Err` when there are too many.
    fn insert(&self, session: Session) -> Result<Option<Arc<Session>>, usize> {
        let mut map = self.map();
        if map.contains_key(&session.id) {
            return Ok(None);
        }
        if map.len() >= MAX_SESSIONS {
            return Err(MAX_SESSIONS);
        }
        let session = Arc::new(session);
        map.insert(session.id.clone(), Arc::clone(&session));
        Ok(Some(session))
    }

    fn remove(&self, id: &str) -> Option<Arc<Session>> {
        self.map().remove(id)
    }

    /// Forgets ended commands past their time to live, then the oldest ended commands while
    /// there are too many or their logs are too large.
    pub fn expire(&self) {
        let sessions: Vec<Arc<Session>> = self.map().values().cloned().collect();
        let now = SystemTime::now();
        let mut ended: Vec<(SystemTime, Arc<Session>, Arc<Command>)> = Vec::new();
        for session in &sessions {
            for command in session.commands() {
                if let Some(ended_at) = command.ended_at() {
                    ended.push((ended_at, Arc::clone(session), command));
                }
            }
        }
        ended.sort_by_key(|(ended_at, _, _)| *ended_at);

        let mut count = ended.len();
        let mut bytes: u64 = ended.iter().map(|(_, _, command)| command.log.len()).sum();
        let mut changed: Vec<Arc<Session>> = Vec::new();
        for (ended_at, session, command) in ended {
            let expired = now.duration_since(ended_at).unwrap_or_default() >= self.command_ttl;
            if !expired && count <= MAX_ENDED_COMMANDS && bytes <= ENDED_LOG_BUDGET {
                break;
            }
            count -= 1;
            bytes -= command.log.len();
            session.forget(&command.id);
            command.log.remove();
            if !changed.iter().any(|s| Arc::ptr_eq(s, &session)) {
                changed.push(session);
            }
        }
        for session in changed {
            self.store.save(&session.record());
        }
    }
}

impl Session {
    fn new(id: String, state: ShellState) -> Self {
        Self {
            id,
            dir: uuid::Uuid::new_v4().to_string(),
            state: Mutex::new(state),
            commands: Mutex::new(Vec::new()),
        }
    }

    /// Rebuilds a session from its record. Commands that ran when the previous server stopped
    /// lost their output pipes and their exit status with it: they end with exit code -1.
    ///
    /// NOTE: such a command may still run (a `sleep` writes nothing, so it gets no SIGPIPE),
    /// and it is reported ended all the same; deleting the session still kills its group.
    fn restore(store: &Store, record: SessionRecord) -> Self {
        let session_dir = store.session_dir(&record.dir);
        let commands = record
            .commands
            .into_iter()
            .map(|command| {
                let log = Arc::new(CommandLog::reopen(
                    session_dir.join(format!("{}.log", command.id)),
                ));
                let (exit_code, ended_at) = match (command.exit_code, command.ended_at) {
                    (Some(code), Some(at)) => (code, from_unix_seconds(at)),
                    _ => (-1, SystemTime::now()),
                };
                let (exit, _) = watch::channel(Some(exit_code));
                Arc::new(Command {
                    id: command.id,
                    command: command.command,
                    log,
                    echo_input: false,
                    takes_input: false,
                    live: Mutex::new(Live {
                        ended_at: Some(ended_at),
                        process_group: command.process_group,
                        ..Live::default()
                    }),
                    exit,
                })
            })
            .collect();
        Self {
            id: record.session_id,
            dir: record.dir,
            state: Mutex::new(ShellState {
                cwd: record.cwd,
                env: record.env,
            }),
            commands: Mutex::new(commands),
        }
    }

    pub fn state(&self) -> ShellState {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn commands(&self) -> Vec<Arc<Command>> {
        self.commands
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn command(&self, id: &str) -> Option<Arc<Command>> {
        self.commands
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|command| command.id == id)
            .cloned()
    }

    fn add_command(&self, command: Arc<Command>) {
        self.commands
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(command);
    }

    fn forget(&self, command_id: &str) {
        self.commands
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|command| command.id != command_id);
    }

    /// Takes the state a command run to its end left, except for the variables that were
    /// given to that command alone, which keep the values they had before it. A state changed
    /// meanwhile by another command is replaced.
    fn update_state(
        &self,
        toolbox: &Toolbox,
        before: ShellState,
        mut after: ShellState,
        command_envs: &BTreeMap<String, String>,
    ) {
        for name in command_envs.keys() {
            match before.env.get(name) {
                Some(value) => after.env.insert(name.clone(), value.clone()),
                None => after.env.remove(name),
            };
        }
        *self.state.lock().unwrap_or_else(|e| e.into_inner()) = after;
        self.persist(toolbox);
    }

    /// Records a command's end and keeps it across a restart of the server.
    fn command_ended(&self, toolbox: &Toolbox, command: &Command, exit_code: i32) {
        command.end(exit_code);
        self.persist(toolbox);
    }

    /// Saves the session's record, unless the session was deleted.
    fn persist(&self, toolbox: &Toolbox) {
        if toolbox.sessions.contains(self) {
            toolbox.sessions.store.save(&self.record());
        }
    }

    fn record(&self) -> SessionRecord {
        let state = self.state();
        SessionRecord {
            session_id: self.id.clone(),
            dir: self.dir.clone(),
            cwd: state.cwd,
            env: state.env,
            commands: self
                .commands()
                .iter()
                .map(|command| CommandRecord {
                    id: command.id.clone(),
                    command: command.command.clone(),
                    exit_code: command.exit_code(),
                    ended_at: command.ended_at().map(unix_seconds),
                    process_group: command.process_group(),
                })
                .collect(),
        }
    }
}

impl Command {
    pub fn exit_code(&self) -> Option<i32> {
        *self.exit.borrow()
    }

    pub fn subscribe_exit(&self) -> watch::Receiver<Option<i32>> {
        self.exit.subscribe()
    }

    fn live(&self) -> std::sync::MutexGuard<'_, Live> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn ended_at(&self) -> Option<SystemTime> {
        self.live().ended_at
    }

    fn process_group(&self) -> Option<i32> {
        self.live().process_group
    }

    fn set_process_group(&self, pgid: i32) {
        self.live().process_group = Some(pgid);
    }

    fn set_input(&self, input: pipe::Sender) {
        self.live().input = Some(Arc::new(tokio::sync::Mutex::new(input)));
    }

    fn input(&self) -> Option<Arc<tokio::sync::Mutex<pipe::Sender>>> {
        self.live().input.clone()
    }

    fn close_input(&self) {
        self.live().input = None;
    }

    fn end(&self, exit_code: i32) {
        {
            let mut live = self.live();
            live.input = None;
            live.ended_at = Some(SystemTime::now());
        }
        self.exit.send_replace(Some(exit_code));
    }

    fn to_wire(&self) -> daytona_wire::sessions::Command {
        daytona_wire::sessions::Command {
            id: self.id.clone(),
            command: self.command.clone(),
            exit_code: self.exit_code(),
        }
    }
}

impl Session {
    fn to_wire(&self) -> daytona_wire::sessions::Session {
        daytona_wire::sessions::Session {
            session_id: self.id.clone(),
            commands: self.commands().iter().map(|c| c.to_wire()).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ended_commands_stay_an_hour_by_default() {
        assert_eq!(DEFAULT_COMMAND_TTL, Duration::from_secs(3600));
        let sessions = Sessions::with_store(
            Store::at(std::env::temp_dir().join("unused-session-store"), false),
            DEFAULT_COMMAND_TTL,
        );
        assert!(sessions.command_ttl() >= Duration::from_secs(3600));
    }

    fn ended_command(id: &str, dir: &std::path::Path, ended_ago: Duration) -> Arc<Command> {
        let log = CommandLog::create(dir.join(format!("{id}.log")), 1024).unwrap();
        log.finish();
        let (exit, _) = watch::channel(Some(0));
        Arc::new(Command {
            id: id.to_owned(),
            command: "true".to_owned(),
            log: Arc::new(log),
            echo_input: false,
            takes_input: false,
            live: Mutex::new(Live {
                ended_at: Some(SystemTime::now() - ended_ago),
                ..Live::default()
            }),
            exit,
        })
    }

    #[test]
    fn expire_forgets_commands_past_the_ttl_only() {
        let dir = tempfile::tempdir().unwrap();
        let sessions = Sessions::with_store(
            Store::at(dir.path().to_owned(), false),
            Duration::from_secs(60),
        );
        let session = sessions
            .insert(Session::new(
                "s".to_owned(),
                ShellState {
                    cwd: "/".into(),
                    env: BTreeMap::new(),
                },
            ))
            .unwrap()
            .unwrap();
        session.add_command(ended_command("old", dir.path(), Duration::from_secs(61)));
        session.add_command(ended_command("new", dir.path(), Duration::from_secs(59)));
        sessions.expire();
        let ids: Vec<String> = session.commands().iter().map(|c| c.id.clone()).collect();
        assert_eq!(ids, ["new"]);
        assert!(!dir.path().join("old.log").exists());
        assert!(dir.path().join("new.log").exists());
    }

    #[test]
    fn expire_bounds_the_number_of_ended_commands() {
        let dir = tempfile::tempdir().unwrap();
        let sessions =
            Sessions::with_store(Store::at(dir.path().to_owned(), false), DEFAULT_COMMAND_TTL);
        let session = sessions
            .insert(Session::new(
                "s".to_owned(),
                ShellState {
                    cwd: "/".into(),
                    env: BTreeMap::new(),
                },
            ))
            .unwrap()
            .unwrap();
        for index in 0..MAX_ENDED_COMMANDS + 5 {
            let age = Duration::from_secs((MAX_ENDED_COMMANDS + 5 - index) as u64);
            session.add_command(ended_command(&format!("c{index}"), dir.path(), age));
        }
        sessions.expire();
        let commands = session.commands();
        assert_eq!(commands.len(), MAX_ENDED_COMMANDS);
        assert_eq!(commands[0].id, "c5");
    }
}
