//! `GET|POST /api/explain`: the what-if decision for a user, a model and a time, with
//! reasons, and no side effects (nothing reserved, no rate-limit token taken).
//!
//! Query (GET) or JSON body (POST): `user` (id or email; default: the caller), `model`, `at`
//! (RFC 3339; default: now), `org` (id or slug; or the `x-stratai-org` header). A member may
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

use super::error::OpenAiError;
use stratai_core::pricing::{estimate_prompt_tokens, reservation_estimate};

use super::pipeline::{BudgetView, Refusal};
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
    /// Output tokens to assume for the worst-case cost (default: 4096).
    #[serde(
        default,
        deserialize_with = "stratai_core::gateway::integral_u32_or_text"
    )]
    pub max_tokens: Option<u32>,
}

/// The answer.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Explanation {
    /// `allow`, `warn` or `deny`.
    pub outcome: &'static str,
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
    let model = ModelId::new(q.model.clone())
        .map_err(|e| OpenAiError::invalid("invalid_request", Some("model"), e.to_string()))?;
    let mut out = Explanation {
        outcome: "allow",
        org_id: view.org().id.to_string(),
        user_id: subject.to_string(),
        model: q.model.clone(),
        tier: None,
        at,
        reasons: Vec::new(),
        hint: None,
        worst_case_cost: None,
        budgets: Vec::new(),
    };
    match view.check(&model) {
        Err(denial) => {
            out.outcome = "deny";
            out.reasons.push(denial.message());
            out.hint = denial.hint();
        }
        Ok(grant) => {
            out.tier = Some(grant.tier_slug.to_string());
            out.reasons.push(format!(
                "model `{model}` is in the accessible {} tier",
                grant.tier_slug
            ));
            if let Some(tier) = view.catalog().get(grant.tier_id) {
                let probe = ChatRequest {
                    model: q.model.clone(),
                    messages: vec![ChatMessage {
                        role: "user".to_owned(),
                        content: String::new(),
                    }],
                    max_tokens: None,
                    temperature: None,
                    stream: false,
                    user: None,
                };
                // The same worst case the Gatekeeper reserves (core's estimate and prices).
                let worst = reservation_estimate(
                    pipeline.deps().gatekeeper.prices(),
                    tier,
                    &model,
                    estimate_prompt_tokens(&probe.messages),
                    q.max_tokens,
                );
                out.worst_case_cost = Some(worst);
                // Guardrails as they would decide at `at`, without side effects (the
                // rate-limit buckets are only peeked).
                let principal = stratai_guardrails::Principal {
                    org_id: view.org().id,
                    user_id: subject,
                    groups: view.groups().iter().map(|g| g.id).collect(),
                };
                let pre = stratai_guardrails::PreRequest {
                    principal: &principal,
                    model: model.as_str(),
                    tier: Some(grant.tier_id),
                    input_tokens: 0,
                    max_tokens: q.max_tokens,
                    messages: &[],
                    estimated_cost: worst,
                    spend: None,
                    now: at,
                };
                let decision = pipeline.deps().gatekeeper.explain(&pre).await;
                for r in &decision.reasons {
                    out.reasons.push(r.to_string());
                }
                match decision.outcome {
                    stratai_guardrails::Outcome::Deny => {
                        out.outcome = "deny";
                        if let Some(wait) = decision.retry_after {
                            out.hint = Some(format!("retry in {}s", wait.as_secs().max(1)));
                        }
                    }
                    stratai_guardrails::Outcome::Warn => out.outcome = "warn",
                    stratai_guardrails::Outcome::Allow => {}
                }
                out.budgets = pipeline
                    .budget_views(&view, grant.tier_id, at)
                    .await
                    .map_err(OpenAiError::internal)?;
                for b in &out.budgets {
                    let exhausted = b.remaining < worst;
                    if exhausted && b.hard_limit {
                        out.outcome = "deny";
                        out.reasons.push(format!(
                            "the {} budget (hard) has {} left of {}, below the worst-case cost {}",
                            b.scope_name, b.remaining, b.limit, worst
                        ));
                        out.hint.get_or_insert_with(|| {
                            "ask an organization admin to raise the budget, or wait for the next period"
                                .to_owned()
                        });
                    } else if exhausted {
                        if out.outcome == "allow" {
                            out.outcome = "warn";
                        }
                        out.reasons.push(format!(
                            "the {} budget (soft) has {} left of {}: the request goes through with a warning",
                            b.scope_name, b.remaining, b.limit
                        ));
                    } else {
                        out.reasons.push(format!(
                            "the {} budget has {} left of {}",
                            b.scope_name, b.remaining, b.limit
                        ));
                    }
                }
            }
        }
    }
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
