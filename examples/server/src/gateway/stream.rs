//! Streamed answers: upstream chunks re-sent as SSE through the Gatekeeper's incremental
//! post filter, settled exactly once.
//!
//! The settlement is owned by the response body's state. When the upstream finishes, the
//! body settles the actual usage (the Gatekeeper's `finish_stream`), then sends the `stratai`
//! comment line and `[DONE]`. When the client goes away first, hyper drops the body: the
//! state's `Drop` settles what the upstream produced so far (status `partial`) in a
//! background task. An upstream error before anything was produced releases the reservation
//! (status `failed`, nothing billed).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use futures::stream::BoxStream;
use stratai_core::gateway::{
    CallContext, ChatChunk, ChatDelta, ChunkChoice, GatewayError, TokenUsage,
};
use stratai_guardrails::{AnswerStream, Decision, Outcome, StreamEnd};

use super::error::OpenAiError;
use super::pipeline::{Admission, Billed, Pipeline, Ticket};
use super::{GatewayState, blocked_error, upstream_error};
use crate::metrics::{self, ReasonKind};
use stratai_core::pricing::{prompt_token_bound, text_token_bound};

fn sse_data(value: &impl serde::Serialize) -> Bytes {
    let mut buf = b"data: ".to_vec();
    if serde_json::to_writer(&mut buf, value).is_err() {
        buf.extend_from_slice(b"{}");
    }
    buf.extend_from_slice(b"\n\n");
    Bytes::from(buf)
}

/// A content chunk carrying `text`, shaped like `like`.
fn text_chunk(like: &ChatChunk, text: String) -> ChatChunk {
    ChatChunk {
        id: like.id.clone(),
        object: "chat.completion.chunk".to_owned(),
        created: like.created,
        model: like.model.clone(),
        choices: vec![ChunkChoice {
            index: 0,
            delta: ChatDelta {
                role: None,
                content: Some(text),
            },
            finish_reason: None,
        }],
        usage: None,
    }
}

struct BodyState {
    upstream: BoxStream<'static, Result<ChatChunk, GatewayError>>,
    pipeline: Pipeline,
    ticket: Option<Ticket>,
    filter: Option<AnswerStream>,
    end: Option<StreamEnd>,
    prompt_tokens: u32,
    /// The `max_tokens` the request went upstream with (the output bound).
    max_tokens: u32,
    produced: String,
    usage: Option<TokenUsage>,
    upstream_id: Option<String>,
    provider: &'static str,
    started: Instant,
    done: bool,
}

impl BodyState {
    /// Tokens produced so far: the upstream's count when it reported one, else the bound
    /// the reservation was made with (core's `prompt_token_bound` of the prompt, the produced
    /// text's bytes capped at the request's `max_tokens`), so an unreported stream bills at
    /// most what was reserved.
    fn produced_usage(&self) -> TokenUsage {
        if let Some(u) = self.usage {
            return u;
        }
        let completion = text_token_bound(&self.produced).min(self.max_tokens);
        TokenUsage {
            prompt_tokens: self.prompt_tokens,
            completion_tokens: completion,
            total_tokens: self.prompt_tokens.saturating_add(completion),
        }
    }

    /// The filter's end (ending it now if it still runs).
    fn take_end(&mut self) -> StreamEnd {
        if let Some(f) = self.filter.take() {
            return f.finish();
        }
        self.end.take().unwrap_or_else(|| StreamEnd {
            text: String::new(),
            decision: Decision {
                outcome: Outcome::Allow,
                modifications: Vec::new(),
                reasons: Vec::new(),
                retry_after: None,
                at: chrono::Utc::now(),
            },
        })
    }

    /// Ends the post filter: the held-back text to send, or the blocking decision.
    fn flush_filter(&mut self) -> Result<String, Decision> {
        let Some(f) = self.filter.take() else {
            return Ok(String::new());
        };
        let end = f.finish();
        let result = if end.decision.is_allowed() {
            Ok(end.text.clone())
        } else {
            Err(end.decision.clone())
        };
        self.end = Some(end);
        result
    }

    /// Settles now: complete, partial (something was produced) or failed (nothing was).
    async fn settle(&mut self, complete: bool) -> Option<Billed> {
        let ticket = self.ticket.take()?;
        if !complete && self.produced.is_empty() && self.usage.is_none() {
            return Some(self.pipeline.abort(ticket).await);
        }
        let end = self.take_end();
        let usage = self.produced_usage();
        Some(
            self.pipeline
                .finish_stream(ticket, end, usage, self.upstream_id.clone(), complete)
                .await,
        )
    }

    /// A guardrail blocked the answer: settle what the upstream produced, tell the client.
    async fn blocked(&mut self, decision: &Decision) -> Bytes {
        metrics::record_decision("deny", ReasonKind::Guardrail);
        self.settle(false).await;
        self.done = true;
        let mut out = sse_data(&blocked_error(decision).body()).to_vec();
        out.extend_from_slice(b"data: [DONE]\n\n");
        Bytes::from(out)
    }

    async fn step(&mut self) -> Option<Bytes> {
        if self.done {
            return None;
        }
        match self.upstream.next().await {
            Some(Ok(chunk)) => Some(self.on_chunk(chunk).await),
            Some(Err(e)) => {
                tracing::warn!(error = %e, "upstream stream failed");
                metrics::record_upstream_latency(self.provider, "error", self.started.elapsed());
                if self.produced.is_empty() {
                    metrics::record_decision("deny", ReasonKind::Upstream);
                }
                self.settle(false).await;
                self.done = true;
                let mut out = sse_data(&upstream_error(&e).body()).to_vec();
                out.extend_from_slice(b"data: [DONE]\n\n");
                Some(Bytes::from(out))
            }
            None => Some(self.on_end().await),
        }
    }

    async fn on_chunk(&mut self, chunk: ChatChunk) -> Bytes {
        let mut content = String::new();
        for choice in &chunk.choices {
            if let Some(text) = &choice.delta.content {
                content.push_str(text);
            }
        }
        self.produced.push_str(&content);
        if chunk.usage.is_some() {
            self.usage = chunk.usage;
        }
        if self.upstream_id.is_none() {
            self.upstream_id = Some(chunk.id.clone());
        }
        let ends = chunk.choices.iter().any(|c| c.finish_reason.is_some())
            || (chunk.choices.is_empty() && chunk.usage.is_some());
        let mut out = Vec::new();
        if !content.is_empty() {
            let released = match self.filter.as_mut() {
                Some(f) => {
                    let step = f.push(&content);
                    if step.blocked {
                        let decision = match self.flush_filter() {
                            Err(d) => d,
                            Ok(_) => self.take_end().decision,
                        };
                        return self.blocked(&decision).await;
                    }
                    step.text
                }
                None => content,
            };
            if !released.is_empty() {
                out.extend_from_slice(&sse_data(&text_chunk(&chunk, released)));
            }
        }
        if ends {
            match self.flush_filter() {
                Ok(rest) if !rest.is_empty() => {
                    out.extend_from_slice(&sse_data(&text_chunk(&chunk, rest)));
                }
                Ok(_) => {}
                Err(d) => return self.blocked(&d).await,
            }
        }
        if ends || (chunk.choices.iter().all(|c| c.delta.content.is_none())) {
            let mut tail = chunk;
            for c in &mut tail.choices {
                c.delta.content = None;
            }
            out.extend_from_slice(&sse_data(&tail));
        }
        Bytes::from(out)
    }

    async fn on_end(&mut self) -> Bytes {
        metrics::record_upstream_latency(self.provider, "ok", self.started.elapsed());
        let mut out = Vec::new();
        match self.flush_filter() {
            Ok(rest) if !rest.is_empty() => {
                let like = ChatChunk {
                    id: self.upstream_id.clone().unwrap_or_default(),
                    object: String::new(),
                    created: chrono::Utc::now().timestamp(),
                    model: String::new(),
                    choices: Vec::new(),
                    usage: None,
                };
                out.extend_from_slice(&sse_data(&text_chunk(&like, rest)));
            }
            Ok(_) => {}
            Err(d) => return self.blocked(&d).await,
        }
        let request_id = self.ticket.as_ref().map(|t| t.request_id);
        if let (Some(billed), Some(id)) = (self.settle(true).await, request_id) {
            out.extend_from_slice(
                format!(
                    ": stratai billed_cost={} request_id={id}\n\n",
                    billed.amount.amount()
                )
                .as_bytes(),
            );
        }
        out.extend_from_slice(b"data: [DONE]\n\n");
        self.done = true;
        Bytes::from(out)
    }
}

impl Drop for BodyState {
    fn drop(&mut self) {
        let Some(ticket) = self.ticket.take() else {
            return;
        };
        let request_id = ticket.request_id;
        tracing::info!(request_id = %request_id, "stream ended early; settling what was produced");
        let pipeline = self.pipeline.clone();
        let nothing = self.produced.is_empty() && self.usage.is_none();
        let end = self.take_end();
        let usage = self.produced_usage();
        let upstream_id = self.upstream_id.take();
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(async move {
                    if nothing {
                        pipeline.abort(ticket).await;
                    } else {
                        pipeline
                            .finish_stream(ticket, end, usage, upstream_id, false)
                            .await;
                    }
                });
            }
            Err(_) => {
                tracing::error!(request_id = %request_id, "no runtime to settle an abandoned stream; the reservation will expire");
            }
        }
    }
}

/// Opens the upstream stream and answers with SSE (or an error if it cannot start).
pub(super) async fn respond(
    state: Arc<GatewayState>,
    ctx: CallContext,
    admission: Admission,
    mut headers: HeaderMap,
    upstream_time: &mut Option<Duration>,
) -> Result<Response, OpenAiError> {
    let Admission {
        request, ticket, ..
    } = admission;
    let started = Instant::now();
    let opened = state.llm.chat_stream(&ctx, &request).await;
    *upstream_time = Some(started.elapsed());
    let upstream = match opened {
        Ok(s) => s,
        Err(e) => {
            metrics::record_upstream_latency(state.provider, "error", started.elapsed());
            metrics::record_decision("deny", ReasonKind::Upstream);
            state.pipeline.abort(ticket).await;
            return Err(upstream_error(&e).for_request(ctx.request_id));
        }
    };
    let filter = ticket.answer_stream();
    let body_state = BodyState {
        upstream,
        pipeline: state.pipeline.clone(),
        ticket: Some(ticket),
        filter: Some(filter),
        end: None,
        prompt_tokens: prompt_token_bound(&request.messages),
        max_tokens: request.max_tokens.unwrap_or(u32::MAX),
        produced: String::new(),
        usage: None,
        upstream_id: None,
        provider: state.provider,
        started,
        done: false,
    };
    let body = futures::stream::unfold(body_state, |mut st| async move {
        let bytes = st.step().await?;
        Some((Ok::<Bytes, std::io::Error>(bytes), st))
    });
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok((StatusCode::OK, headers, Body::from_stream(body)).into_response())
}
