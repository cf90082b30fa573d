//! The isolation runtime.
//!
//! A sandbox is started in three stages, each a process:
//!
//! 1. The runner (multi-threaded, on the host) creates the sandbox's cgroups and run
//!    directory and executes the static daemon binary as `daytona-daemon setup`, handing it a
//!    [`spec::SandboxSpec`]. See [`spawn`].
//! 2. The setup stage (single-threaded, host root) joins the cgroups, binds the toolbox
//!    socket, builds the user namespace and the overlay root with ID-mapped layers, creates the
//!    other namespaces and forks the sandbox's PID 1. See [`setup`].
//! 3. PID 1 mounts `/proc`, `/dev` and `/sys`, pivots into the root and executes
//!    `/usr/local/bin/daytona-daemon init`, the bind-mounted daemon, which serves the toolbox.
//!
//! Workloads that the daemon starts get the confinement of [`workload`]: Docker's default
//! seccomp profile and capability set, and a Landlock domain.

pub mod cgroup;
pub mod setup;
pub mod spawn;
pub mod spec;
pub mod workload;
