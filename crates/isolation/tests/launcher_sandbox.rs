//! The launcher inside a real sandbox: the daemon binary runs as `daytona-daemon launcher`,
//! root in the sandbox's user namespace, and its workloads are asserted from inside.
//!
//! The test process takes the place of the toolbox server. It starts the launcher the way the
//! toolbox server would, but from the host: the command joins the sandbox's cgroups, enters
//! its namespaces and becomes its root before it executes the daemon. So the launcher itself
//! stays in the host's PID namespace, while its workloads, children of the test process, are
//! in the sandbox's. PID 1 is the daemon's `init` running a test command.
//!
//! Run as root with `DAYTONA_TEST_ROOTFS` and `DAYTONA_DAEMON_BIN` set (see `common`).

mod common;

use std::fs::File;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Command, ExitStatus};
use std::time::Duration;

use common::{TestSandbox, field, test_env};
use daytona_isolation::cgroup::Limits;
use daytona_isolation::launcher::{Identity, LauncherClient, SpawnRequest, Workload};
use daytona_isolation::spawn;
use daytona_isolation::spec::DAEMON_PATH_IN_SANDBOX;
use nix::fcntl::OFlag;
use nix::sched::CloneFlags;

/// Docker's default capability set as `/proc/<pid>/status` prints it.
const DOCKER_CAPS: &str = "00000000a80425fb";

const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The namespaces that the launcher enters, the user namespace first: it grants the
/// capabilities that entering the others needs.
const NAMESPACES: [(&str, CloneFlags); 7] = [
    ("user", CloneFlags::CLONE_NEWUSER),
    ("mnt", CloneFlags::CLONE_NEWNS),
    ("uts", CloneFlags::CLONE_NEWUTS),
    ("ipc", CloneFlags::CLONE_NEWIPC),
    ("net", CloneFlags::CLONE_NEWNET),
    ("cgroup", CloneFlags::CLONE_NEWCGROUP),
    ("pid", CloneFlags::CLONE_NEWPID),
];

/// Returns a command factory that starts `daytona-daemon launcher` inside the sandbox whose
/// PID 1 has host pid `pid1`.
fn launcher_in_sandbox(pid1: i32, cgroup_dirs: Vec<PathBuf>) -> impl Fn() -> Command {
    move || {
        // Opened here, as host root; the child only writes and enters them.
        let cgroups: Vec<OwnedFd> = cgroup_dirs
            .iter()
            .map(|dir| {
                let tasks = dir.join("tasks");
                let file = if tasks.exists() {
                    tasks
                } else {
                    dir.join("cgroup.procs")
                };
                File::options().write(true).open(file).unwrap().into()
            })
            .collect();
        let namespaces: Vec<(OwnedFd, CloneFlags)> = NAMESPACES
            .iter()
            .map(|(name, flag)| {
                let path = format!("/proc/{pid1}/ns/{name}");
                (File::open(path).unwrap().into(), *flag)
            })
            .collect();

        let mut command = Command::new(DAEMON_PATH_IN_SANDBOX);
        command.arg("launcher").env_clear();
        // SAFETY: the closure runs in the forked child before exec and only makes system
        // calls on descriptors that it owns.
        unsafe {
            command.pre_exec(move || {
                // "0" moves the writing process; this must happen while it is host root.
                for cgroup in &cgroups {
                    nix::unistd::write(cgroup, b"0")?;
                }
                for (namespace, flag) in &namespaces {
                    nix::sched::setns(namespace, *flag)?;
                }
                let root = nix::unistd::Gid::from_raw(0);
                nix::unistd::setresgid(root, root, root)?;
                nix::unistd::setgroups(&[])?;
                let root = nix::unistd::Uid::from_raw(0);
                nix::unistd::setresuid(root, root, root)?;
                Ok(())
            });
        }
        command
    }
}

fn daytona() -> Option<Identity> {
    Some(Identity {
        uid: 1000,
        gid: 1000,
        groups: vec![1000],
    })
}

/// Builds a request for `bash -c <script>` as `user` (root if `None`).
fn bash(script: &str, user: Option<Identity>) -> SpawnRequest {
    let mut request = SpawnRequest::new(["/bin/bash", "-c", script]);
    let home = if user.is_some() {
        "/home/daytona"
    } else {
        "/root"
    };
    request.env = vec![("PATH".into(), PATH.into()), ("HOME".into(), home.into())];
    request.user = user;
    request
}

struct Output {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

async fn run(client: &LauncherClient, request: SpawnRequest) -> Output {
    let (out_read, out_write) = nix::unistd::pipe2(OFlag::O_CLOEXEC).unwrap();
    let (err_read, err_write) = nix::unistd::pipe2(OFlag::O_CLOEXEC).unwrap();
    let workload = client
        .spawn(request, [None, Some(out_write), Some(err_write)])
        .await
        .expect("spawn");
    let read = |fd: OwnedFd| {
        tokio::task::spawn_blocking(move || {
            let mut text = String::new();
            File::from(fd).read_to_string(&mut text).unwrap();
            text
        })
    };
    let (stdout, stderr) = (read(out_read), read(err_read));
    let status = tokio::time::timeout(Duration::from_secs(30), workload.wait())
        .await
        .expect("workload exits within 30 s")
        .unwrap();
    Output {
        status,
        stdout: stdout.await.unwrap(),
        stderr: stderr.await.unwrap(),
    }
}

struct KillOnDrop<'a>(&'a Workload);

impl Drop for KillOnDrop<'_> {
    fn drop(&mut self) {
        let _ = self.0.kill_group(libc::SIGKILL);
    }
}

/// Python that serves one connection on an abstract Unix socket.
const ABSTRACT_SERVER: &str = r#"
import socket
server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
server.bind("\0display-socket")
server.listen(1)
print("listening", flush=True)
connection, _ = server.accept()
print("received=" + connection.recv(64).decode(), flush=True)
"#;

const ABSTRACT_CLIENT: &str = r#"
import socket
client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
client.connect("\0display-socket")
client.sendall(b"hello")
print("connect=0")
"#;

const PTRACE_INIT: &str = "python3 -c 'import ctypes; l = ctypes.CDLL(None, use_errno=True); \
                           r = l.ptrace(0x4206, 1, 0, 0); \
                           print(\"ptrace_init=%d\" % (0 if r == 0 else ctypes.get_errno()))'";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn launcher_workloads_share_one_domain() {
    let Some(env) = test_env("launcher_workloads_share_one_domain") else {
        return;
    };
    let mut sandbox = TestSandbox::new(&env, Some(&["/bin/sleep", "1000"]), &Limits::default());
    let process = sandbox.start().await.expect("start sandbox");
    let client = LauncherClient::with_command(
        true,
        launcher_in_sandbox(process.pid, sandbox.spec.cgroup_dirs.clone()),
    );
    let status = client.ensure_started().await.expect("start the launcher");
    assert!(status.landlock, "this kernel has no Landlock scopes");

    // A background server from one request, stopped with pkill from another: the case of
    // `nohup python -m http.server &` followed by `pkill -f http.server`.
    let server = client
        .spawn(bash("exec sleep 1000.5", daytona()), [None, None, None])
        .await
        .unwrap();
    let _server_guard = KillOnDrop(&server);
    let output = run(
        &client,
        bash("pkill -f 'sleep 1000[.]5'; echo \"pkill=$?\"", daytona()),
    )
    .await;
    assert_eq!(field(&output.stdout, "pkill"), "0", "{}", output.stderr);
    let ended = tokio::time::timeout(Duration::from_secs(10), server.wait()).await;
    assert_eq!(ended.unwrap().unwrap().signal(), Some(libc::SIGTERM));

    // An abstract socket (X11, D-Bus) of one workload reached from another.
    let (out_read, out_write) = nix::unistd::pipe2(OFlag::O_CLOEXEC).unwrap();
    let mut listen = bash("", daytona());
    listen.argv = vec![
        "/usr/bin/python3".into(),
        "-c".into(),
        ABSTRACT_SERVER.into(),
    ];
    let listener = client
        .spawn(listen, [None, Some(out_write), None])
        .await
        .unwrap();
    let _listener_guard = KillOnDrop(&listener);
    let mut lines = std::io::BufReader::new(File::from(out_read));
    let mut line = String::new();
    std::io::BufRead::read_line(&mut lines, &mut line).unwrap();
    assert_eq!(line, "listening\n");
    let mut connect = bash("", daytona());
    connect.argv = vec![
        "/usr/bin/python3".into(),
        "-c".into(),
        ABSTRACT_CLIENT.into(),
    ];
    let output = run(&client, connect).await;
    assert_eq!(field(&output.stdout, "connect"), "0", "{}", output.stderr);
    line.clear();
    std::io::BufRead::read_line(&mut lines, &mut line).unwrap();
    assert_eq!(line, "received=hello\n");

    // PID 1 is outside the domain: root in the sandbox has CAP_KILL and PID 1's uid, so
    // only the Landlock scopes refuse these.
    let script = format!(
        "kill -0 1 2>/dev/null; echo \"signal_init=$?\"\n{PTRACE_INIT}\n\
         echo \"environ_init=$(cat /proc/1/environ 2>&1 | tr -d '\\0' | head -c 80)\""
    );
    let output = run(&client, bash(&script, None)).await;
    let out = &output.stdout;
    assert_eq!(field(out, "signal_init"), "1", "{out}");
    assert_eq!(field(out, "ptrace_init"), libc::EPERM.to_string(), "{out}");
    assert!(
        field(out, "environ_init").contains("Permission denied"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn launcher_workloads_confined_in_sandbox() {
    let Some(env) = test_env("launcher_workloads_confined_in_sandbox") else {
        return;
    };
    let mut sandbox = TestSandbox::new(&env, Some(&["/bin/sleep", "1000"]), &Limits::default());
    let process = sandbox.start().await.expect("start sandbox");
    let client = LauncherClient::with_command(
        true,
        launcher_in_sandbox(process.pid, sandbox.spec.cgroup_dirs.clone()),
    );

    let status_fields = "for c in Seccomp NoNewPrivs CapPrm CapEff CapBnd CapInh CapAmb; do \
                         echo \"$c=$(grep \"^$c:\" /proc/$$/status | cut -f2)\"; done";
    let zero = "0000000000000000";
    let script = format!(
        "{status_fields}\n\
         echo \"uid=$(id -u)\"\n\
         echo \"pidns=$(readlink /proc/self/ns/pid)\"\n\
         echo \"cgroup=$(grep -E '^[0-9]+:memory:' /proc/self/cgroup)\"\n\
         echo \"parent=$PPID\"\n\
         unshare -U true 2>/dev/null; echo \"unshare=$?\""
    );
    let root = run(&client, bash(&script, None)).await;
    let out = &root.stdout;
    assert!(root.status.success(), "{}", root.stderr);
    assert_eq!(field(out, "uid"), "0", "{out}");
    assert_eq!(field(out, "Seccomp"), "2", "{out}");
    assert_eq!(field(out, "NoNewPrivs"), "0", "{out}");
    assert_eq!(field(out, "CapEff"), DOCKER_CAPS, "{out}");
    assert_eq!(field(out, "CapPrm"), DOCKER_CAPS, "{out}");
    assert_eq!(field(out, "CapBnd"), DOCKER_CAPS, "{out}");
    assert_eq!(field(out, "CapInh"), zero, "{out}");
    assert_eq!(field(out, "CapAmb"), zero, "{out}");
    assert_ne!(field(out, "unshare"), "0", "{out}");
    // The workload is in the sandbox's PID namespace and cgroups. Its parent, this test
    // process, is outside the PID namespace, so getppid returns 0.
    let sandbox_pidns = std::fs::read_link(format!("/proc/{}/ns/pid", process.pid)).unwrap();
    assert_eq!(
        field(out, "pidns"),
        sandbox_pidns.to_str().unwrap(),
        "{out}"
    );
    assert_eq!(field(out, "cgroup").rsplit(':').next(), Some("/"), "{out}");
    assert_eq!(field(out, "parent"), "0", "{out}");

    let script = format!(
        "{status_fields}\n\
         echo \"uid=$(id -u)\"\n\
         echo \"groups=$(id -G)\"\n\
         echo \"sudo=$(sudo -n id -u)\"\n\
         echo \"sudo_caps=$(sudo -n grep CapEff /proc/self/status | cut -f2)\""
    );
    let user = run(&client, bash(&script, daytona())).await;
    let out = &user.stdout;
    assert!(user.status.success(), "{}", user.stderr);
    assert_eq!(field(out, "uid"), "1000", "{out}");
    assert_eq!(field(out, "groups"), "1000", "{out}");
    assert_eq!(field(out, "Seccomp"), "2", "{out}");
    assert_eq!(field(out, "CapEff"), zero, "{out}");
    assert_eq!(field(out, "CapPrm"), zero, "{out}");
    assert_eq!(field(out, "CapBnd"), DOCKER_CAPS, "{out}");
    // sudo works without no_new_privs and cannot exceed the bounding set.
    assert_eq!(field(out, "sudo"), "0", "{out}");
    assert_eq!(field(out, "sudo_caps"), DOCKER_CAPS, "{out}");

    // A missing program is an error of the spawn, not an exit status.
    let mut missing = bash("", daytona());
    missing.argv = vec!["no-such-program".into()];
    let err = client.spawn(missing, [None, None, None]).await.unwrap_err();
    let source = err.start_error().expect("a start error");
    assert_eq!(source.raw_os_error(), Some(libc::ENOENT), "{err:?}");

    spawn::stop(&process, Duration::from_secs(5)).await.unwrap();
}
