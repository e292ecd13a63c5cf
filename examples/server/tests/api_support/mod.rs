//! The server's test harness, `harness/mod.rs`, under the name test files written before it
//! became one still use.

#[path = "../harness/mod.rs"]
mod harness;
#[allow(unused_imports, unreachable_pub)]
pub use harness::*;
