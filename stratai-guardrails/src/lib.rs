#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

pub mod rule;

pub use rule::{KnownScopes, Level, Rule, RuleError, RuleKind, RuleType};
