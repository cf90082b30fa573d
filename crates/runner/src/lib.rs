//! The runner: owns the sandboxes of one host.
//!
//! It turns lifecycle requests into isolation-runtime calls, keeps each sandbox's runtime
//! record on disk beside its files (so a restarted server adopts sandboxes that kept running
//! and finds the stopped ones), finds each sandbox's toolbox socket, and reports
//! what the sandboxes' workloads use, which drives auto-stop.

#![forbid(unsafe_code)]

mod archive;
mod build_step;
mod daemon_client;
mod disk;
mod instance;
pub mod network;
mod pool;
mod port;
mod runner;
mod runtime;
mod slots;
mod snapshot;
mod usage;

pub use archive::ArchivedLayer;
pub use daemon_client::{
    DaemonRequestError, StreamEvent, StreamReader, StreamWriter, open_process_stream,
};
pub use daytona_isolation::spec::{MountPathError, VOLUME_UID_BASE, VolumeMount, check_mount_path};
pub use disk::DiskError;
pub use instance::{Limits, SandboxRuntimeState};
pub use pool::PoolTemplate;
pub use port::PortError;
pub use runner::{CreateParams, Runner, RunnerConfig, RunnerError, UID_SLOT_REGISTRY};
pub use usage::WorkloadUsage;
