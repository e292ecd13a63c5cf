#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

pub mod memory;
pub mod postgres;
pub mod sqlite;
