//! Isolation properties of real sandboxes started from the test rootfs, asserted from inside
//! them. Each test runs a bash script as root in the sandbox (confined like a workload) and
//! reads what it wrote to `/out` from the upper directory.
//!
//! Run as root with `DAYTONA_TEST_ROOTFS` and `DAYTONA_DAEMON_BIN` set (see `common`).

mod common;

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{ID_RANGE, TestSandbox, field, test_env, wait_until};
use daytona_isolation::cgroup::Limits;
use daytona_isolation::sandbox_log::LOG_LIMIT;
use daytona_isolation::spawn::{self, SandboxProcess, SpawnError};
use daytona_isolation::spec::{LOG_FILE, TOOLBOX_SOCKET};

/// Docker's default capability set as `/proc/<pid>/status` prints it.
const DOCKER_CAPS: &str = "00000000a80425fb";

/// Runs `command` as the sandbox user `daytona`.
const AS_USER: &str = "setpriv --reuid=1000 --regid=1000 --init-groups";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaces_differ_from_host() {
    let Some(env) = test_env("namespaces_differ_from_host") else {
        return;
    };
    let script = "for ns in user mnt pid net uts ipc cgroup; do echo \"$ns=$(readlink /proc/self/ns/$ns)\"; done";
    let mut sandbox = TestSandbox::script(&env, script, &Limits::default());
    let out = sandbox.run().await;

    for ns in ["user", "mnt", "pid", "net", "uts", "ipc", "cgroup"] {
        let host = fs::read_link(format!("/proc/self/ns/{ns}")).unwrap();
        let inside = field(&out, ns);
        assert!(inside.starts_with(&format!("{ns}:[")), "{ns}: {inside}");
        assert_ne!(
            inside,
            host.to_str().unwrap(),
            "{ns} namespace is the host's"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn id_maps_map_root_to_host_range() {
    let Some(env) = test_env("id_maps_map_root_to_host_range") else {
        return;
    };
    let script = "echo \"uid_map=$(cat /proc/self/uid_map)\"; echo \"gid_map=$(cat /proc/self/gid_map)\"; \
                  echo \"setgroups=$(cat /proc/self/setgroups)\"";
    let mut sandbox = TestSandbox::script(&env, script, &Limits::default());
    let out = sandbox.run().await;

    let expected = vec![
        "0".to_string(),
        sandbox.host_base().to_string(),
        ID_RANGE.to_string(),
    ];
    for map in ["uid_map", "gid_map"] {
        let entries: Vec<String> = field(&out, map)
            .split_whitespace()
            .map(String::from)
            .collect();
        assert_eq!(entries, expected, "{map}");
    }
    // sudo and login tools call setgroups.
    assert_eq!(field(&out, "setgroups"), "allow");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_inside_is_unprivileged_outside() {
    let Some(env) = test_env("root_inside_is_unprivileged_outside") else {
        return;
    };
    let script = format!(
        "touch /created-by-root; echo \"inside_uid=$(stat -c %u /created-by-root)\"\n\
         {AS_USER} touch /home/daytona/created-by-user\n\
         echo \"image_owner=$(stat -c %u:%g /usr/bin/sudo)\""
    );
    let mut sandbox = TestSandbox::script(&env, &script, &Limits::default());
    let out = sandbox.run().await;
    let base = sandbox.host_base();

    assert_eq!(field(&out, "inside_uid"), "0");
    // Files of the image (host uid 0 in the layer) belong to root inside.
    assert_eq!(field(&out, "image_owner"), "0:0");

    let by_root = fs::metadata(sandbox.upper("created-by-root")).unwrap();
    assert_eq!((by_root.uid(), by_root.gid()), (base, base));
    let by_user = fs::metadata(sandbox.upper("home/daytona/created-by-user")).unwrap();
    assert_eq!((by_user.uid(), by_user.gid()), (base + 1000, base + 1000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sudo_makes_user_root_inside() {
    let Some(env) = test_env("sudo_makes_user_root_inside") else {
        return;
    };
    let script = format!(
        "echo \"user=$({AS_USER} id -u)\"\n\
         echo \"sudo=$({AS_USER} sudo -n id -u)\"\n\
         echo \"sudo_caps=$({AS_USER} sudo -n grep CapEff /proc/self/status | cut -f2)\""
    );
    let mut sandbox = TestSandbox::script(&env, &script, &Limits::default());
    let out = sandbox.run().await;

    assert_eq!(field(&out, "user"), "1000", "{out}");
    assert_eq!(field(&out, "sudo"), "0", "{out}");
    // sudo cannot exceed the bounding set of the workload.
    assert_eq!(field(&out, "sudo_caps"), DOCKER_CAPS, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proc_and_sys_paths_masked() {
    let Some(env) = test_env("proc_and_sys_paths_masked") else {
        return;
    };
    let masked = [
        "/proc/acpi",
        "/proc/asound",
        "/proc/kcore",
        "/proc/keys",
        "/proc/latency_stats",
        "/proc/timer_list",
        "/proc/timer_stats",
        "/proc/sched_debug",
        "/proc/scsi",
        "/sys/firmware",
        "/sys/devices/virtual/powercap",
    ];
    let script = format!(
        "for p in {}; do\n\
           if [ -d $p ]; then echo \"$p=dir:$(ls -A $p | wc -l)\";\n\
           elif [ -e $p ]; then echo \"$p=file:$(stat -c %t:%T $p):$(wc -c < $p)\";\n\
           else echo \"$p=missing\"; fi\n\
         done",
        masked.join(" ")
    );
    let mut sandbox = TestSandbox::script(&env, &script, &Limits::default());
    let out = sandbox.run().await;

    for path in masked {
        let inside = field(&out, path);
        match fs::metadata(path) {
            Ok(meta) if meta.is_dir() => assert_eq!(inside, "dir:0", "{path}"),
            // /dev/null is character device 1:3 and empty.
            Ok(_) => assert_eq!(inside, "file:1:3:0", "{path}"),
            Err(_) => assert_eq!(inside, "missing", "{path}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proc_paths_read_only() {
    let Some(env) = test_env("proc_paths_read_only") else {
        return;
    };
    let read_only = [
        "/proc/bus",
        "/proc/fs",
        "/proc/irq",
        "/proc/sys",
        "/proc/sysrq-trigger",
    ];
    let script = format!(
        "for p in {}; do echo \"$p=$(awk -v p=$p '$5 == p {{ split($6, o, \",\"); print o[1] }}' /proc/self/mountinfo)\"; done\n\
         echo \"write_sys=$( (echo 1 > /proc/sys/kernel/ns_last_pid) 2>&1)\"\n\
         echo \"write_sysrq=$( (echo h > /proc/sysrq-trigger) 2>&1)\"\n\
         echo \"sys=$(awk '$5 == \"/sys\" {{ split($6, o, \",\"); print o[1] }}' /proc/self/mountinfo)\"",
        read_only.join(" ")
    );
    let mut sandbox = TestSandbox::script(&env, &script, &Limits::default());
    let out = sandbox.run().await;

    for path in read_only {
        if Path::new(path).exists() {
            assert_eq!(
                field(&out, path),
                "ro",
                "{path} is not a read-only mount:\n{out}"
            );
        }
    }
    assert!(
        field(&out, "write_sys").contains("Read-only file system"),
        "{out}"
    );
    if Path::new("/proc/sysrq-trigger").exists() {
        assert!(
            field(&out, "write_sysrq").contains("Read-only file system"),
            "{out}"
        );
    }
    assert_eq!(field(&out, "sys"), "ro", "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_is_minimal() {
    let Some(env) = test_env("dev_is_minimal") else {
        return;
    };
    let script = "echo \"dev=$(ls -A /dev | sort | tr '\\n' ' ')\"\n\
                  for d in null zero full random urandom tty; do echo \"$d=$(stat -c %t:%T /dev/$d)\"; done\n\
                  echo x > /dev/null && echo null_write=ok\n\
                  echo \"zero_read=$(head -c 4 /dev/zero | od -An -tx1 | tr -d ' ')\"\n\
                  echo \"pts=$(ls -A /dev/pts | tr '\\n' ' ')\"\n\
                  python3 -c 'import os; m, s = os.openpty(); print(\"pty=\" + os.ttyname(s))'\n\
                  echo x > /dev/shm/probe && echo shm_write=ok\n\
                  echo \"ptmx=$(readlink /dev/ptmx)\"\n\
                  echo \"fd=$(readlink /dev/fd)\"\n\
                  echo \"image_node=$(cat /image-null 2>&1)\"";
    let sandbox_setup = |sandbox: &TestSandbox| {
        // A device node in the upper directory, as an image layer could carry one: the
        // overlay is nodev, so opening it must fail.
        let path = std::ffi::CString::new(sandbox.upper("image-null").to_str().unwrap()).unwrap();
        // SAFETY: mknod with a valid path; creates character device 1:3 (/dev/null).
        let ret = unsafe { libc::mknod(path.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)) };
        assert_eq!(ret, 0, "mknod: {}", std::io::Error::last_os_error());
    };
    let mut sandbox = TestSandbox::script(&env, script, &Limits::default());
    sandbox_setup(&sandbox);
    let out = sandbox.run().await;

    assert_eq!(
        field(&out, "dev").trim(),
        "fd full null ptmx pts random shm stderr stdin stdout tty urandom zero"
    );
    for (device, numbers) in [
        ("null", "1:3"),
        ("zero", "1:5"),
        ("full", "1:7"),
        ("random", "1:8"),
        ("urandom", "1:9"),
        ("tty", "5:0"),
    ] {
        assert_eq!(field(&out, device), numbers, "/dev/{device}");
    }
    assert_eq!(field(&out, "null_write"), "ok");
    assert_eq!(field(&out, "zero_read"), "00000000");
    // A new devpts instance: none of the host's terminals.
    assert_eq!(field(&out, "pts").trim(), "ptmx");
    assert_eq!(field(&out, "pty"), "/dev/pts/0");
    assert_eq!(field(&out, "shm_write"), "ok");
    assert_eq!(field(&out, "ptmx"), "pts/ptmx");
    assert_eq!(field(&out, "fd"), "/proc/self/fd");
    assert!(
        field(&out, "image_node").contains("Permission denied"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capabilities_are_dockers() {
    let Some(env) = test_env("capabilities_are_dockers") else {
        return;
    };
    let script = format!(
        "for c in CapInh CapPrm CapEff CapBnd CapAmb NoNewPrivs; do echo \"root_$c=$(grep \"^$c:\" /proc/self/status | cut -f2)\"; done\n\
         {AS_USER} sh -c 'for c in CapInh CapPrm CapEff CapBnd CapAmb; do echo \"user_$c=$(grep \"^$c:\" /proc/self/status | cut -f2)\"; done'"
    );
    let mut sandbox = TestSandbox::script(&env, &script, &Limits::default());
    let out = sandbox.run().await;

    let zero = "0000000000000000";
    assert_eq!(field(&out, "root_CapEff"), DOCKER_CAPS);
    assert_eq!(field(&out, "root_CapPrm"), DOCKER_CAPS);
    assert_eq!(field(&out, "root_CapBnd"), DOCKER_CAPS);
    assert_eq!(field(&out, "root_CapInh"), zero);
    assert_eq!(field(&out, "root_CapAmb"), zero);
    // sudo needs no_new_privs off.
    assert_eq!(field(&out, "root_NoNewPrivs"), "0");

    assert_eq!(field(&out, "user_CapEff"), zero);
    assert_eq!(field(&out, "user_CapPrm"), zero);
    assert_eq!(field(&out, "user_CapInh"), zero);
    assert_eq!(field(&out, "user_CapAmb"), zero);
    assert_eq!(field(&out, "user_CapBnd"), DOCKER_CAPS);
}

/// Python that makes raw system calls and prints `name=errno` (0 for success).
const SYSCALL_PROBE: &str = r#"
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long

def call(name, nr, *args):
    ret = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) for a in args])
    if ret == 0 and name.startswith("clone"):
        os._exit(0)
    if ret > 0 and name.startswith("clone"):
        os.waitpid(ret, 0)
    print(f"{name}={0 if ret >= 0 else ctypes.get_errno()}")

CLONE_NEWUSER, CLONE_NEWNET, SIGCHLD = 0x10000000, 0x40000000, 17
call("clone_newuser", 56, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0)
call("clone_newnet", 56, CLONE_NEWNET | SIGCHLD, 0, 0, 0, 0)
call("clone_plain", 56, SIGCHLD, 0, 0, 0, 0)
args = ctypes.create_string_buffer(88)
ctypes.c_uint64.from_buffer(args, 32).value = SIGCHLD
call("clone3", 435, ctypes.addressof(args), 88)
call("unshare", 272, CLONE_NEWUSER)
call("setns", 308, -1, 0)
call("mount", 165, 0, 0, 0, 0, 0)
call("personality_query", 135, 0xffffffff)
call("personality_no_aslr", 135, 0x0040000)
call("keyctl", 250, 0, 0, 0, 0, 0)
call("socket_vsock", 41, 40, 1, 0)
call("socket_inet", 41, 2, 1, 0)
pid = os.fork()
if pid == 0:
    os._exit(0)
os.waitpid(pid, 0)
print("fork=0")
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seccomp_refuses_namespaces() {
    let Some(env) = test_env("seccomp_refuses_namespaces") else {
        return;
    };
    let script = format!(
        "echo \"seccomp=$(grep '^Seccomp:' /proc/self/status | cut -f2)\"\n\
         unshare -U true 2>/dev/null; echo \"unshare_user_cmd=$?\"\n\
         unshare -n true 2>/dev/null; echo \"unshare_net_cmd=$?\"\n\
         unshare -m true 2>/dev/null; echo \"unshare_mount_cmd=$?\"\n\
         python3 - <<'EOF'\n{SYSCALL_PROBE}\nEOF"
    );
    let mut sandbox = TestSandbox::script(&env, &script, &Limits::default());
    let out = sandbox.run().await;

    assert_eq!(field(&out, "seccomp"), "2", "{out}");
    for command in ["unshare_user_cmd", "unshare_net_cmd", "unshare_mount_cmd"] {
        assert_ne!(field(&out, command), "0", "{command}:\n{out}");
    }
    let eperm = libc::EPERM.to_string();
    for call in [
        "clone_newuser",
        "clone_newnet",
        "unshare",
        "setns",
        "mount",
        "keyctl",
    ] {
        assert_eq!(field(&out, call), eperm, "{call}:\n{out}");
    }
    assert_eq!(field(&out, "clone3"), libc::ENOSYS.to_string(), "{out}");
    assert_eq!(field(&out, "clone_plain"), "0", "{out}");
    assert_eq!(field(&out, "personality_query"), "0", "{out}");
    assert_eq!(field(&out, "personality_no_aslr"), eperm, "{out}");
    assert_eq!(field(&out, "socket_vsock"), eperm, "{out}");
    assert_eq!(field(&out, "socket_inet"), "0", "{out}");
    assert_eq!(field(&out, "fork"), "0", "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn landlock_keeps_workload_from_init() {
    let Some(env) = test_env("landlock_keeps_workload_from_init") else {
        return;
    };
    let script = "kill -0 1 2>/dev/null; echo \"signal_init=$?\"\n\
                  sleep 30 & child=$!\n\
                  kill -0 $child; echo \"signal_own_child=$?\"\n\
                  kill $child; wait $child 2>/dev/null\n\
                  python3 -c 'import ctypes; l = ctypes.CDLL(None, use_errno=True); r = l.ptrace(16, 1, 0, 0); print(\"ptrace_init=%d\" % (0 if r == 0 else ctypes.get_errno()))'\n\
                  echo \"environ_init=$(cat /proc/1/environ 2>&1 | tr -d '\\0' | head -c 80)\"";
    let mut sandbox = TestSandbox::script(&env, script, &Limits::default());
    let out = sandbox.run().await;

    // Root in the sandbox has CAP_KILL and the same uid as PID 1, so only the Landlock
    // signal scope can refuse this.
    assert_eq!(field(&out, "signal_init"), "1", "{out}");
    assert_eq!(field(&out, "signal_own_child"), "0", "{out}");
    assert_eq!(field(&out, "ptrace_init"), libc::EPERM.to_string(), "{out}");
    // init is not dumpable, so its environment (the daemon configuration) stays closed.
    assert!(
        field(&out, "environ_init").contains("Permission denied"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cgroup_limits_in_force() {
    let Some(env) = test_env("cgroup_limits_in_force") else {
        return;
    };
    let limits = Limits {
        cpus: 1,
        memory_bytes: 256 << 20,
        pids: 64,
    };
    let script = r#"
echo "cgroup=$(grep -E '^[0-9]+:memory:' /proc/self/cgroup)"
python3 - <<'EOF'
import os, time
children, error = [], 0
try:
    for _ in range(200):
        pid = os.fork()
        if pid == 0:
            time.sleep(60)
            os._exit(0)
        children.append(pid)
except OSError as e:
    error = e.errno
print(f"forks={len(children)}")
print(f"fork_errno={error}")
for pid in children:
    os.kill(pid, 9)
for pid in children:
    os.waitpid(pid, 0)
EOF
python3 -c 'b = bytearray(400 * 1024 * 1024)'
echo "oom_status=$?"
touch /done
sleep 60
"#;
    let mut sandbox = TestSandbox::script(&env, script, &limits);
    let process = sandbox.start().await.expect("start sandbox");

    // PID 1 and everything below it are in the sandbox's cgroups.
    let pids = sandbox.cgroups.pids().unwrap();
    assert!(
        pids.contains(&process.pid),
        "PID 1 {} not in {pids:?}",
        process.pid
    );
    for dir in sandbox.cgroups.dirs() {
        let procs = fs::read_to_string(dir.join("cgroup.procs")).unwrap();
        assert!(
            procs.lines().any(|l| l == process.pid.to_string()),
            "{}",
            dir.display()
        );
    }
    let dir_of = |file: &str| {
        sandbox
            .cgroups
            .dirs()
            .into_iter()
            .find(|d| d.join(file).exists())
            .unwrap_or_else(|| panic!("no cgroup has {file}"))
            .join(file)
    };
    let read = |file: &str| fs::read_to_string(dir_of(file)).unwrap().trim().to_string();
    assert_eq!(read("memory.limit_in_bytes"), (256u64 << 20).to_string());
    assert_eq!(read("pids.max"), "64");
    assert_eq!(read("cpu.cfs_quota_us"), "100000");
    assert_eq!(read("cpu.cfs_period_us"), "100000");

    assert!(wait_until(Duration::from_secs(60), || sandbox
        .upper("done")
        .exists()));
    let out = sandbox.output();
    // The cgroup namespace is rooted at the sandbox's group.
    assert_eq!(field(&out, "cgroup").rsplit(':').next(), Some("/"), "{out}");
    let forks: u64 = field(&out, "forks").parse().unwrap();
    assert!(forks < 64, "{forks} forks under pids.max 64");
    assert_eq!(field(&out, "fork_errno"), libc::EAGAIN.to_string(), "{out}");
    // The memory cgroup's OOM killer ends the allocation with SIGKILL.
    assert_eq!(field(&out, "oom_status"), "137", "{out}");
    assert!(sandbox.cgroups.memory_usage().unwrap() > 0);
    assert!(sandbox.cgroups.cpu_usage().unwrap() > Duration::ZERO);

    spawn::stop(&process, Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cgroup_view_shows_own_limits() {
    let Some(env) = test_env("cgroup_view_shows_own_limits") else {
        return;
    };
    let limits = Limits {
        cpus: 1,
        memory_bytes: 256 << 20,
        pids: 64,
    };
    // Works for both layouts: v1 has one directory per hierarchy, v2 the files themselves.
    let script = r#"
cd /sys/fs/cgroup
echo "entries=$(ls | tr '\n' ' ')"
memory=$(cat memory/memory.limit_in_bytes 2>/dev/null || cat memory.max)
echo "memory_limit=$memory"
echo "pids_max=$(cat pids/pids.max 2>/dev/null || cat pids.max)"
procs=$(cat memory/cgroup.procs 2>/dev/null || cat cgroup.procs)
echo "$procs" | grep -qx $$ && echo own_process=listed
echo "view=$(awk '$5 == "/sys/fs/cgroup" { split($6, o, ","); print $9 ":" o[1] }' /proc/self/mountinfo)"
echo "memory_root=$(awk '$5 == "/sys/fs/cgroup/memory" || ($5 == "/sys/fs/cgroup" && $9 == "cgroup2") { print $4 }' /proc/self/mountinfo)"
echo "write=$( (echo 1 > pids/pids.max) 2>&1 || (echo 1 > pids.max) 2>&1)"
echo "mkdir=$(mkdir memory/child 2>&1 || mkdir child 2>&1)"
"#;
    let mut sandbox = TestSandbox::script(&env, script, &limits);
    let out = sandbox.run().await;

    let dirs = sandbox.cgroups.dirs();
    if dirs.len() > 1 {
        let mut names: Vec<String> = dirs
            .iter()
            .map(|dir| {
                let relative = dir.strip_prefix("/sys/fs/cgroup").unwrap();
                relative
                    .iter()
                    .next()
                    .unwrap()
                    .to_string_lossy()
                    .into_owned()
            })
            // Only the hierarchies with limits: cpuacct and freezer hold none.
            .filter(|name| {
                name.split(',')
                    .any(|controller| ["cpu", "memory", "pids"].contains(&controller))
            })
            .collect();
        names.sort();
        assert_eq!(field(&out, "entries").trim(), names.join(" "), "{out}");
        assert_eq!(field(&out, "view"), "tmpfs:ro", "{out}");
    } else {
        assert_eq!(field(&out, "view"), "cgroup2:ro", "{out}");
    }
    assert_eq!(
        field(&out, "memory_limit"),
        (256u64 << 20).to_string(),
        "{out}"
    );
    assert_eq!(field(&out, "pids_max"), "64", "{out}");
    assert_eq!(field(&out, "own_process"), "listed", "{out}");
    // The cgroup namespace starts at the sandbox's group, and so does the view.
    assert_eq!(field(&out, "memory_root"), "/", "{out}");
    assert!(
        field(&out, "write").contains("Read-only file system"),
        "{out}"
    );
    assert!(
        field(&out, "mkdir").contains("Read-only file system"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_has_only_loopback() {
    let Some(env) = test_env("network_has_only_loopback") else {
        return;
    };
    let script = r#"
echo "interfaces=$(ls /sys/class/net | tr '\n' ' ')"
echo "lo_flags=$(cat /sys/class/net/lo/flags)"
echo "routes=$(tail -n +2 /proc/net/route | wc -l)"
python3 - <<'EOF'
import socket
server = socket.socket()
server.bind(("127.0.0.1", 0))
server.listen(1)
client = socket.create_connection(server.getsockname(), timeout=5)
conn, _ = server.accept()
client.sendall(b"ping")
print("loopback=" + conn.recv(4).decode())
EOF
"#;
    let mut sandbox = TestSandbox::script(&env, script, &Limits::default());
    let out = sandbox.run().await;

    assert_eq!(field(&out, "interfaces").trim(), "lo");
    let flags = u32::from_str_radix(field(&out, "lo_flags").trim_start_matches("0x"), 16).unwrap();
    assert_eq!(
        flags & libc::IFF_UP as u32,
        libc::IFF_UP as u32,
        "lo is down"
    );
    assert_eq!(field(&out, "routes"), "0");
    assert_eq!(field(&out, "loopback"), "ping");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostname_set_and_resolvable() {
    let Some(env) = test_env("hostname_set_and_resolvable") else {
        return;
    };
    let script = "echo \"hostname=$(hostname)\"\n\
                  echo \"etc_hostname=$(cat /etc/hostname)\"\n\
                  echo \"resolved=$(getent hosts $(hostname) | awk '{print $1}')\"\n\
                  echo \"write_hosts=$( (echo x >> /etc/hosts) 2>&1)\"\n\
                  for f in hosts hostname resolv.conf; do echo \"mount_$f=$(awk -v p=/etc/$f '$5 == p { split($6, o, \",\"); print o[1] }' /proc/self/mountinfo)\"; done";
    let mut sandbox = TestSandbox::script(&env, script, &Limits::default());
    let out = sandbox.run().await;

    let hostname = sandbox.spec.hostname.clone();
    assert_eq!(field(&out, "hostname"), hostname);
    assert_eq!(field(&out, "etc_hostname"), hostname);
    assert_eq!(field(&out, "resolved"), "127.0.1.1");
    // The file belongs to host root, so the write fails on permissions before the
    // read-only mount is checked.
    assert!(
        field(&out, "write_hosts").contains("Permission denied"),
        "{out}"
    );
    for file in ["hosts", "hostname", "resolv.conf"] {
        assert_eq!(
            field(&out, &format!("mount_{file}")),
            "ro",
            "/etc/{file}:\n{out}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_files_unreachable() {
    let Some(env) = test_env("host_files_unreachable") else {
        return;
    };
    // The sandbox's temporary directory and the rootfs exist on the host only.
    let mut sandbox = TestSandbox::script(&env, "", &Limits::default());
    let marker = sandbox.temp_dir().display().to_string();
    let rootfs = env.rootfs.display().to_string();
    let script = format!(
        "exec > /out 2>&1\n\
         test -e {marker}; echo \"marker=$?\"\n\
         test -e {rootfs}; echo \"rootfs=$?\"\n\
         test -e /proc/1/root{marker}; echo \"proc1_marker=$?\"\n\
         echo \"proc1_root=$(ls /proc/1/root 2>&1 | head -1)\"\n\
         cd /; cd ..; echo \"dotdot=$(pwd)\"\n\
         echo \"root_inode=$(stat -c %i /)\"\n\
         echo \"dotdot_inode=$(stat -c %i /..)\"\n\
         echo \"root_fs=$(awk '$5 == \"/\" {{ print $9 }}' /proc/self/mountinfo)\""
    );
    sandbox.spec.init_command = Some(vec!["/bin/bash".into(), "-c".into(), script]);
    let out = sandbox.run().await;

    assert_eq!(field(&out, "marker"), "1", "{out}");
    assert_eq!(field(&out, "rootfs"), "1", "{out}");
    assert_eq!(field(&out, "proc1_marker"), "1", "{out}");
    assert!(
        field(&out, "proc1_root").contains("Permission denied"),
        "{out}"
    );
    assert_eq!(field(&out, "dotdot"), "/");
    assert_eq!(field(&out, "root_inode"), field(&out, "dotdot_inode"));
    assert_eq!(field(&out, "root_fs"), "overlay", "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandbox_log_trimmed_at_start() {
    let Some(env) = test_env("sandbox_log_trimmed_at_start") else {
        return;
    };
    let mut sandbox = TestSandbox::script(&env, "echo started", &Limits::default());
    let log = sandbox.spec.run_dir.join(LOG_FILE);
    let old_line = "an old line of the sandbox log, from an earlier start of the sandbox\n";
    fs::write(&log, old_line.repeat((3 << 20) / old_line.len())).unwrap();

    let out = sandbox.run().await;
    assert_eq!(out, "started\n");
    let size = fs::metadata(&log).unwrap().len();
    assert!(size <= LOG_LIMIT, "the log has {size} bytes");
    assert!(size > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphans_reaped_by_init() {
    let Some(env) = test_env("orphans_reaped_by_init") else {
        return;
    };
    // The subshell exits at once, so its sleep becomes an orphan of PID 1.
    let script = "(sleep 0.2 &)\n\
                  sleep 1\n\
                  echo \"zombies=$(ps -eo stat= | grep -c '^Z')\"\n\
                  echo \"init=$(ps -o comm= -p 1)\"";
    let mut sandbox = TestSandbox::script(&env, script, &Limits::default());
    let out = sandbox.run().await;

    assert_eq!(field(&out, "zombies"), "0", "{out}");
    assert_eq!(field(&out, "init"), "daytona-daemon", "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandbox_outlives_runner_and_is_found_again() {
    let Some(env) = test_env("sandbox_outlives_runner_and_is_found_again") else {
        return;
    };
    let mut sandbox = TestSandbox::new(&env, Some(&["/bin/sleep", "60"]), &Limits::default());
    let process = sandbox.start().await.expect("start sandbox");

    // PID 1 is not a child of this process, and has a session of its own, so neither the
    // runner's exit nor a signal to its process group reaches it.
    let stat = fs::read_to_string(format!("/proc/{}/stat", process.pid)).unwrap();
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    let (ppid, session): (u32, i32) = (fields[1].parse().unwrap(), fields[3].parse().unwrap());
    assert_ne!(ppid, std::process::id());
    assert_eq!(session, process.pid);

    // A restarted runner finds it from what it stored.
    let stored = serde_json::to_string(&process).unwrap();
    let found: SandboxProcess = serde_json::from_str(&stored).unwrap();
    assert!(spawn::is_running(&found));
    let other_start = SandboxProcess {
        start_time: process.start_time + 1,
        ..process.clone()
    };
    assert!(!spawn::is_running(&other_start));
    let other_boot = SandboxProcess {
        boot_id: "00000000-0000-0000-0000-000000000000".into(),
        ..process.clone()
    };
    assert!(!spawn::is_running(&other_boot));

    spawn::stop(&found, Duration::from_secs(5)).await.unwrap();
    assert!(!spawn::is_running(&found));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_leaves_no_process_mount_or_cgroup() {
    let Some(env) = test_env("stop_leaves_no_process_mount_or_cgroup") else {
        return;
    };
    let mut sandbox = TestSandbox::new(&env, Some(&["/bin/sleep", "1000"]), &Limits::default());
    let process = sandbox.start().await.expect("start sandbox");
    assert!(spawn::is_running(&process));

    // The toolbox socket is on the host, owner-only, and accepts connections while the
    // sandbox runs (they queue until the toolbox server accepts).
    let socket = sandbox.spec.run_dir.join(TOOLBOX_SOCKET);
    let meta = fs::metadata(&socket).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    UnixStream::connect(&socket).expect("connect to the toolbox socket");

    // The overlay and the layer mounts exist only in the sandbox's mount namespace.
    let run_dir = sandbox.spec.run_dir.display().to_string();
    let host_mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !host_mounts.contains(&run_dir),
        "sandbox mount visible on the host"
    );

    let started = Instant::now();
    spawn::stop(&process, Duration::from_secs(10))
        .await
        .unwrap();
    // init forwards SIGTERM, so the grace period is not used up.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "stop took {:?}",
        started.elapsed()
    );
    assert!(!spawn::is_running(&process));

    assert!(
        wait_until(Duration::from_secs(5), || sandbox
            .cgroups
            .pids()
            .unwrap()
            .is_empty()),
        "processes left: {:?}",
        sandbox.cgroups.pids()
    );
    sandbox.cgroups.remove().unwrap();
    assert!(!sandbox.cgroups.exists());
    let host_mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !host_mounts.contains(&run_dir),
        "sandbox mount left on the host"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_kills_processes_that_ignore_sigterm() {
    let Some(env) = test_env("stop_kills_processes_that_ignore_sigterm") else {
        return;
    };
    let script = "trap '' TERM; sleep 1000 & wait";
    let mut sandbox =
        TestSandbox::new(&env, Some(&["/bin/bash", "-c", script]), &Limits::default());
    let process = sandbox.start().await.expect("start sandbox");

    let started = Instant::now();
    spawn::stop(&process, Duration::from_millis(500))
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "stop took {:?}",
        started.elapsed()
    );
    assert!(!spawn::is_running(&process));
    assert!(
        wait_until(Duration::from_secs(5), || sandbox
            .cgroups
            .pids()
            .unwrap()
            .is_empty()),
        "processes left: {:?}",
        sandbox.cgroups.pids()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_errors_reach_runner() {
    let Some(env) = test_env("start_errors_reach_runner") else {
        return;
    };

    // The setup stage fails before the fork.
    let mut sandbox = TestSandbox::new(&env, Some(&["/bin/true"]), &Limits::default());
    sandbox.spec.layers = vec![sandbox.temp_dir().join("no-such-layer")];
    match sandbox.start().await {
        Err(SpawnError::Setup { message, .. }) => {
            assert!(message.contains("failed to ID-map layer"), "{message}")
        }
        other => panic!("expected a setup error, got {other:?}"),
    }

    // PID 1 fails after the fork: the daemon cannot be bound into the sandbox.
    let mut sandbox = TestSandbox::new(&env, Some(&["/bin/true"]), &Limits::default());
    fs::create_dir_all(sandbox.upper("usr/local/bin/daytona-daemon")).unwrap();
    match sandbox.start().await {
        Err(SpawnError::Setup { message, .. }) => {
            assert!(
                message.contains("/usr/local/bin/daytona-daemon"),
                "{message}"
            )
        }
        other => panic!("expected a PID 1 error, got {other:?}"),
    }
    assert!(
        wait_until(Duration::from_secs(5), || sandbox
            .cgroups
            .pids()
            .unwrap()
            .is_empty()),
        "a failed start left processes: {:?}",
        sandbox.cgroups.pids()
    );

    // The daemon binary itself is missing.
    let mut sandbox = TestSandbox::new(&env, Some(&["/bin/true"]), &Limits::default());
    sandbox.spec.daemon_binary = sandbox.temp_dir().join("no-such-daemon");
    assert!(matches!(
        sandbox.start().await,
        Err(SpawnError::Exec { .. })
    ));
}

/// Prints the median time of `spawn::start` (runner call to `init` running) over 50 starts.
/// Run with `cargo test -p daytona-isolation --release --test sandbox start_latency --
/// --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement, not a check"]
async fn start_latency() {
    let Some(env) = test_env("start_latency") else {
        return;
    };
    let mut start_times = Vec::new();
    let mut full_times = Vec::new();
    for _ in 0..50 {
        let full = Instant::now();
        let mut sandbox = TestSandbox::new(&env, Some(&["/bin/true"]), &Limits::default());
        let started = Instant::now();
        let process = sandbox.start().await.expect("start sandbox");
        start_times.push(started.elapsed());
        full_times.push(full.elapsed());
        spawn::wait_exit(&process).await.unwrap();
    }
    start_times.sort();
    full_times.sort();
    eprintln!(
        "spawn::start median {:?} (min {:?}, max {:?}); with run dir and cgroups {:?}",
        start_times[25], start_times[0], start_times[49], full_times[25]
    );
}

/// Sends one HTTP/1.1 request over the toolbox socket and returns the response.
fn toolbox_request(socket: &Path, method: &str, path: &str, body: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = UnixStream::connect(socket).expect("connect to the toolbox socket");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: sandbox\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

/// Returns the children of a process, read from `/proc/<pid>/task/<pid>/children`.
fn children(pid: i32) -> Vec<i32> {
    fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn toolbox_served_confined_and_restarted() {
    let Some(env) = test_env("toolbox_served_confined_and_restarted") else {
        return;
    };
    let mut sandbox = TestSandbox::new(&env, None, &Limits::default());
    let process = sandbox.start().await.expect("start sandbox");
    let socket = sandbox.spec.run_dir.join(TOOLBOX_SOCKET);

    let response = toolbox_request(&socket, "GET", "/version", "");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");

    // Workloads run as the sandbox user with the confinement applied.
    let command =
        r#"{"command": "grep -E '^(Uid|CapEff|CapBnd|Seccomp|NoNewPrivs):' /proc/self/status"}"#;
    let response = toolbox_request(&socket, "POST", "/process/execute", command);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains(r"Uid:\t1000"), "{response}");
    assert!(
        response.contains(r"CapEff:\t0000000000000000"),
        "{response}"
    );
    assert!(
        response.contains(&format!(r"CapBnd:\t{DOCKER_CAPS}")),
        "{response}"
    );
    assert!(response.contains(r"Seccomp:\t2"), "{response}");
    assert!(response.contains(r"NoNewPrivs:\t0"), "{response}");

    // PID 1 restarts a toolbox server that dies; the socket keeps its backlog meanwhile.
    let toolbox = children(process.pid);
    assert_eq!(toolbox.len(), 1, "children of PID 1: {toolbox:?}");
    // SAFETY: kill with a pid that belongs to this test's sandbox.
    assert_eq!(unsafe { libc::kill(toolbox[0], libc::SIGKILL) }, 0);
    assert!(
        wait_until(Duration::from_secs(5), || {
            let now = children(process.pid);
            now.len() == 1 && now[0] != toolbox[0]
        }),
        "toolbox server not restarted"
    );
    let response = toolbox_request(&socket, "GET", "/version", "");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(spawn::is_running(&process));

    spawn::stop(&process, Duration::from_secs(5)).await.unwrap();
}
