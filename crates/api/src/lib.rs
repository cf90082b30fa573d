//! The Daytona REST API server.

#![forbid(unsafe_code)]

mod auth;
mod builds;
pub mod config;
mod dto;
mod error;
mod events;
mod json;
mod lifecycle;
mod listener;
mod preview;
mod quota;
mod registry;
mod routes;
mod server;
mod signing;
mod socketio;
pub mod ssh_access;
mod ssh_gateway;
mod state;
pub mod store;
mod telemetry;

pub use config::{
    LifecycleConfig, ObjectStorageConfig, OrganizationLimits, PreviewConfig, PreviewUrlStyle,
    SandboxLimits, ServerConfig, SshGatewayConfig,
};
pub use daytona_runner::network;
pub use server::run;

#[cfg(test)]
mod orgs_tests;
#[cfg(test)]
mod snapshots_tests;
#[cfg(test)]
mod tests;
