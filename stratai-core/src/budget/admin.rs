//! What the budget administration decides, pure: which budgets an admin may change directly
//! (not those following a `monthly_budget` field or a `budget_limit` rule), what an edit
//! changes, and the views of a budget the admin API answers (the admins' list, a member's own
//! budgets). The stores' side is `stratai_store::admin::budgets`; the views joined with the
//! guardrail rules are built by `stratai_guardrails::admin`.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::{Budget, BudgetPeriod, BudgetScope, BudgetState, ImpliedBy, is_rule_budget};
use crate::error::{OpError, ValidationError};
use crate::ids::{BudgetId, OrgId, RuleId};
use crate::money::Money;

/// The budget kinds `GET /api/budgets?scope=` filters on ([`BudgetScope::kind`]).
pub const SCOPE_KINDS: [&str; 4] = ["org", "group", "user", "tier"];

/// Refuses a scope filter that names no kind of budget.
pub fn check_scope_kind(kind: &str) -> Result<(), ValidationError> {
    if SCOPE_KINDS.contains(&kind) {
        Ok(())
    } else {
        Err(ValidationError::new(
            "scope",
            format!("unknown scope `{kind}`"),
        ))
    }
}

/// The `budget_limit` rule a budget enforces.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GuardrailRule {
    /// The rule.
    pub id: RuleId,
    /// Its name.
    pub name: String,
}

/// A budget and its state in the current period, as `GET /api/budgets` lists it.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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

impl ListedBudget {
    /// The listing of `state`, enforcing `guardrail_rule` if a rule's budget.
    #[must_use]
    pub fn new(state: BudgetState, guardrail_rule: Option<GuardrailRule>) -> Self {
        Self {
            implied_by: ImpliedBy::of(&state.budget),
            guardrail_rule,
            state,
        }
    }
}

/// One budget that applies to the caller, as `GET /api/me/budgets` shows it.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
    pub period_start: DateTime<Utc>,
    /// End of the current period (exclusive): when `spent` starts again from zero.
    pub period_end: DateTime<Utc>,
}

impl MyBudget {
    /// The member's view of `s`, enforcing `guardrail_rule` if a rule's budget.
    #[must_use]
    pub fn new(s: BudgetState, guardrail_rule: Option<GuardrailRule>) -> Self {
        let implied_by = ImpliedBy::of(&s.budget);
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

/// A budget to create (`POST /api/budgets`), before its scope is checked.
#[derive(Clone, Debug)]
pub struct NewBudget {
    /// Organization.
    pub org_id: OrgId,
    /// What it limits.
    pub scope: BudgetScope,
    /// Limit per period.
    pub limit: Money,
    /// Period.
    pub period: BudgetPeriod,
    /// Hard limits block; soft ones warn.
    pub hard_limit: bool,
    /// Alert threshold in (0, 1].
    pub alert_threshold: Decimal,
}

/// The changes of a budget edit (`PATCH /api/budgets/{id}`); `None` keeps the field.
#[derive(Clone, Debug, Default)]
pub struct BudgetEdit {
    /// New limit.
    pub limit: Option<Money>,
    /// New period.
    pub period: Option<BudgetPeriod>,
    /// Hard or soft.
    pub hard_limit: Option<bool>,
    /// New alert threshold.
    pub alert_threshold: Option<Decimal>,
}

impl BudgetEdit {
    /// `budget` edited at `now`: refused (conflict) when the budget follows a
    /// `monthly_budget` field or enforces a `budget_limit` rule (those change only through
    /// their source), or when the result is invalid.
    pub fn apply(self, mut budget: Budget, now: DateTime<Utc>) -> Result<Budget, OpError> {
        let id = budget.id;
        if let Some(by) = ImpliedBy::of(&budget) {
            return Err(OpError::Conflict(format!(
                "budget `{id}` follows `{}`: change or clear that field instead",
                by.field()
            )));
        }
        if is_rule_budget(id) {
            return Err(OpError::Conflict(format!(
                "budget `{id}` enforces a `budget_limit` guardrail rule: change, disable or delete the rule instead"
            )));
        }
        if let Some(l) = self.limit {
            budget.limit = l;
        }
        if let Some(p) = self.period {
            budget.period = p;
        }
        if let Some(h) = self.hard_limit {
            budget.hard_limit = h;
        }
        if let Some(t) = self.alert_threshold {
            budget.alert_threshold = t;
        }
        budget.validate()?;
        budget.updated_at = now;
        Ok(budget)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::rule_budget;

    fn budget() -> Budget {
        Budget::new(
            OrgId::new(),
            BudgetScope::Org,
            Money::dollars(100),
            BudgetPeriod::Monthly,
            true,
            Decimal::new(8, 1),
            Utc::now(),
        )
        .unwrap()
    }

    #[test]
    fn an_edit_changes_only_what_it_names() {
        let before = budget();
        let now = Utc::now();
        let after = BudgetEdit {
            limit: Some(Money::dollars(50)),
            ..BudgetEdit::default()
        }
        .apply(before.clone(), now)
        .unwrap();
        assert_eq!(after.limit, Money::dollars(50));
        assert_eq!(after.period, before.period);
        assert_eq!(after.updated_at, now);
        let invalid = BudgetEdit {
            alert_threshold: Some(Decimal::TWO),
            ..BudgetEdit::default()
        };
        assert!(matches!(
            invalid.apply(before, now),
            Err(OpError::Invalid(_))
        ));
    }

    #[test]
    fn a_rule_budget_changes_only_through_its_rule() {
        let org = OrgId::new();
        let b = rule_budget(
            org,
            RuleId::new(),
            BudgetScope::Org,
            Money::dollars(5),
            BudgetPeriod::Daily,
            true,
            Utc::now(),
        );
        assert!(matches!(
            BudgetEdit::default().apply(b, Utc::now()),
            Err(OpError::Conflict(m)) if m.contains("guardrail rule")
        ));
    }

    #[test]
    fn scope_kinds_and_what_is_left() {
        assert!(check_scope_kind("tier").is_ok());
        assert_eq!(check_scope_kind("team").unwrap_err().field, "scope");
        let b = budget();
        let state = BudgetState {
            period_start: Utc::now(),
            period_end: Utc::now(),
            spent: Money::dollars(90),
            reserved: Money::dollars(20),
            alert_sent: false,
            budget: b,
        };
        let mine = MyBudget::new(state, None);
        assert_eq!(mine.left, Money::ZERO);
    }
}
