//! A plain OpenAI-compatible upstream (one static key, no per-member keys): for load runs
//! against the project's mock upstream and for deployments that point the gateway straight
//! at an OpenAI-compatible endpoint. Production with LiteLLM uses
//! [`LiteLlmProvider`](super::litellm::LiteLlmProvider) instead.

use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
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
        let mut body = serde_json::to_value(request)
            .map_err(|e| GatewayError::BadRequest(format!("request body: {e}")))?;
        if let Some(map) = body.as_object_mut() {
            map.insert("stream".to_owned(), stream.into());
            if stream {
                map.insert(
                    "stream_options".to_owned(),
                    serde_json::json!({"include_usage": true}),
                );
            }
        }
        let mut builder = self
            .http
            .post(self.chat_url.clone())
            .header("x-stratai-user-id", ctx.user_id.to_string())
            .header("x-stratai-org-id", ctx.org_id.to_string())
            .json(&body);
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
