#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

mod chat;
mod client;
pub mod config;
pub mod decimal;
mod error;
pub mod gateway;
pub mod integration;
pub mod openai;
pub mod spend;
pub mod sync;
pub mod time;
mod types;
pub mod vault;

pub use chat::{
    AnswerMessage, Attribution, ChatChunk, ChatCompletion, ChatMessage, ChatRequest, ChatResponse,
    Choice, ChunkChoice, Delta, RateLimits, ResponseMeta, Usage,
};
pub use client::{ChatStream, ClientConfig, LiteLlmClient, RetryPolicy};
pub use error::{ApiError, LiteLlmError};
pub use stratai_core::secret::Secret;
pub use types::*;
