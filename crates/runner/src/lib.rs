//! The runner: owns the sandboxes of one host.
//!
//! It turns lifecycle requests into isolation-runtime calls, keeps each sandbox's runtime
//! record on disk beside its files (so a restarted server adopts sandboxes that kept running
//! and finds the stopped ones), and knows where each sandbox's toolbox socket is.

#![forbid(unsafe_code)]

mod daemon_client;
mod instance;
mod runner;
mod runtime;
mod slots;

pub use instance::{Limits, SandboxRuntimeState};
pub use runner::{CreateParams, PoolTemplate, Runner, RunnerConfig, RunnerError};
