#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

/// Words the mock answers with; an answer of `n` tokens is the first `n` words, cycling.
const WORDS: [&str; 16] = [
    "Hello",
    "from",
    "the",
    "StratAI",
    "mock",
    "upstream",
    "with",
    "deterministic",
    "usage",
    "and",
    "unique",
    "ids",
    "for",
    "every",
    "single",
    "call",
];

/// Settings of the mock upstream.
#[derive(Debug, Clone)]
pub struct MockConfig {
    /// Completion tokens of an answer when the request does not ask for fewer (`max_tokens`).
    pub completion_tokens: u32,
    /// Model ids listed by `GET /v1/models` (any model name is answered by chat completions).
    pub models: Vec<String>,
}

impl Default for MockConfig {
    fn default() -> Self {
        Self {
            completion_tokens: 8,
            models: vec!["mock-gpt".to_owned(), "mock-gpt-premium".to_owned()],
        }
    }
}

#[derive(Debug)]
struct AppState {
    config: MockConfig,
    requests: AtomicU64,
}

/// Builds the router: `POST /v1/chat/completions`, `GET /v1/models`, `GET /health` (and the
/// same routes without the `/v1` prefix).
pub fn router(config: MockConfig) -> Router {
    router_with_state(Arc::new(AppState {
        config,
        requests: AtomicU64::new(0),
    }))
}

fn router_with_state(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/chat/completions", post(chat_completions))
        .route("/v1/models", get(models))
        .route("/models", get(models))
        .route("/health", get(|| async { "ok" }))
        .with_state(state)
}

/// Serves the mock with [`MockConfig::default`] on `listener` until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener) -> std::io::Result<()> {
    serve_with(listener, MockConfig::default()).await
}

/// Serves the mock with `config` on `listener` until the task is dropped.
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    config: MockConfig,
) -> std::io::Result<()> {
    axum::serve(no_delay(listener), router(config)).await
}

/// `listener` with `TCP_NODELAY` on every accepted connection: without it, Nagle's algorithm
/// can hold a response's second segment until the client's delayed acknowledgement (up to
/// 40 ms), which a load measurement would wrongly charge to whoever calls the mock.
fn no_delay(
    listener: tokio::net::TcpListener,
) -> axum::serve::TapIo<
    tokio::net::TcpListener,
    impl FnMut(&mut tokio::net::TcpStream) + Send + 'static,
> {
    use axum::serve::ListenerExt as _;
    listener.tap_io(|stream| {
        let _ = stream.set_nodelay(true);
    })
}

/// A mock upstream running on a background task; stops when dropped.
pub struct MockServer {
    addr: SocketAddr,
    state: Arc<AppState>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl fmt::Debug for MockServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl MockServer {
    /// Starts serving on `listener` (bind port 0 for tests) on the current tokio runtime.
    pub fn start(listener: tokio::net::TcpListener, config: MockConfig) -> std::io::Result<Self> {
        let addr = listener.local_addr()?;
        let state = Arc::new(AppState {
            config,
            requests: AtomicU64::new(0),
        });
        let app = router_with_state(Arc::clone(&state));
        let task = tokio::spawn(async move { axum::serve(no_delay(listener), app).await });
        Ok(Self { addr, state, task })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The OpenAI base URL, `http://ADDR/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Chat completion requests answered so far (successful or not).
    pub fn requests(&self) -> u64 {
        self.state.requests.load(Ordering::Relaxed)
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Counts whitespace-separated words of a message `content` (a string, or an array of parts
/// with `text`) while deserializing, without keeping the text.
#[derive(Debug, Default, Clone, Copy)]
struct WordCount(u32);

fn words(text: &str) -> u32 {
    u32::try_from(text.split_whitespace().count()).unwrap_or(u32::MAX)
}

impl<'de> Deserialize<'de> for WordCount {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct CountVisitor;
        impl<'de> Visitor<'de> for CountVisitor {
            type Value = WordCount;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, an array of content parts or null")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<WordCount, E> {
                Ok(WordCount(words(v)))
            }
            fn visit_unit<E: de::Error>(self) -> Result<WordCount, E> {
                Ok(WordCount(0))
            }
            fn visit_none<E: de::Error>(self) -> Result<WordCount, E> {
                Ok(WordCount(0))
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<WordCount, D::Error> {
                d.deserialize_any(self)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<WordCount, A::Error> {
                let mut total = 0u32;
                while let Some(part) = seq.next_element::<WordCount>()? {
                    total = total.saturating_add(part.0);
                }
                Ok(WordCount(total))
            }
            // A content part: only its `text` counts.
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<WordCount, A::Error> {
                let mut total = 0u32;
                while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    if key == "text" {
                        total = total.saturating_add(map.next_value::<WordCount>()?.0);
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(WordCount(total))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<WordCount, E> {
                Ok(WordCount(0))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<WordCount, E> {
                Ok(WordCount(0))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<WordCount, E> {
                Ok(WordCount(0))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<WordCount, E> {
                Ok(WordCount(0))
            }
        }
        deserializer.deserialize_any(CountVisitor)
    }
}

#[derive(Debug, Deserialize)]
struct Message {
    #[serde(default)]
    content: WordCount,
}

/// The words of all messages, summed while deserializing (no vector of messages is kept).
#[derive(Debug, Default, Clone, Copy)]
struct MessagesWords(u32);

impl<'de> Deserialize<'de> for MessagesWords {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SumVisitor;
        impl<'de> Visitor<'de> for SumVisitor {
            type Value = MessagesWords;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array of messages")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<MessagesWords, A::Error> {
                let mut total = 0u32;
                while let Some(message) = seq.next_element::<Message>()? {
                    total = total.saturating_add(message.content.0);
                }
                Ok(MessagesWords(total))
            }
        }
        deserializer.deserialize_seq(SumVisitor)
    }
}

#[derive(Debug, Default, Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

#[derive(Debug, Deserialize)]
struct ChatRequest<'a> {
    #[serde(borrow)]
    model: std::borrow::Cow<'a, str>,
    messages: Option<MessagesWords>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    #[serde(default)]
    max_tokens: Option<u32>,
    #[serde(default)]
    max_completion_tokens: Option<u32>,
}

#[derive(Serialize)]
struct Usage {
    prompt_tokens: u32,
    completion_tokens: u32,
    total_tokens: u32,
}

#[derive(Serialize)]
struct AnswerMessage<'a> {
    role: &'static str,
    content: &'a str,
}

#[derive(Serialize)]
struct Choice<'a> {
    index: u32,
    message: AnswerMessage<'a>,
    finish_reason: &'static str,
}

#[derive(Serialize)]
struct Completion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [Choice<'a>; 1],
    usage: Usage,
}

#[derive(Serialize)]
struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
}

#[derive(Serialize)]
struct ChunkChoice<'a> {
    index: u32,
    delta: Delta<'a>,
    finish_reason: Option<&'static str>,
}

#[derive(Serialize)]
struct Chunk<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: &'a [ChunkChoice<'a>],
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Usage>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Serialize)]
struct ErrorDetail<'a> {
    message: &'a str,
    r#type: &'static str,
    param: Option<&'static str>,
    code: Option<&'static str>,
}

fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn error_response(message: &str, param: Option<&'static str>) -> Response {
    let body = ErrorBody {
        error: ErrorDetail {
            message,
            r#type: "invalid_request_error",
            param,
            code: None,
        },
    };
    match serde_json::to_vec(&body) {
        Ok(bytes) => json_response(StatusCode::BAD_REQUEST, bytes),
        Err(_) => StatusCode::BAD_REQUEST.into_response(),
    }
}

fn internal_error() -> Response {
    StatusCode::INTERNAL_SERVER_ERROR.into_response()
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The answer text of `n` words.
fn answer(n: u32) -> String {
    let mut out = String::with_capacity(n as usize * 8);
    for (i, word) in WORDS.iter().cycle().take(n as usize).enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

async fn chat_completions(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    state.requests.fetch_add(1, Ordering::Relaxed);
    let request: ChatRequest<'_> = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(err) => return error_response(&format!("invalid request body: {err}"), None),
    };
    let Some(messages) = request.messages else {
        return error_response("missing required parameter: `messages`", Some("messages"));
    };
    let prompt_tokens = messages.0.max(1);
    let limit = request
        .max_tokens
        .or(request.max_completion_tokens)
        .unwrap_or(u32::MAX);
    let completion_tokens = state.config.completion_tokens.min(limit);
    let usage = Usage {
        prompt_tokens,
        completion_tokens,
        total_tokens: prompt_tokens.saturating_add(completion_tokens),
    };
    let id = format!("chatcmpl-{}", uuid::Uuid::new_v4().simple());
    let created = now_secs();
    let text = answer(completion_tokens);
    if request.stream.unwrap_or(false) {
        let include_usage = request.stream_options.is_some_and(|o| o.include_usage);
        return match sse_body(
            &id,
            created,
            &request.model,
            &text,
            include_usage.then_some(usage),
        ) {
            Ok(body) => (
                StatusCode::OK,
                [
                    (header::CONTENT_TYPE, "text/event-stream"),
                    (header::CACHE_CONTROL, "no-cache"),
                ],
                Body::from(body),
            )
                .into_response(),
            Err(_) => internal_error(),
        };
    }
    let completion = Completion {
        id: &id,
        object: "chat.completion",
        created,
        model: &request.model,
        choices: [Choice {
            index: 0,
            message: AnswerMessage {
                role: "assistant",
                content: &text,
            },
            finish_reason: "stop",
        }],
        usage,
    };
    match serde_json::to_vec(&completion) {
        Ok(bytes) => json_response(StatusCode::OK, bytes),
        Err(_) => internal_error(),
    }
}

/// The whole SSE answer at once: a role chunk, one chunk per word, a final chunk with
/// `finish_reason`, the usage chunk when asked, then `[DONE]`.
fn sse_body(
    id: &str,
    created: u64,
    model: &str,
    text: &str,
    usage: Option<Usage>,
) -> serde_json::Result<String> {
    let mut out = String::with_capacity(256 + text.len() * 24);
    let mut push = |choices: &[ChunkChoice<'_>], usage: Option<Usage>| -> serde_json::Result<()> {
        let chunk = Chunk {
            id,
            object: "chat.completion.chunk",
            created,
            model,
            choices,
            usage,
        };
        out.push_str("data: ");
        out.push_str(&serde_json::to_string(&chunk)?);
        out.push_str("\n\n");
        Ok(())
    };
    push(
        &[ChunkChoice {
            index: 0,
            delta: Delta {
                role: Some("assistant"),
                content: Some(""),
            },
            finish_reason: None,
        }],
        None,
    )?;
    for piece in text.split_inclusive(' ') {
        push(
            &[ChunkChoice {
                index: 0,
                delta: Delta {
                    role: None,
                    content: Some(piece),
                },
                finish_reason: None,
            }],
            None,
        )?;
    }
    push(
        &[ChunkChoice {
            index: 0,
            delta: Delta {
                role: None,
                content: None,
            },
            finish_reason: Some("stop"),
        }],
        None,
    )?;
    if let Some(usage) = usage {
        push(&[], Some(usage))?;
    }
    out.push_str("data: [DONE]\n\n");
    Ok(out)
}

#[derive(Serialize)]
struct ModelEntry<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    owned_by: &'static str,
}

#[derive(Serialize)]
struct ModelList<'a> {
    object: &'static str,
    data: Vec<ModelEntry<'a>>,
}

async fn models(State(state): State<Arc<AppState>>) -> Response {
    let list = ModelList {
        object: "list",
        data: state
            .config
            .models
            .iter()
            .map(|id| ModelEntry {
                id,
                object: "model",
                created: 0,
                owned_by: "stratai-mock",
            })
            .collect(),
    };
    match serde_json::to_vec(&list) {
        Ok(bytes) => json_response(StatusCode::OK, bytes),
        Err(_) => internal_error(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_words_of_strings_and_parts() {
        let m: Message =
            serde_json::from_str(r#"{"role":"user","content":"hello  big\nworld"}"#).unwrap();
        assert_eq!(m.content.0, 3);
        let m: Message = serde_json::from_str(
            r#"{"role":"user","content":[{"type":"text","text":"a b"},{"type":"image_url","image_url":{"url":"x y z"}}]}"#,
        )
        .unwrap();
        assert_eq!(m.content.0, 2);
        let m: Message = serde_json::from_str(r#"{"role":"assistant","content":null}"#).unwrap();
        assert_eq!(m.content.0, 0);
    }

    #[test]
    fn answer_has_the_requested_number_of_words() {
        assert_eq!(answer(0), "");
        assert_eq!(answer(3).split(' ').count(), 3);
        assert_eq!(answer(40).split(' ').count(), 40);
    }
}
