//! The isolation runtime.
//!
//! A sandbox is started in three stages, each a process:
//!
//! 1. The runner (multi-threaded, on the host) creates the sandbox's cgroups
//!    ([`cgroup`]) and run directory ([`run_dir`]) and executes the static daemon binary as
//!    `daytona-daemon setup`, handing it a [`spec::SandboxSpec`]. See [`spawn`].
//! 2. The setup stage (single-threaded, host root) joins the cgroups, binds the toolbox
//!    socket, builds the user namespace and the overlay root with ID-mapped layers, creates the
//!    other namespaces and forks the sandbox's PID 1. See [`setup`].
//! 3. PID 1 mounts `/proc`, `/dev`, `/sys` and a read-only view of the sandbox's cgroups,
//!    pivots into the root and executes
//!    `/usr/local/bin/daytona-daemon init`, the bind-mounted daemon. `init` stays PID 1: it
//!    reaps orphans and supervises the toolbox server (`daytona-daemon toolbox`).
//!
//! The toolbox server starts workloads through one [`launcher`] process per sandbox, which
//! gives them the confinement of [`workload`]: the sandbox's one Landlock domain, Docker's
//! default seccomp profile and Docker's capability set.

#![deny(clippy::undocumented_unsafe_blocks)]

pub mod cgroup;
pub mod disk;
pub mod launcher;
mod pid1;
pub mod run_dir;
pub mod sandbox_log;
mod seccomp;
pub mod setup;
pub mod spawn;
pub mod spec;
mod sys;
pub mod workload;
