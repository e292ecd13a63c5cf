//! Budgets: list with their current state, create, update (limit, period, hardness,
//! alert threshold). A budget's scope decides who may manage it.

use axum::extract::State;
use axum::http::StatusCode;
use chrono::Utc;
use rust_decimal::Decimal;
use serde::Deserialize;
use stratai_core::access::{Action, Resource};
use stratai_core::budget::{Budget, BudgetPeriod, BudgetScope, BudgetState};
use stratai_core::money::Money;
use stratai_core::{BudgetId, OrgId, StoreError};

use super::{ApiPath, Caller, allow};
use crate::app::AppState;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery};

/// The resource a budget of `scope` in `org_id` is managed as.
fn resource(org_id: OrgId, scope: BudgetScope) -> Resource {
    match scope {
        BudgetScope::Org | BudgetScope::Tier(_) => Resource::Org(org_id),
        BudgetScope::Group(group_id) => Resource::Group { org_id, group_id },
        BudgetScope::User(user_id) => Resource::Member { org_id, user_id },
    }
}

/// Query of `GET /api/budgets`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BudgetsQuery {
    /// Organization (default: the caller's only one).
    #[serde(default)]
    pub org_id: Option<OrgId>,
    /// Only budgets of this kind: `org`, `group`, `user`, `tier`.
    #[serde(default)]
    pub scope: Option<String>,
}

fn default_org(caller: &Caller, org: Option<OrgId>) -> Result<OrgId, ApiError> {
    match org {
        Some(o) => Ok(o),
        None => match caller.actor.orgs.as_slice() {
            [only] => Ok(only.org_id),
            [] => Err(ApiError::NotFound("organization".to_owned())),
            _ => Err(ApiError::invalid(
                "org_id",
                "you belong to several organizations; name one",
            )),
        },
    }
}

/// Budgets of an organization and their state in the current period (admins).
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<BudgetsQuery>,
) -> Result<ApiJson<Vec<BudgetState>>, ApiError> {
    let org_id = default_org(&caller, q.org_id)?;
    allow(&caller, Action::ViewOrg, Resource::Org(org_id))?;
    allow(&caller, Action::ManageBudgets, Resource::Org(org_id))?;
    if let Some(kind) = &q.scope
        && !["org", "group", "user", "tier"].contains(&kind.as_str())
    {
        return Err(ApiError::invalid(
            "scope",
            format!("unknown scope `{kind}`"),
        ));
    }
    let budgets = state.stores.budgets.list_budgets(org_id).await?;
    let ids: Vec<BudgetId> = budgets
        .iter()
        .filter(|b| q.scope.as_deref().is_none_or(|k| b.scope.kind() == k))
        .map(|b| b.id)
        .collect();
    Ok(ApiJson(
        state
            .stores
            .budgets
            .states(org_id, &ids, Utc::now())
            .await?,
    ))
}

fn default_threshold() -> Decimal {
    Decimal::new(8, 1)
}

fn default_hard() -> bool {
    true
}

/// Body of `POST /api/budgets`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBudget {
    /// Organization.
    pub org_id: OrgId,
    /// What it limits: `{"type": "org"}`, `{"type": "user", "id": ...}`, ...
    pub scope: BudgetScope,
    /// Limit per period.
    pub limit: Money,
    /// Period.
    pub period: BudgetPeriod,
    /// Hard limits block (default); soft ones warn.
    #[serde(default = "default_hard")]
    pub hard_limit: bool,
    /// Alert threshold in (0, 1] (default 0.8).
    #[serde(default = "default_threshold")]
    #[schema(schema_with = crate::openapi::fraction)]
    pub alert_threshold: Decimal,
}

async fn check_scope(state: &AppState, org_id: OrgId, scope: BudgetScope) -> Result<(), ApiError> {
    let missing =
        |what: &str| ApiError::invalid("scope.id", format!("unknown {what} in this organization"));
    let found = match scope {
        BudgetScope::Org => Ok(()),
        BudgetScope::Group(g) => state
            .stores
            .directory
            .get_group(org_id, g)
            .await
            .map(|_| ()),
        BudgetScope::User(u) => state
            .stores
            .directory
            .get_member(org_id, u)
            .await
            .map(|_| ()),
        BudgetScope::Tier(t) => state.stores.tiers.get_tier(t).await.map(|_| ()),
    };
    match found {
        Ok(()) => Ok(()),
        Err(StoreError::NotFound { entity, .. }) => Err(missing(entity)),
        Err(e) => Err(e.into()),
    }
}

/// Creates a budget.
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<CreateBudget>,
) -> Result<(StatusCode, ApiJson<Budget>), ApiError> {
    allow(&caller, Action::ViewOrg, Resource::Org(req.org_id))?;
    allow(
        &caller,
        Action::ManageBudgets,
        resource(req.org_id, req.scope),
    )?;
    check_scope(&state, req.org_id, req.scope).await?;
    let budget = Budget::new(
        req.org_id,
        req.scope,
        req.limit,
        req.period,
        req.hard_limit,
        req.alert_threshold,
        Utc::now(),
    )?;
    state
        .stores
        .budgets
        .create_budget(req.org_id, &budget)
        .await?;
    Ok((StatusCode::CREATED, ApiJson(budget)))
}

/// Body of `PATCH /api/budgets/{id}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateBudget {
    /// The budget's organization (found among the caller's when omitted).
    #[serde(default)]
    pub org_id: Option<OrgId>,
    /// New limit.
    #[serde(default)]
    pub limit: Option<Money>,
    /// New period.
    #[serde(default)]
    pub period: Option<BudgetPeriod>,
    /// Hard or soft.
    #[serde(default)]
    pub hard_limit: Option<bool>,
    /// New alert threshold.
    #[serde(default)]
    #[schema(schema_with = crate::openapi::fraction_or_null)]
    pub alert_threshold: Option<Decimal>,
}

/// Finds budget `id` in `org` or, without one, among the caller's organizations. Budgets of
/// other organizations are reported as not found.
async fn locate(
    state: &AppState,
    caller: &Caller,
    id: BudgetId,
    org: Option<OrgId>,
) -> Result<Budget, ApiError> {
    let candidates: Vec<OrgId> = match org {
        Some(o) => vec![o],
        None if caller.is_super_admin() => state
            .stores
            .directory
            .list_orgs()
            .await?
            .into_iter()
            .map(|o| o.id)
            .collect(),
        None => caller.actor.orgs.iter().map(|g| g.org_id).collect(),
    };
    for org_id in candidates {
        if allow(caller, Action::ViewOrg, Resource::Org(org_id)).is_err() {
            continue;
        }
        match state.stores.budgets.get_budget(org_id, id).await {
            Ok(b) => return Ok(b),
            Err(StoreError::NotFound { .. } | StoreError::TenantMismatch(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::NotFound("budget".to_owned()))
}

/// Updates a budget.
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<BudgetId>,
    ApiJson(req): ApiJson<UpdateBudget>,
) -> Result<ApiJson<Budget>, ApiError> {
    let mut budget = locate(&state, &caller, id, req.org_id).await?;
    allow(
        &caller,
        Action::ManageBudgets,
        resource(budget.org_id, budget.scope),
    )?;
    if let Some(l) = req.limit {
        budget.limit = l;
    }
    if let Some(p) = req.period {
        budget.period = p;
    }
    if let Some(h) = req.hard_limit {
        budget.hard_limit = h;
    }
    if let Some(t) = req.alert_threshold {
        budget.alert_threshold = t;
    }
    budget.validate()?;
    budget.updated_at = Utc::now();
    state
        .stores
        .budgets
        .update_budget(budget.org_id, &budget)
        .await?;
    Ok(ApiJson(budget))
}
