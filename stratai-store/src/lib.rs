#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

pub(crate) mod error;
pub mod memory;
pub mod postgres;
pub(crate) mod shared;
pub mod sqlite;

pub use memory::MemoryStore;
pub use postgres::{PgOptions, PgStore};
pub use sqlite::SqliteStore;
