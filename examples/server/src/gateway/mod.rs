//! The governed OpenAI-compatible gateway: `POST /v1/chat/completions` (JSON and SSE),
//! `GET /v1/models`, `GET|POST /api/explain`, and `GET /metrics`.
//!
//! Authentication is the admin API's (bearer token or session). A member of several
//! organizations picks one with the `x-stratai-org` header (id or slug); otherwise their only
//! organization is used. Every answer carries `x-stratai-request-id`; complete answers carry
//! `x-stratai-billed-cost`; warnings (soft budgets) come in `x-stratai-warnings`. A streamed
//! answer reports its billed cost in a final SSE comment line
//! (`: stratai billed_cost=<amount> request_id=<id>`), which OpenAI clients ignore. Chat
//! answers also carry a W3C `Server-Timing` header: StratAI's own time and the upstream's
//! (see [`server_timing`]).
//!
//! Errors follow OpenAI's `{"error": {"message", "type", "code", "param"}}` shape (see
//! [`error::OpenAiError`]).

pub mod error;
pub mod explain;
pub use stratai_litellm::openai;
pub mod setup;
mod stream;

/// The runtime's batched usage writer and governed path, under their old paths.
pub use stratai_guardrails::runtime::{self as pipeline, batch};

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use stratai_core::gateway::{ChatMessage, ChatRequest, GatewayError};
use stratai_core::ids::{RequestId, UserId};
use stratai_guardrails::runtime::{CallFailure, Refusal, Runtime, RuntimeHandle, Served};

use crate::auth::Auth;
use crate::auth::Principal;
use crate::metrics;
use error::OpenAiError;

/// Response header: StratAI's request id (the usage record's key).
pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-stratai-request-id");
/// Response header: the billed cost of a complete answer, in dollars.
pub const BILLED_COST_HEADER: HeaderName = HeaderName::from_static("x-stratai-billed-cost");
/// Response header: warnings, `; `-separated.
pub const WARNINGS_HEADER: HeaderName = HeaderName::from_static("x-stratai-warnings");
/// Request header: the organization to act in (id or slug).
pub const ORG_HEADER: &str = "x-stratai-org";
/// The W3C `Server-Timing` header of chat answers (see [`server_timing`]).
pub const SERVER_TIMING_HEADER: HeaderName = HeaderName::from_static("server-timing");

/// What the gateway routes share.
#[derive(Clone)]
pub struct GatewayState {
    /// Authentication (the admin API's).
    pub auth: Arc<Auth>,
    /// The governed path (the library runtime; it holds the LLM provider).
    pub pipeline: Runtime,
    /// Provider label for metrics (`litellm`, `demo`).
    pub provider: &'static str,
    /// The LiteLLM proxy's client when one is configured, for the readiness report.
    pub upstream: Option<stratai_litellm::LiteLlmClient>,
    /// The runtime's background tasks: drained (budget leases, queued usage records) and
    /// stopped at graceful shutdown.
    pub drainer: RuntimeHandle,
    /// LiteLLM's spend in StratAI's books (callback route, spend-log poll), with LiteLLM.
    pub litellm_spend: Option<Arc<crate::api::litellm::SpendDesk>>,
}

impl GatewayState {
    /// The upstream's status for `/health/ready`: `demo` (offline provider), `ok`, or
    /// `unreachable` (the proxy did not answer its readiness probe within two seconds).
    pub async fn upstream_status(&self) -> &'static str {
        let Some(client) = &self.upstream else {
            return self.provider;
        };
        match tokio::time::timeout(std::time::Duration::from_secs(2), client.readiness()).await {
            Ok(Ok(_)) => "ok",
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "LiteLLM readiness probe failed");
                "unreachable"
            }
            Err(_) => {
                tracing::warn!("LiteLLM readiness probe timed out");
                "unreachable"
            }
        }
    }
}

impl std::fmt::Debug for GatewayState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayState")
            .field("provider", &self.provider)
            .finish_non_exhaustive()
    }
}

/// The gateway's routes, ready to merge into the application router (any state).
pub fn router<S>(state: GatewayState) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/models", get(list_models))
        .route(
            "/api/explain",
            get(explain::explain_get).post(explain::explain_post),
        )
        .route("/metrics", get(metrics::serve_metrics))
        .method_not_allowed_fallback(error::method_not_allowed)
        // One `Arc` clone per request rather than a clone of every field.
        .with_state(Arc::new(state))
}

/// The gateway's routes when the gateway is configured, else no routes.
pub fn maybe_router<S>(state: Option<GatewayState>) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    state.map_or_else(Router::new, router)
}

/// Authenticates in the OpenAI error shape.
pub(crate) async fn authenticate(
    state: &GatewayState,
    method: &axum::http::Method,
    headers: &HeaderMap,
) -> Result<Principal, OpenAiError> {
    state
        .auth
        .authenticate(method, headers)
        .await
        .map_err(|e| OpenAiError::from(crate::error::ApiError::from(e)))
}

/// The product endpoint a chat is attributed to in its usage record (default `chat`).
pub const ENDPOINT_HEADER: &str = "x-stratai-endpoint";
/// The product conversation (a UUID) a chat is attributed to in its usage record.
pub const CONVERSATION_HEADER: &str = "x-stratai-conversation-id";

/// The client's attribution headers, validated (400 naming the header otherwise).
fn attribution(headers: &HeaderMap) -> Result<stratai_core::usage::Attribution, OpenAiError> {
    let text = |name: &'static str| -> Result<Option<&str>, OpenAiError> {
        headers
            .get(name)
            .map(|v| {
                v.to_str().map_err(|_| {
                    OpenAiError::invalid("invalid_request", Some(name), "not ASCII text")
                })
            })
            .transpose()
    };
    stratai_core::usage::Attribution::parse(text(ENDPOINT_HEADER)?, text(CONVERSATION_HEADER)?)
        .map_err(|e| {
            let header = if e.field == "endpoint" {
                ENDPOINT_HEADER
            } else {
                CONVERSATION_HEADER
            };
            OpenAiError::invalid("invalid_request", Some(header), e.reason)
        })
}

pub(crate) fn org_header(headers: &HeaderMap) -> Option<String> {
    headers
        .get(ORG_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Maps a refusal to its OpenAI-shaped answer.
pub(crate) fn refusal_error(refusal: Refusal) -> OpenAiError {
    match refusal {
        Refusal::Organization {
            must_choose,
            message,
        } => {
            if must_choose {
                OpenAiError::invalid("organization_required", Some(ORG_HEADER), message)
            } else {
                OpenAiError::new(
                    StatusCode::FORBIDDEN,
                    "permission_error",
                    "not_a_member",
                    message,
                )
            }
        }
        Refusal::ModelDenied(denial) => {
            let hint = denial.hint();
            let message = match &hint {
                Some(h) => format!("{}. {h}", denial.message()),
                None => denial.message(),
            };
            let status = match denial.reason {
                stratai_core::tiers::DenialReason::UnknownModel => StatusCode::NOT_FOUND,
                _ => StatusCode::FORBIDDEN,
            };
            let code = if status == StatusCode::NOT_FOUND {
                "model_not_found"
            } else {
                "model_access_denied"
            };
            let kind = if status == StatusCode::NOT_FOUND {
                "invalid_request_error"
            } else {
                "permission_error"
            };
            let mut e = OpenAiError::new(status, kind, code, message)
                .with("reason", &denial.reason)
                .with("upgrade_hint", denial.upgrade_hint().or(hint));
            e.param = Some("model".into());
            e
        }
        Refusal::Blocked(decision) => blocked_error(&decision),
        Refusal::RateLimited(decision) => {
            let reason = decision
                .blocking_reasons()
                .next()
                .map_or_else(|| "rate limit reached".to_owned(), ToString::to_string);
            let mut e = OpenAiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                "rate_limit_exceeded",
                reason,
            )
            .with("reasons", reasons_of(&decision));
            e.retry_after_secs = decision.retry_after.map(|d| d.as_secs().max(1));
            e
        }
        Refusal::Budget {
            refusal,
            scope_name,
        } => {
            let message = format!(
                "the {scope_name} budget is exhausted: {} left of {}, this request may cost up to {}",
                refusal.remaining, refusal.limit, refusal.requested
            );
            OpenAiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "insufficient_quota",
                "insufficient_quota",
                message,
            )
            .with("scope", metrics::scope_label(&refusal.scope))
            .with("scope_name", scope_name)
            .with("budget_id", refusal.budget_id)
            .with("limit", refusal.limit)
            .with("remaining", refusal.remaining)
            .with("requested", refusal.requested)
        }
        Refusal::BadRequest { param, message } => {
            OpenAiError::invalid("invalid_request", Some(param), message)
        }
        Refusal::Internal(detail) => OpenAiError::internal(detail),
    }
}

fn reasons_of(decision: &stratai_guardrails::Decision) -> Vec<serde_json::Value> {
    decision
        .reasons
        .iter()
        .map(|r| {
            serde_json::json!({
                "rule_id": r.rule_id,
                "rule": r.rule_name,
                "level": r.level.as_str(),
                "type": r.rule_type.as_str(),
                "action": stratai_guardrails::rule::action_str(r.action),
                "message": r.to_string(),
            })
        })
        .collect()
}

/// A guardrail block, naming the deciding rule.
pub(crate) fn blocked_error(decision: &stratai_guardrails::Decision) -> OpenAiError {
    let first = decision.blocking_reasons().next();
    let message = first.map_or_else(|| "blocked by a guardrail".to_owned(), ToString::to_string);
    OpenAiError::new(
        StatusCode::FORBIDDEN,
        "permission_error",
        "guardrail_blocked",
        message,
    )
    .with("rule", first.map(|r| r.rule_name.clone()))
    .with("rule_id", first.map(|r| r.rule_id))
    .with("reasons", reasons_of(decision))
}

/// Maps an upstream failure (after which the reservation was released).
pub(crate) fn upstream_error(e: &GatewayError) -> OpenAiError {
    match e {
        GatewayError::RateLimited { retry_after_secs } => {
            let mut err = OpenAiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                "upstream_rate_limited",
                "the upstream provider is rate limiting; retry later",
            );
            err.retry_after_secs = *retry_after_secs;
            err
        }
        GatewayError::BadRequest(m) => {
            OpenAiError::invalid("upstream_bad_request", None, m.clone())
        }
        GatewayError::Refused(m) => OpenAiError::new(
            StatusCode::FORBIDDEN,
            "permission_error",
            "upstream_refused",
            m.clone(),
        ),
        GatewayError::BudgetExceeded(m) => OpenAiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "insufficient_quota",
            "upstream_budget_exceeded",
            m.clone(),
        ),
        GatewayError::NotProvisioned(m) => {
            tracing::warn!(error = %m, "member not provisioned upstream");
            OpenAiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                "not_provisioned",
                "your access to the model provider is not set up yet; retry shortly",
            )
        }
        GatewayError::Unavailable(m) => {
            tracing::warn!(error = %m, "upstream unavailable");
            OpenAiError::new(
                StatusCode::BAD_GATEWAY,
                "server_error",
                "upstream_unavailable",
                "the model provider failed; nothing was billed",
            )
        }
    }
}

/// A header value from free text (non-visible characters replaced).
pub(crate) fn header_text(text: &str) -> HeaderValue {
    let clean: String = text
        .chars()
        .map(|c| {
            if c == ' ' || c.is_ascii_graphic() {
                c
            } else {
                '?'
            }
        })
        .collect();
    HeaderValue::from_str(&clean).unwrap_or_else(|_| HeaderValue::from_static("-"))
}

/// The message roles of OpenAI's chat API; a message with any other role is refused (a typo
/// such as `usr` would otherwise reach the provider, or be read as a user message by one).
const CHAT_ROLES: &[&str] = stratai_core::gateway::CHAT_ROLES;

fn parse_chat(body: &[u8]) -> Result<ChatRequest, OpenAiError> {
    let request = parse_chat_json(body)?;
    check_roles(&request.messages)?;
    Ok(request)
}

/// Refuses a message whose role is not one of OpenAI's (400 `invalid_request`).
pub(crate) fn check_roles(messages: &[ChatMessage]) -> Result<(), OpenAiError> {
    if let Some((i, m)) = messages
        .iter()
        .enumerate()
        .find(|(_, m)| !CHAT_ROLES.contains(&m.role.as_str()))
    {
        let param = format!("messages[{i}].role");
        return Err(OpenAiError::invalid(
            "invalid_request",
            Some(&param),
            format!(
                "invalid request body: unknown role `{}`, expected one of {}",
                m.role,
                CHAT_ROLES.join(", ")
            ),
        ));
    }
    Ok(())
}

fn parse_chat_json(body: &[u8]) -> Result<ChatRequest, OpenAiError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize::<_, ChatRequest>(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let param = if path == "." {
            None
        } else {
            Some(path.as_str())
        };
        let msg = inner.to_string();
        let msg = msg
            .rsplit_once(" at line ")
            .map_or(msg.as_str(), |(m, _)| m);
        OpenAiError::invalid(
            "invalid_request",
            param,
            format!("invalid request body: {msg}"),
        )
    })
}

async fn chat_completions(
    State(state): State<Arc<GatewayState>>,
    method: axum::http::Method,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let mut upstream = None;
    let mut response = match chat_inner(state, method, headers, body, &mut upstream).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    response.extensions_mut().insert(GatewayTiming { upstream });
    response
}

/// What the chat handler tells [`server_timing`]: how long the upstream call took (to its
/// answer, or to a stream's response head), `None` when the request never reached it.
#[derive(Clone, Copy, Debug)]
struct GatewayTiming {
    upstream: Option<Duration>,
}

/// Middleware (outermost, see [`crate::app::with_middleware`]): on a gateway chat answer,
/// sets the W3C `Server-Timing` header to `gateway;dur=<ms>` (the time StratAI itself spent on
/// the request, from the moment the middleware stack received it to the response head, less
/// the upstream call) and, when the upstream was called, `upstream;dur=<ms>`; records the
/// same `gateway` time in `stratai_gateway_overhead_seconds`. Other routes are untouched.
///
/// For a streamed answer the upstream part ends at the upstream's response head; what the
/// gateway does while the stream flows (post-response rules, settlement) is not in it.
pub async fn server_timing(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let received = Instant::now();
    let mut response = next.run(req).await;
    let Some(GatewayTiming { upstream }) = response.extensions_mut().remove::<GatewayTiming>()
    else {
        return response;
    };
    let own = received
        .elapsed()
        .saturating_sub(upstream.unwrap_or_default());
    metrics::record_gateway_overhead(own);
    let millis = |d: Duration| d.as_secs_f64() * 1000.0;
    let value = match upstream {
        Some(u) => format!(
            "gateway;dur={:.3}, upstream;dur={:.3}",
            millis(own),
            millis(u)
        ),
        None => format!("gateway;dur={:.3}", millis(own)),
    };
    if let Ok(v) = HeaderValue::from_str(&value) {
        response.headers_mut().insert(SERVER_TIMING_HEADER, v);
    }
    response
}

async fn chat_inner(
    state: Arc<GatewayState>,
    method: axum::http::Method,
    headers: HeaderMap,
    body: axum::body::Bytes,
    upstream_time: &mut Option<Duration>,
) -> Result<Response, OpenAiError> {
    let principal = authenticate(&state, &method, &headers).await?;
    let request = parse_chat(&body)?;
    let attribution = attribution(&headers)?;
    let user = UserId::from_uuid(principal.user_id);
    let request_id = RequestId::new();
    let pipeline = &state.pipeline;
    let view = pipeline
        .caller_view(user, org_header(&headers).as_deref())
        .await
        .map_err(|r| refusal_error(r).for_request(request_id))?;
    let admission = pipeline
        .admit(&view, request, attribution)
        .await
        .map_err(|r| refusal_error(r).for_request(request_id))?;
    let request_id = admission.ticket.request_id;
    let mut out_headers = HeaderMap::new();
    out_headers.insert(REQUEST_ID_HEADER, header_text(&request_id.to_string()));
    if !admission.warnings.is_empty() {
        out_headers.insert(WARNINGS_HEADER, header_text(&admission.warnings.join("; ")));
    }
    if admission.request.stream {
        return stream::respond(state, admission, out_headers, upstream_time).await;
    }
    // The call and its settlement run to the end even if the client goes away.
    let called = state.pipeline.call(admission).await;
    *upstream_time = Some(called.upstream);
    let Served { answer, billed } = match called.outcome {
        Ok(served) => served,
        Err(CallFailure::Blocked { decision, billed }) => {
            let mut e = blocked_error(&decision).for_request(request_id);
            e.detail.insert(
                "billed_cost".to_owned(),
                billed.amount.amount().to_string().into(),
            );
            return Err(e);
        }
        Err(CallFailure::Upstream(e)) => return Err(upstream_error(&e).for_request(request_id)),
    };
    out_headers.insert(
        BILLED_COST_HEADER,
        header_text(&billed.amount.amount().to_string()),
    );
    Ok((StatusCode::OK, out_headers, axum::Json(answer)).into_response())
}

/// The answer of `GET /v1/models`: the caller's accessible models, OpenAI's list shape.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ModelList {
    /// Always `list`.
    pub object: &'static str,
    /// The models.
    pub data: Vec<Model>,
}

/// One model of a [`ModelList`].
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Model {
    /// The model id, as chat requests name it.
    pub id: String,
    /// Always `model`.
    pub object: &'static str,
    /// Always 0.
    pub created: i64,
    /// Always `stratai`.
    pub owned_by: &'static str,
    /// The slug of the tier that grants it.
    pub tier: String,
}

async fn list_models(
    State(state): State<Arc<GatewayState>>,
    method: axum::http::Method,
    headers: HeaderMap,
) -> Response {
    let result = async {
        let principal = authenticate(&state, &method, &headers).await?;
        let user = UserId::from_uuid(principal.user_id);
        let org = state
            .pipeline
            .choose_org(user, org_header(&headers).as_deref())
            .await
            .map_err(refusal_error)?;
        let view = state
            .pipeline
            .member_view(org, user)
            .await
            .map_err(refusal_error)?;
        let data: Vec<Model> = view
            .access
            .accessible()
            .flat_map(|t| {
                t.models.iter().map(move |m| Model {
                    id: m.as_str().to_owned(),
                    object: "model",
                    created: 0,
                    owned_by: "stratai",
                    tier: t.slug.as_str().to_owned(),
                })
            })
            .collect();
        Ok::<_, OpenAiError>(
            (
                [(header::CACHE_CONTROL, "no-store")],
                axum::Json(ModelList {
                    object: "list",
                    data,
                }),
            )
                .into_response(),
        )
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}
