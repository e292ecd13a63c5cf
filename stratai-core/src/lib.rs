#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

pub mod access;
pub mod audit;
pub mod billing;
pub mod budget;
pub mod directory;
pub mod error;
pub mod gateway;
pub mod ids;
pub mod mail;
pub mod money;
#[cfg(feature = "openapi")]
pub mod openapi;
pub mod ports;
pub mod pricing;
pub mod secret;
pub mod tiers;
pub mod usage;

pub use error::{OpError, StoreError, ValidationError};
pub use ids::*;
pub use money::Money;
