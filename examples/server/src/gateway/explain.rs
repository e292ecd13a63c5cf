//! `GET|POST /api/explain`: the what-if decision for a user, a model and a time, with
//! reasons, and no side effects (nothing reserved, no rate-limit token taken).
//!
//! Query (GET) or JSON body (POST): `user` (id or email; default: the caller), `model`, `at`
//! (RFC 3339; default: now), `org` (id or slug; or the `x-stratai-org` header), `max_tokens`
//! and (POST) `messages`. The answer is the runtime's
//! [`Runtime::explain_for`](stratai_guardrails::runtime::Runtime::explain_for): the
//! Gatekeeper's decision (the same load and `decide` as admission), so it gives the outcome,
//! reasons and error code a chat request would get. A member may ask about themself; an
//! organization's owners and admins and platform super admins may ask about anyone in the
//! organization. This handler parses the question, authenticates the caller and maps the
//! answer and refusals to JSON and OpenAI-shaped errors.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
pub use stratai_core::budget::BudgetView;
use stratai_core::gateway::ChatMessage;
use stratai_core::ids::UserId;
use stratai_core::money::Money;
use stratai_guardrails::Outcome;
use stratai_guardrails::runtime::{ExplainCaller, ExplainQuestion, ExplainRefusal, ExplainSubject};

use super::error::OpenAiError;
use super::{GatewayState, authenticate, org_header, refusal_error};

/// The question.
#[derive(Clone, Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExplainQuery {
    /// User id or email (default: the caller).
    #[schema(schema_with = crate::openapi::user_or_email)]
    pub user: Option<String>,
    /// Model id.
    #[schema(value_type = stratai_core::ModelId)]
    pub model: String,
    /// Instant (default: now).
    pub at: Option<DateTime<Utc>>,
    /// Organization id or slug (default: `x-stratai-org`, then the user's only organization).
    pub org: Option<String>,
    /// The request's `max_tokens` (default: absent, i.e. the model's output cap).
    #[serde(
        default,
        deserialize_with = "stratai_core::gateway::integral_u32_or_text"
    )]
    pub max_tokens: Option<u32>,
    /// The request's messages, for the decision about exactly that request (content rules,
    /// token limits, its worst case); default: one empty user message.
    pub messages: Option<Vec<ChatMessage>>,
}

/// The answer.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Explanation {
    /// `allow`, `warn` or `deny`.
    pub outcome: &'static str,
    /// For a denial: the error code the chat routes answer (`guardrail_blocked`, ...).
    pub code: Option<&'static str>,
    /// For a denial: the error message the chat routes answer.
    pub message: Option<String>,
    /// Organization id.
    pub org_id: String,
    /// User id.
    pub user_id: String,
    /// Model.
    pub model: String,
    /// Tier of the model, when it has one.
    pub tier: Option<String>,
    /// The instant decided for.
    pub at: DateTime<Utc>,
    /// Every reason, in order (the first decides a denial).
    pub reasons: Vec<String>,
    /// What to do about a denial.
    pub hint: Option<String>,
    /// The worst-case cost a request would reserve.
    pub worst_case_cost: Option<Money>,
    /// The budgets that would apply, at `at`.
    pub budgets: Vec<BudgetView>,
}

pub(super) async fn explain_get(
    State(state): State<Arc<GatewayState>>,
    method: Method,
    headers: HeaderMap,
    query: Result<Query<ExplainQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let query = match query {
        Ok(Query(q)) => q,
        Err(e) => {
            return OpenAiError::invalid("invalid_request", None, e.body_text()).into_response();
        }
    };
    explain(state, method, headers, query)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

pub(super) async fn explain_post(
    State(state): State<Arc<GatewayState>>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let query = match crate::extract::parse_json::<ExplainQuery>(&body) {
        Ok(q) => q,
        Err(e) => return OpenAiError::from(e).into_response(),
    };
    // The messages of a chat request: refused as the chat route refuses them.
    if let Err(e) = super::check_roles(query.messages.as_deref().unwrap_or_default()) {
        return e.into_response();
    }
    explain(state, method, headers, query)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn explain(
    state: Arc<GatewayState>,
    method: Method,
    headers: HeaderMap,
    q: ExplainQuery,
) -> Result<Response, OpenAiError> {
    let principal = authenticate(&state, &method, &headers).await?;
    let caller = ExplainCaller {
        user: UserId::from_uuid(principal.user_id),
        super_admin: principal.super_admin,
    };
    let subject = ExplainSubject::parse(q.user.as_deref())
        .map_err(|e| OpenAiError::invalid("invalid_request", Some("user"), e.to_string()))?;
    let question = ExplainQuestion {
        subject,
        org: q.org.or_else(|| org_header(&headers)),
        model: q.model.clone(),
        messages: q.messages,
        max_tokens: q.max_tokens,
        at: q.at,
    };
    let answer = match state.pipeline.explain_for(caller, question).await {
        Ok(answer) => answer,
        Err(ExplainRefusal::NotFound) => return Err(not_found()),
        Err(ExplainRefusal::Forbidden(reason)) => {
            return Err(OpenAiError::new(
                StatusCode::FORBIDDEN,
                "permission_error",
                "forbidden",
                reason.to_string(),
            ));
        }
        Err(ExplainRefusal::Refused(refusal)) => return Err(refusal_error(refusal)),
        Err(ExplainRefusal::Store(e)) => return Err(OpenAiError::internal(e)),
    };
    let (code, message) = match answer.refusal {
        Some(refusal) => {
            let e = refusal_error(refusal);
            (Some(e.code), Some(e.message))
        }
        None => (None, None),
    };
    let out = Explanation {
        outcome: match answer.outcome {
            Outcome::Allow => "allow",
            Outcome::Warn => "warn",
            Outcome::Deny => "deny",
        },
        code,
        message,
        org_id: answer.org_id.to_string(),
        user_id: answer.user_id.to_string(),
        model: q.model,
        tier: answer.tier.map(|t| t.to_string()),
        at: answer.at,
        reasons: answer.reasons,
        hint: answer.hint,
        worst_case_cost: answer.worst_case_cost,
        budgets: answer.budgets,
    };
    Ok(axum::Json(out).into_response())
}

fn not_found() -> OpenAiError {
    OpenAiError::new(
        StatusCode::NOT_FOUND,
        "not_found_error",
        "not_found",
        "no such member in this organization",
    )
}
