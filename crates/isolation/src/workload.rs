//! Confinement of workload processes inside a sandbox.
//!
//! The daemon runs as root in the sandbox's user namespace with every capability of that
//! namespace, because it manages the sandbox. The processes it starts for users (workloads)
//! get, between fork and exec:
//!
//! - a Landlock domain with the signal and abstract-socket scopes, so that a workload cannot
//!   signal, ptrace or connect to the daemon or PID 1, which stay outside the domain (Landlock
//!   restricts ptrace to the same or nested domains without a scope);
//! - Docker's default seccomp profile (see the `seccomp` module);
//! - Docker's default capability set as the bounding set, and as the effective and permitted
//!   sets for a workload that runs as root. A workload that runs as another user loses its
//!   capabilities when the daemon calls setuid.
//!
//! `no_new_privs` is not set, so that `sudo` keeps working: the user namespace, not the
//! absence of root, is what keeps a workload from power over the host.
//!
//! NOTE: every `apply` creates a new Landlock domain, and domains are siblings, not nested.
//! A workload therefore cannot signal, or connect to an abstract Unix socket of, a workload
//! that another `apply` confined (two separate exec requests, for example). Its own children
//! share its domain and are unaffected.

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

/// Confinement prepared in the daemon before a fork and applied in the child before exec.
///
/// `prepare` may allocate; `apply` runs between fork and exec and must only make system
/// calls.
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
    /// Builds the seccomp program and Landlock ruleset once; the daemon reuses it for every
    /// workload.
    pub fn prepare() -> io::Result<Self> {
        let allow_list = seccomp::allow_list().map_err(invalid_program)?;
        let clone3_enosys = seccomp::clone3_enosys().map_err(invalid_program)?;
        Ok(Self {
            allow_list,
            clone3_enosys,
            landlock: landlock_ruleset()?,
        })
    }

    /// Whether `apply` puts workloads into a Landlock domain on this kernel.
    pub fn landlock_enabled(&self) -> bool {
        self.landlock.is_some()
    }

    /// Applies the confinement to the calling process. Call it in `pre_exec`, while the child
    /// is still root in the sandbox and before it switches to the workload's user.
    pub fn apply(&self) -> io::Result<()> {
        // 1. Landlock first: without no_new_privs, landlock_restrict_self needs CAP_SYS_ADMIN
        //    in the user namespace, which step 3 drops.
        if let Some(ruleset) = &self.landlock {
            sys::landlock_restrict_self(ruleset.as_fd())?;
        }

        // 2. seccomp, under the same CAP_SYS_ADMIN condition. The allow-list permits the
        //    prctl, capset, setgroups, setuid and execve calls that follow.
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
