//! Streamed answers: upstream chunks re-sent as SSE, settled exactly once.
//!
//! The settlement lives in a guard owned by the response body. When the upstream finishes,
//! the body settles the actual usage, then sends the `stratai` comment line and `[DONE]`.
//! When the client goes away first, hyper drops the body: the guard's `Drop` settles what
//! was delivered so far (status `partial`) in a background task. An upstream error before
//! anything was delivered releases the reservation (status `failed`, nothing billed).

use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use futures::stream::BoxStream;
use stratai_core::gateway::{
    CallContext, ChatChunk, ChatDelta, ChunkChoice, GatewayError, TokenUsage,
};
use stratai_guardrails::AnswerStream;

use super::error::OpenAiError;
use super::pipeline::{Admission, Ending, Pipeline, Ticket};
use super::{GatewayState, blocked_error, upstream_error};
use crate::demo_provider::{count_tokens, count_tokens_of};
use crate::metrics::{self, ReasonKind};

/// Owns the unsettled ticket; settles on drop if the stream did not finish.
struct Settlement {
    pipeline: Pipeline,
    ticket: Option<Ticket>,
    prompt_tokens: u32,
    delivered: String,
    usage: Option<TokenUsage>,
    upstream_id: Option<String>,
}

impl Settlement {
    fn delivered_usage(&self) -> TokenUsage {
        // Tokens delivered so far, counted the way the demo provider counts them (one word one
        // token); exact for it, an estimate for other providers.
        let completion = count_tokens(&self.delivered);
        TokenUsage {
            prompt_tokens: self.prompt_tokens,
            completion_tokens: completion,
            total_tokens: self.prompt_tokens.saturating_add(completion),
        }
    }

    fn ending(&self, complete: bool) -> Ending {
        if complete {
            Ending::Complete {
                usage: self.usage.unwrap_or_else(|| self.delivered_usage()),
                upstream_id: self.upstream_id.clone(),
            }
        } else if self.delivered.is_empty() && self.usage.is_none() {
            Ending::Failed
        } else {
            Ending::Partial {
                usage: self.delivered_usage(),
                upstream_id: self.upstream_id.clone(),
            }
        }
    }
}

impl Drop for Settlement {
    fn drop(&mut self) {
        if let Some(ticket) = self.ticket.take() {
            let ending = self.ending(false);
            let pipeline = self.pipeline.clone();
            tracing::info!(request_id = %ticket.request_id, "stream ended early; settling what was delivered");
            match tokio::runtime::Handle::try_current() {
                Ok(handle) => {
                    handle.spawn(async move {
                        pipeline.finish(&ticket, ending).await;
                    });
                }
                Err(_) => {
                    tracing::error!(request_id = %ticket.request_id, "no runtime to settle an abandoned stream; the reservation will expire");
                }
            }
        }
    }
}

fn sse_data(value: &impl serde::Serialize) -> Bytes {
    let mut buf = b"data: ".to_vec();
    if serde_json::to_writer(&mut buf, value).is_err() {
        buf.extend_from_slice(b"{}");
    }
    buf.extend_from_slice(b"\n\n");
    Bytes::from(buf)
}

struct BodyState {
    upstream: BoxStream<'static, Result<ChatChunk, GatewayError>>,
    settlement: Settlement,
    filter: Option<AnswerStream>,
    provider: &'static str,
    started: Instant,
    done: bool,
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

impl BodyState {
    /// Ends the post-filter: the held-back text to send, or the blocking decision.
    fn flush_filter(&mut self) -> Result<String, stratai_guardrails::Decision> {
        match self.filter.take() {
            None => Ok(String::new()),
            Some(f) => {
                let end = f.finish();
                if end.decision.is_allowed() {
                    Ok(end.text)
                } else {
                    Err(end.decision)
                }
            }
        }
    }

    /// Settles now (the body is ending).
    async fn settle(&mut self, complete: bool) -> Option<super::pipeline::Billed> {
        let ending = self.settlement.ending(complete);
        let ticket = self.settlement.ticket.take()?;
        let billed = self.settlement.pipeline.finish(&ticket, ending).await;
        Some(billed)
    }

    /// A guardrail blocked the answer: settle what the upstream produced, tell the client.
    async fn blocked(&mut self, decision: &stratai_guardrails::Decision) -> Bytes {
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
            Some(Ok(chunk)) => {
                let mut content = String::new();
                for choice in &chunk.choices {
                    if let Some(text) = &choice.delta.content {
                        content.push_str(text);
                    }
                }
                self.settlement.delivered.push_str(&content);
                if chunk.usage.is_some() {
                    self.settlement.usage = chunk.usage;
                }
                if self.settlement.upstream_id.is_none() {
                    self.settlement.upstream_id = Some(chunk.id.clone());
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
                                    Ok(_) => return Some(self.blocked_unknown().await),
                                };
                                return Some(self.blocked(&decision).await);
                            }
                            step.text
                        }
                        None => content,
                    };
                    if !released.is_empty() {
                        out.extend_from_slice(&sse_data(&text_chunk(&chunk, released)));
                    }
                    if ends {
                        match self.flush_filter() {
                            Ok(rest) if !rest.is_empty() => {
                                out.extend_from_slice(&sse_data(&text_chunk(&chunk, rest)));
                            }
                            Ok(_) => {}
                            Err(d) => return Some(self.blocked(&d).await),
                        }
                        let mut tail = chunk.clone();
                        for c in &mut tail.choices {
                            c.delta.content = None;
                        }
                        out.extend_from_slice(&sse_data(&tail));
                    }
                } else {
                    if ends {
                        match self.flush_filter() {
                            Ok(rest) if !rest.is_empty() => {
                                out.extend_from_slice(&sse_data(&text_chunk(&chunk, rest)));
                            }
                            Ok(_) => {}
                            Err(d) => return Some(self.blocked(&d).await),
                        }
                    }
                    out.extend_from_slice(&sse_data(&chunk));
                }
                Some(Bytes::from(out))
            }
            Some(Err(e)) => {
                tracing::warn!(error = %e, "upstream stream failed");
                metrics::record_upstream_latency(self.provider, "error", self.started.elapsed());
                // Settle what was produced (or release) now, then tell the client.
                self.settle(false).await;
                self.done = true;
                let mut out = sse_data(&upstream_error(&e).body()).to_vec();
                out.extend_from_slice(b"data: [DONE]\n\n");
                Some(Bytes::from(out))
            }
            None => {
                metrics::record_upstream_latency(self.provider, "ok", self.started.elapsed());
                let mut out = Vec::new();
                match self.flush_filter() {
                    Ok(rest) if !rest.is_empty() => {
                        let like = ChatChunk {
                            id: self.settlement.upstream_id.clone().unwrap_or_default(),
                            object: String::new(),
                            created: chrono::Utc::now().timestamp(),
                            model: String::new(),
                            choices: Vec::new(),
                            usage: None,
                        };
                        out.extend_from_slice(&sse_data(&text_chunk(&like, rest)));
                    }
                    Ok(_) => {}
                    Err(d) => return Some(self.blocked(&d).await),
                }
                let request_id = self.settlement.ticket.as_ref().map(|t| t.request_id);
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
                Some(Bytes::from(out))
            }
        }
    }

    async fn blocked_unknown(&mut self) -> Bytes {
        self.settle(false).await;
        self.done = true;
        let e = OpenAiError::new(
            StatusCode::FORBIDDEN,
            "permission_error",
            "guardrail_blocked",
            "blocked by a guardrail",
        );
        let mut out = sse_data(&e.body()).to_vec();
        out.extend_from_slice(b"data: [DONE]\n\n");
        Bytes::from(out)
    }
}

/// Opens the upstream stream and answers with SSE (or an error if it cannot start).
pub(super) async fn respond(
    state: GatewayState,
    ctx: CallContext,
    admission: Admission,
    mut headers: HeaderMap,
) -> Result<Response, OpenAiError> {
    let Admission {
        request, ticket, ..
    } = admission;
    let started = Instant::now();
    let upstream = match state.llm.chat_stream(&ctx, &request).await {
        Ok(s) => s,
        Err(e) => {
            metrics::record_upstream_latency(state.provider, "error", started.elapsed());
            metrics::record_decision("deny", ReasonKind::Upstream);
            state.pipeline.finish(&ticket, Ending::Failed).await;
            return Err(upstream_error(&e).for_request(ctx.request_id));
        }
    };
    let filter = state.pipeline.deps().guardrails.answer_stream(
        &ticket.principal,
        Some(ticket.tier.id),
        chrono::Utc::now(),
    );
    let body_state = BodyState {
        upstream,
        settlement: Settlement {
            pipeline: state.pipeline.clone(),
            ticket: Some(ticket),
            prompt_tokens: count_tokens_of(&request.messages),
            delivered: String::new(),
            usage: None,
            upstream_id: None,
        },
        filter: Some(filter),
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
