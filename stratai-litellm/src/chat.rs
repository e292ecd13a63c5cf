//! Chat completions through the proxy: request, answer, stream chunks, response headers.

use std::time::Duration;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::decimal::parse_decimal;

/// One chat message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user`, `assistant` or `tool`.
    pub role: String,
    /// Text.
    pub content: String,
}

impl ChatMessage {
    /// A `user` message.
    pub fn user(content: impl Into<String>) -> Self {
        Self {
            role: "user".to_owned(),
            content: content.into(),
        }
    }

    /// A `system` message.
    pub fn system(content: impl Into<String>) -> Self {
        Self {
            role: "system".to_owned(),
            content: content.into(),
        }
    }
}

/// `POST /v1/chat/completions`. Always set `max_tokens`: LiteLLM reserves the worst-case
/// cost of a call against the budget, and without it assumes the model's maximum output.
#[derive(Clone, Debug, Serialize)]
pub struct ChatRequest {
    /// Model name as LiteLLM knows it (`mock-gpt`).
    pub model: String,
    /// Conversation.
    pub messages: Vec<ChatMessage>,
    /// Output limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Sampling temperature.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    /// Any other OpenAI parameter, sent as is.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ChatRequest {
    /// A request for `model` with `messages` and an output limit.
    pub fn new(model: impl Into<String>, messages: Vec<ChatMessage>, max_tokens: u32) -> Self {
        Self {
            model: model.into(),
            messages,
            max_tokens: Some(max_tokens),
            temperature: None,
            extra: Map::new(),
        }
    }
}

/// Who a call is for: sent as `x-litellm-end-user-id` (recorded as `end_user` in spend logs),
/// `x-stratai-user-id`, `x-stratai-org-id` and `x-stratai-request-id`; the request id also as
/// `x-litellm-spend-logs-metadata: {"stratai_request_id": ...}`, which LiteLLM keeps in the
/// spend log and the logging callback (see [`crate::spend`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Attribution {
    /// End user recorded by LiteLLM.
    pub end_user_id: Option<String>,
    /// StratAI user id.
    pub user_id: Option<String>,
    /// StratAI organization id.
    pub org_id: Option<String>,
    /// StratAI request id (`x-stratai-request-id`).
    pub request_id: Option<String>,
}

/// Token usage; `cost` appears in LiteLLM's streamed usage chunk.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct Usage {
    /// Prompt tokens.
    #[serde(default, deserialize_with = "crate::types::nullable")]
    pub prompt_tokens: u64,
    /// Completion tokens.
    #[serde(default, deserialize_with = "crate::types::nullable")]
    pub completion_tokens: u64,
    /// Total.
    #[serde(default, deserialize_with = "crate::types::nullable")]
    pub total_tokens: u64,
    /// Cost in dollars when LiteLLM adds it.
    #[serde(default, deserialize_with = "crate::decimal::optional")]
    pub cost: Option<Decimal>,
}

/// An answer message.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct AnswerMessage {
    /// Role.
    #[serde(default)]
    pub role: Option<String>,
    /// Text.
    #[serde(default)]
    pub content: Option<String>,
}

/// One choice of a whole completion.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Choice {
    /// Index.
    #[serde(default, deserialize_with = "crate::types::nullable")]
    pub index: u32,
    /// The message.
    #[serde(default, deserialize_with = "crate::types::nullable")]
    pub message: AnswerMessage,
    /// `stop`, `length`, ...
    #[serde(default)]
    pub finish_reason: Option<String>,
}

/// A whole completion.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct ChatCompletion {
    /// The upstream completion id: LiteLLM's spend-log `request_id` for this call.
    pub id: String,
    /// Model.
    #[serde(default)]
    pub model: Option<String>,
    /// Unix seconds.
    #[serde(default)]
    pub created: Option<i64>,
    /// Choices.
    #[serde(default, deserialize_with = "crate::types::nullable")]
    pub choices: Vec<Choice>,
    /// Usage.
    #[serde(default)]
    pub usage: Option<Usage>,
}

impl ChatCompletion {
    /// The first choice's text.
    pub fn text(&self) -> Option<&str> {
        self.choices
            .first()
            .and_then(|c| c.message.content.as_deref())
    }
}

/// The delta of a stream chunk.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct Delta {
    /// Role (first chunk).
    #[serde(default)]
    pub role: Option<String>,
    /// Text piece.
    #[serde(default)]
    pub content: Option<String>,
}

/// One choice of a stream chunk.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct ChunkChoice {
    /// Index.
    #[serde(default, deserialize_with = "crate::types::nullable")]
    pub index: u32,
    /// Delta.
    #[serde(default, deserialize_with = "crate::types::nullable")]
    pub delta: Delta,
    /// Set on the last content chunk.
    #[serde(default)]
    pub finish_reason: Option<String>,
}

/// One SSE chunk of a streamed completion.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct ChatChunk {
    /// Completion id (the same on every chunk).
    pub id: String,
    /// Model.
    #[serde(default)]
    pub model: Option<String>,
    /// Choices (empty on a pure usage chunk).
    #[serde(default, deserialize_with = "crate::types::nullable")]
    pub choices: Vec<ChunkChoice>,
    /// Usage, on the final chunk when `stream_options.include_usage` was set.
    #[serde(default)]
    pub usage: Option<Usage>,
}

impl ChatChunk {
    /// The text piece of the first choice.
    pub fn text(&self) -> Option<&str> {
        self.choices
            .first()
            .and_then(|c| c.delta.content.as_deref())
    }
}

/// Rate-limit headers (`x-ratelimit-{api_key,team}-{remaining,limit}-{requests,tokens}`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RateLimits {
    /// Requests left for the key.
    pub key_remaining_requests: Option<u64>,
    /// Request limit of the key.
    pub key_limit_requests: Option<u64>,
    /// Tokens left for the key.
    pub key_remaining_tokens: Option<u64>,
    /// Token limit of the key.
    pub key_limit_tokens: Option<u64>,
    /// Requests left for the team.
    pub team_remaining_requests: Option<u64>,
    /// Request limit of the team.
    pub team_limit_requests: Option<u64>,
    /// Tokens left for the team.
    pub team_remaining_tokens: Option<u64>,
    /// Token limit of the team.
    pub team_limit_tokens: Option<u64>,
}

/// What LiteLLM says about a call in its response headers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResponseMeta {
    /// `x-litellm-call-id`.
    pub call_id: Option<String>,
    /// `x-litellm-response-cost` (absent or 0 on streams: read the usage chunk's `cost`).
    pub response_cost: Option<Decimal>,
    /// `x-litellm-key-spend`: the key's spend (before this call's cost is written).
    pub key_spend: Option<Decimal>,
    /// `x-litellm-key-max-budget`.
    pub key_max_budget: Option<Decimal>,
    /// `x-litellm-model-group`.
    pub model_group: Option<String>,
    /// `x-litellm-model-id`.
    pub model_id: Option<String>,
    /// `x-litellm-overhead-duration-ms`.
    pub overhead: Option<Duration>,
    /// `x-litellm-response-duration-ms`.
    pub response_duration: Option<Duration>,
    /// Rate-limit counters.
    pub rate_limits: RateLimits,
}

fn millis(text: &str) -> Option<Duration> {
    let ms: f64 = text.trim().parse().ok()?;
    (ms.is_finite() && ms >= 0.0).then(|| Duration::from_secs_f64(ms / 1000.0))
}

impl ResponseMeta {
    /// Reads the LiteLLM headers of an answer.
    pub fn from_headers(headers: &reqwest::header::HeaderMap) -> Self {
        let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let int = |name: &str| get(name).and_then(|v| v.trim().parse::<u64>().ok());
        Self {
            call_id: get("x-litellm-call-id").map(str::to_owned),
            response_cost: get("x-litellm-response-cost").and_then(parse_decimal),
            key_spend: get("x-litellm-key-spend").and_then(parse_decimal),
            key_max_budget: get("x-litellm-key-max-budget").and_then(parse_decimal),
            model_group: get("x-litellm-model-group").map(str::to_owned),
            model_id: get("x-litellm-model-id").map(str::to_owned),
            overhead: get("x-litellm-overhead-duration-ms").and_then(millis),
            response_duration: get("x-litellm-response-duration-ms").and_then(millis),
            rate_limits: RateLimits {
                key_remaining_requests: int("x-ratelimit-api_key-remaining-requests"),
                key_limit_requests: int("x-ratelimit-api_key-limit-requests"),
                key_remaining_tokens: int("x-ratelimit-api_key-remaining-tokens"),
                key_limit_tokens: int("x-ratelimit-api_key-limit-tokens"),
                team_remaining_requests: int("x-ratelimit-team-remaining-requests"),
                team_limit_requests: int("x-ratelimit-team-limit-requests"),
                team_remaining_tokens: int("x-ratelimit-team-remaining-tokens"),
                team_limit_tokens: int("x-ratelimit-team-limit-tokens"),
            },
        }
    }
}

/// A whole completion with LiteLLM's headers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatResponse {
    /// The completion.
    pub completion: ChatCompletion,
    /// The headers.
    pub meta: ResponseMeta,
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    #[test]
    fn reads_the_recorded_headers() {
        let mut h = reqwest::header::HeaderMap::new();
        for (k, v) in [
            ("x-litellm-call-id", "33edcbd2-2471-477f-b941-4fcd27eae145"),
            ("x-litellm-response-cost", "0.024"),
            ("x-litellm-key-spend", "0.024"),
            ("x-litellm-key-max-budget", "2.0"),
            ("x-litellm-model-group", "mock-gpt"),
            ("x-litellm-overhead-duration-ms", "142.4582"),
            ("x-ratelimit-api_key-remaining-requests", "99"),
            ("x-ratelimit-api_key-limit-requests", "100"),
            ("x-ratelimit-team-remaining-tokens", "48975"),
        ] {
            h.insert(k, v.parse().unwrap());
        }
        let meta = ResponseMeta::from_headers(&h);
        assert_eq!(meta.response_cost, Some(dec!(0.024)));
        assert_eq!(meta.key_max_budget, Some(dec!(2.0)));
        assert_eq!(meta.model_group.as_deref(), Some("mock-gpt"));
        assert_eq!(meta.rate_limits.key_remaining_requests, Some(99));
        assert_eq!(meta.rate_limits.key_limit_requests, Some(100));
        assert_eq!(meta.rate_limits.team_remaining_tokens, Some(48975));
        assert_eq!(meta.overhead.map(|d| d.as_micros()), Some(142_458));
    }

    #[test]
    fn parses_the_usage_chunk_with_cost() {
        let chunk: ChatChunk = serde_json::from_str(r#"{"id":"chatcmpl-f4","created":1,"model":"mock-gpt","object":"chat.completion.chunk","choices":[{"index":0,"delta":{}}],"usage":{"completion_tokens":3,"prompt_tokens":2,"total_tokens":5,"completion_tokens_details":{"reasoning_tokens":0},"cost":0.008}}"#).unwrap();
        assert_eq!(chunk.usage.unwrap().cost, Some(dec!(0.008)));
    }

    #[test]
    fn request_serializes_extra_fields_flat() {
        let mut req = ChatRequest::new("mock-gpt", vec![ChatMessage::user("hi")], 10);
        req.extra.insert("seed".into(), Value::from(7));
        let text = serde_json::to_string(&req).unwrap();
        assert_eq!(
            text,
            r#"{"model":"mock-gpt","messages":[{"role":"user","content":"hi"}],"max_tokens":10,"seed":7}"#
        );
    }
}
