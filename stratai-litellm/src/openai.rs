//! A plain OpenAI-compatible upstream (one static key, no per-member keys): for load runs
//! against the project's mock upstream and for services that point the governed path
//! straight at an OpenAI-compatible endpoint. Production with LiteLLM uses
//! [`LiteLlmGateway`](crate::gateway::LiteLlmGateway) instead.
//!
//! It lives here, not in the server, because an embedding service needs it as much as the
//! server does, and this crate already holds the HTTP client and the SSE parsing an upstream
//! provider needs (the enforcement crate stays free of an HTTP client).

use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use serde::Serialize;
use stratai_core::gateway::{CallContext, ChatChunk, ChatRequest, ChatResponse, GatewayError};
use stratai_core::ports::LlmGateway;

/// An OpenAI-compatible upstream at `base_url` (e.g. `http://127.0.0.1:18080/v1`).
#[derive(Clone)]
pub struct OpenAiCompatProvider {
    http: reqwest::Client,
    base_url: String,
    /// `{base_url}/chat/completions`, parsed once (not per request).
    chat_url: reqwest::Url,
    key: Option<String>,
}

impl std::fmt::Debug for OpenAiCompatProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiCompatProvider")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl OpenAiCompatProvider {
    /// A provider for `base_url` (without the trailing `/chat/completions`), sending `key` as
    /// a bearer token when given. An invalid URL is an error here, not at the first request.
    pub fn new(base_url: &str, key: Option<String>) -> Result<Self, GatewayError> {
        let base_url = base_url.trim_end_matches('/').to_owned();
        let chat_url = reqwest::Url::parse(&format!("{base_url}/chat/completions"))
            .map_err(|e| GatewayError::Unavailable(format!("upstream URL `{base_url}`: {e}")))?;
        let http = Self::http_client()
            .map_err(|e| GatewayError::Unavailable(format!("http client: {e}")))?;
        Ok(Self {
            http,
            base_url,
            chat_url,
            key,
        })
    }

    /// The HTTP client the provider calls its upstream with: 60 s per request, 5 s to
    /// connect, up to 256 idle connections kept (the load harness's bare proxy uses it too).
    pub fn http_client() -> Result<reqwest::Client, reqwest::Error> {
        reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .connect_timeout(Duration::from_secs(5))
            .pool_max_idle_per_host(256)
            .build()
    }

    async fn post(
        &self,
        ctx: &CallContext,
        request: &ChatRequest,
        stream: bool,
    ) -> Result<reqwest::Response, GatewayError> {
        let copy;
        let request = if request.stream == stream {
            request
        } else {
            copy = ChatRequest {
                stream,
                ..request.clone()
            };
            &copy
        };
        let body = serde_json::to_vec(&UpstreamBody {
            request,
            stream_options: stream.then_some(StreamOptions {
                include_usage: true,
            }),
        })
        .map_err(|e| GatewayError::BadRequest(format!("request body: {e}")))?;
        let mut builder = self
            .http
            .post(self.chat_url.clone())
            .header("x-stratai-user-id", ctx.user_id.to_string())
            .header("x-stratai-org-id", ctx.org_id.to_string())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        if let Some(key) = &self.key {
            builder = builder.bearer_auth(key);
        }
        let response = builder
            .send()
            .await
            .map_err(|e| GatewayError::Unavailable(e.without_url().to_string()))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let retry = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let text = response.text().await.unwrap_or_default();
        let text: String = text.chars().take(500).collect();
        Err(match status.as_u16() {
            400 | 422 => GatewayError::BadRequest(text),
            401 | 403 => GatewayError::Refused(text),
            429 => GatewayError::RateLimited {
                retry_after_secs: retry,
            },
            _ => GatewayError::Unavailable(format!("upstream status {status}: {text}")),
        })
    }
}

/// The upstream's request body: the admitted request, with `stream` as asked and, on a
/// stream, `stream_options.include_usage` (so the last chunk carries the token counts);
/// serialized straight to bytes.
#[derive(Serialize)]
struct UpstreamBody<'a> {
    #[serde(flatten)]
    request: &'a ChatRequest,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<StreamOptions>,
}

#[derive(Serialize)]
struct StreamOptions {
    include_usage: bool,
}

#[async_trait]
impl LlmGateway for OpenAiCompatProvider {
    async fn chat(
        &self,
        ctx: &CallContext,
        request: &ChatRequest,
    ) -> Result<ChatResponse, GatewayError> {
        let response = self.post(ctx, request, false).await?;
        let bytes = response
            .bytes()
            .await
            .map_err(|e| GatewayError::Unavailable(e.without_url().to_string()))?;
        serde_json::from_slice(&bytes)
            .map_err(|e| GatewayError::Unavailable(format!("malformed upstream answer: {e}")))
    }

    async fn chat_stream(
        &self,
        ctx: &CallContext,
        request: &ChatRequest,
    ) -> Result<BoxStream<'static, Result<ChatChunk, GatewayError>>, GatewayError> {
        let response = self.post(ctx, request, true).await?;
        let bytes = response.bytes_stream();
        let events = futures::stream::unfold(
            (bytes, String::new(), false),
            |(mut bytes, mut buf, done)| async move {
                if done {
                    return None;
                }
                loop {
                    if let Some(end) = buf.find("\n\n") {
                        let event: String = buf.drain(..end + 2).collect();
                        let data: String = event
                            .lines()
                            .filter_map(|l| l.strip_prefix("data:"))
                            .map(str::trim)
                            .collect::<Vec<_>>()
                            .join("\n");
                        if data.is_empty() {
                            continue;
                        }
                        if data == "[DONE]" {
                            return None;
                        }
                        let item = serde_json::from_str::<ChatChunk>(&data).map_err(|e| {
                            GatewayError::Unavailable(format!("malformed upstream chunk: {e}"))
                        });
                        let failed = item.is_err();
                        return Some((item, (bytes, buf, failed)));
                    }
                    match bytes.next().await {
                        Some(Ok(b)) => buf.push_str(&String::from_utf8_lossy(&b).replace('\r', "")),
                        Some(Err(e)) => {
                            return Some((
                                Err(GatewayError::Unavailable(e.without_url().to_string())),
                                (bytes, buf, true),
                            ));
                        }
                        None => return None,
                    }
                }
            },
        );
        Ok(events.boxed())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use stratai_core::gateway::ChatMessage;
    use stratai_core::ids::{OrgId, RequestId, UserId};

    fn ask(stream: bool) -> ChatRequest {
        ChatRequest {
            model: "mock-gpt".to_owned(),
            messages: vec![ChatMessage {
                role: "user".to_owned(),
                content: "hello upstream".to_owned(),
            }],
            max_tokens: Some(5),
            temperature: None,
            stream,
            user: None,
        }
    }

    fn ctx() -> CallContext {
        CallContext {
            request_id: RequestId::new(),
            org_id: OrgId::new(),
            user_id: UserId::new(),
        }
    }

    #[test]
    fn the_body_carries_the_request_with_stream_as_asked() {
        let plain: serde_json::Value = serde_json::to_value(UpstreamBody {
            request: &ask(false),
            stream_options: None,
        })
        .unwrap();
        assert_eq!(
            plain,
            serde_json::json!({
                "model": "mock-gpt",
                "messages": [{"role": "user", "content": "hello upstream"}],
                "max_tokens": 5,
                "stream": false
            })
        );
        let streamed: serde_json::Value = serde_json::to_value(UpstreamBody {
            request: &ask(true),
            stream_options: Some(StreamOptions {
                include_usage: true,
            }),
        })
        .unwrap();
        assert_eq!(streamed["stream"], true);
        assert_eq!(streamed["stream_options"]["include_usage"], true);
    }

    /// Against an OpenAI-compatible upstream that answers JSON or SSE as `stream` says (the
    /// server's load run also drives it against the project's mock upstream).
    #[tokio::test]
    async fn answers_and_streams_through_an_upstream() {
        use wiremock::matchers::{body_partial_json, method, path};
        use wiremock::{Mock, MockServer, ResponseTemplate};

        let server = MockServer::start().await;
        let answer = serde_json::json!({
            "id": "c1", "object": "chat.completion", "created": 1, "model": "mock-gpt",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}
        });
        Mock::given(method("POST"))
            .and(path("/v1/chat/completions"))
            .and(body_partial_json(serde_json::json!({"stream": false})))
            .respond_with(ResponseTemplate::new(200).set_body_json(answer))
            .expect(2)
            .mount(&server)
            .await;
        let events = [
            r#"{"id":"c1","model":"mock-gpt","choices":[{"index":0,"delta":{"content":"Hi"}}]}"#,
            r#"{"id":"c1","model":"mock-gpt","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":5,"total_tokens":8}}"#,
            "[DONE]",
        ]
        .iter()
        .map(|e| format!("data: {e}\n\n"))
        .collect::<String>();
        Mock::given(method("POST"))
            .and(path("/v1/chat/completions"))
            .and(body_partial_json(
                serde_json::json!({"stream": true, "stream_options": {"include_usage": true}}),
            ))
            .respond_with(
                ResponseTemplate::new(200)
                    .insert_header("content-type", "text/event-stream")
                    .set_body_string(events),
            )
            .expect(1)
            .mount(&server)
            .await;
        let provider = OpenAiCompatProvider::new(&format!("{}/v1/", server.uri()), None).unwrap();

        // `chat` asks for JSON even when handed a request marked as a stream.
        for marked in [false, true] {
            let answer = provider.chat(&ctx(), &ask(marked)).await.unwrap();
            assert_eq!(answer.usage.completion_tokens, 5, "{answer:?}");
            assert!(answer.usage.prompt_tokens > 0);
        }

        let mut chunks = provider.chat_stream(&ctx(), &ask(true)).await.unwrap();
        let mut text = String::new();
        let mut usage = None;
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.unwrap();
            for c in &chunk.choices {
                text.push_str(c.delta.content.as_deref().unwrap_or_default());
            }
            usage = chunk.usage.or(usage);
        }
        assert_eq!(text, "Hi");
        assert_eq!(usage.map(|u| u.completion_tokens), Some(5));
    }
}
