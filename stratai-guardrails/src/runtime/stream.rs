//! [`GovernedStream`]: a provider's stream passed through the Gatekeeper's incremental post
//! filter, settled exactly once.
//!
//! The settlement is owned by the stream. When the provider finishes, [`GovernedStream::next`]
//! settles the actual usage (the Gatekeeper's `finish_stream`) and answers
//! [`StreamEvent::Done`] with the bill. When the consumer drops the stream first (an HTTP
//! client went away), its `Drop` settles what the provider produced so far (status `partial`)
//! in a background task. A provider error before anything was produced releases the
//! reservation (status `failed`, nothing billed). Framing (SSE, ...) is the caller's.

use std::time::Instant;

use futures::StreamExt;
use futures::stream::BoxStream;
use stratai_core::gateway::TokenUsage;
use stratai_core::gateway::{ChatChunk, ChatDelta, ChatRequest, ChunkChoice, GatewayError};
use stratai_core::ids::RequestId;
use stratai_core::pricing::{prompt_token_bound, text_token_bound};

use super::metrics::{self, ReasonKind};
use super::{Billed, Runtime, Ticket};
use crate::{AnswerStream, Decision, Outcome, StreamEnd};

/// What a [`GovernedStream`] yields.
#[derive(Debug)]
pub enum StreamEvent {
    /// Chunks to forward, in order: text released by the post filter (shaped like the
    /// provider's chunk) and the provider's content-free chunks (role, finish reason, usage).
    Chunks(Vec<ChatChunk>),
    /// A post-response guardrail blocked the answer: what was produced is settled, the
    /// stream ends.
    Blocked(Decision),
    /// The provider's stream failed: what was produced is settled (or the reservation
    /// released), the stream ends.
    Failed(GatewayError),
    /// The provider finished: the last released text, then the bill; the stream ends.
    Done {
        /// The text the filter held back until the end.
        chunks: Vec<ChatChunk>,
        /// The request.
        request_id: RequestId,
        /// What was billed (`None` only if the stream was already settled).
        billed: Option<Billed>,
    },
}

/// A provider stream under governance (see the module docs).
pub struct GovernedStream {
    upstream: BoxStream<'static, Result<ChatChunk, GatewayError>>,
    runtime: Runtime,
    ticket: Option<Ticket>,
    filter: Option<AnswerStream>,
    end: Option<StreamEnd>,
    prompt_tokens: u32,
    /// The `max_tokens` the request went upstream with (the output bound).
    max_tokens: u32,
    produced: String,
    usage: Option<TokenUsage>,
    upstream_id: Option<String>,
    started: Instant,
    done: bool,
}

impl std::fmt::Debug for GovernedStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GovernedStream")
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
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

impl GovernedStream {
    pub(super) fn new(
        runtime: Runtime,
        upstream: BoxStream<'static, Result<ChatChunk, GatewayError>>,
        ticket: Ticket,
        request: &ChatRequest,
        started: Instant,
    ) -> Self {
        Self {
            upstream,
            runtime,
            filter: Some(ticket.answer_stream()),
            ticket: Some(ticket),
            end: None,
            prompt_tokens: prompt_token_bound(&request.messages),
            max_tokens: request.max_tokens.unwrap_or(u32::MAX),
            produced: String::new(),
            usage: None,
            upstream_id: None,
            started,
            done: false,
        }
    }

    /// Tokens produced so far: the provider's count when it reported one, else the bound the
    /// reservation was made with (core's `prompt_token_bound` of the prompt, the produced
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
            return Some(self.runtime.abort(ticket).await);
        }
        let end = self.take_end();
        let usage = self.produced_usage();
        Some(
            self.runtime
                .finish_stream(ticket, end, usage, self.upstream_id.clone(), complete)
                .await,
        )
    }

    /// A guardrail blocked the answer: settle what the provider produced.
    async fn blocked(&mut self, decision: Decision) -> StreamEvent {
        metrics::record_decision("deny", ReasonKind::Guardrail);
        self.settle(false).await;
        self.done = true;
        StreamEvent::Blocked(decision)
    }

    /// The next event (`None` after the last one).
    pub async fn next(&mut self) -> Option<StreamEvent> {
        if self.done {
            return None;
        }
        let provider = self.runtime.deps.provider;
        match self.upstream.next().await {
            Some(Ok(chunk)) => Some(self.on_chunk(chunk).await),
            Some(Err(e)) => {
                tracing::warn!(error = %e, "upstream stream failed");
                metrics::record_upstream_latency(provider, "error", self.started.elapsed());
                if self.produced.is_empty() {
                    metrics::record_decision("deny", ReasonKind::Upstream);
                }
                self.settle(false).await;
                self.done = true;
                Some(StreamEvent::Failed(e))
            }
            None => Some(self.on_end().await),
        }
    }

    async fn on_chunk(&mut self, chunk: ChatChunk) -> StreamEvent {
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
                        return self.blocked(decision).await;
                    }
                    step.text
                }
                None => content,
            };
            if !released.is_empty() {
                out.push(text_chunk(&chunk, released));
            }
        }
        if ends {
            match self.flush_filter() {
                Ok(rest) if !rest.is_empty() => out.push(text_chunk(&chunk, rest)),
                Ok(_) => {}
                Err(d) => return self.blocked(d).await,
            }
        }
        if ends || (chunk.choices.iter().all(|c| c.delta.content.is_none())) {
            let mut tail = chunk;
            for c in &mut tail.choices {
                c.delta.content = None;
            }
            out.push(tail);
        }
        StreamEvent::Chunks(out)
    }

    async fn on_end(&mut self) -> StreamEvent {
        metrics::record_upstream_latency(self.runtime.deps.provider, "ok", self.started.elapsed());
        let mut chunks = Vec::new();
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
                chunks.push(text_chunk(&like, rest));
            }
            Ok(_) => {}
            Err(d) => return self.blocked(d).await,
        }
        let request_id = self
            .ticket
            .as_ref()
            .map_or_else(RequestId::new, |t| t.request_id);
        let billed = self.settle(true).await;
        self.done = true;
        StreamEvent::Done {
            chunks,
            request_id,
            billed,
        }
    }
}

impl Drop for GovernedStream {
    fn drop(&mut self) {
        let Some(ticket) = self.ticket.take() else {
            return;
        };
        let request_id = ticket.request_id;
        tracing::info!(request_id = %request_id, "stream ended early; settling what was produced");
        let runtime = self.runtime.clone();
        let nothing = self.produced.is_empty() && self.usage.is_none();
        let end = self.take_end();
        let usage = self.produced_usage();
        let upstream_id = self.upstream_id.take();
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(async move {
                    if nothing {
                        runtime.abort(ticket).await;
                    } else {
                        runtime
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
