#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

pub mod admin;
pub mod audited;
pub(crate) mod error;
pub mod memory;
pub mod people;
pub mod postgres;
#[cfg(feature = "redis")]
pub mod redis_rate;
pub mod seed;
pub(crate) mod shared;
pub mod sqlite;
pub mod stores;

pub use memory::MemoryStore;
pub use postgres::{PgOptions, PgStore};
#[cfg(feature = "redis")]
pub use redis_rate::RedisRateLimiter;
pub use sqlite::SqliteStore;
pub use stores::Stores;
