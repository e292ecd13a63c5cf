//! Streamed answers: the runtime's [`GovernedStream`] (post filter, settlement exactly once)
//! framed as SSE.
//!
//! Each event of the governed stream becomes `data:` lines; a blocked answer or a failed
//! provider ends with an OpenAI-shaped error event and `[DONE]`; a complete answer ends with
//! the `stratai` comment line (`: stratai billed_cost=<amount> request_id=<id>`) and `[DONE]`.
//! When the client goes away, hyper drops the body and with it the governed stream, whose
//! `Drop` settles what was produced.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use stratai_guardrails::runtime::Admission;
use stratai_guardrails::runtime::stream::{GovernedStream, StreamEvent};

use super::error::OpenAiError;
use super::{GatewayState, blocked_error, upstream_error};

fn sse_data(out: &mut Vec<u8>, value: &impl serde::Serialize) {
    out.extend_from_slice(b"data: ");
    if serde_json::to_writer(&mut *out, value).is_err() {
        out.extend_from_slice(b"{}");
    }
    out.extend_from_slice(b"\n\n");
}

/// The SSE bytes of one event of the governed stream.
fn frame(event: StreamEvent) -> Bytes {
    let mut out = Vec::new();
    match event {
        StreamEvent::Chunks(chunks) => {
            for c in &chunks {
                sse_data(&mut out, c);
            }
        }
        StreamEvent::Blocked(decision) => {
            sse_data(&mut out, &blocked_error(&decision).body());
            out.extend_from_slice(b"data: [DONE]\n\n");
        }
        StreamEvent::Failed(e) => {
            sse_data(&mut out, &upstream_error(&e).body());
            out.extend_from_slice(b"data: [DONE]\n\n");
        }
        StreamEvent::Done {
            chunks,
            request_id,
            billed,
        } => {
            for c in &chunks {
                sse_data(&mut out, c);
            }
            if let Some(billed) = billed {
                out.extend_from_slice(
                    format!(
                        ": stratai billed_cost={} request_id={request_id}\n\n",
                        billed.amount.amount()
                    )
                    .as_bytes(),
                );
            }
            out.extend_from_slice(b"data: [DONE]\n\n");
        }
    }
    Bytes::from(out)
}

/// Opens the upstream stream and answers with SSE (or an error if it cannot start).
pub(super) async fn respond(
    state: Arc<GatewayState>,
    admission: Admission,
    mut headers: HeaderMap,
    upstream_time: &mut Option<Duration>,
) -> Result<Response, OpenAiError> {
    let request_id = admission.ticket.request_id;
    let (upstream, opened) = state.pipeline.open_stream(admission).await;
    *upstream_time = Some(upstream);
    let governed: GovernedStream =
        opened.map_err(|e| upstream_error(&e).for_request(request_id))?;
    let body = futures::stream::unfold(governed, |mut st| async move {
        let event = st.next().await?;
        Some((Ok::<Bytes, std::io::Error>(frame(event)), st))
    });
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok((StatusCode::OK, headers, Body::from_stream(body)).into_response())
}
