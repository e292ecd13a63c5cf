#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

pub mod error;
pub mod ids;

pub use error::{StoreError, ValidationError};
pub use ids::*;
