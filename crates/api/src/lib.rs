//! The Daytona REST API server.

#![forbid(unsafe_code)]

mod auth;
pub mod config;
mod dto;
mod error;
mod events;
mod json;
mod quota;
mod routes;
mod server;
mod state;
pub mod store;

pub use config::{SandboxLimits, ServerConfig};
pub use server::run;

#[cfg(test)]
mod tests;
