//! `GET|POST /api/explain`: the what-if decision for a user, a model and a time, with
//! reasons, and no side effects (nothing reserved, no rate-limit token taken).
//!
//! Query (GET) or JSON body (POST): `user` (id or email; default: the caller), `model`, `at`
//! (RFC 3339; default: now), `org` (id or slug; or the `x-stratai-org` header), `max_tokens`
//! and (POST) `messages`. The answer is the Gatekeeper's decision (`explain_request`: the same
//! load and `decide` as admission), so it gives the outcome, reasons and error code a chat
//! request would get. A member may
//! ask about themself; an organization's owners and admins and platform super admins may ask
//! about anyone in the organization.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use stratai_core::access::{Action, Actor, DenyReason, OrgGrant, Resource, authorize};
use stratai_core::directory::{Email, PlatformRole};
use stratai_core::gateway::{ChatMessage, ChatRequest};
use stratai_core::ids::{ModelId, UserId};
use stratai_core::money::Money;

use stratai_core::StoreError;
use stratai_core::budget::BudgetState;
pub use stratai_core::budget::BudgetView;
use stratai_guardrails::runtime::{MemberView, Refusal, Runtime, gate_refusal};
use stratai_guardrails::{Outcome, Plan};

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
    let caller = UserId::from_uuid(principal.user_id);
    let pipeline = &state.pipeline;
    let dir = &pipeline.deps().directory;
    let subject = match q.user.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        None => caller,
        Some(text) => match text.parse::<UserId>() {
            Ok(id) => id,
            Err(_) => {
                let email = Email::new(text).map_err(|e| {
                    OpenAiError::invalid("invalid_request", Some("user"), e.to_string())
                })?;
                match dir.find_user_by_email(&email).await {
                    Ok(Some(u)) => u.id,
                    Ok(None) => return Err(not_found()),
                    Err(e) => return Err(OpenAiError::internal(e)),
                }
            }
        },
    };
    let requested_org = q.org.clone().or_else(|| org_header(&headers));
    // The organization is chosen from the caller's side, so nobody learns about others' orgs.
    let org = pipeline
        .choose_org(caller, requested_org.as_deref())
        .await
        .map_err(refusal_error)?;
    // Explaining a decision shows what a member may use: core's access function decides who
    // may ask (the member themself, the organization's owners and admins, super admins).
    let caller_role = dir.get_member(org.id, caller).await.ok().map(|m| m.role);
    let actor = Actor {
        user_id: caller,
        platform_role: if principal.super_admin {
            PlatformRole::SuperAdmin
        } else {
            PlatformRole::User
        },
        active: true,
        orgs: caller_role
            .map(|role| OrgGrant {
                org_id: org.id,
                role,
            })
            .into_iter()
            .collect(),
        groups: Vec::new(),
    };
    let resource = Resource::Member {
        org_id: org.id,
        user_id: subject,
    };
    if let Err(denied) = authorize(&actor, Action::ViewAccessibleModels, &resource) {
        return Err(match denied.reason {
            DenyReason::NotAMember => not_found(),
            other => OpenAiError::new(
                StatusCode::FORBIDDEN,
                "permission_error",
                "forbidden",
                other.to_string(),
            ),
        });
    }
    let view = match pipeline.member_view(org, subject).await {
        Ok(v) => v,
        Err(Refusal::Organization { .. }) => return Err(not_found()),
        Err(r) => return Err(refusal_error(r)),
    };
    let at = q.at.unwrap_or_else(Utc::now);
    ModelId::new(q.model.clone())
        .map_err(|e| OpenAiError::invalid("invalid_request", Some("model"), e.to_string()))?;
    let request = ChatRequest {
        model: q.model.clone(),
        messages: q.messages.clone().unwrap_or_else(|| {
            vec![ChatMessage {
                role: "user".to_owned(),
                content: String::new(),
            }]
        }),
        max_tokens: q.max_tokens,
        temperature: None,
        stream: false,
        user: None,
    };
    // The decision admission makes, without its side effects (no rate-limit token taken,
    // nothing reserved): the same load, the same `decide`, the budgets judged as the
    // reservation would.
    let plan = pipeline
        .explain(&view, &request, at)
        .await
        .map_err(OpenAiError::internal)?;
    let budgets = match &plan.grant {
        Some(_) => budget_views(pipeline, &view, &plan, at)
            .await
            .map_err(OpenAiError::internal)?,
        None => Vec::new(),
    };
    let (code, message) = match plan.refusal {
        Some(refusal) => {
            let e = refusal_error(gate_refusal(refusal, &view));
            (Some(e.code), Some(e.message))
        }
        None => (None, None),
    };
    let out = Explanation {
        outcome: match plan.outcome {
            Outcome::Allow => "allow",
            Outcome::Warn => "warn",
            Outcome::Deny => "deny",
        },
        code,
        message,
        org_id: view.org().id.to_string(),
        user_id: subject.to_string(),
        model: q.model.clone(),
        tier: plan.grant.as_ref().map(|g| g.tier_slug.to_string()),
        at,
        reasons: plan.reasons,
        hint: plan.hint,
        worst_case_cost: plan.grant.is_some().then_some(plan.worst_case),
        budgets,
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

/// The states at `at` of the budgets the decision `plan` applies (those of its budget limit
/// rules included), named as its reasons name them.
async fn budget_views(
    pipeline: &Runtime,
    view: &MemberView,
    plan: &Plan,
    at: DateTime<Utc>,
) -> Result<Vec<BudgetView>, StoreError> {
    let ids = &plan.budgets;
    let states: Vec<BudgetState> = if ids.is_empty() {
        Vec::new()
    } else {
        pipeline
            .deps()
            .ledger
            .states(view.org().id, ids, at)
            .await?
    };
    Ok(plan.budget_views(states, view.groups()))
}
