//! Budgets: list with their current state, create, update (limit, period, hardness,
//! alert threshold). A budget's scope decides who may manage it.
//!
//! The `monthly_budget` fields of members, groups and tier subscriptions are budgets of the
//! same ledger (see [`ImpliedBy`]): the store writes them with the field, the list shows them
//! with `implied_by` naming the field, and they change only through it (a `PATCH` here is a
//! 409 naming the field). So are the `budget_limit` guardrail rules (see
//! `stratai_guardrails::RuleBudget`): listed with `guardrail_rule`, changed only through the
//! rule. `GET /api/me/budgets` shows a member what applies to them.

use axum::extract::State;
use axum::http::StatusCode;
use chrono::Utc;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use stratai_core::access::{Action, Resource};
use stratai_core::budget::{
    Budget, BudgetPeriod, BudgetScope, BudgetState, ImpliedBy, RequestScope, is_rule_budget,
};
use stratai_core::money::Money;
use stratai_core::{BudgetId, OrgId, RuleId, StoreError};
use stratai_guardrails::RuleBudget;

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

/// A budget and its state in the current period, as `GET /api/budgets` lists it.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ListedBudget {
    /// The budget and its state.
    #[serde(flatten)]
    pub state: BudgetState,
    /// The field the budget follows (`member.monthly_budget`, `group.monthly_budget`,
    /// `tier_subscription.monthly_budget`); none for a budget made with `POST /api/budgets`.
    pub implied_by: Option<ImpliedBy>,
    /// The `budget_limit` guardrail rule the budget enforces (it follows the rule: change
    /// the rule to change it); none for any other budget.
    pub guardrail_rule: Option<GuardrailRule>,
}

/// The `budget_limit` rule a budget enforces.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GuardrailRule {
    /// The rule.
    pub id: RuleId,
    /// Its name.
    pub name: String,
}

/// The rule a budget enforces, among `rules` (`None` for other budgets).
fn rule_of(budget: &Budget, rules: &[RuleBudget]) -> Option<GuardrailRule> {
    rules
        .iter()
        .find(|r| r.budget.id == budget.id)
        .map(|r| GuardrailRule {
            id: r.rule_id,
            name: r.name.clone(),
        })
}

/// The organization's budget list with its rule budgets in step with its rules (a
/// platform rule's budget appears in an organization on its first request or listing
/// there), and the rules' budgets.
async fn budgets_in_step(
    state: &AppState,
    org_id: OrgId,
) -> Result<(Vec<Budget>, Vec<RuleBudget>), ApiError> {
    let rules = super::guardrails::rule_budgets(state, org_id).await?;
    stratai_guardrails::sync_rule_budgets(state.stores.budgets.as_ref(), org_id, &rules).await?;
    let budgets = state.stores.budgets.list_budgets(org_id).await?;
    Ok((budgets, rules))
}

/// Budgets of an organization and their state in the current period (admins).
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<BudgetsQuery>,
) -> Result<ApiJson<Vec<ListedBudget>>, ApiError> {
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
    let (budgets, rules) = budgets_in_step(&state, org_id).await?;
    let ids: Vec<BudgetId> = budgets
        .iter()
        .filter(|b| q.scope.as_deref().is_none_or(|k| b.scope.kind() == k))
        .map(|b| b.id)
        .collect();
    let states = state
        .stores
        .budgets
        .states(org_id, &ids, Utc::now())
        .await?;
    Ok(ApiJson(
        states
            .into_iter()
            .map(|state| ListedBudget {
                implied_by: ImpliedBy::of(&state.budget),
                guardrail_rule: rule_of(&state.budget, &rules),
                state,
            })
            .collect(),
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
    if let Some(by) = ImpliedBy::of(&budget) {
        return Err(ApiError::Conflict(format!(
            "budget `{id}` follows `{}`: change or clear that field instead",
            by.field()
        )));
    }
    if is_rule_budget(budget.id) {
        return Err(ApiError::Conflict(format!(
            "budget `{id}` enforces a `budget_limit` guardrail rule: change, disable or delete the rule instead"
        )));
    }
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

/// Query of `GET /api/me/budgets`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MyBudgetsQuery {
    /// Only this organization (default: every organization of the caller).
    #[serde(default)]
    pub org_id: Option<OrgId>,
}

/// One budget that applies to the caller, as `GET /api/me/budgets` shows it.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MyBudget {
    /// The budget's organization.
    pub org_id: OrgId,
    /// The budget.
    pub budget_id: BudgetId,
    /// What it limits: the organization, one of the caller's groups, the caller, or a tier
    /// (then it applies to the caller's requests for that tier's models).
    pub scope: BudgetScope,
    /// The field it follows, none for a budget made with `POST /api/budgets`.
    pub implied_by: Option<ImpliedBy>,
    /// The `budget_limit` guardrail rule it enforces, none for any other budget.
    pub guardrail_rule: Option<GuardrailRule>,
    /// Limit per period.
    pub limit: Money,
    /// The period.
    pub period: BudgetPeriod,
    /// Hard budgets refuse requests; soft ones only warn.
    pub hard_limit: bool,
    /// Settled spend in the current period (everyone's, for an organization, group or tier
    /// budget).
    pub spent: Money,
    /// Held by requests in flight.
    pub reserved: Money,
    /// What is left: limit - spent - reserved, at least zero.
    pub left: Money,
    /// Start of the current period.
    pub period_start: chrono::DateTime<Utc>,
    /// End of the current period (exclusive): when `spent` starts again from zero.
    pub period_end: chrono::DateTime<Utc>,
}

impl MyBudget {
    fn new(s: BudgetState, rules: &[RuleBudget]) -> Self {
        let implied_by = ImpliedBy::of(&s.budget);
        let guardrail_rule = rule_of(&s.budget, rules);
        let b = s.budget;
        Self {
            org_id: b.org_id,
            budget_id: b.id,
            scope: b.scope,
            implied_by,
            guardrail_rule,
            limit: b.limit,
            period: b.period,
            hard_limit: b.hard_limit,
            left: b.limit.saturating_sub(s.spent + s.reserved),
            spent: s.spent,
            reserved: s.reserved,
            period_start: s.period_start,
            period_end: s.period_end,
        }
    }
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
        let scope = RequestScope {
            org_id,
            user_id: caller.id(),
            group_ids: &group_ids,
            tier_id: None,
        };
        let (budgets, rules) = budgets_in_step(&state, org_id).await?;
        let ids: Vec<BudgetId> = budgets
            .iter()
            .filter(|b| b.applies_to(&scope) || matches!(b.scope, BudgetScope::Tier(_)))
            .map(|b| b.id)
            .collect();
        let mut states = state.stores.budgets.states(org_id, &ids, now).await?;
        states.sort_by_key(|s| (s.budget.scope, s.budget.id));
        out.extend(states.into_iter().map(|s| MyBudget::new(s, &rules)));
    }
    Ok(ApiJson(out))
}
