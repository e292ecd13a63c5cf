//! Guardrail rules at every scope: platform rules (global, or a tier platform-wide) by super
//! admins; organization, tier-in-organization, group and member rules by the organization's
//! admins. Every rule is validated by stratai-guardrails before it is stored; its errors
//! carry field paths (`config.blocked_patterns[2]`). The checks and the rule budgets' upkeep
//! are `stratai_guardrails::admin`'s; here, who may ask and the policy reload.

use axum::extract::State;
use axum::http::StatusCode;
use chrono::Utc;
use serde::Deserialize;
use stratai_core::access::{Action, Resource};
use stratai_core::ports::{RuleAction, RuleRecord, RuleScope};
use stratai_core::{GroupId, OrgId, RuleId, TierId, UserId};
use stratai_guardrails::admin;

use super::{ApiPath, Caller, allow};
use crate::app::AppState;
use crate::error::ApiError;
use crate::extract::{ApiJson, double_option};

/// Where an organization's rule attaches (the organization is the one in the path).
#[derive(Clone, Copy, Debug, Deserialize, utoipa::ToSchema)]
#[serde(tag = "level", rename_all = "snake_case", deny_unknown_fields)]
pub enum OrgScope {
    /// The whole organization.
    Org {},
    /// A tier's models inside the organization.
    Tier {
        /// The tier.
        tier_id: TierId,
    },
    /// A group.
    Group {
        /// The group.
        group_id: GroupId,
    },
    /// One member.
    User {
        /// The member.
        user_id: UserId,
    },
}

/// Where a platform rule attaches.
#[derive(Clone, Copy, Debug, Deserialize, utoipa::ToSchema)]
#[serde(tag = "level", rename_all = "snake_case", deny_unknown_fields)]
pub enum PlatformScope {
    /// Every request on the platform.
    Global {},
    /// A tier's models, in every organization.
    Tier {
        /// The tier.
        tier_id: TierId,
    },
}

/// Body of the rule creation routes.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRule<S> {
    /// Name.
    #[schema(min_length = 1, pattern = r"\S")]
    pub name: String,
    /// Description.
    #[serde(default)]
    pub description: Option<String>,
    /// One of the rule types (`content_filter`, `token_limit`, ...).
    pub rule_type: String,
    /// The type's config.
    pub config: serde_json::Value,
    /// Where it attaches.
    pub scope: S,
    /// What it does on a match.
    pub action: RuleAction,
    /// Evaluation order (higher first); never permission.
    #[serde(default)]
    pub priority: i32,
    /// Active (default true).
    #[serde(default = "yes")]
    pub active: bool,
}

fn yes() -> bool {
    true
}

/// Body of the rule update routes (type and scope are fixed; create another rule instead).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateRule {
    /// Name.
    #[serde(default)]
    pub name: Option<String>,
    /// Description (`null` clears).
    #[serde(default, deserialize_with = "double_option")]
    pub description: Option<Option<String>>,
    /// Config (replaced whole).
    #[serde(default)]
    pub config: Option<serde_json::Value>,
    /// Action.
    #[serde(default)]
    pub action: Option<RuleAction>,
    /// Priority.
    #[serde(default)]
    pub priority: Option<i32>,
    /// Active.
    #[serde(default)]
    pub active: Option<bool>,
}

/// Validates a record with stratai-guardrails; its field paths become the 422's.
fn validate(record: &RuleRecord) -> Result<(), ApiError> {
    Ok(admin::check_rule(record)?)
}

fn record<S>(req: CreateRule<S>, scope: RuleScope) -> RuleRecord {
    RuleRecord {
        id: RuleId::new(),
        name: req.name.trim().to_owned(),
        description: req
            .description
            .map(|d| d.trim().to_owned())
            .filter(|d| !d.is_empty()),
        rule_type: req.rule_type,
        config: req.config,
        scope,
        action: req.action,
        priority: req.priority,
        active: req.active,
        created_at: Utc::now(),
    }
}

fn apply(rule: &mut RuleRecord, req: UpdateRule) {
    if let Some(n) = req.name {
        rule.name = n.trim().to_owned();
    }
    if let Some(d) = req.description {
        rule.description = d.map(|d| d.trim().to_owned()).filter(|d| !d.is_empty());
    }
    if let Some(c) = req.config {
        rule.config = c;
    }
    if let Some(a) = req.action {
        rule.action = a;
    }
    if let Some(p) = req.priority {
        rule.priority = p;
    }
    if let Some(a) = req.active {
        rule.active = a;
    }
}

/// The access resource of an organization rule's scope.
fn resource(scope: &RuleScope, org_id: OrgId) -> Resource {
    match *scope {
        RuleScope::Group { group_id, .. } => Resource::Group { org_id, group_id },
        RuleScope::User { user_id, .. } => Resource::Member { org_id, user_id },
        _ => Resource::Org(org_id),
    }
}

async fn org_scope(
    state: &AppState,
    org_id: OrgId,
    scope: OrgScope,
) -> Result<RuleScope, ApiError> {
    let scope = match scope {
        OrgScope::Org {} => RuleScope::Org { org_id },
        OrgScope::Tier { tier_id } => RuleScope::Tier {
            org_id: Some(org_id),
            tier_id,
        },
        OrgScope::Group { group_id } => RuleScope::Group { org_id, group_id },
        OrgScope::User { user_id } => RuleScope::User { org_id, user_id },
    };
    let stores = &state.stores;
    admin::check_org_scope(
        stores.directory.as_ref(),
        stores.tiers.as_ref(),
        org_id,
        &scope,
    )
    .await?;
    Ok(scope)
}

/// Rules owned by an organization (admins).
pub async fn list_org(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(org_id): ApiPath<OrgId>,
) -> Result<ApiJson<Vec<RuleRecord>>, ApiError> {
    allow(&caller, Action::ManageGuardrails, Resource::Org(org_id))?;
    Ok(ApiJson(
        state.stores.guardrails.list_org_rules(org_id).await?,
    ))
}

/// Creates a rule of an organization (at org, tier, group or member level).
pub async fn create_org(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(org_id): ApiPath<OrgId>,
    ApiJson(req): ApiJson<CreateRule<OrgScope>>,
) -> Result<(StatusCode, ApiJson<RuleRecord>), ApiError> {
    allow(&caller, Action::ViewOrg, Resource::Org(org_id))?;
    let scope = org_scope(&state, org_id, req.scope).await?;
    allow(&caller, Action::ManageGuardrails, resource(&scope, org_id))?;
    let rule = record(req, scope);
    validate(&rule)?;
    state.stores.guardrails.put_rule(org_id, &rule).await?;
    sync_rule_budgets(&state, org_id).await?;
    Ok((StatusCode::CREATED, ApiJson(rule)))
}

/// Changes a rule of an organization.
pub async fn update_org(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((org_id, rule_id)): ApiPath<(OrgId, RuleId)>,
    ApiJson(req): ApiJson<UpdateRule>,
) -> Result<ApiJson<RuleRecord>, ApiError> {
    allow(&caller, Action::ViewOrg, Resource::Org(org_id))?;
    let mut rule = state.stores.guardrails.get_rule(org_id, rule_id).await?;
    allow(
        &caller,
        Action::ManageGuardrails,
        resource(&rule.scope, org_id),
    )?;
    apply(&mut rule, req);
    validate(&rule)?;
    state.stores.guardrails.put_rule(org_id, &rule).await?;
    sync_rule_budgets(&state, org_id).await?;
    Ok(ApiJson(rule))
}

/// Deletes a rule of an organization.
pub async fn delete_org(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((org_id, rule_id)): ApiPath<(OrgId, RuleId)>,
) -> Result<StatusCode, ApiError> {
    allow(&caller, Action::ViewOrg, Resource::Org(org_id))?;
    let rule = state.stores.guardrails.get_rule(org_id, rule_id).await?;
    allow(
        &caller,
        Action::ManageGuardrails,
        resource(&rule.scope, org_id),
    )?;
    state.stores.guardrails.delete_rule(org_id, rule_id).await?;
    sync_rule_budgets(&state, org_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Platform rules (super admins).
pub async fn list_platform(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<ApiJson<Vec<RuleRecord>>, ApiError> {
    allow(
        &caller,
        Action::ManagePlatformGuardrails,
        Resource::Platform,
    )?;
    Ok(ApiJson(
        state.stores.guardrails.list_platform_rules().await?,
    ))
}

/// Creates a platform rule (global or tier-wide).
pub async fn create_platform(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<CreateRule<PlatformScope>>,
) -> Result<(StatusCode, ApiJson<RuleRecord>), ApiError> {
    allow(
        &caller,
        Action::ManagePlatformGuardrails,
        Resource::Platform,
    )?;
    let scope = match req.scope {
        PlatformScope::Global {} => RuleScope::Global,
        PlatformScope::Tier { tier_id } => RuleScope::Tier {
            org_id: None,
            tier_id,
        },
    };
    admin::check_platform_scope(state.stores.tiers.as_ref(), &scope).await?;
    let rule = record(req, scope);
    validate(&rule)?;
    state.stores.guardrails.put_platform_rule(&rule).await?;
    platform_rules_changed(&state).await;
    Ok((StatusCode::CREATED, ApiJson(rule)))
}

async fn platform_rule(state: &AppState, rule_id: RuleId) -> Result<RuleRecord, ApiError> {
    Ok(admin::platform_rule(state.stores.guardrails.as_ref(), rule_id).await?)
}

/// Changes a platform rule.
pub async fn update_platform(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(rule_id): ApiPath<RuleId>,
    ApiJson(req): ApiJson<UpdateRule>,
) -> Result<ApiJson<RuleRecord>, ApiError> {
    allow(
        &caller,
        Action::ManagePlatformGuardrails,
        Resource::Platform,
    )?;
    let mut rule = platform_rule(&state, rule_id).await?;
    apply(&mut rule, req);
    validate(&rule)?;
    state.stores.guardrails.put_platform_rule(&rule).await?;
    platform_rules_changed(&state).await;
    Ok(ApiJson(rule))
}

/// Deletes a platform rule.
pub async fn delete_platform(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(rule_id): ApiPath<RuleId>,
) -> Result<StatusCode, ApiError> {
    allow(
        &caller,
        Action::ManagePlatformGuardrails,
        Resource::Platform,
    )?;
    platform_rule(&state, rule_id).await?;
    state
        .stores
        .guardrails
        .delete_platform_rule(rule_id)
        .await?;
    platform_rules_changed(&state).await;
    Ok(StatusCode::NO_CONTENT)
}

/// After a rule changed: this instance's policy reloaded at once (others within their
/// reload interval), and the ledger budgets of `org_id`'s budget limit rules brought in
/// step with its rules (see `stratai_guardrails::admin::sync_org_rule_budgets`).
pub async fn sync_rule_budgets(state: &AppState, org_id: OrgId) -> Result<(), ApiError> {
    reload(state, Some(org_id)).await;
    sync_budgets_of(state, org_id).await
}

/// The policy of this instance's gateway reloaded after a change of `org`'s rules (`None`:
/// the platform's), reading only what changed (a failure is logged: the periodic reload
/// tries again).
async fn reload(state: &AppState, org: Option<OrgId>) {
    if let Some(gw) = &state.gateway
        && let Err(error) = gw.pipeline.reload_guardrails_of(org).await
    {
        tracing::warn!(%error, "guardrail policy not reloaded after a rule change");
    }
}

async fn sync_budgets_of(state: &AppState, org_id: OrgId) -> Result<(), ApiError> {
    admin::sync_org_rule_budgets(
        state.stores.guardrails.as_ref(),
        state.stores.budgets.as_ref(),
        org_id,
    )
    .await?;
    Ok(())
}

/// A platform rule changed: this instance's policy reloaded at once. The organizations'
/// ledger budgets of a platform `budget_limit` rule are not written here, organization by
/// organization (a platform change would cost a round trip per organization, inside the
/// request): the Gatekeeper puts a missing or changed rule budget into an organization's ledger
/// before its first admission there, `/api/budgets` brings an organization's in step before
/// listing them, and a decision takes rule budgets from the live policy only, so a leftover
/// one limits nothing.
async fn platform_rules_changed(state: &AppState) {
    reload(state, None).await;
}
