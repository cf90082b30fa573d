//! The launcher and its client, with this test binary as the launcher (`<binary> launcher`),
//! run as a plain process on the host.
//!
//! The protocol tests run the launcher unconfined and need no privileges, except the user
//! switch. The confinement tests run it confined, which needs root: the launcher enters a
//! Landlock domain and installs seccomp programs without no_new_privs. The test
//! process takes the place of the toolbox server, and a process that it starts outside the
//! domain takes the place of PID 1.
//!
//! `cargo test -p daytona-isolation --test launcher [FILTER] [-- --ignored]`; the ignored
//! test measures the spawn latency.

use std::ffi::OsString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::{SocketAddr, UnixListener};
use std::os::unix::process::ExitStatusExt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::process::{ExitCode, ExitStatus};
use std::time::{Duration, Instant};

use daytona_isolation::launcher::{
    self, Identity, InvalidRequest, LaunchError, LauncherClient, SessionMode, SpawnRequest,
    StartStep, Workload,
};
use daytona_isolation::sandbox_log::LOG_LIMIT;
use nix::fcntl::OFlag;
use nix::unistd::pipe2;

/// Docker's default capability set as `/proc/<pid>/status` prints it.
const DOCKER_CAPS: &str = "00000000a80425fb";

/// `PATH` of the test workloads: the host's system directories only.
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The unprivileged user of the confinement tests (`nobody` on Debian).
const NOBODY: u32 = 65534;

struct Test {
    name: &'static str,
    run: fn(),
    /// Measurements run only with `--ignored` or `--include-ignored`.
    ignored: bool,
}

const fn test(name: &'static str, run: fn()) -> Test {
    Test {
        name,
        run,
        ignored: false,
    }
}

const TESTS: &[Test] = &[
    test(
        "exit_code_and_signal_reach_caller",
        exit_code_and_signal_reach_caller,
    ),
    test("parent_is_caller", parent_is_caller),
    test("start_failures_are_errors", start_failures_are_errors),
    test("stdio_cwd_env_umask_arrive", stdio_cwd_env_umask_arrive),
    test("absent_stdio_is_dev_null", absent_stdio_is_dev_null),
    test("session_and_process_group", session_and_process_group),
    test("pty_is_controlling_terminal", pty_is_controlling_terminal),
    test("launcher_restarts_after_kill", launcher_restarts_after_kill),
    test("large_request_passes", large_request_passes),
    test("invalid_request_rejected", invalid_request_rejected),
    test(
        "cancelled_spawns_leave_client_usable",
        cancelled_spawns_leave_client_usable,
    ),
    test("launcher_trims_its_log", launcher_trims_its_log),
    test("own_user_needs_no_privilege", own_user_needs_no_privilege),
    test("user_and_groups_switched", user_and_groups_switched),
    test("workloads_signal_each_other", workloads_signal_each_other),
    test("abstract_sockets_shared", abstract_sockets_shared),
    test("outside_processes_protected", outside_processes_protected),
    test(
        "seccomp_and_capabilities_applied",
        seccomp_and_capabilities_applied,
    ),
    Test {
        name: "spawn_latency",
        run: spawn_latency,
        ignored: true,
    },
];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("launcher") {
        launcher::main();
    }
    run_tests(&args[1..])
}

/// Runs the tests whose names contain the filter argument, one after another, in the
/// output format of libtest. Flags that libtest takes and that do not apply here
/// (`--nocapture`, `--test-threads`...) are accepted and ignored.
fn run_tests(args: &[String]) -> ExitCode {
    let filter = args.iter().find(|arg| !arg.starts_with('-'));
    let include_ignored = args.iter().any(|arg| arg == "--include-ignored");
    let only_ignored = args.iter().any(|arg| arg == "--ignored");
    if args.iter().any(|arg| arg == "--list") {
        for test in TESTS {
            println!("{}: test", test.name);
        }
        return ExitCode::SUCCESS;
    }

    let selected: Vec<&Test> = TESTS
        .iter()
        .filter(|test| filter.is_none_or(|filter| test.name.contains(filter.as_str())))
        .collect();
    println!("\nrunning {} tests", selected.len());
    let (mut passed, mut failed, mut ignored) = (Vec::new(), Vec::new(), 0);
    for test in selected {
        let runs = if test.ignored {
            include_ignored || only_ignored
        } else {
            !only_ignored
        };
        if !runs {
            println!("test {} ... ignored", test.name);
            ignored += 1;
            continue;
        }
        match catch_unwind(AssertUnwindSafe(test.run)) {
            Ok(()) => {
                println!("test {} ... ok", test.name);
                passed.push(test.name);
            }
            Err(_) => {
                println!("test {} ... FAILED", test.name);
                failed.push(test.name);
            }
        }
    }
    let result = if failed.is_empty() { "ok" } else { "FAILED" };
    if !failed.is_empty() {
        println!("\nfailures:\n    {}", failed.join("\n    "));
    }
    println!(
        "\ntest result: {result}. {} passed; {} failed; {ignored} ignored\n",
        passed.len(),
        failed.len()
    );
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn block_on<F: Future<Output = ()>>(future: F) {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("build the tokio runtime")
        .block_on(future)
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Returns whether the test can run as root; prints why not otherwise.
fn require_root(test: &str, why: &str) -> bool {
    if !is_root() {
        eprintln!("SKIPPED: {test} needs root {why}");
    }
    is_root()
}

fn launcher_exe() -> PathBuf {
    std::env::current_exe().expect("path of the test binary")
}

fn unconfined() -> LauncherClient {
    LauncherClient::unconfined(launcher_exe())
}

fn confined() -> LauncherClient {
    LauncherClient::new(launcher_exe())
}

/// Builds a request for `sh -c <script>` with the test `PATH`.
fn shell(script: &str, confine: bool) -> SpawnRequest {
    let mut request = SpawnRequest::new(["/bin/sh", "-c", script]);
    request.env = vec![("PATH".into(), PATH.into())];
    request.confine = confine;
    request
}

fn pipe() -> (OwnedFd, OwnedFd) {
    pipe2(OFlag::O_CLOEXEC).expect("create a pipe")
}

/// What a workload wrote to its standard output and error, and how it ended.
struct Output {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// Runs a request to its end with its output captured.
async fn run(client: &LauncherClient, request: SpawnRequest) -> Output {
    let (out_read, out_write) = pipe();
    let (err_read, err_write) = pipe();
    let workload = client
        .spawn(request, [None, Some(out_write), Some(err_write)])
        .await
        .expect("spawn");
    let stdout = read_all(out_read);
    let stderr = read_all(err_read);
    let status = tokio::time::timeout(Duration::from_secs(30), workload.wait())
        .await
        .expect("workload exits within 30 s")
        .expect("wait for the workload");
    Output {
        status,
        stdout: stdout.await.unwrap(),
        stderr: stderr.await.unwrap(),
    }
}

/// Reads a pipe to its end on a blocking thread.
fn read_all(read_end: OwnedFd) -> tokio::task::JoinHandle<String> {
    tokio::task::spawn_blocking(move || {
        let mut text = String::new();
        File::from(read_end).read_to_string(&mut text).unwrap();
        text
    })
}

/// Returns the value after `key=` on the line that starts with it.
fn field<'a>(output: &'a str, key: &str) -> &'a str {
    let prefix = format!("{key}=");
    output
        .lines()
        .find_map(|line| line.strip_prefix(prefix.as_str()))
        .unwrap_or_else(|| panic!("no {key}= in output:\n{output}"))
}

/// Fields 5 and 6 of `/proc/<pid>/stat`: process group and session.
fn group_and_session(pid: i32) -> (i32, i32) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    (fields[2].parse().unwrap(), fields[3].parse().unwrap())
}

/// Returns the children of every thread of this process, zombies included.
fn own_children() -> Vec<i32> {
    let mut children = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap() {
        let path = task.unwrap().path().join("children");
        let list = std::fs::read_to_string(path).unwrap_or_default();
        children.extend(
            list.split_whitespace()
                .map(|pid| pid.parse::<i32>().unwrap()),
        );
    }
    children.sort_unstable();
    children
}

/// Polls `condition` every few milliseconds until it is true or `timeout` passes.
fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Kills a workload that a failed assertion would otherwise leave running.
struct KillOnDrop<'a>(&'a Workload);

impl Drop for KillOnDrop<'_> {
    fn drop(&mut self) {
        let _ = self.0.kill_group(libc::SIGKILL);
        let _ = self.0.signal(libc::SIGKILL);
    }
}

fn exit_code_and_signal_reach_caller() {
    block_on(async {
        let client = unconfined();
        let output = run(&client, shell("exit 7", false)).await;
        assert_eq!(output.status.code(), Some(7));

        let output = run(&client, shell("kill -TERM $$", false)).await;
        assert_eq!(output.status.signal(), Some(libc::SIGTERM));

        // A status read once stays readable.
        let workload = client
            .spawn(shell("exit 3", false), [None, None, None])
            .await;
        let workload = workload.unwrap();
        assert_eq!(workload.wait().await.unwrap().code(), Some(3));
        assert_eq!(workload.wait().await.unwrap().code(), Some(3));
        assert_eq!(workload.try_wait().unwrap().unwrap().code(), Some(3));
    });
}

fn parent_is_caller() {
    block_on(async {
        let client = unconfined();
        let output = run(&client, shell("echo \"ppid=$PPID\"", false)).await;
        assert_eq!(
            field(&output.stdout, "ppid"),
            std::process::id().to_string()
        );
        let launcher = client.ensure_started().await.unwrap();
        assert_ne!(launcher.pid, std::process::id());
        assert!(!launcher.landlock);
    });
}

fn start_failures_are_errors() {
    block_on(async {
        let client = unconfined();
        let dir = tempfile::tempdir().unwrap();
        let not_executable = dir.path().join("script");
        std::fs::write(&not_executable, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&not_executable, std::fs::Permissions::from_mode(0o644)).unwrap();

        let missing_cwd = {
            let mut request = shell("true", false);
            request.cwd = dir.path().join("missing");
            request
        };
        let cases: [(SpawnRequest, StartStep, i32); 4] = [
            (
                SpawnRequest {
                    confine: false,
                    ..SpawnRequest::new(["/no/such/program"])
                },
                StartStep::Execve,
                libc::ENOENT,
            ),
            (
                {
                    let mut request = shell("", false);
                    request.argv = vec!["no-such-program-anywhere".into()];
                    request
                },
                StartStep::Execve,
                libc::ENOENT,
            ),
            (
                SpawnRequest {
                    confine: false,
                    ..SpawnRequest::new([not_executable.clone()])
                },
                StartStep::Execve,
                libc::EACCES,
            ),
            (missing_cwd, StartStep::Chdir, libc::ENOENT),
        ];
        for (request, expected_step, expected_errno) in cases {
            let program = request.argv[0].clone();
            match client.spawn(request, [None, None, None]).await {
                Err(LaunchError::Start { step, source, .. }) => {
                    assert_eq!(step, expected_step, "{program:?}");
                    assert_eq!(source.raw_os_error(), Some(expected_errno), "{program:?}");
                }
                other => panic!("{program:?}: expected a start error, got {other:?}"),
            }
        }

        // The failed children were reaped: this process has no child but the launcher.
        let launcher = client.ensure_started().await.unwrap().pid as i32;
        assert_eq!(own_children(), [launcher]);
    });
}

fn stdio_cwd_env_umask_arrive() {
    block_on(async {
        let client = unconfined();
        let dir = tempfile::tempdir().unwrap();
        let mut request = shell(
            "read line; echo \"stdin=$line\"; echo \"cwd=$(pwd)\"; echo \"env=$GREETING\"; \
             echo \"umask=$(umask)\"; echo \"vars=$(env | wc -l)\"; echo oops >&2",
            false,
        );
        request.cwd = dir.path().to_path_buf();
        request.env.push(("GREETING".into(), "hello world".into()));
        request.umask = 0o027;

        let (in_read, in_write) = pipe();
        let (out_read, out_write) = pipe();
        let (err_read, err_write) = pipe();
        let workload = client
            .spawn(request, [Some(in_read), Some(out_write), Some(err_write)])
            .await
            .unwrap();
        File::from(in_write).write_all(b"first line\n").unwrap();
        let stdout = read_all(out_read).await.unwrap();
        let stderr = read_all(err_read).await.unwrap();
        assert!(workload.wait().await.unwrap().success());

        assert_eq!(field(&stdout, "stdin"), "first line");
        assert_eq!(
            field(&stdout, "cwd"),
            dir.path().canonicalize().unwrap().to_str().unwrap()
        );
        assert_eq!(field(&stdout, "env"), "hello world");
        assert_eq!(field(&stdout, "umask"), "0027");
        // PATH and GREETING, and PWD, which the shell sets; nothing from this process.
        assert_eq!(field(&stdout, "vars"), "3", "{stdout}");
        assert_eq!(stderr, "oops\n");
    });
}

fn absent_stdio_is_dev_null() {
    block_on(async {
        let client = unconfined();
        // The workload has no stream to report on, so it writes a file.
        let dir = tempfile::tempdir().unwrap();
        let report = dir.path().join("report");
        let script = format!(
            "exec 3> {}; for fd in 0 1 2; do echo \"fd$fd=$(readlink /proc/$$/fd/$fd)\" >&3; done",
            report.display()
        );
        let workload = client
            .spawn(shell(&script, false), [None, None, None])
            .await
            .unwrap();
        assert!(workload.wait().await.unwrap().success());
        let report = std::fs::read_to_string(&report).unwrap();
        assert_eq!(field(&report, "fd0"), "/dev/null");
        assert_eq!(field(&report, "fd1"), "/dev/null");
        assert_eq!(field(&report, "fd2"), "/dev/null");
    });
}

fn session_and_process_group() {
    block_on(async {
        let client = unconfined();
        let own = group_and_session(std::process::id() as i32);

        let mut request = SpawnRequest::new(["/bin/sleep", "30"]);
        request.confine = false;
        let workload = client
            .spawn(request.clone(), [None, None, None])
            .await
            .unwrap();
        let _guard = KillOnDrop(&workload);
        let pid = workload.pid();
        assert_eq!(group_and_session(pid), (pid, pid), "new session");

        request.session = SessionMode::NewProcessGroup;
        let grouped = client.spawn(request, [None, None, None]).await.unwrap();
        let _grouped_guard = KillOnDrop(&grouped);
        let pid = grouped.pid();
        assert_eq!(group_and_session(pid), (pid, own.1), "new process group");

        // The group reaches the workload's children.
        let tree = client
            .spawn(shell("sleep 30 & wait", false), [None, None, None])
            .await
            .unwrap();
        let pid = tree.pid();
        let children = format!("/proc/{pid}/task/{pid}/children");
        assert!(wait_until(Duration::from_secs(5), || {
            !std::fs::read_to_string(&children)
                .unwrap_or_default()
                .trim()
                .is_empty()
        }));
        let child: i32 = std::fs::read_to_string(&children)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        tree.kill_group(libc::SIGTERM).unwrap();
        assert_eq!(tree.wait().await.unwrap().signal(), Some(libc::SIGTERM));
        assert!(wait_until(Duration::from_secs(5), || {
            !PathBuf::from(format!("/proc/{child}")).exists()
        }));
    });
}

fn pty_is_controlling_terminal() {
    block_on(async {
        let client = unconfined();
        let pty = nix::pty::openpty(None, None).expect("open a PTY");
        let rdev = File::from(pty.slave.try_clone().unwrap())
            .metadata()
            .unwrap()
            .rdev();
        let mut request = shell(
            "echo \"tty_nr=$(cut -d' ' -f7 /proc/$$/stat)\"; test -t 0 && echo tty=yes; \
             echo \"tty_name=$(tty)\"",
            false,
        );
        request.controlling_terminal = Some(0);
        let stdio = [
            Some(pty.slave.try_clone().unwrap()),
            Some(pty.slave.try_clone().unwrap()),
            Some(pty.slave),
        ];
        let workload = client.spawn(request, stdio).await.unwrap();
        let status = workload.wait().await.unwrap();
        assert!(status.success(), "{status:?}");

        // The slave is closed everywhere now, so the master reads the output, then EIO.
        let output = tokio::task::spawn_blocking(move || {
            let mut master = File::from(pty.master);
            let mut output = Vec::new();
            let mut buffer = [0u8; 4096];
            while let Ok(n) = master.read(&mut buffer) {
                if n == 0 {
                    break;
                }
                output.extend_from_slice(&buffer[..n]);
            }
            String::from_utf8_lossy(&output).replace('\r', "")
        })
        .await
        .unwrap();
        assert_eq!(field(&output, "tty_nr"), rdev.to_string(), "{output}");
        assert_eq!(field(&output, "tty"), "yes");
        assert!(
            field(&output, "tty_name").starts_with("/dev/pts/"),
            "{output}"
        );
    });
}

fn launcher_restarts_after_kill() {
    block_on(async {
        let client = unconfined();
        let mut request = SpawnRequest::new(["/bin/sleep", "30"]);
        request.confine = false;
        let running = client.spawn(request, [None, None, None]).await.unwrap();
        let _guard = KillOnDrop(&running);
        let first = client.ensure_started().await.unwrap().pid;

        // SAFETY: kill with the pid of the launcher this test started.
        assert_eq!(unsafe { libc::kill(first as i32, libc::SIGKILL) }, 0);
        let proc_dir = PathBuf::from(format!("/proc/{first}/stat"));
        assert!(wait_until(Duration::from_secs(5), || {
            std::fs::read_to_string(&proc_dir).map_or(true, |stat| stat.contains(") Z "))
        }));

        let output = run(&client, shell("echo again", false)).await;
        assert_eq!(output.stdout, "again\n");
        let second = client.ensure_started().await.unwrap().pid;
        assert_ne!(first, second);

        // The workload started by the first launcher kept running and is still ours.
        assert!(running.try_wait().unwrap().is_none());
        running.signal(libc::SIGTERM).unwrap();
        assert_eq!(running.wait().await.unwrap().signal(), Some(libc::SIGTERM));
    });
}

fn large_request_passes() {
    block_on(async {
        let client = unconfined();
        // More than one socket message takes: the request travels in a memory file. Linux
        // limits each argument and variable to 128 KiB.
        let big: String = "x".repeat(100 * 1024);
        let mut request = shell(
            "for a in \"$@\"; do printf %s \"$a\" | wc -c; done; printf %s \"$BIG\" | wc -c",
            false,
        );
        request.argv.push("sh".into());
        for _ in 0..3 {
            request.argv.push(big.clone().into());
        }
        request.env.push(("BIG".into(), big.into()));
        let output = run(&client, request).await;
        assert!(output.status.success(), "{}", output.stderr);
        let counts: Vec<&str> = output.stdout.lines().collect();
        assert_eq!(counts, ["102400"; 4]);
    });
}

fn invalid_request_rejected() {
    block_on(async {
        let client = unconfined();
        let cases: [(SpawnRequest, InvalidRequest); 3] = [
            (shell("true", true), InvalidRequest::ConfineUnavailable),
            (
                SpawnRequest {
                    argv: Vec::new(),
                    ..shell("", false)
                },
                InvalidRequest::EmptyProgram,
            ),
            (
                SpawnRequest {
                    argv: vec![OsString::from("/bin/echo"), OsString::from("a\0b")],
                    ..shell("", false)
                },
                InvalidRequest::NulByte { field: "argv" },
            ),
        ];
        for (request, expected) in cases {
            match client.spawn(request, [None, None, None]).await {
                Err(LaunchError::Invalid { source }) => assert_eq!(source, expected),
                other => panic!("expected {expected:?}, got {other:?}"),
            }
        }

        // The client checks before it starts a launcher, so this needs no root.
        match confined()
            .spawn(shell("true", false), [None, None, None])
            .await
        {
            Err(LaunchError::Invalid { source }) => {
                assert_eq!(source, InvalidRequest::ConfineRequired)
            }
            other => panic!("expected ConfineRequired, got {other:?}"),
        }
    });
}

fn cancelled_spawns_leave_client_usable() {
    block_on(async {
        let client = unconfined();
        let launcher = client.ensure_started().await.unwrap().pid as i32;
        // Workloads of earlier tests may linger as zombies: their runtimes ended before the
        // background reaping did.
        let earlier = own_children();
        // Cancel spawns at different points of the exchange; each later one must still see
        // only its own reply, and no cancelled workload may keep running.
        for delay_us in [
            0, 25, 50, 75, 100, 150, 200, 300, 400, 600, 800, 1200, 1600, 3200,
        ] {
            let mut request = SpawnRequest::new(["/bin/sleep", "60"]);
            request.confine = false;
            let spawn = client.spawn(request, [None, None, None]);
            if let Ok(spawned) = tokio::time::timeout(Duration::from_micros(delay_us), spawn).await
            {
                let workload = spawned.unwrap();
                workload.signal(libc::SIGKILL).unwrap();
                workload.wait().await.unwrap();
            }
            let output = run(&client, shell("echo fine", false)).await;
            assert_eq!(output.stdout, "fine\n", "after cancelling at {delay_us} us");
        }
        let sleeping = || {
            own_children()
                .into_iter()
                .filter(|pid| !earlier.contains(pid))
                .filter(|pid| {
                    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm"));
                    comm.is_ok_and(|comm| comm == "sleep\n")
                })
                .collect::<Vec<_>>()
        };
        assert!(
            wait_until(Duration::from_secs(5), || sleeping().is_empty()),
            "cancelled workloads left: {:?}",
            sleeping()
        );
        assert!(own_children().contains(&launcher));
    });
}

fn launcher_trims_its_log() {
    block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("sandbox.log");
        let line = "a line that the sandbox's daemon wrote to its log a while ago\n";
        std::fs::write(&log, line.repeat((3 << 20) / line.len())).unwrap();
        let log_for_command = log.clone();
        let client = LauncherClient::with_command(false, move || {
            let stderr = File::options().append(true).open(&log_for_command).unwrap();
            let mut command = std::process::Command::new(launcher_exe());
            command.args(["launcher", "--unconfined"]).stderr(stderr);
            command
        });

        // The launcher checks its log when it starts serving, before the first request.
        let output = run(&client, shell("echo served", false)).await;
        assert_eq!(output.stdout, "served\n");
        let size = std::fs::metadata(&log).unwrap().len();
        assert!(size <= LOG_LIMIT, "the log has {size} bytes");
        assert!(size > 0);
    });
}

fn own_user_needs_no_privilege() {
    block_on(async {
        let client = unconfined();
        let uid = nix::unistd::geteuid().as_raw();
        let gid = nix::unistd::getegid().as_raw();
        let mut request = shell("echo \"uid=$(id -u)\"; echo \"gid=$(id -g)\"", false);
        request.user = Some(Identity {
            uid,
            gid,
            groups: Vec::new(),
        });
        let output = run(&client, request).await;
        assert!(output.status.success(), "{}", output.stderr);
        assert_eq!(field(&output.stdout, "uid"), uid.to_string());
        assert_eq!(field(&output.stdout, "gid"), gid.to_string());
    });
}

fn user_and_groups_switched() {
    if !require_root("user_and_groups_switched", "to switch users") {
        return;
    }
    block_on(async {
        let client = unconfined();
        let mut request = shell(
            "echo \"uid=$(id -u)\"; echo \"gid=$(id -g)\"; echo \"groups=$(id -G)\"",
            false,
        );
        request.user = Some(Identity {
            uid: 12345,
            gid: 12346,
            groups: vec![12346, 12347, 12348],
        });
        let output = run(&client, request).await;
        assert!(output.status.success(), "{}", output.stderr);
        assert_eq!(field(&output.stdout, "uid"), "12345");
        assert_eq!(field(&output.stdout, "gid"), "12346");
        assert_eq!(field(&output.stdout, "groups"), "12346 12347 12348");

        // The working directory is entered as the user.
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let mut request = shell("true", false);
        request.cwd = dir.path().to_path_buf();
        request.user = Some(Identity {
            uid: NOBODY,
            gid: NOBODY,
            groups: Vec::new(),
        });
        match client.spawn(request, [None, None, None]).await {
            Err(LaunchError::Start { step, source, .. }) => {
                assert_eq!(step, StartStep::Chdir);
                assert_eq!(source.raw_os_error(), Some(libc::EACCES));
            }
            other => panic!("expected a chdir error, got {other:?}"),
        }
    });
}

fn nobody() -> Option<Identity> {
    Some(Identity {
        uid: NOBODY,
        gid: NOBODY,
        groups: Vec::new(),
    })
}

fn workloads_signal_each_other() {
    if !require_root("workloads_signal_each_other", "to enter a Landlock domain") {
        return;
    }
    block_on(async {
        let client = confined();
        assert!(
            client.ensure_started().await.unwrap().landlock,
            "this kernel has no Landlock scopes"
        );
        // Distinct sleep times mark the processes for pkill.
        let mut request = SpawnRequest::new(["/bin/sleep", "301.25"]);
        request.user = nobody();
        let first = client
            .spawn(request.clone(), [None, None, None])
            .await
            .unwrap();
        let _first_guard = KillOnDrop(&first);
        request.argv[1] = "302.25".into();
        let second = client.spawn(request, [None, None, None]).await.unwrap();
        let _second_guard = KillOnDrop(&second);

        let mut kill = shell(
            &format!(
                "kill -0 {0} && echo signal=ok; kill -TERM {0}; echo \"kill=$?\"",
                first.pid()
            ),
            true,
        );
        kill.user = nobody();
        let output = run(&client, kill).await;
        assert_eq!(field(&output.stdout, "signal"), "ok", "{}", output.stderr);
        assert_eq!(field(&output.stdout, "kill"), "0", "{}", output.stderr);
        assert_eq!(first.wait().await.unwrap().signal(), Some(libc::SIGTERM));

        // The bracket keeps the pattern from matching this shell's own command line.
        let mut pkill = shell("pkill -f 'sleep 30[2].25'; echo \"pkill=$?\"", true);
        pkill.user = nobody();
        let output = run(&client, pkill).await;
        assert_eq!(field(&output.stdout, "pkill"), "0", "{}", output.stderr);
        assert_eq!(second.wait().await.unwrap().signal(), Some(libc::SIGTERM));
    });
}

/// Python that serves one connection on an abstract Unix socket and prints what it got.
const ABSTRACT_SERVER: &str = r#"
import socket, sys
server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
server.bind("\0" + sys.argv[1])
server.listen(1)
print("listening", flush=True)
connection, _ = server.accept()
print("received=" + connection.recv(64).decode(), flush=True)
"#;

/// Python that connects to an abstract Unix socket and prints the errno (0 on success).
const ABSTRACT_CLIENT: &str = r#"
import socket, sys
client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    client.connect("\0" + sys.argv[1])
    client.sendall(b"hello")
    print("connect=0")
except OSError as e:
    print(f"connect={e.errno}")
"#;

fn python(script: &str, argument: &str) -> SpawnRequest {
    let mut request = SpawnRequest::new(["/usr/bin/python3", "-c", script, argument]);
    request.env = vec![("PATH".into(), PATH.into())];
    request.user = nobody();
    request
}

fn abstract_sockets_shared() {
    if !require_root("abstract_sockets_shared", "to enter a Landlock domain") {
        return;
    }
    if !PathBuf::from("/usr/bin/python3").exists() {
        eprintln!("SKIPPED: abstract_sockets_shared needs /usr/bin/python3");
        return;
    }
    block_on(async {
        let client = confined();
        let name = format!("daytona-launcher-test-{}", std::process::id());
        let (out_read, out_write) = pipe();
        let server = client
            .spawn(
                python(ABSTRACT_SERVER, &name),
                [None, Some(out_write), None],
            )
            .await
            .unwrap();
        let _guard = KillOnDrop(&server);
        let mut lines = std::io::BufReader::new(File::from(out_read));
        let mut line = String::new();
        std::io::BufRead::read_line(&mut lines, &mut line).unwrap();
        assert_eq!(line, "listening\n");

        let output = run(&client, python(ABSTRACT_CLIENT, &name)).await;
        assert_eq!(field(&output.stdout, "connect"), "0", "{}", output.stderr);
        line.clear();
        std::io::BufRead::read_line(&mut lines, &mut line).unwrap();
        assert_eq!(line, "received=hello\n");
        assert!(server.wait().await.unwrap().success());

        // A socket of a process outside the domain (this one, standing in for the toolbox
        // server) is out of reach.
        let outside = format!("{name}-outside");
        let address = SocketAddr::from_abstract_name(outside.as_bytes()).unwrap();
        let listener = UnixListener::bind_addr(&address).unwrap();
        let output = run(&client, python(ABSTRACT_CLIENT, &outside)).await;
        assert_eq!(
            field(&output.stdout, "connect"),
            libc::EPERM.to_string(),
            "{}",
            output.stderr
        );
        drop(listener);
    });
}

/// Python that tries PTRACE_SEIZE on a pid and prints the errno (0 on success, after
/// which it detaches at exit).
const PTRACE_PROBE: &str = r#"
import ctypes, sys
libc = ctypes.CDLL(None, use_errno=True)
PTRACE_SEIZE = 0x4206
ret = libc.ptrace(PTRACE_SEIZE, int(sys.argv[1]), 0, 0)
print(f"ptrace={0 if ret == 0 else ctypes.get_errno()}")
"#;

fn outside_processes_protected() {
    if !require_root("outside_processes_protected", "to enter a Landlock domain") {
        return;
    }
    block_on(async {
        let client = confined();
        let launcher = client.ensure_started().await.unwrap().pid;
        // Stands in for PID 1: a process outside the domain that is not the parent.
        let mut outside = std::process::Command::new("/bin/sleep")
            .arg("60")
            .spawn()
            .unwrap();
        let parent = std::process::id();

        // Root in the workload has CAP_KILL, so only the Landlock scope can refuse these.
        for (name, pid) in [("parent", parent), ("pid1", outside.id())] {
            let script = format!("kill -0 {pid} 2>&1; echo \"status=$?\"");
            let output = run(&client, shell(&script, true)).await;
            assert_eq!(
                field(&output.stdout, "status"),
                "1",
                "{name}: {}",
                output.stdout
            );
            assert!(
                output.stdout.contains("Operation not permitted"),
                "{name}: {}",
                output.stdout
            );
        }

        if PathBuf::from("/usr/bin/python3").exists() {
            for (name, pid) in [
                ("parent", parent),
                ("pid1", outside.id()),
                ("launcher", launcher),
            ] {
                let mut probe = python(PTRACE_PROBE, &pid.to_string());
                probe.user = None;
                let output = run(&client, probe).await;
                assert_eq!(
                    field(&output.stdout, "ptrace"),
                    libc::EPERM.to_string(),
                    "{name}: {}",
                    output.stderr
                );
            }
        } else {
            eprintln!("SKIPPED: the ptrace part of outside_processes_protected needs python3");
        }

        outside.kill().unwrap();
        outside.wait().unwrap();
    });
}

fn seccomp_and_capabilities_applied() {
    if !require_root(
        "seccomp_and_capabilities_applied",
        "to install seccomp filters",
    ) {
        return;
    }
    block_on(async {
        let client = confined();
        let script = "for c in Seccomp NoNewPrivs CapInh CapPrm CapEff CapBnd CapAmb; do \
                      echo \"$c=$(grep \"^$c:\" /proc/$$/status | cut -f2)\"; done; \
                      unshare -U true 2>/dev/null; echo \"unshare=$?\"";
        let zero = "0000000000000000";

        let root = run(&client, shell(script, true)).await;
        let out = &root.stdout;
        assert_eq!(field(out, "Seccomp"), "2", "{out}");
        assert_eq!(field(out, "NoNewPrivs"), "0", "{out}");
        assert_eq!(field(out, "CapEff"), DOCKER_CAPS, "{out}");
        assert_eq!(field(out, "CapPrm"), DOCKER_CAPS, "{out}");
        assert_eq!(field(out, "CapBnd"), DOCKER_CAPS, "{out}");
        assert_eq!(field(out, "CapInh"), zero, "{out}");
        assert_eq!(field(out, "CapAmb"), zero, "{out}");
        assert_ne!(field(out, "unshare"), "0", "{out}");

        let mut request = shell(script, true);
        request.user = nobody();
        let user = run(&client, request).await;
        let out = &user.stdout;
        assert_eq!(field(out, "Seccomp"), "2", "{out}");
        assert_eq!(field(out, "CapEff"), zero, "{out}");
        assert_eq!(field(out, "CapPrm"), zero, "{out}");
        assert_eq!(field(out, "CapBnd"), DOCKER_CAPS, "{out}");
    });
}

/// Prints the time of the launcher's start and percentiles of the time of `spawn` (request
/// to the pid of an executed `/bin/true`), and for comparison of tokio's `Command::spawn` of
/// the same program from this process.
fn spawn_latency() {
    block_on(async {
        const RUNS: usize = 400;
        let mut modes = vec![("unconfined", unconfined())];
        if is_root() {
            modes.push(("confined", confined()));
        } else {
            eprintln!("SKIPPED: the confined part of spawn_latency needs root");
        }
        for (mode, client) in &modes {
            let started = Instant::now();
            client.ensure_started().await.unwrap();
            eprintln!("launcher start ({mode}): {:?}", started.elapsed());
            let mut times = Vec::with_capacity(RUNS);
            for _ in 0..RUNS {
                let mut request = SpawnRequest::new(["/bin/true"]);
                request.confine = *mode == "confined";
                let started = Instant::now();
                let workload = client.spawn(request, [None, None, None]).await.unwrap();
                times.push(started.elapsed());
                workload.wait().await.unwrap();
            }
            eprintln!("launcher spawn ({mode}): {}", percentiles(times));
        }

        let mut times = Vec::with_capacity(RUNS);
        for _ in 0..RUNS {
            let started = Instant::now();
            let mut child = tokio::process::Command::new("/bin/true").spawn().unwrap();
            times.push(started.elapsed());
            child.wait().await.unwrap();
        }
        eprintln!("tokio Command::spawn: {}", percentiles(times));
    });
}

fn percentiles(mut times: Vec<Duration>) -> String {
    times.sort();
    let at = |fraction: f64| times[((times.len() - 1) as f64 * fraction) as usize];
    format!(
        "min {:?}, p25 {:?}, median {:?}, p75 {:?}, p90 {:?}",
        times[0],
        at(0.25),
        at(0.5),
        at(0.75),
        at(0.9)
    )
}
