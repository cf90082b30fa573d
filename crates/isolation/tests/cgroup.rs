//! Sandbox cgroups on fixture trees (temporary directories with the control files and a
//! fake mountinfo) for both cgroup versions, and on the live host.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::wait_until;
use daytona_isolation::cgroup::{
    CgroupError, CgroupManager, CgroupVersion, HostPaths, Limits, SERVER_LEAF,
};
use tempfile::TempDir;

const LIMITS: Limits = Limits {
    cpus: 2,
    memory_bytes: 512 << 20,
    pids: 100,
};

/// A fake host: `mountinfo`, `cgroup` (for /proc/self/cgroup) and a cgroup tree at `cg`.
struct Fixture {
    dir: TempDir,
}

impl Fixture {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("cg")
    }

    fn host(&self) -> HostPaths {
        HostPaths {
            cgroup_root: self.root(),
            mountinfo: self.dir.path().join("mountinfo"),
            self_cgroup: self.dir.path().join("cgroup"),
        }
    }

    /// Writes mountinfo lines for `(mount point below cg, fs type, super options)`.
    fn mounts(&self, mounts: &[(&str, &str, &str)]) {
        let mut text = String::new();
        for (index, (point, fs_type, options)) in mounts.iter().enumerate() {
            let path = self.root().join(point);
            let path = path.to_str().unwrap().trim_end_matches('/');
            text.push_str(&format!(
                "{} 1 0:{index} / {path} rw,relatime shared:{index} - {fs_type} {fs_type} rw,{options}\n",
                30 + index
            ));
        }
        fs::write(self.dir.path().join("mountinfo"), text).unwrap();
    }

    fn self_cgroup(&self, content: &str) {
        fs::write(self.dir.path().join("cgroup"), content).unwrap();
    }

    fn write(&self, relative: &str, content: &str) {
        let path = self.root().join(relative);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, content).unwrap();
    }

    fn read(&self, relative: &str) -> String {
        fs::read_to_string(self.root().join(relative))
            .unwrap_or_else(|err| panic!("{relative}: {err}"))
    }

    /// Creates a v1 host like the development machine: a tmpfs with one mount per controller
    /// (cpu and cpuacct together), the memory cgroup below a service path, and a cgroup2
    /// mount at `unified` without controllers.
    fn v1() -> Self {
        let fixture = Self::new();
        fixture.mounts(&[
            ("", "tmpfs", "mode=755"),
            ("cpu,cpuacct", "cgroup", "cpu,cpuacct"),
            ("memory", "cgroup", "memory"),
            ("pids", "cgroup", "pids"),
            ("freezer", "cgroup", "freezer"),
            ("unified", "cgroup2", "nsdelegate"),
        ]);
        fixture.self_cgroup("5:freezer:/\n4:pids:/\n3:memory:/svc/runner\n2:cpu,cpuacct:/\n0::/\n");
        for dir in ["cpu,cpuacct", "memory/svc/runner", "pids", "freezer"] {
            fs::create_dir_all(fixture.root().join(dir)).unwrap();
        }
        fixture.write("unified/cgroup.controllers", "");
        fixture
    }

    /// Creates a v2 host whose runner lives in `/runner.service`, with cpu, memory and pids
    /// delegated, and this process in the service's own cgroup.
    fn v2() -> Self {
        let fixture = Self::new();
        fixture.mounts(&[("", "cgroup2", "nsdelegate")]);
        fixture.self_cgroup("0::/runner.service\n");
        fixture.write("cgroup.controllers", "cpuset cpu io memory hugetlb pids");
        fixture.write("runner.service/cgroup.controllers", "cpu memory pids");
        fixture.write(
            "runner.service/cgroup.procs",
            &format!("{}\n", std::process::id()),
        );
        fixture.write("runner.service/cgroup.subtree_control", "");
        fixture
    }
}

#[test]
fn v1_detected_with_unified_mount_present() {
    let fixture = Fixture::v1();
    let manager = CgroupManager::detect_in(&fixture.host(), "sandboxes").unwrap();

    assert_eq!(manager.version(), CgroupVersion::V1);
    let root = fixture.root();
    assert_eq!(
        manager.parent_dirs(),
        vec![
            root.join("cpu,cpuacct/sandboxes"),
            root.join("memory/svc/runner/sandboxes"),
            root.join("pids/sandboxes"),
            root.join("freezer/sandboxes"),
        ]
    );
}

#[test]
fn unified_without_controllers_is_not_v2() {
    // /sys/fs/cgroup itself is cgroup2, but without cpu and memory: not usable as v2, and
    // with no v1 mounts either, detection fails with a message naming the controller.
    let fixture = Fixture::new();
    fixture.mounts(&[("", "cgroup2", "nsdelegate")]);
    fixture.self_cgroup("0::/\n");
    fixture.write("cgroup.controllers", "hugetlb pids");

    let err = CgroupManager::detect_in(&fixture.host(), "sandboxes").unwrap_err();
    assert!(
        matches!(
            err,
            CgroupError::MissingController {
                controller: "cpu",
                ..
            }
        ),
        "{err:?}"
    );

    // An empty cgroup.controllers is not v2 either.
    fixture.write("cgroup.controllers", "");
    assert!(CgroupManager::detect_in(&fixture.host(), "sandboxes").is_err());
}

#[test]
fn v1_missing_controller_reported() {
    let fixture = Fixture::v1();
    fixture.mounts(&[
        ("", "tmpfs", "mode=755"),
        ("cpu,cpuacct", "cgroup", "cpu,cpuacct"),
        ("memory", "cgroup", "memory"),
        ("pids", "cgroup", "pids"),
    ]);
    let err = CgroupManager::detect_in(&fixture.host(), "sandboxes").unwrap_err();
    assert!(
        matches!(
            err,
            CgroupError::MissingController {
                controller: "freezer",
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn v1_create_limits_freeze_kill_remove() {
    let fixture = Fixture::v1();
    let manager = CgroupManager::detect_in(&fixture.host(), "sandboxes").unwrap();

    // memsw exists only where swap accounting is on; a fixture group that already exists
    // (a retried create) carries it.
    fixture.write(
        "memory/svc/runner/sandboxes/box1/memory.memsw.limit_in_bytes",
        "0",
    );
    let cgroup = manager.create("box1", &LIMITS).unwrap();

    assert_eq!(
        fixture.read("cpu,cpuacct/sandboxes/box1/cpu.cfs_period_us"),
        "100000"
    );
    assert_eq!(
        fixture.read("cpu,cpuacct/sandboxes/box1/cpu.cfs_quota_us"),
        "200000"
    );
    let memory = (512u64 << 20).to_string();
    assert_eq!(
        fixture.read("memory/svc/runner/sandboxes/box1/memory.limit_in_bytes"),
        memory
    );
    assert_eq!(
        fixture.read("memory/svc/runner/sandboxes/box1/memory.memsw.limit_in_bytes"),
        memory
    );
    assert_eq!(fixture.read("pids/sandboxes/box1/pids.max"), "100");
    assert_eq!(cgroup.dirs().len(), 4);

    cgroup
        .set_limits(&Limits {
            cpus: 1,
            memory_bytes: 1 << 30,
            pids: 2048,
        })
        .unwrap();
    assert_eq!(
        fixture.read("cpu,cpuacct/sandboxes/box1/cpu.cfs_quota_us"),
        "100000"
    );
    assert_eq!(fixture.read("pids/sandboxes/box1/pids.max"), "2048");

    cgroup.freeze().unwrap();
    assert_eq!(
        fixture.read("freezer/sandboxes/box1/freezer.state"),
        "FROZEN"
    );
    cgroup.thaw().unwrap();
    assert_eq!(
        fixture.read("freezer/sandboxes/box1/freezer.state"),
        "THAWED"
    );

    // kill_all sends SIGKILL to every pid the freezer group lists.
    let mut sleeper = Command::new("sleep").arg("60").spawn().unwrap();
    fixture.write(
        "freezer/sandboxes/box1/cgroup.procs",
        &format!("{}\n", sleeper.id()),
    );
    cgroup.kill_all().unwrap();
    let status = sleeper.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL)
    );

    // The kernel removes control files with the group; a fixture has to do it itself.
    for dir in cgroup.dirs() {
        remove_files(&dir);
    }
    cgroup.remove().unwrap();
    assert!(!cgroup.exists());
    cgroup.remove().unwrap();
    manager.remove_parents_if_empty().unwrap();
    assert!(!fixture.root().join("pids/sandboxes").exists());
}

#[test]
fn v2_create_moves_server_into_leaf() {
    let fixture = Fixture::v2();
    let manager = CgroupManager::detect_in(&fixture.host(), "sandboxes").unwrap();
    assert_eq!(manager.version(), CgroupVersion::V2);
    assert_eq!(
        manager.parent_dirs(),
        vec![fixture.root().join("runner.service/sandboxes")]
    );

    fixture.write("runner.service/sandboxes/box1/memory.swap.max", "max");
    let cgroup = manager.create("box1", &LIMITS).unwrap();

    // The service cgroup had a process, so the server moved into its leaf before the
    // controllers were enabled for the children.
    assert_eq!(
        fixture.read(&format!("runner.service/{SERVER_LEAF}/cgroup.procs")),
        std::process::id().to_string()
    );
    assert_eq!(
        fixture.read("runner.service/cgroup.subtree_control"),
        "+cpu +memory +pids"
    );
    assert_eq!(
        fixture.read("runner.service/sandboxes/cgroup.subtree_control"),
        "+cpu +memory +pids"
    );
    assert_eq!(
        cgroup.dirs(),
        vec![fixture.root().join("runner.service/sandboxes/box1")]
    );
    assert_eq!(
        fixture.read("runner.service/sandboxes/box1/cpu.max"),
        "200000 100000"
    );
    assert_eq!(
        fixture.read("runner.service/sandboxes/box1/memory.max"),
        (512u64 << 20).to_string()
    );
    assert_eq!(
        fixture.read("runner.service/sandboxes/box1/memory.swap.max"),
        "0"
    );
    assert_eq!(
        fixture.read("runner.service/sandboxes/box1/pids.max"),
        "100"
    );

    fixture.write(
        "runner.service/sandboxes/box1/cgroup.events",
        "populated 1\nfrozen 1\n",
    );
    cgroup.freeze().unwrap();
    assert_eq!(
        fixture.read("runner.service/sandboxes/box1/cgroup.freeze"),
        "1"
    );
    cgroup.thaw().unwrap();
    assert_eq!(
        fixture.read("runner.service/sandboxes/box1/cgroup.freeze"),
        "0"
    );

    fixture.write("runner.service/sandboxes/box1/cgroup.kill", "");
    cgroup.kill_all().unwrap();
    assert_eq!(
        fixture.read("runner.service/sandboxes/box1/cgroup.kill"),
        "1"
    );

    fixture.write("runner.service/sandboxes/box1/memory.current", "4096\n");
    fixture.write(
        "runner.service/sandboxes/box1/cpu.stat",
        "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n",
    );
    assert_eq!(cgroup.memory_usage().unwrap(), 4096);
    assert_eq!(cgroup.cpu_usage().unwrap(), Duration::from_micros(1500));

    remove_files(&fixture.root().join("runner.service/sandboxes/box1"));
    cgroup.remove().unwrap();
    assert!(!cgroup.exists());
}

#[test]
fn v2_restarted_server_keeps_its_base() {
    // After a restart the server starts inside the leaf it created before.
    let fixture = Fixture::v2();
    fixture.self_cgroup(&format!("0::/runner.service/{SERVER_LEAF}\n"));
    let manager = CgroupManager::detect_in(&fixture.host(), "sandboxes").unwrap();
    assert_eq!(
        manager.parent_dirs(),
        vec![fixture.root().join("runner.service/sandboxes")]
    );
}

#[test]
fn v2_without_delegation_rejected() {
    let fixture = Fixture::v2();
    fixture.write("runner.service/cgroup.controllers", "cpu pids");
    let err = CgroupManager::detect_in(&fixture.host(), "sandboxes").unwrap_err();
    assert!(
        matches!(
            err,
            CgroupError::ControllerNotDelegated {
                controller: "memory",
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn invalid_sandbox_id_rejected() {
    let fixture = Fixture::v1();
    let manager = CgroupManager::detect_in(&fixture.host(), "sandboxes").unwrap();
    for id in ["", "..", "a/b", "../escape"] {
        assert!(
            matches!(
                manager.sandbox(id),
                Err(CgroupError::InvalidSandboxId { .. })
            ),
            "{id:?} accepted"
        );
    }
}

/// Creates, limits, freezes, kills and removes a real sandbox cgroup below this process's
/// own cgroup in every v1 hierarchy.
#[test]
fn v1_live_create_limits_remove() {
    let Some(manager) = live_manager("v1_live_create_limits_remove", CgroupVersion::V1) else {
        return;
    };
    let guard = LiveGuard { manager: &manager };
    let cgroup = manager.create("live", &LIMITS).unwrap();
    let dirs = cgroup.dirs();
    let dir_with = |file: &str| {
        dirs.iter()
            .find(|dir| dir.join(file).exists())
            .unwrap_or_else(|| panic!("no group has {file}"))
            .join(file)
    };
    let read = |file: &str| {
        fs::read_to_string(dir_with(file))
            .unwrap()
            .trim()
            .to_string()
    };

    // The memory group is below this process's own memory cgroup.
    let own = fs::read_to_string("/proc/self/cgroup").unwrap();
    let own_memory = own
        .lines()
        .find_map(|line| {
            line.split_once(":memory:")
                .map(|(_, path)| path.to_string())
        })
        .unwrap();
    let memory_dir = dir_with("memory.limit_in_bytes");
    assert!(
        memory_dir.to_str().unwrap().contains(&own_memory),
        "{} is not below {own_memory}",
        memory_dir.display()
    );

    assert_eq!(read("cpu.cfs_quota_us"), "200000");
    assert_eq!(read("memory.limit_in_bytes"), (512u64 << 20).to_string());
    if dir_with("memory.limit_in_bytes")
        .with_file_name("memory.memsw.limit_in_bytes")
        .exists()
    {
        assert_eq!(
            read("memory.memsw.limit_in_bytes"),
            (512u64 << 20).to_string()
        );
    }
    assert_eq!(read("pids.max"), "100");

    // Shrinking and growing both work, whatever the order memsw needs.
    for memory_bytes in [256u64 << 20, 2 << 30] {
        let limits = Limits {
            memory_bytes,
            ..LIMITS
        };
        cgroup.set_limits(&limits).unwrap();
        assert_eq!(read("memory.limit_in_bytes"), memory_bytes.to_string());
    }

    // A process in the group: frozen, thawed, then killed with the whole group.
    let mut sleeper = Command::new("sleep").arg("60").spawn().unwrap();
    for dir in &dirs {
        fs::write(dir.join("cgroup.procs"), sleeper.id().to_string()).unwrap();
    }
    assert_eq!(cgroup.pids().unwrap(), vec![sleeper.id() as i32]);
    cgroup.freeze().unwrap();
    assert_eq!(read("freezer.state"), "FROZEN");
    cgroup.thaw().unwrap();
    assert_eq!(read("freezer.state"), "THAWED");
    cgroup.kill_all().unwrap();
    let status = sleeper.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL)
    );
    assert!(wait_until(Duration::from_secs(2), || cgroup
        .pids()
        .unwrap()
        .is_empty()));
    assert!(cgroup.cpu_usage().is_ok());
    assert!(cgroup.memory_usage().is_ok());

    cgroup.remove().unwrap();
    assert!(!cgroup.exists());
    drop(guard);
    assert!(manager.parent_dirs().iter().all(|dir| !dir.exists()));
}

/// The same on a live cgroup v2 host; this machine has v1 controllers.
#[test]
fn v2_live_create_limits_remove() {
    let Some(manager) = live_manager("v2_live_create_limits_remove", CgroupVersion::V2) else {
        return;
    };
    let _guard = LiveGuard { manager: &manager };
    let cgroup = manager.create("live", &LIMITS).unwrap();
    let dir = &cgroup.dirs()[0];
    assert_eq!(
        fs::read_to_string(dir.join("cpu.max")).unwrap().trim(),
        "200000 100000"
    );
    assert_eq!(
        fs::read_to_string(dir.join("memory.max")).unwrap().trim(),
        (512u64 << 20).to_string()
    );
    assert_eq!(
        fs::read_to_string(dir.join("pids.max")).unwrap().trim(),
        "100"
    );

    let mut sleeper = Command::new("sleep").arg("60").spawn().unwrap();
    fs::write(dir.join("cgroup.procs"), sleeper.id().to_string()).unwrap();
    cgroup.freeze().unwrap();
    cgroup.thaw().unwrap();
    cgroup.kill_all().unwrap();
    sleeper.wait().unwrap();
    assert!(wait_until(Duration::from_secs(2), || cgroup
        .pids()
        .unwrap()
        .is_empty()));
    cgroup.remove().unwrap();
    assert!(!cgroup.exists());
}

/// The live manager with a parent group unique to this test, or `None` after printing
/// `SKIPPED` when not root or when the host uses the other cgroup version.
fn live_manager(test: &str, version: CgroupVersion) -> Option<CgroupManager> {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED: {test} needs root to create cgroups");
        return None;
    }
    let parent = format!("daytona-test-{}-{test}", std::process::id());
    let manager = match CgroupManager::detect_in(&HostPaths::live(), &parent) {
        Ok(manager) => manager,
        Err(err) => panic!("cgroup detection failed on this host: {err}"),
    };
    if manager.version() != version {
        eprintln!(
            "SKIPPED: {test} needs cgroup {version:?}; this host uses {:?}",
            manager.version()
        );
        return None;
    }
    Some(manager)
}

/// Removes the test's sandbox group and parent groups, pass or fail.
struct LiveGuard<'a> {
    manager: &'a CgroupManager,
}

impl Drop for LiveGuard<'_> {
    fn drop(&mut self) {
        if let Ok(cgroup) = self.manager.sandbox("live") {
            let _ = cgroup.kill_all();
            let _ = cgroup.remove();
        }
        let _ = self.manager.remove_parents_if_empty();
    }
}

fn remove_files(dir: &Path) {
    for entry in fs::read_dir(dir).unwrap().flatten() {
        if entry.file_type().unwrap().is_file() {
            fs::remove_file(entry.path()).unwrap();
        }
    }
}
