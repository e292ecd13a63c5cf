//! Usage records: every request, fully attributed, with provider cost and billed amount.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::{ConversationId, GroupId, ModelId, OrgId, RequestId, TierId, UserId};
use crate::money::Money;

/// How a request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UsageStatus {
    /// Completed normally.
    Success,
    /// The client went away mid-stream; billed for what was delivered.
    Partial,
    /// Failed upstream; nothing billed.
    Failed,
}

/// One request's usage (the seed's `usage_records` row, plus a unique request id and status).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageRecord {
    /// StratAI's request id: unique, the idempotency key.
    pub request_id: RequestId,
    /// Organization.
    pub org_id: OrgId,
    /// Group the request is attributed to, if any.
    pub group_id: Option<GroupId>,
    /// User.
    pub user_id: UserId,
    /// Tier of the model.
    pub tier_id: Option<TierId>,
    /// Model actually used.
    pub model: ModelId,
    /// Input (prompt) tokens.
    pub input_tokens: u32,
    /// Output (completion) tokens.
    pub output_tokens: u32,
    /// What the provider charges us.
    pub provider_cost: Money,
    /// What we bill the customer (tier rates).
    pub billed_amount: Money,
    /// LiteLLM's request id (the upstream completion id), for reconciliation.
    pub litellm_request_id: Option<String>,
    /// Conversation in the product, if any.
    pub conversation_id: Option<ConversationId>,
    /// Product endpoint: `chat`, `arena`, `task_planning` ...
    pub endpoint: String,
    /// Outcome.
    pub status: UsageStatus,
    /// When the request was made.
    pub created_at: DateTime<Utc>,
}

/// A filter over usage records of one organization.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageQuery {
    /// Inclusive start.
    pub from: Option<DateTime<Utc>>,
    /// Exclusive end.
    pub to: Option<DateTime<Utc>>,
    /// Only this group.
    pub group_id: Option<GroupId>,
    /// Only this user.
    pub user_id: Option<UserId>,
    /// Only this tier.
    pub tier_id: Option<TierId>,
    /// Only this model.
    pub model: Option<ModelId>,
}

/// A dimension usage can be grouped by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dimension {
    /// Organization.
    Org,
    /// Group.
    Group,
    /// User.
    User,
    /// Tier.
    Tier,
    /// Model.
    Model,
    /// Endpoint.
    Endpoint,
    /// UTC day.
    Day,
}

/// The value of one dimension in an aggregate row.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "dimension", content = "value")]
pub enum DimensionValue {
    /// Organization.
    Org(OrgId),
    /// Group (none: not attributed to a group).
    Group(Option<GroupId>),
    /// User.
    User(UserId),
    /// Tier (none: no tier).
    Tier(Option<TierId>),
    /// Model.
    Model(ModelId),
    /// Endpoint.
    Endpoint(String),
    /// UTC day.
    Day(NaiveDate),
}

/// Totals of a set of usage records.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageTotals {
    /// Number of records.
    pub requests: u64,
    /// Sum of input tokens.
    pub input_tokens: u64,
    /// Sum of output tokens.
    pub output_tokens: u64,
    /// Sum of provider cost.
    pub provider_cost: Money,
    /// Sum of billed amount.
    pub billed_amount: Money,
}

/// One row of an aggregation: the group key (in the order of the requested dimensions) and totals.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AggregateRow {
    /// Values of the grouped dimensions.
    pub key: Vec<DimensionValue>,
    /// Totals of the group.
    pub totals: UsageTotals,
}
