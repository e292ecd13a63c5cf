//! The administration of guardrail rules over core's ports: a rule checked before it is
//! stored (its type's config, the group, member or tier its scope names), the ledger budgets
//! of the `budget_limit` rules kept in step with the stored rules, and the budget lists that
//! name the rule a budget enforces (the admins' list, a member's own budgets). Who may ask
//! is the caller's decision (the admin API's); these say what happens.

use chrono::{DateTime, Utc};
use stratai_core::budget::admin::{GuardrailRule, ListedBudget, MyBudget, check_scope_kind};
use stratai_core::budget::{Budget, BudgetScope, RequestScope};
use stratai_core::ports::{
    BudgetLedger, DirectoryStore, GuardrailStore, RuleRecord, RuleScope, TierStore,
};
use stratai_core::{
    BudgetId, GroupId, OpError, OrgId, RuleId, StoreError, UserId, ValidationError,
};

use crate::gatekeeper::sync_rule_budgets;
use crate::policy::RuleBudget;
use crate::rule::{Rule, RuleType};

/// Refuses a rule stratai-guardrails cannot compile, naming the field
/// (`config.blocked_patterns[2]`).
pub fn check_rule(record: &RuleRecord) -> Result<(), OpError> {
    Rule::from_record(record)
        .map(|_| ())
        .map_err(|e| ValidationError::new(e.field, e.reason).into())
}

/// Refuses an organization rule's scope naming a tier, group or member unknown in `org_id`
/// (`scope.tier_id`, `scope.group_id`, `scope.user_id`).
pub async fn check_org_scope(
    directory: &dyn DirectoryStore,
    tiers: &dyn TierStore,
    org_id: OrgId,
    scope: &RuleScope,
) -> Result<(), OpError> {
    let (found, path, what) = match *scope {
        RuleScope::Tier { tier_id, .. } => (
            tiers.get_tier(tier_id).await.map(|_| ()),
            "scope.tier_id",
            "tier",
        ),
        RuleScope::Group { group_id, .. } => (
            directory.get_group(org_id, group_id).await.map(|_| ()),
            "scope.group_id",
            "group",
        ),
        RuleScope::User { user_id, .. } => (
            directory.get_member(org_id, user_id).await.map(|_| ()),
            "scope.user_id",
            "member",
        ),
        _ => (Ok(()), "scope", "scope"),
    };
    match found {
        Ok(()) => Ok(()),
        Err(StoreError::NotFound { .. }) => {
            Err(ValidationError::new(path, format!("unknown {what} in this organization")).into())
        }
        Err(e) => Err(e.into()),
    }
}

/// Refuses a platform rule's scope naming a tier that cannot be read (`scope.tier_id`).
pub async fn check_platform_scope(tiers: &dyn TierStore, scope: &RuleScope) -> Result<(), OpError> {
    if let RuleScope::Tier { tier_id, .. } = *scope
        && tiers.get_tier(tier_id).await.is_err()
    {
        return Err(ValidationError::new("scope.tier_id", "unknown tier").into());
    }
    Ok(())
}

/// Platform rule `rule_id`, or not found.
pub async fn platform_rule(
    guardrails: &dyn GuardrailStore,
    rule_id: RuleId,
) -> Result<RuleRecord, OpError> {
    guardrails
        .list_platform_rules()
        .await?
        .into_iter()
        .find(|r| r.id == rule_id)
        .ok_or_else(|| OpError::NotFound("rule".to_owned()))
}

/// The ledger budgets of the `budget_limit` rules that can apply in `org_id` as the stored
/// rules define them now (its own and the platform's, active ones; [`Rule::budget_in`]), by
/// scope and id.
pub async fn rule_budgets(
    guardrails: &dyn GuardrailStore,
    org_id: OrgId,
) -> Result<Vec<RuleBudget>, StoreError> {
    let mut records = guardrails.list_platform_rules().await?;
    records.extend(guardrails.list_org_rules(org_id).await?);
    // Only budget limit rules define budgets: the others are not compiled here (a content
    // filter's patterns cost more to build than this whole listing).
    let mut out: Vec<_> = records
        .iter()
        .filter(|r| r.rule_type == RuleType::BudgetLimit.as_str())
        .filter_map(|r| Rule::from_record(r).ok())
        .filter_map(|r| r.budget_in(org_id))
        .collect();
    out.sort_by_key(|b| (b.budget.scope, b.budget.id));
    Ok(out)
}

/// Brings the ledger budgets of `org_id`'s `budget_limit` rules in step with the stored rules
/// ([`rule_budgets`], [`sync_rule_budgets`]) and returns the rules' budgets.
pub async fn sync_org_rule_budgets(
    guardrails: &dyn GuardrailStore,
    ledger: &dyn BudgetLedger,
    org_id: OrgId,
) -> Result<Vec<RuleBudget>, StoreError> {
    let wanted = rule_budgets(guardrails, org_id).await?;
    sync_rule_budgets(ledger, org_id, &wanted).await?;
    Ok(wanted)
}

/// The rule `budget` enforces, among `rules` (`None` for other budgets).
#[must_use]
pub fn rule_of(budget: &Budget, rules: &[RuleBudget]) -> Option<GuardrailRule> {
    rules
        .iter()
        .find(|r| r.budget.id == budget.id)
        .map(|r| GuardrailRule {
            id: r.rule_id,
            name: r.name.clone(),
        })
}

/// The organization's budget list with its rule budgets in step with its rules (a platform
/// rule's budget appears in an organization on its first request or listing there), and the
/// rules' budgets.
async fn budgets_in_step(
    guardrails: &dyn GuardrailStore,
    ledger: &dyn BudgetLedger,
    org_id: OrgId,
) -> Result<(Vec<Budget>, Vec<RuleBudget>), StoreError> {
    let rules = sync_org_rule_budgets(guardrails, ledger, org_id).await?;
    let budgets = ledger.list_budgets(org_id).await?;
    Ok((budgets, rules))
}

/// Every budget of `org_id` (only those of kind `scope_kind` when given: `org`, `group`,
/// `user`, `tier`) with its state at `now`, the field it follows and the rule it enforces.
pub async fn list_budgets(
    guardrails: &dyn GuardrailStore,
    ledger: &dyn BudgetLedger,
    org_id: OrgId,
    scope_kind: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Vec<ListedBudget>, OpError> {
    if let Some(kind) = scope_kind {
        check_scope_kind(kind)?;
    }
    let (budgets, rules) = budgets_in_step(guardrails, ledger, org_id).await?;
    let ids: Vec<BudgetId> = budgets
        .iter()
        .filter(|b| scope_kind.is_none_or(|k| b.scope.kind() == k))
        .map(|b| b.id)
        .collect();
    let states = ledger.states(org_id, &ids, now).await?;
    Ok(states
        .into_iter()
        .map(|state| {
            let rule = rule_of(&state.budget, &rules);
            ListedBudget::new(state, rule)
        })
        .collect())
}

/// The budgets of `org_id` that apply to `user_id`'s own requests (member of `group_ids`
/// there), tier budgets included, with their state at `now`, by scope and id.
pub async fn member_budgets(
    guardrails: &dyn GuardrailStore,
    ledger: &dyn BudgetLedger,
    org_id: OrgId,
    user_id: UserId,
    group_ids: &[GroupId],
    now: DateTime<Utc>,
) -> Result<Vec<MyBudget>, StoreError> {
    let scope = RequestScope {
        org_id,
        user_id,
        group_ids,
        tier_id: None,
    };
    let (budgets, rules) = budgets_in_step(guardrails, ledger, org_id).await?;
    let ids: Vec<BudgetId> = budgets
        .iter()
        .filter(|b| b.applies_to(&scope) || matches!(b.scope, BudgetScope::Tier(_)))
        .map(|b| b.id)
        .collect();
    let mut states = ledger.states(org_id, &ids, now).await?;
    states.sort_by_key(|s| (s.budget.scope, s.budget.id));
    Ok(states
        .into_iter()
        .map(|s| {
            let rule = rule_of(&s.budget, &rules);
            MyBudget::new(s, rule)
        })
        .collect())
}
