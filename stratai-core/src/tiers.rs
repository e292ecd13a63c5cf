//! Model tiers (the seed's "modules"): bundles of models with billing rates.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::ids::{ModelId, OrgId, TierId, TierSlug};
use crate::money::Money;

/// A model tier: a bundle of models and the rates StratAI bills for them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelTier {
    /// Id.
    pub id: TierId,
    /// Unique slug (`basic`, `standard`, `premium`).
    pub slug: TierSlug,
    /// Display name.
    pub name: String,
    /// Description.
    pub description: String,
    /// What the tier is best used for.
    pub best_use_case: String,
    /// Models in the tier. A model belongs to at most one tier of a catalog.
    pub models: Vec<ModelId>,
    /// Monthly base price.
    pub base_price: Money,
    /// Billed $ per 1M input tokens.
    pub input_rate_per_million: Decimal,
    /// Billed $ per 1M output tokens.
    pub output_rate_per_million: Decimal,
    /// Display order.
    pub sort_order: i32,
    /// Inactive tiers grant nothing.
    pub active: bool,
}

/// An organization's subscription to a tier (`org_tier_access`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TierSubscription {
    /// Subscribing organization.
    pub org_id: OrgId,
    /// Tier.
    pub tier_id: TierId,
    /// Disabled subscriptions grant nothing.
    pub enabled: bool,
    /// Optional monthly budget of the tier inside the organization.
    pub monthly_budget: Option<Money>,
    /// When enabled.
    pub enabled_at: DateTime<Utc>,
}
