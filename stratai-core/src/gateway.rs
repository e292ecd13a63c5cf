//! OpenAI-compatible chat types and the LLM gateway port's error.

use serde::{Deserialize, Serialize};

use crate::ids::{OrgId, RequestId, UserId};

/// The message roles of OpenAI's chat API, the only ones the gateway accepts.
pub const CHAT_ROLES: &[&str] = &[
    "system",
    "developer",
    "user",
    "assistant",
    "tool",
    "function",
];

/// A chat message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChatMessage {
    /// One of [`CHAT_ROLES`] (`system`, `user`, `assistant`, `tool`, ...).
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::openapi::chat_role))]
    pub role: String,
    /// Text content.
    pub content: String,
}

/// An OpenAI-compatible chat completion request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChatRequest {
    /// Requested model.
    #[cfg_attr(feature = "openapi", schema(value_type = crate::ids::ModelId))]
    pub model: String,
    /// Conversation so far.
    #[cfg_attr(feature = "openapi", schema(min_items = 1))]
    pub messages: Vec<ChatMessage>,
    /// Upper bound of output tokens.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "integral_u32"
    )]
    pub max_tokens: Option<u32>,
    /// Sampling temperature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    /// Stream the answer as server-sent events.
    #[serde(default)]
    pub stream: bool,
    /// End-user attribution (OpenAI's `user`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// An optional `u32` that JSON may also write as an integral float (`182.0`, which JSON Schema
/// and many clients count as an integer); a fraction, a string or a value out of range is
/// refused.
pub fn integral_u32<'de, D: serde::Deserializer<'de>>(de: D) -> Result<Option<u32>, D::Error> {
    integral(de, false)
}

/// [`integral_u32`] for a type also read from a query string (whose values are text).
pub fn integral_u32_or_text<'de, D: serde::Deserializer<'de>>(
    de: D,
) -> Result<Option<u32>, D::Error> {
    integral(de, true)
}

fn integral<'de, D: serde::Deserializer<'de>>(de: D, text: bool) -> Result<Option<u32>, D::Error> {
    use serde::de::Error;
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Wire {
        Int(u64),
        Float(f64),
        Text(String),
    }
    let value = match Option::<Wire>::deserialize(de)? {
        None => return Ok(None),
        Some(Wire::Int(v)) => u32::try_from(v).ok(),
        Some(Wire::Float(f)) if f.fract() == 0.0 && (0.0..=f64::from(u32::MAX)).contains(&f) =>
        {
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            Some(f as u32)
        }
        Some(Wire::Float(_)) => None,
        Some(Wire::Text(t)) if text => t.parse::<u32>().ok(),
        Some(Wire::Text(_)) => None,
    };
    value
        .map(Some)
        .ok_or_else(|| D::Error::custom("invalid value: expected a u32"))
}

/// Token usage of a completion.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenUsage {
    /// Prompt tokens.
    pub prompt_tokens: u32,
    /// Completion tokens.
    pub completion_tokens: u32,
    /// Sum of both.
    pub total_tokens: u32,
}

/// One choice of a completion.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChatChoice {
    /// Index.
    pub index: u32,
    /// The answer.
    pub message: ChatMessage,
    /// Why generation stopped.
    #[serde(default)]
    pub finish_reason: Option<String>,
}

/// An OpenAI-compatible chat completion response.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChatResponse {
    /// Completion id (LiteLLM's request id).
    pub id: String,
    /// Object kind, `chat.completion`.
    #[serde(default = "chat_completion_object")]
    pub object: String,
    /// Creation time, unix seconds.
    #[serde(default)]
    pub created: i64,
    /// Model that answered.
    pub model: String,
    /// Choices.
    pub choices: Vec<ChatChoice>,
    /// Token usage.
    #[serde(default)]
    pub usage: TokenUsage,
}

fn chat_completion_object() -> String {
    "chat.completion".to_owned()
}

/// The incremental part of a streamed choice.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChatDelta {
    /// Role, on the first chunk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Text fragment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
}

/// One choice of a streamed chunk.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChunkChoice {
    /// Index.
    pub index: u32,
    /// Fragment.
    pub delta: ChatDelta,
    /// Why generation stopped, on the last chunk.
    #[serde(default)]
    pub finish_reason: Option<String>,
}

/// One server-sent chunk of a streamed completion.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChatChunk {
    /// Completion id.
    pub id: String,
    /// Object kind, `chat.completion.chunk`.
    #[serde(default)]
    pub object: String,
    /// Creation time, unix seconds.
    #[serde(default)]
    pub created: i64,
    /// Model.
    pub model: String,
    /// Fragments.
    #[serde(default)]
    pub choices: Vec<ChunkChoice>,
    /// Usage, on the final chunk when the upstream reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<TokenUsage>,
}

/// Who a gateway call is made for: the gateway picks the credentials (e.g. the member's
/// LiteLLM virtual key) and attribution headers from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallContext {
    /// StratAI request id.
    pub request_id: RequestId,
    /// Organization.
    pub org_id: OrgId,
    /// User.
    pub user_id: UserId,
}

/// Why an LLM call failed.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The upstream refused the model or credentials.
    #[error("upstream refused the request: {0}")]
    Refused(String),
    /// The upstream's own budget ran out.
    #[error("upstream budget exceeded: {0}")]
    BudgetExceeded(String),
    /// Rate limited upstream.
    #[error("upstream rate limited; retry after {retry_after_secs:?}s")]
    RateLimited {
        /// Seconds to wait, when the upstream said.
        retry_after_secs: Option<u64>,
    },
    /// Malformed request.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The member has no credentials at the upstream yet (e.g. virtual key not synced).
    #[error("no upstream credentials for this member: {0}")]
    NotProvisioned(String),
    /// 5xx, timeout, connection failure or a malformed answer.
    #[error("upstream unavailable: {0}")]
    Unavailable(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn max_tokens(json: &str) -> Result<Option<u32>, serde_json::Error> {
        serde_json::from_str::<ChatRequest>(&format!(
            r#"{{"model":"m","messages":[],"max_tokens":{json}}}"#
        ))
        .map(|r| r.max_tokens)
    }

    #[test]
    fn max_tokens_takes_integral_floats_and_refuses_the_rest() {
        assert_eq!(max_tokens("182").unwrap(), Some(182));
        assert_eq!(max_tokens("182.0").unwrap(), Some(182));
        assert_eq!(max_tokens("null").unwrap(), None);
        assert!(max_tokens("1.5").is_err());
        assert!(max_tokens("-1").is_err());
        assert!(max_tokens("4294967296").is_err());
        assert!(max_tokens("\"x\"").is_err());
        assert!(max_tokens("\"5\"").is_err());
        let absent: ChatRequest = serde_json::from_str(r#"{"model":"m","messages":[]}"#).unwrap();
        assert_eq!(absent.max_tokens, None);
    }
}
