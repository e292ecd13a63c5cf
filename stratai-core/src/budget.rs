//! Budgets: scopes, periods, limits and alerts.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::ids::{BudgetId, GroupId, OrgId, TierId, UserId};
use crate::money::Money;

/// What a budget limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "type", content = "id", rename_all = "snake_case")]
pub enum BudgetScope {
    /// The whole organization.
    Org,
    /// One group of the organization.
    Group(GroupId),
    /// One member of the organization.
    User(UserId),
    /// One tier inside the organization.
    Tier(TierId),
}

/// A budget period: calendar windows, so a new period starts at zero with no reset job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BudgetPeriod {
    /// Calendar day.
    Daily,
    /// ISO week, starting Monday.
    Weekly,
    /// Calendar month.
    Monthly,
}

/// A budget of an organization.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Budget {
    /// Id.
    pub id: BudgetId,
    /// Organization it belongs to (always set).
    pub org_id: OrgId,
    /// What it limits.
    pub scope: BudgetScope,
    /// The limit per period.
    pub limit: Money,
    /// The period.
    pub period: BudgetPeriod,
    /// Hard limits block; soft limits warn.
    pub hard_limit: bool,
    /// Alert when spend reaches this fraction of the limit, in (0, 1].
    pub alert_threshold: Decimal,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last update.
    pub updated_at: DateTime<Utc>,
}

/// A budget together with its state in one period, as a ledger reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetState {
    /// The budget.
    pub budget: Budget,
    /// Start of the period the state is for.
    pub period_start: DateTime<Utc>,
    /// End of the period (exclusive).
    pub period_end: DateTime<Utc>,
    /// Settled spend in the period.
    pub spent: Money,
    /// Outstanding reservations in the period.
    pub reserved: Money,
    /// Whether the threshold alert already fired this period.
    pub alert_sent: bool,
}

/// A threshold alert to emit: fired at most once per budget and period.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetAlert {
    /// Budget.
    pub budget_id: BudgetId,
    /// Its organization.
    pub org_id: OrgId,
    /// Its scope.
    pub scope: BudgetScope,
    /// Start of the period the alert is for.
    pub period_start: DateTime<Utc>,
    /// Spend that crossed the threshold.
    pub spent: Money,
    /// The limit.
    pub limit: Money,
    /// The threshold fraction.
    pub threshold: Decimal,
}

/// A hard budget refused a reservation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetRefusal {
    /// The refusing budget.
    pub budget_id: BudgetId,
    /// Its scope.
    pub scope: BudgetScope,
    /// Its limit.
    pub limit: Money,
    /// What is left in the period (limit - spent - reserved, at least zero).
    pub remaining: Money,
    /// What was asked for.
    pub requested: Money,
}
