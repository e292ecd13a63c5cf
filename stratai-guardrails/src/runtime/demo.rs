//! The built-in offline LLM provider: the runtime's provider when none is given (the server
//! uses it in dev mode without a LiteLLM proxy).
//!
//! It lets the server (and its README session) or an embedding service show governance
//! working on a machine with nothing installed and no network: answers are deterministic, token counts are exact and
//! easy to reason about (one whitespace-separated word is one token), streams come as real
//! chunks.
//!
//! Two directives in the last user message make the demo useful for showing the gateway's
//! rules, and are documented so nobody mistakes them for model behaviour:
//! - `echo: <text>`: the answer is `<text>` verbatim (e.g. to trigger a post-response content
//!   filter in a demo);
//! - `fail: <text>`: the call fails like an unavailable upstream (nothing is billed).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::{self, BoxStream};
use stratai_core::gateway::{
    CallContext, ChatChoice, ChatChunk, ChatDelta, ChatMessage, ChatRequest, ChatResponse,
    ChunkChoice, GatewayError, TokenUsage,
};
use stratai_core::ports::LlmGateway;

/// Output cap when a request sets no `max_tokens`.
pub const DEFAULT_MAX_OUTPUT_TOKENS: u32 = 256;

/// Settings of the demo provider.
#[derive(Clone, Debug, Default)]
pub struct DemoConfig {
    /// Characters per streamed chunk; 0 streams one word per chunk.
    pub chunk_chars: usize,
    /// Pause before each streamed content chunk (to make streams observable, e.g. a client
    /// leaving mid-stream in tests).
    pub chunk_delay: Duration,
    /// Pause before a non-streamed answer (to make a client leaving before its answer
    /// observable in tests).
    pub answer_delay: Duration,
}

/// The offline provider. See the module docs.
#[derive(Debug, Default)]
pub struct DemoProvider {
    config: DemoConfig,
    calls: AtomicU64,
}

impl DemoProvider {
    /// A provider with the given settings.
    #[must_use]
    pub fn new(config: DemoConfig) -> Self {
        Self {
            config,
            calls: AtomicU64::new(0),
        }
    }

    /// Calls answered or refused so far (for tests and the start banner).
    #[must_use]
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// The one-line announcement printed at start.
    #[must_use]
    pub fn banner() -> &'static str {
        "no LiteLLM proxy configured (LITELLM_URL unset): chat goes to the built-in offline demo provider (deterministic answers, 1 word = 1 token)"
    }

    fn answer(&self, ctx: &CallContext, request: &ChatRequest) -> Result<Answer, GatewayError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if request.model.trim().is_empty() {
            return Err(GatewayError::BadRequest("`model` is empty".to_owned()));
        }
        if request.messages.is_empty() {
            return Err(GatewayError::BadRequest("`messages` is empty".to_owned()));
        }
        let prompt_tokens = count_tokens_of(&request.messages).max(1);
        let last_user = request
            .messages
            .iter()
            .rev()
            .find(|m| m.role == "user")
            .map(|m| m.content.trim())
            .unwrap_or("");
        let full = if let Some(text) = last_user.strip_prefix("echo:") {
            text.trim().to_owned()
        } else if let Some(reason) = last_user.strip_prefix("fail:") {
            return Err(GatewayError::Unavailable(format!(
                "demo provider asked to fail: `{}`",
                reason.trim()
            )));
        } else {
            let quoted: Vec<&str> = last_user.split_whitespace().take(12).collect();
            format!(
                "Demo answer from {}: you said \"{}\". This reply comes from StratAI's built-in offline provider; set LITELLM_URL to reach real models.",
                request.model,
                quoted.join(" ")
            )
        };
        let cap = request.max_tokens.unwrap_or(DEFAULT_MAX_OUTPUT_TOKENS) as usize;
        let words: Vec<&str> = full.split_whitespace().collect();
        let truncated = words.len() > cap;
        let text = words[..words.len().min(cap)].join(" ");
        let completion_tokens = count_tokens(&text);
        Ok(Answer {
            id: format!("demo-{}", ctx.request_id),
            model: request.model.clone(),
            text,
            finish_reason: if truncated { "length" } else { "stop" },
            usage: TokenUsage {
                prompt_tokens,
                completion_tokens,
                total_tokens: prompt_tokens + completion_tokens,
            },
        })
    }
}

/// Tokens of a text as the demo provider counts them: whitespace-separated words.
#[must_use]
pub fn count_tokens(text: &str) -> u32 {
    u32::try_from(text.split_whitespace().count()).unwrap_or(u32::MAX)
}

/// Tokens of a conversation as the demo provider counts them.
#[must_use]
pub fn count_tokens_of(messages: &[ChatMessage]) -> u32 {
    messages
        .iter()
        .map(|m| count_tokens(&m.content))
        .fold(0u32, u32::saturating_add)
}

struct Answer {
    id: String,
    model: String,
    text: String,
    finish_reason: &'static str,
    usage: TokenUsage,
}

fn now_unix() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Splits `text` into stream fragments: one word (with its leading space) per piece, or
/// `chunk_chars` characters per piece.
fn fragments(text: &str, chunk_chars: usize) -> Vec<String> {
    if chunk_chars == 0 {
        text.split_whitespace()
            .enumerate()
            .map(|(i, w)| {
                if i == 0 {
                    w.to_owned()
                } else {
                    format!(" {w}")
                }
            })
            .collect()
    } else {
        let chars: Vec<char> = text.chars().collect();
        chars
            .chunks(chunk_chars)
            .map(|c| c.iter().collect())
            .collect()
    }
}

#[async_trait]
impl LlmGateway for DemoProvider {
    async fn chat(
        &self,
        ctx: &CallContext,
        request: &ChatRequest,
    ) -> Result<ChatResponse, GatewayError> {
        let answer = self.answer(ctx, request)?;
        if !self.config.answer_delay.is_zero() {
            tokio::time::sleep(self.config.answer_delay).await;
        }
        Ok(ChatResponse {
            id: answer.id,
            object: "chat.completion".to_owned(),
            created: now_unix(),
            model: answer.model,
            choices: vec![ChatChoice {
                index: 0,
                message: ChatMessage {
                    role: "assistant".to_owned(),
                    content: answer.text,
                },
                finish_reason: Some(answer.finish_reason.to_owned()),
            }],
            usage: answer.usage,
        })
    }

    async fn chat_stream(
        &self,
        ctx: &CallContext,
        request: &ChatRequest,
    ) -> Result<BoxStream<'static, Result<ChatChunk, GatewayError>>, GatewayError> {
        let answer = self.answer(ctx, request)?;
        let created = now_unix();
        let chunk = {
            let id = answer.id.clone();
            let model = answer.model.clone();
            move |delta: ChatDelta, finish: Option<String>, usage: Option<TokenUsage>| ChatChunk {
                id: id.clone(),
                object: "chat.completion.chunk".to_owned(),
                created,
                model: model.clone(),
                choices: vec![ChunkChoice {
                    index: 0,
                    delta,
                    finish_reason: finish,
                }],
                usage,
            }
        };
        let mut chunks = Vec::new();
        chunks.push(chunk(
            ChatDelta {
                role: Some("assistant".to_owned()),
                content: None,
            },
            None,
            None,
        ));
        let first_content = chunks.len();
        for piece in fragments(&answer.text, self.config.chunk_chars) {
            chunks.push(chunk(
                ChatDelta {
                    role: None,
                    content: Some(piece),
                },
                None,
                None,
            ));
        }
        chunks.push(chunk(
            ChatDelta::default(),
            Some(answer.finish_reason.to_owned()),
            Some(answer.usage),
        ));
        let delay = self.config.chunk_delay;
        let stream = stream::iter(chunks.into_iter().enumerate()).then(move |(i, c)| async move {
            if i >= first_content && !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            Ok(c)
        });
        Ok(stream.boxed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stratai_core::ids::{OrgId, RequestId, UserId};

    fn ctx() -> CallContext {
        CallContext {
            request_id: RequestId::new(),
            org_id: OrgId::new(),
            user_id: UserId::new(),
        }
    }

    fn request(text: &str, max_tokens: Option<u32>) -> ChatRequest {
        ChatRequest {
            model: "gpt-4o-mini".to_owned(),
            messages: vec![
                ChatMessage {
                    role: "system".to_owned(),
                    content: "be brief".to_owned(),
                },
                ChatMessage {
                    role: "user".to_owned(),
                    content: text.to_owned(),
                },
            ],
            max_tokens,
            temperature: None,
            stream: false,
            user: None,
        }
    }

    #[tokio::test]
    async fn answers_are_deterministic_with_exact_usage() {
        let p = DemoProvider::default();
        let c = ctx();
        let a = p.chat(&c, &request("hello there", None)).await.unwrap();
        let b = p.chat(&c, &request("hello there", None)).await.unwrap();
        assert_eq!(a.choices, b.choices);
        assert_eq!(a.usage.prompt_tokens, 4);
        let text = &a.choices[0].message.content;
        assert!(text.contains("hello there"), "{text}");
        assert_eq!(a.usage.completion_tokens, count_tokens(text));
        assert_eq!(a.usage.total_tokens, 4 + a.usage.completion_tokens);
        assert_eq!(a.choices[0].finish_reason.as_deref(), Some("stop"));
        assert_eq!(p.calls(), 2);
    }

    #[tokio::test]
    async fn max_tokens_truncates_and_says_length() {
        let p = DemoProvider::default();
        let a = p
            .chat(&ctx(), &request("hello there", Some(3)))
            .await
            .unwrap();
        assert_eq!(a.usage.completion_tokens, 3);
        assert_eq!(a.choices[0].finish_reason.as_deref(), Some("length"));
    }

    #[tokio::test]
    async fn echo_and_fail_directives() {
        let p = DemoProvider::default();
        let a = p
            .chat(&ctx(), &request("echo: the secret word", None))
            .await
            .unwrap();
        assert_eq!(a.choices[0].message.content, "the secret word");
        assert_eq!(a.usage.completion_tokens, 3);
        let err = p
            .chat(&ctx(), &request("fail: boom", None))
            .await
            .unwrap_err();
        assert!(matches!(err, GatewayError::Unavailable(_)), "{err}");
        let err = p
            .chat_stream(&ctx(), &request("fail: boom", None))
            .await
            .err()
            .unwrap();
        assert!(matches!(err, GatewayError::Unavailable(_)), "{err}");
    }

    #[tokio::test]
    async fn stream_reassembles_to_the_whole_answer() {
        for chunk_chars in [0, 1, 3, 7] {
            let p = DemoProvider::new(DemoConfig {
                chunk_chars,
                ..DemoConfig::default()
            });
            let c = ctx();
            let whole = p.chat(&c, &request("stream me", None)).await.unwrap();
            let chunks: Vec<ChatChunk> = p
                .chat_stream(&c, &request("stream me", None))
                .await
                .unwrap()
                .map(|c| c.unwrap())
                .collect()
                .await;
            let text: String = chunks
                .iter()
                .filter_map(|c| c.choices[0].delta.content.clone())
                .collect();
            assert_eq!(text, whole.choices[0].message.content);
            assert_eq!(
                chunks[0].choices[0].delta.role.as_deref(),
                Some("assistant")
            );
            let last = chunks.last().unwrap();
            assert_eq!(last.usage, Some(whole.usage));
            assert_eq!(last.choices[0].finish_reason.as_deref(), Some("stop"));
            assert!(chunks.len() > 3);
        }
    }

    #[tokio::test]
    async fn bad_requests_are_errors_not_panics() {
        let p = DemoProvider::default();
        let mut r = request("x", None);
        r.messages.clear();
        assert!(matches!(
            p.chat(&ctx(), &r).await.unwrap_err(),
            GatewayError::BadRequest(_)
        ));
        let mut r = request("x", Some(0));
        r.model = " ".to_owned();
        assert!(matches!(
            p.chat(&ctx(), &r).await.unwrap_err(),
            GatewayError::BadRequest(_)
        ));
        // max_tokens 0 gives an empty answer, not a panic.
        let a = p.chat(&ctx(), &request("x", Some(0))).await.unwrap();
        assert_eq!(a.usage.completion_tokens, 0);
    }
}
