#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

pub mod api;
pub mod app;
pub mod audit;
pub mod auth;
pub mod cli;
pub mod config;
pub mod error;
pub mod extract;
pub mod gateway;
pub mod metrics;
pub mod openapi;
pub mod server;
pub mod stores;
pub mod ui;

/// The library runtime's modules under the paths the server had them at.
pub use stratai_guardrails::runtime::{alerts, demo as demo_provider, fresh_cache, spool};
