//! Confinement of workload processes inside a sandbox.
//!
//! The daemon runs as root in the sandbox's user namespace with every capability of that
//! namespace, because it manages the sandbox. The launcher (see [`crate::launcher`]), which
//! starts every workload of the toolbox server, confines itself once at its start, and each
//! workload inherits the confinement through `clone`:
//!
//! - a Landlock domain with the signal and abstract-socket scopes. All workloads of a
//!   sandbox are in this one domain, so they can signal, ptrace and connect to each other,
//!   as the processes of one container can, but not to the toolbox server or PID 1, which
//!   stay outside it. Landlock restricts ptrace to the same or nested domains without a
//!   scope;
//! - Docker's default seccomp profile (see the `seccomp` module);
//! - Docker's default capability set as the bounding set, and as the effective and permitted
//!   sets, which a root workload keeps. A workload that runs as another user loses its
//!   capabilities when the launcher's child calls setuid.
//!
//! Installing the two seccomp programs took about 0.7 ms per process on the development
//! machine (kernel 6.18, 2 cores), so inheriting them from the launcher, rather than
//! installing them in every child, keeps that out of each spawn.
//!
//! `no_new_privs` is not set, so that `sudo` keeps working: the user namespace, not the
//! absence of root, is what keeps a workload from power over the host.

use std::fmt;
use std::io;
use std::os::fd::{AsFd, OwnedFd};

use landlock::{Ruleset, RulesetAttr, Scope};
use seccompiler::BpfProgram;

use crate::seccomp;
use crate::sys;

/// Capability numbers from `linux/capability.h`.
mod cap {
    pub const CHOWN: u32 = 0;
    pub const DAC_OVERRIDE: u32 = 1;
    pub const FOWNER: u32 = 3;
    pub const FSETID: u32 = 4;
    pub const KILL: u32 = 5;
    pub const SETGID: u32 = 6;
    pub const SETUID: u32 = 7;
    pub const SETPCAP: u32 = 8;
    pub const NET_BIND_SERVICE: u32 = 10;
    pub const NET_RAW: u32 = 13;
    pub const SYS_CHROOT: u32 = 18;
    pub const MKNOD: u32 = 27;
    pub const AUDIT_WRITE: u32 = 29;
    pub const SETFCAP: u32 = 31;
}

/// Docker's default capabilities: CHOWN, DAC_OVERRIDE, FOWNER, FSETID, KILL, SETGID, SETUID,
/// SETPCAP, NET_BIND_SERVICE, NET_RAW, SYS_CHROOT, MKNOD, AUDIT_WRITE and SETFCAP (bit n is
/// capability n).
pub const DEFAULT_CAPABILITIES: u64 = (1 << cap::CHOWN)
    | (1 << cap::DAC_OVERRIDE)
    | (1 << cap::FOWNER)
    | (1 << cap::FSETID)
    | (1 << cap::KILL)
    | (1 << cap::SETGID)
    | (1 << cap::SETUID)
    | (1 << cap::SETPCAP)
    | (1 << cap::NET_BIND_SERVICE)
    | (1 << cap::NET_RAW)
    | (1 << cap::SYS_CHROOT)
    | (1 << cap::MKNOD)
    | (1 << cap::AUDIT_WRITE)
    | (1 << cap::SETFCAP);

/// Confinement prepared once and applied to a process that starts workloads.
///
/// `prepare` may allocate; `apply` only makes system calls, so it may run between fork and
/// exec.
pub struct Confinement {
    /// Docker's allow-list; anything not listed fails with EPERM.
    allow_list: BpfProgram,
    /// Fails `clone3` with ENOSYS so that libc falls back to `clone`, whose flags the
    /// allow-list can check.
    clone3_enosys: BpfProgram,
    /// The Landlock ruleset, absent where the kernel lacks Landlock scopes (before 6.12).
    landlock: Option<OwnedFd>,
}

impl fmt::Debug for Confinement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Confinement")
            .field("seccomp_instructions", &self.allow_list.len())
            .field("landlock", &self.landlock.is_some())
            .finish()
    }
}

impl Confinement {
    /// Builds the seccomp programs and the Landlock ruleset.
    pub fn prepare() -> io::Result<Self> {
        let allow_list = seccomp::allow_list().map_err(invalid_program)?;
        let clone3_enosys = seccomp::clone3_enosys().map_err(invalid_program)?;
        Ok(Self {
            allow_list,
            clone3_enosys,
            landlock: landlock_ruleset()?,
        })
    }

    /// Returns whether `apply` puts the process into a Landlock domain on this kernel.
    pub fn landlock_enabled(&self) -> bool {
        self.landlock.is_some()
    }

    /// Applies the confinement to the calling process, which every process that it creates
    /// afterwards inherits. Call it while the process is root with CAP_SYS_ADMIN in the
    /// sandbox, before it or its children switch to a workload's user.
    ///
    /// Each call creates a new Landlock domain, and processes in two domains created this
    /// way cannot signal each other or connect to each other's abstract Unix sockets. So the
    /// launcher calls it once for all workloads of a sandbox; the test command of
    /// `daytona-daemon init`, a sandbox's only workload, gets its own.
    pub fn apply(&self) -> io::Result<()> {
        // 1. Landlock first: without no_new_privs, landlock_restrict_self needs CAP_SYS_ADMIN
        //    in the user namespace, which step 3 drops.
        if let Some(ruleset) = &self.landlock {
            sys::landlock_restrict_self(ruleset.as_fd())?;
        }

        // 2. seccomp, under the same CAP_SYS_ADMIN condition. The allow-list permits what
        //    follows here, and in the launcher's children: prctl, capset, setgroups, setuid,
        //    clone without namespace flags and execve.
        sys::seccomp_set_filter(&self.allow_list)?;
        sys::seccomp_set_filter(&self.clone3_enosys)?;

        // 3. The bounding set caps what any later exec, setuid programs included, can gain.
        //    Dropping needs CAP_SETPCAP, so it comes before the effective set shrinks.
        drop_bounding_set()?;

        // 4. Root workloads keep Docker's set; the inheritable and ambient sets stay empty,
        //    so a non-root exec gains nothing from file capabilities' inheritable bits.
        sys::clear_ambient_caps()?;
        sys::capset(sys::CapSets {
            effective: DEFAULT_CAPABILITIES,
            permitted: DEFAULT_CAPABILITIES,
            inheritable: 0,
        })
    }
}

/// Drops every capability outside [`DEFAULT_CAPABILITIES`] from the bounding set.
fn drop_bounding_set() -> io::Result<()> {
    for cap in 0..64u32 {
        if DEFAULT_CAPABILITIES & (1 << cap) != 0 {
            continue;
        }
        match sys::prctl(libc::PR_CAPBSET_DROP, cap.into()) {
            Ok(()) => {}
            // Capabilities beyond the kernel's last one do not exist.
            Err(err) if err.raw_os_error() == Some(libc::EINVAL) => break,
            Err(err) => return Err(err),
        }
    }
    Ok(())
}

/// Creates the Landlock ruleset with the signal and abstract Unix socket scopes, or returns
/// `None` where the kernel does not support them. No filesystem access is handled: the mount
/// namespace and the user namespace already decide what a workload reaches, and an allow-list
/// over the sandbox's own root would add nothing.
fn landlock_ruleset() -> io::Result<Option<OwnedFd>> {
    if sys::landlock_abi_version().is_err() {
        return Ok(None);
    }
    let ruleset = Ruleset::default()
        .scope(Scope::Signal | Scope::AbstractUnixSocket)
        .and_then(|ruleset| ruleset.create())
        .map_err(io::Error::other)?;
    Ok(ruleset.into())
}

fn invalid_program(err: seccompiler::BackendError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_capabilities_match_docker() {
        // The CapEff that `docker run` shows for root: 00000000a80425fb.
        assert_eq!(DEFAULT_CAPABILITIES, 0xa804_25fb);
    }

    #[test]
    fn prepare_builds_programs() {
        let confinement = Confinement::prepare().unwrap();
        assert!(!confinement.allow_list.is_empty());
        assert!(!confinement.clone3_enosys.is_empty());
    }
}
