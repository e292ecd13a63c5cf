#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

pub mod app;
pub mod auth;
pub mod config;
pub mod error;
pub mod extract;
pub mod server;
