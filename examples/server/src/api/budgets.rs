//! Budgets: list with their current state, create, update (limit, period, hardness,
//! alert threshold). A budget's scope decides who may manage it.
//!
//! The `monthly_budget` fields of members, groups and tier subscriptions are budgets of the
//! same ledger (see [`stratai_core::budget::ImpliedBy`]): the store writes them with the field, the list shows them
//! with `implied_by` naming the field, and they change only through it (a `PATCH` here is a
//! 409 naming the field). So are the `budget_limit` guardrail rules (see
//! `stratai_guardrails::RuleBudget`): listed with `guardrail_rule`, changed only through the
//! rule. `GET /api/me/budgets` shows a member what applies to them. What happens is
//! `stratai_store::admin::budgets`' and `stratai_guardrails::admin`'s; here, who may ask.

use axum::extract::State;
use axum::http::StatusCode;
use chrono::Utc;
use rust_decimal::Decimal;
use serde::Deserialize;
use stratai_core::access::{Action, Resource};
use stratai_core::budget::admin::{BudgetEdit, NewBudget};
pub use stratai_core::budget::admin::{GuardrailRule, ListedBudget, MyBudget};
use stratai_core::budget::{Budget, BudgetPeriod, BudgetScope};
use stratai_core::money::Money;
use stratai_core::{BudgetId, OrgId};
use stratai_store::admin::budgets as admin;

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

/// Budgets of an organization and their state in the current period (admins).
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<BudgetsQuery>,
) -> Result<ApiJson<Vec<ListedBudget>>, ApiError> {
    let org_id = caller.org_or_only(q.org_id)?;
    allow(&caller, Action::ViewOrg, Resource::Org(org_id))?;
    allow(&caller, Action::ManageBudgets, Resource::Org(org_id))?;
    Ok(ApiJson(
        stratai_guardrails::admin::list_budgets(
            state.stores.guardrails.as_ref(),
            state.stores.budgets.as_ref(),
            org_id,
            q.scope.as_deref(),
            Utc::now(),
        )
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
    let budget = admin::create_budget(
        state.stores.directory.as_ref(),
        state.stores.tiers.as_ref(),
        state.stores.budgets.as_ref(),
        NewBudget {
            org_id: req.org_id,
            scope: req.scope,
            limit: req.limit,
            period: req.period,
            hard_limit: req.hard_limit,
            alert_threshold: req.alert_threshold,
        },
        Utc::now(),
    )
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
    let visible: Vec<OrgId> = candidates
        .into_iter()
        .filter(|&org_id| allow(caller, Action::ViewOrg, Resource::Org(org_id)).is_ok())
        .collect();
    Ok(admin::locate(state.stores.budgets.as_ref(), &visible, id).await?)
}

/// Updates a budget.
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<BudgetId>,
    ApiJson(req): ApiJson<UpdateBudget>,
) -> Result<ApiJson<Budget>, ApiError> {
    let budget = locate(&state, &caller, id, req.org_id).await?;
    allow(
        &caller,
        Action::ManageBudgets,
        resource(budget.org_id, budget.scope),
    )?;
    let edit = BudgetEdit {
        limit: req.limit,
        period: req.period,
        hard_limit: req.hard_limit,
        alert_threshold: req.alert_threshold,
    };
    Ok(ApiJson(
        admin::update_budget(state.stores.budgets.as_ref(), budget, edit, Utc::now()).await?,
    ))
}

/// Query of `GET /api/me/budgets`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MyBudgetsQuery {
    /// Only this organization (default: every organization of the caller).
    #[serde(default)]
    pub org_id: Option<OrgId>,
}

/// The budgets that apply to the caller's own requests, with their state in the current
/// period (any member).
pub async fn mine(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<MyBudgetsQuery>,
) -> Result<ApiJson<Vec<MyBudget>>, ApiError> {
    let orgs: Vec<OrgId> = match q.org_id {
        Some(org_id) => {
            if !caller.actor.orgs.iter().any(|g| g.org_id == org_id) {
                return Err(ApiError::NotFound("organization".to_owned()));
            }
            vec![org_id]
        }
        None => caller.actor.orgs.iter().map(|g| g.org_id).collect(),
    };
    let now = Utc::now();
    let mut out = Vec::new();
    for org_id in orgs {
        let group_ids: Vec<_> = caller
            .actor
            .groups
            .iter()
            .filter(|g| g.org_id == org_id)
            .map(|g| g.group_id)
            .collect();
        out.extend(
            stratai_guardrails::admin::member_budgets(
                state.stores.guardrails.as_ref(),
                state.stores.budgets.as_ref(),
                org_id,
                caller.id(),
                &group_ids,
                now,
            )
            .await?,
        );
    }
    Ok(ApiJson(out))
}
