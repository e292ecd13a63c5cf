//! Budget administration over the stores: a budget's scope checked against the organization,
//! a budget found among the organizations a caller may see, created and edited. The budget
//! lists joined with the guardrail rules are `stratai_guardrails::admin`'s.

use chrono::{DateTime, Utc};
use stratai_core::budget::admin::{BudgetEdit, NewBudget};
use stratai_core::budget::{Budget, BudgetScope};
use stratai_core::ports::{BudgetLedger, DirectoryStore, TierStore};
use stratai_core::{BudgetId, OpError, OrgId, StoreError, ValidationError};

/// Refuses a scope naming a group, member or tier unknown in `org_id` (`scope.id`).
pub async fn check_scope(
    directory: &dyn DirectoryStore,
    tiers: &dyn TierStore,
    org_id: OrgId,
    scope: BudgetScope,
) -> Result<(), OpError> {
    let found = match scope {
        BudgetScope::Org => Ok(()),
        BudgetScope::Group(g) => directory.get_group(org_id, g).await.map(|_| ()),
        BudgetScope::User(u) => directory.get_member(org_id, u).await.map(|_| ()),
        BudgetScope::Tier(t) => tiers.get_tier(t).await.map(|_| ()),
    };
    match found {
        Ok(()) => Ok(()),
        Err(StoreError::NotFound { entity, .. }) => Err(ValidationError::new(
            "scope.id",
            format!("unknown {entity} in this organization"),
        )
        .into()),
        Err(e) => Err(e.into()),
    }
}

/// Creates `new` at `now` once its scope is known in its organization. Returns it as stored.
pub async fn create_budget(
    directory: &dyn DirectoryStore,
    tiers: &dyn TierStore,
    ledger: &dyn BudgetLedger,
    new: NewBudget,
    now: DateTime<Utc>,
) -> Result<Budget, OpError> {
    check_scope(directory, tiers, new.org_id, new.scope).await?;
    let budget = Budget::new(
        new.org_id,
        new.scope,
        new.limit,
        new.period,
        new.hard_limit,
        new.alert_threshold,
        now,
    )?;
    ledger.create_budget(new.org_id, &budget).await?;
    Ok(budget)
}

/// Budget `id` in the first of `orgs` holding it (the organizations the caller may see, in
/// order); not found otherwise, also when it belongs to another organization.
pub async fn locate(
    ledger: &dyn BudgetLedger,
    orgs: &[OrgId],
    id: BudgetId,
) -> Result<Budget, OpError> {
    for &org_id in orgs {
        match ledger.get_budget(org_id, id).await {
            Ok(b) => return Ok(b),
            Err(StoreError::NotFound { .. } | StoreError::TenantMismatch(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Err(OpError::NotFound("budget".to_owned()))
}

/// Writes `edit` of `budget` at `now` ([`BudgetEdit::apply`] decides). Returns the budget
/// as written.
pub async fn update_budget(
    ledger: &dyn BudgetLedger,
    budget: Budget,
    edit: BudgetEdit,
    now: DateTime<Utc>,
) -> Result<Budget, OpError> {
    let budget = edit.apply(budget, now)?;
    ledger.update_budget(budget.org_id, &budget).await?;
    Ok(budget)
}
