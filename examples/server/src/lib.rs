#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

pub mod alerts;
pub mod api;
pub mod app;
pub mod auth;
pub mod cli;
pub mod config;
pub mod demo_provider;
pub mod error;
pub mod extract;
pub mod fresh_cache;
pub mod gateway;
pub mod mail;
pub mod metrics;
pub mod onboarding;
pub mod openapi;
pub mod server;
pub mod spool;
pub mod stores;
pub mod ui;
