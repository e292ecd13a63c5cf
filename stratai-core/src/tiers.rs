//! Model tiers (the seed's "modules"): bundles of models with billing rates.

pub mod admin;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::directory::{Group, Membership, Organization};
use crate::error::ValidationError;
use crate::ids::{GroupId, ModelId, OrgId, TierId, TierSlug};
use crate::money::Money;

/// A model tier: a bundle of models and the rates StratAI bills for them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
    /// The tier's rate periods, oldest first: each period's rates are in force from its
    /// `effective_from` until the next one's (past, current and scheduled changes). Empty for
    /// a tier whose rates never changed: `input_rate_per_million` and
    /// `output_rate_per_million` are then in force at every time. When not empty it decides
    /// (see [`ModelTier::rates_at`]); stores give the two rate fields the rates in force when
    /// the tier is read.
    #[serde(default)]
    pub rate_schedule: Vec<RatePeriod>,
}

/// Billed rates of a tier in force from a time on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RatePeriod {
    /// From when (inclusive) these rates are in force.
    pub effective_from: DateTime<Utc>,
    /// Billed $ per 1M input tokens.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub input_rate_per_million: Decimal,
    /// Billed $ per 1M output tokens.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub output_rate_per_million: Decimal,
}

/// Why a rate change cannot be scheduled.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RateChangeError {
    /// The change would take effect before `now`: usage made before it already has its price.
    #[error("`{effective_from}` is before now (`{now}`): usage already made keeps its price")]
    InThePast {
        /// The requested time.
        effective_from: DateTime<Utc>,
        /// Now.
        now: DateTime<Utc>,
    },
    /// A rate is invalid.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
}

/// An organization's subscription to a tier (`org_tier_access`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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

// ---------------------------------------------------------------------------------------------
// The catalog
// ---------------------------------------------------------------------------------------------

/// Fixed id of the seed's Basic tier, the same in every backend and process.
pub const BASIC_TIER_ID: TierId = TierId::from_uuid(uuid::Uuid::from_u128(
    0x5741_0000_0000_4000_8000_0000_0000_0001,
));
/// Fixed id of the seed's Standard tier.
pub const STANDARD_TIER_ID: TierId = TierId::from_uuid(uuid::Uuid::from_u128(
    0x5741_0000_0000_4000_8000_0000_0000_0002,
));
/// Fixed id of the seed's Premium tier.
pub const PREMIUM_TIER_ID: TierId = TierId::from_uuid(uuid::Uuid::from_u128(
    0x5741_0000_0000_4000_8000_0000_0000_0003,
));

/// The seed's `MODEL_TIERS`: Basic, Standard and Premium with their exact model ids and billed
/// rates ($ per 1M tokens), base price 0, all active, in that order.
#[must_use]
pub fn default_tiers() -> Vec<ModelTier> {
    let tier = |id: TierId,
                slug: &'static str,
                name: &str,
                description: &str,
                best_use_case: &str,
                models: &[&'static str],
                input: Decimal,
                output: Decimal,
                sort_order: i32| ModelTier {
        id,
        slug: TierSlug::from_static(slug),
        name: name.to_owned(),
        description: description.to_owned(),
        best_use_case: best_use_case.to_owned(),
        models: models.iter().map(|m| ModelId::from_static(m)).collect(),
        base_price: Money::ZERO,
        input_rate_per_million: input,
        output_rate_per_million: output,
        sort_order,
        active: true,
        rate_schedule: Vec::new(),
    };
    vec![
        tier(
            BASIC_TIER_ID,
            "basic",
            "Basic",
            "High-volume, cost-effective AI for simple tasks",
            "Classification, summarization, simple Q&A, bulk processing",
            &[
                "claude-3-5-haiku-20241022",
                "gpt-4o-mini",
                "gemini-2.0-flash",
            ],
            Decimal::new(50, 2),
            Decimal::new(200, 2),
            1,
        ),
        tier(
            STANDARD_TIER_ID,
            "standard",
            "Standard",
            "Balanced performance for everyday productivity",
            "Writing, analysis, coding assistance, research",
            &[
                "claude-sonnet-4-20250514",
                "claude-3-7-sonnet-20250219",
                "gpt-4o",
                "gpt-4.5-preview",
                "gemini-2.0-pro",
            ],
            Decimal::new(400, 2),
            Decimal::new(1600, 2),
            2,
        ),
        tier(
            PREMIUM_TIER_ID,
            "premium",
            "Premium",
            "Maximum capability for complex, mission-critical work",
            "Strategic analysis, complex reasoning, code architecture",
            &["claude-opus-4-5-20251101", "gpt-5.1", "gpt-5.2", "o1", "o3"],
            Decimal::new(2000, 2),
            Decimal::new(8000, 2),
            3,
        ),
    ]
}

/// A catalog that is not consistent.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CatalogError {
    /// A model is listed by two tiers (or twice by one).
    #[error("model `{model}` is in tier `{first}` and in tier `{second}`")]
    ModelInTwoTiers {
        /// The model.
        model: ModelId,
        /// The first tier listing it.
        first: TierSlug,
        /// The second tier listing it.
        second: TierSlug,
    },
    /// Two tiers share a slug.
    #[error("two tiers have the slug `{0}`")]
    DuplicateSlug(TierSlug),
    /// Two tiers share an id.
    #[error("two tiers have the id `{0}`")]
    DuplicateId(TierId),
    /// One tier is invalid.
    #[error("tier `{tier}`: {error}")]
    InvalidTier {
        /// Its slug.
        tier: TierSlug,
        /// What is wrong.
        error: ValidationError,
    },
}

fn check_rates(input: Decimal, output: Decimal) -> Result<(), ValidationError> {
    for (field, rate) in [
        ("input_rate_per_million", input),
        ("output_rate_per_million", output),
    ] {
        if rate.is_sign_negative() && !rate.is_zero() {
            return Err(ValidationError::new(field, format!("`{rate}` is negative")));
        }
    }
    Ok(())
}

impl RatePeriod {
    /// Checks the rates (non-negative).
    pub fn validate(&self) -> Result<(), ValidationError> {
        check_rates(self.input_rate_per_million, self.output_rate_per_million)
    }
}

impl ModelTier {
    /// Checks one tier: a non-empty name, non-negative rates, a rate schedule in strictly
    /// increasing `effective_from` order.
    pub fn validate(&self) -> Result<(), ValidationError> {
        if self.name.trim().is_empty() {
            return Err(ValidationError::new("name", "must not be empty"));
        }
        check_rates(self.input_rate_per_million, self.output_rate_per_million)?;
        for (i, period) in self.rate_schedule.iter().enumerate() {
            period
                .validate()
                .map_err(|e| e.within(&format!("rate_schedule[{i}]")))?;
            if i > 0 && self.rate_schedule[i - 1].effective_from >= period.effective_from {
                return Err(ValidationError::new(
                    format!("rate_schedule[{i}].effective_from"),
                    "must be after the previous period's",
                ));
            }
        }
        Ok(())
    }

    /// The rates `(input, output)` per 1M tokens in force at `at`: the schedule's last period
    /// starting at or before `at` (its first period before it began, since the first period
    /// holds the rates the tier had before any change), or the tier's two rate fields without
    /// a schedule.
    #[must_use]
    pub fn rates_at(&self, at: DateTime<Utc>) -> (Decimal, Decimal) {
        let period = self
            .rate_schedule
            .iter()
            .rev()
            .find(|p| p.effective_from <= at)
            .or(self.rate_schedule.first());
        period.map_or(
            (self.input_rate_per_million, self.output_rate_per_million),
            |p| (p.input_rate_per_million, p.output_rate_per_million),
        )
    }

    /// The tier with the rates in force at `at` in its two rate fields (what billing at `at`
    /// reads); the schedule is kept.
    #[must_use]
    pub fn as_of(&self, at: DateTime<Utc>) -> Self {
        let (input, output) = self.rates_at(at);
        Self {
            input_rate_per_million: input,
            output_rate_per_million: output,
            ..self.clone()
        }
    }

    /// The tier with `change` scheduled: its rates apply from `change.effective_from` (not
    /// before `now`: usage already made keeps its price) until a later scheduled period, which
    /// is kept; a period at the same instant is replaced. A tier without a schedule first gets
    /// one holding its current rates since the beginning of time. The rate fields are those
    /// in force at `now`.
    pub fn with_rate_change(
        &self,
        change: RatePeriod,
        now: DateTime<Utc>,
    ) -> Result<Self, RateChangeError> {
        change.validate()?;
        if change.effective_from < now {
            return Err(RateChangeError::InThePast {
                effective_from: change.effective_from,
                now,
            });
        }
        let mut schedule = self.rate_schedule.clone();
        if schedule.is_empty() {
            schedule.push(RatePeriod {
                effective_from: DateTime::<Utc>::UNIX_EPOCH,
                input_rate_per_million: self.input_rate_per_million,
                output_rate_per_million: self.output_rate_per_million,
            });
        }
        schedule.retain(|p| p.effective_from != change.effective_from);
        schedule.push(change);
        schedule.sort_by_key(|p| p.effective_from);
        let tier = Self {
            rate_schedule: schedule,
            ..self.clone()
        };
        Ok(tier.as_of(now))
    }
}

/// A validated set of tiers: unique ids and slugs, each model in at most one tier. Kept in
/// display order (`sort_order`, then slug).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TierCatalog {
    tiers: Vec<ModelTier>,
    model_index: BTreeMap<ModelId, usize>,
}

impl TierCatalog {
    /// Validates `tiers` into a catalog.
    pub fn new(mut tiers: Vec<ModelTier>) -> Result<Self, CatalogError> {
        tiers.sort_by(|a, b| (a.sort_order, &a.slug).cmp(&(b.sort_order, &b.slug)));
        let mut model_index: BTreeMap<ModelId, usize> = BTreeMap::new();
        for (i, tier) in tiers.iter().enumerate() {
            tier.validate().map_err(|error| CatalogError::InvalidTier {
                tier: tier.slug.clone(),
                error,
            })?;
            if tiers[..i].iter().any(|t| t.slug == tier.slug) {
                return Err(CatalogError::DuplicateSlug(tier.slug.clone()));
            }
            if tiers[..i].iter().any(|t| t.id == tier.id) {
                return Err(CatalogError::DuplicateId(tier.id));
            }
            for model in &tier.models {
                if let Some(&first) = model_index.get(model) {
                    return Err(CatalogError::ModelInTwoTiers {
                        model: model.clone(),
                        first: tiers[first].slug.clone(),
                        second: tier.slug.clone(),
                    });
                }
                model_index.insert(model.clone(), i);
            }
        }
        Ok(Self { tiers, model_index })
    }

    /// The seed's catalog ([`default_tiers`]).
    #[must_use]
    pub fn seed_default() -> Self {
        let tiers = default_tiers();
        let model_index = tiers
            .iter()
            .enumerate()
            .flat_map(|(i, t)| t.models.iter().map(move |m| (m.clone(), i)))
            .collect();
        Self { tiers, model_index }
    }

    /// The catalog with `tier` added, or replacing the tier with its id; validated again.
    pub fn with_tier(&self, tier: ModelTier) -> Result<Self, CatalogError> {
        let mut tiers: Vec<ModelTier> = self
            .tiers
            .iter()
            .filter(|t| t.id != tier.id)
            .cloned()
            .collect();
        tiers.push(tier);
        Self::new(tiers)
    }

    /// Every tier, in display order.
    #[must_use]
    pub fn tiers(&self) -> &[ModelTier] {
        &self.tiers
    }

    /// The tiers, in display order.
    #[must_use]
    pub fn into_tiers(self) -> Vec<ModelTier> {
        self.tiers
    }

    /// A tier by id.
    #[must_use]
    pub fn get(&self, id: TierId) -> Option<&ModelTier> {
        self.tiers.iter().find(|t| t.id == id)
    }

    /// A tier by slug.
    #[must_use]
    pub fn by_slug(&self, slug: &TierSlug) -> Option<&ModelTier> {
        self.tiers.iter().find(|t| &t.slug == slug)
    }

    /// The tier a model belongs to.
    #[must_use]
    pub fn tier_of_model(&self, model: &ModelId) -> Option<&ModelTier> {
        self.model_index.get(model).map(|&i| &self.tiers[i])
    }
}

// ---------------------------------------------------------------------------------------------
// Resolution
// ---------------------------------------------------------------------------------------------

/// Everything tier resolution needs about one member: their organization, its subscriptions,
/// their membership and the groups they belong to (all of that organization).
#[derive(Clone, Copy, Debug)]
pub struct MemberContext<'a> {
    /// The organization.
    pub org: &'a Organization,
    /// The organization's tier subscriptions.
    pub subscriptions: &'a [TierSubscription],
    /// The member's membership.
    pub membership: &'a Membership,
    /// Every group the member belongs to.
    pub groups: &'a [Group],
}

/// Why a tier is locked. Several may hold at once; they are listed in this order (groups by
/// name, then id), so the first is the one to show.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum LockReason {
    /// The tier is switched off platform-wide.
    TierInactive,
    /// The organization is deactivated.
    OrgInactive,
    /// The organization does not subscribe to the tier (upsell: "Upgrade to ...").
    NotSubscribed,
    /// The organization's settings do not allow the tier.
    NotAllowedByOrg,
    /// A group the member is in does not allow the tier.
    RestrictedByGroup {
        /// The group's name.
        group_name: String,
        /// The group.
        group_id: GroupId,
    },
    /// The member's own tier list does not include the tier.
    RestrictedForMember,
}

impl LockReason {
    /// A sentence explaining the reason for a tier named `tier_name`.
    #[must_use]
    pub fn explain(&self, tier_name: &str) -> String {
        match self {
            LockReason::TierInactive => format!("the {tier_name} tier is not available"),
            LockReason::OrgInactive => "your organization is deactivated".to_owned(),
            LockReason::NotSubscribed => {
                format!("your organization does not subscribe to {tier_name}")
            }
            LockReason::NotAllowedByOrg => {
                format!("your organization's settings do not allow {tier_name}")
            }
            LockReason::RestrictedByGroup { group_name, .. } => {
                format!("restricted by group {group_name}")
            }
            LockReason::RestrictedForMember => {
                format!("{tier_name} is not enabled for you in this organization")
            }
        }
    }

    /// What the member can do about it.
    #[must_use]
    pub fn hint(&self, tier_name: &str) -> String {
        match self {
            LockReason::TierInactive => "choose a model from another tier".to_owned(),
            LockReason::OrgInactive => "contact StratAI support".to_owned(),
            LockReason::NotSubscribed => upgrade_hint(tier_name),
            LockReason::NotAllowedByOrg
            | LockReason::RestrictedByGroup { .. }
            | LockReason::RestrictedForMember => {
                format!("ask your organization admin for {tier_name} access")
            }
        }
    }
}

/// The upsell for a tier the organization does not subscribe to: `Upgrade to Premium`.
#[must_use]
pub fn upgrade_hint(tier_name: &str) -> String {
    format!("Upgrade to {tier_name}")
}

/// The model selector's button for a locked tier: `Unlock Premium`.
#[must_use]
pub fn unlock_label(tier_name: &str) -> String {
    format!("Unlock {tier_name}")
}

/// Whether a member may use a tier.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Availability {
    /// Usable.
    Accessible,
    /// Not usable, for these reasons (never empty, first is primary).
    Locked {
        /// The reasons, in [`LockReason`] order.
        reasons: Vec<LockReason>,
    },
}

/// One tier as a member sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TierStatus {
    /// The tier.
    pub tier_id: TierId,
    /// Its slug.
    pub slug: TierSlug,
    /// Its display name.
    pub name: String,
    /// Its models.
    pub models: Vec<ModelId>,
    /// Accessible or locked.
    pub availability: Availability,
}

impl TierStatus {
    /// Whether the tier is usable.
    #[must_use]
    pub fn is_accessible(&self) -> bool {
        self.availability == Availability::Accessible
    }

    /// The primary lock reason, if locked.
    #[must_use]
    pub fn primary_reason(&self) -> Option<&LockReason> {
        match &self.availability {
            Availability::Accessible => None,
            Availability::Locked { reasons } => reasons.first(),
        }
    }

    /// The selector's upsell button (`Unlock Premium`) when the organization could buy the tier.
    #[must_use]
    pub fn unlock_label(&self) -> Option<String> {
        match &self.availability {
            Availability::Locked { reasons } if reasons.contains(&LockReason::NotSubscribed) => {
                Some(unlock_label(&self.name))
            }
            _ => None,
        }
    }
}

/// The tiers as one member (or group, or organization) sees them, in catalog order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TierAccess {
    /// Every tier of the catalog.
    pub tiers: Vec<TierStatus>,
}

impl TierAccess {
    /// The accessible tiers.
    pub fn accessible(&self) -> impl Iterator<Item = &TierStatus> {
        self.tiers.iter().filter(|t| t.is_accessible())
    }

    /// Every model of the accessible tiers, in catalog order.
    #[must_use]
    pub fn accessible_models(&self) -> Vec<ModelId> {
        self.accessible()
            .flat_map(|t| t.models.iter().cloned())
            .collect()
    }

    /// A tier's status by slug.
    #[must_use]
    pub fn status(&self, slug: &TierSlug) -> Option<&TierStatus> {
        self.tiers.iter().find(|t| &t.slug == slug)
    }
}

/// Resolution was given data of two organizations (a caller bug; nothing is granted).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ResolutionError {
    /// The membership is of another organization.
    #[error("membership of organization `{found}` passed for organization `{expected}`")]
    MembershipOfOtherOrg {
        /// The organization resolved for.
        expected: OrgId,
        /// The membership's.
        found: OrgId,
    },
    /// A group is of another organization.
    #[error("group `{group}` of organization `{found}` passed for organization `{expected}`")]
    GroupOfOtherOrg {
        /// The organization resolved for.
        expected: OrgId,
        /// The group's organization.
        found: OrgId,
        /// The group.
        group: GroupId,
    },
}

fn resolve(
    catalog: &TierCatalog,
    org: &Organization,
    subscriptions: &[TierSubscription],
    membership: Option<&Membership>,
    groups: &[Group],
) -> Result<TierAccess, ResolutionError> {
    if let Some(m) = membership
        && m.org_id != org.id
    {
        return Err(ResolutionError::MembershipOfOtherOrg {
            expected: org.id,
            found: m.org_id,
        });
    }
    if let Some(g) = groups.iter().find(|g| g.org_id != org.id) {
        return Err(ResolutionError::GroupOfOtherOrg {
            expected: org.id,
            found: g.org_id,
            group: g.id,
        });
    }
    let tiers = catalog
        .tiers()
        .iter()
        .map(|tier| {
            let mut reasons = Vec::new();
            if !tier.active {
                reasons.push(LockReason::TierInactive);
            }
            if !org.active {
                reasons.push(LockReason::OrgInactive);
            }
            let subscribed = subscriptions
                .iter()
                .any(|s| s.org_id == org.id && s.tier_id == tier.id && s.enabled);
            if !subscribed {
                reasons.push(LockReason::NotSubscribed);
            }
            if !org.settings.allowed_tiers.contains(&tier.slug) {
                reasons.push(LockReason::NotAllowedByOrg);
            }
            let mut group_reasons: Vec<LockReason> = groups
                .iter()
                .filter(|g| {
                    g.allowed_tiers
                        .as_ref()
                        .is_some_and(|allowed| !allowed.contains(&tier.slug))
                })
                .map(|g| LockReason::RestrictedByGroup {
                    group_name: g.name.clone(),
                    group_id: g.id,
                })
                .collect();
            group_reasons.sort();
            group_reasons.dedup();
            reasons.extend(group_reasons);
            if membership.is_some_and(|m| {
                m.allowed_tiers
                    .as_ref()
                    .is_some_and(|allowed| !allowed.contains(&tier.slug))
            }) {
                reasons.push(LockReason::RestrictedForMember);
            }
            TierStatus {
                tier_id: tier.id,
                slug: tier.slug.clone(),
                name: tier.name.clone(),
                models: tier.models.clone(),
                availability: if reasons.is_empty() {
                    Availability::Accessible
                } else {
                    Availability::Locked { reasons }
                },
            }
        })
        .collect();
    Ok(TierAccess { tiers })
}

/// The tiers a member may use: active tiers ∩ the organization's enabled subscriptions ∩ the
/// organization's allowed tiers ∩ the membership's allowed tiers ∩ the allowed tiers of every
/// group the member is in (a `None` list means no restriction at that level). Every tier of the
/// catalog is in the answer, accessible or locked with all its reasons. The order of
/// `ctx.groups` does not matter.
pub fn resolve_tiers(
    catalog: &TierCatalog,
    ctx: &MemberContext<'_>,
) -> Result<TierAccess, ResolutionError> {
    resolve(
        catalog,
        ctx.org,
        ctx.subscriptions,
        Some(ctx.membership),
        ctx.groups,
    )
}

/// The tiers a group may use (the member level left out): what a LiteLLM team is given.
pub fn resolve_group_tiers(
    catalog: &TierCatalog,
    org: &Organization,
    subscriptions: &[TierSubscription],
    group: &Group,
) -> Result<TierAccess, ResolutionError> {
    resolve(
        catalog,
        org,
        subscriptions,
        None,
        std::slice::from_ref(group),
    )
}

/// The tiers an organization may use at all (no group or member restriction).
pub fn resolve_org_tiers(
    catalog: &TierCatalog,
    org: &Organization,
    subscriptions: &[TierSubscription],
) -> TierAccess {
    // No membership or groups are passed, so no tenant mismatch can arise.
    resolve(catalog, org, subscriptions, None, &[]).unwrap_or(TierAccess { tiers: Vec::new() })
}

/// A model a member may use, with its tier.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelGrant {
    /// The model.
    pub model: ModelId,
    /// Its tier.
    pub tier_id: TierId,
    /// The tier's slug.
    pub tier_slug: TierSlug,
}

/// Why a model was refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DenialReason {
    /// No tier of the catalog has the model.
    UnknownModel,
    /// The model's tier is locked for the member.
    TierLocked {
        /// The tier.
        tier_id: TierId,
        /// Its slug.
        tier_slug: TierSlug,
        /// Its display name.
        tier_name: String,
        /// Why it is locked (first is primary).
        reasons: Vec<LockReason>,
    },
    /// The context mixed organizations (a caller bug).
    InvalidContext {
        /// What was wrong.
        detail: String,
    },
}

/// A refused model, with the reason and what the member can do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{}", self.message())]
pub struct ModelDenial {
    /// The model asked for.
    pub model: ModelId,
    /// Why it was refused.
    pub reason: DenialReason,
}

impl ModelDenial {
    /// One sentence: what was refused and why, e.g. "model `claude-opus-4-5-20251101` is in the
    /// Premium tier: your organization does not subscribe to Premium".
    #[must_use]
    pub fn message(&self) -> String {
        match &self.reason {
            DenialReason::UnknownModel => {
                format!("model `{}` is not in any tier of the catalog", self.model)
            }
            DenialReason::TierLocked {
                tier_name, reasons, ..
            } => {
                let why = reasons
                    .iter()
                    .map(|r| r.explain(tier_name))
                    .collect::<Vec<_>>()
                    .join("; ");
                format!("model `{}` is in the {tier_name} tier: {why}", self.model)
            }
            DenialReason::InvalidContext { detail } => {
                format!("model `{}` refused: {detail}", self.model)
            }
        }
    }

    /// What to do about it: `Upgrade to Premium` when the organization does not subscribe to the
    /// model's tier, otherwise the primary reason's hint.
    #[must_use]
    pub fn hint(&self) -> Option<String> {
        match &self.reason {
            DenialReason::UnknownModel => Some("pick one of the models listed for you".to_owned()),
            DenialReason::TierLocked {
                tier_name, reasons, ..
            } => {
                if reasons.contains(&LockReason::NotSubscribed) {
                    Some(upgrade_hint(tier_name))
                } else {
                    reasons.first().map(|r| r.hint(tier_name))
                }
            }
            DenialReason::InvalidContext { .. } => None,
        }
    }

    /// The upsell, when buying the tier would help: `Upgrade to Premium`.
    #[must_use]
    pub fn upgrade_hint(&self) -> Option<String> {
        match &self.reason {
            DenialReason::TierLocked {
                tier_name, reasons, ..
            } if reasons.contains(&LockReason::NotSubscribed) => Some(upgrade_hint(tier_name)),
            _ => None,
        }
    }
}

/// Decides whether a member may use `model`: the model's tier if it is accessible, otherwise a
/// denial with the reason (unknown model, or the tier's lock reasons).
pub fn check_model(
    catalog: &TierCatalog,
    ctx: &MemberContext<'_>,
    model: &ModelId,
) -> Result<ModelGrant, ModelDenial> {
    let deny = |reason| ModelDenial {
        model: model.clone(),
        reason,
    };
    let tier = catalog
        .tier_of_model(model)
        .ok_or_else(|| deny(DenialReason::UnknownModel))?;
    let access = resolve_tiers(catalog, ctx).map_err(|e| {
        deny(DenialReason::InvalidContext {
            detail: e.to_string(),
        })
    })?;
    let status = access
        .tiers
        .iter()
        .find(|t| t.tier_id == tier.id)
        .ok_or_else(|| deny(DenialReason::UnknownModel))?;
    match &status.availability {
        Availability::Accessible => Ok(ModelGrant {
            model: model.clone(),
            tier_id: tier.id,
            tier_slug: tier.slug.clone(),
        }),
        Availability::Locked { reasons } => Err(deny(DenialReason::TierLocked {
            tier_id: tier.id,
            tier_slug: tier.slug.clone(),
            tier_name: tier.name.clone(),
            reasons: reasons.clone(),
        })),
    }
}

/// The subscriptions making an organization subscribe to `tiers` (enabled, no tier budget).
#[must_use]
pub fn subscriptions_for(
    org: OrgId,
    tiers: &[TierId],
    now: DateTime<Utc>,
) -> Vec<TierSubscription> {
    tiers
        .iter()
        .map(|&tier_id| TierSubscription {
            org_id: org,
            tier_id,
            enabled: true,
            monthly_budget: None,
            enabled_at: now,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::directory::{BillingPlan, OrgRole, OrgSettings, Slug};
    use crate::ids::UserId;
    use chrono::TimeZone;
    use proptest::prelude::*;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 15, 12, 0, 0).unwrap()
    }

    fn slugs(s: &[&str]) -> Vec<TierSlug> {
        s.iter().map(|s| TierSlug::new(*s).unwrap()).collect()
    }

    fn org(allowed: &[&str]) -> Organization {
        let settings =
            OrgSettings::new(slugs(allowed), TierSlug::new(allowed[0]).unwrap()).unwrap();
        Organization::new(
            "Acme",
            Slug::new("acme").unwrap(),
            settings,
            BillingPlan::Business,
            now(),
        )
        .unwrap()
    }

    fn model(m: &str) -> ModelId {
        ModelId::new(m).unwrap()
    }

    #[test]
    fn default_catalog_is_the_seeds_and_valid() {
        let tiers = default_tiers();
        let catalog = TierCatalog::new(tiers.clone()).unwrap();
        assert_eq!(catalog, TierCatalog::seed_default());
        let names: Vec<_> = catalog.tiers().iter().map(|t| t.slug.as_str()).collect();
        assert_eq!(names, ["basic", "standard", "premium"]);
        for t in &tiers {
            t.validate().unwrap();
            for m in &t.models {
                assert_eq!(&ModelId::new(m.as_str()).unwrap(), m);
            }
            TierSlug::new(t.slug.as_str()).unwrap();
        }
        let opus = catalog
            .tier_of_model(&model("claude-opus-4-5-20251101"))
            .unwrap();
        assert_eq!(opus.id, PREMIUM_TIER_ID);
        assert_eq!(opus.input_rate_per_million.to_string(), "20.00");
        assert_eq!(opus.output_rate_per_million.to_string(), "80.00");
        let basic = catalog.get(BASIC_TIER_ID).unwrap();
        assert_eq!(basic.input_rate_per_million.to_string(), "0.50");
        assert_eq!(basic.output_rate_per_million.to_string(), "2.00");
        assert_eq!(
            catalog.tier_of_model(&model("gpt-4.5-preview")).unwrap().id,
            STANDARD_TIER_ID
        );
        assert_eq!(tiers.iter().map(|t| t.models.len()).sum::<usize>(), 13);
    }

    #[test]
    fn catalog_errors_are_detected() {
        let mut tiers = default_tiers();
        tiers[2].models.push(model("gpt-4o"));
        let err = TierCatalog::new(tiers).unwrap_err();
        assert_eq!(
            err.to_string(),
            "model `gpt-4o` is in tier `standard` and in tier `premium`"
        );

        let mut tiers = default_tiers();
        tiers[1].slug = TierSlug::new("basic").unwrap();
        assert!(matches!(
            TierCatalog::new(tiers),
            Err(CatalogError::DuplicateSlug(_))
        ));

        let mut tiers = default_tiers();
        tiers[1].id = BASIC_TIER_ID;
        assert!(matches!(
            TierCatalog::new(tiers),
            Err(CatalogError::DuplicateId(_))
        ));

        let mut tiers = default_tiers();
        tiers[0].input_rate_per_million = Decimal::new(-1, 0);
        assert!(matches!(
            TierCatalog::new(tiers),
            Err(CatalogError::InvalidTier { .. })
        ));

        let mut extra = default_tiers()[0].clone();
        extra.id = TierId::new();
        extra.slug = TierSlug::new("budget").unwrap();
        assert!(
            TierCatalog::seed_default()
                .with_tier(extra.clone())
                .is_err()
        );
        extra.models = vec![model("llama-3")];
        let grown = TierCatalog::seed_default().with_tier(extra).unwrap();
        assert_eq!(grown.tiers().len(), 4);
    }

    struct Fixture {
        org: Organization,
        subs: Vec<TierSubscription>,
        member: Membership,
        groups: Vec<Group>,
    }

    impl Fixture {
        fn ctx(&self) -> MemberContext<'_> {
            MemberContext {
                org: &self.org,
                subscriptions: &self.subs,
                membership: &self.member,
                groups: &self.groups,
            }
        }
    }

    /// The seed's scenario: org subscribed to Basic+Standard, user allowed Basic+Standard.
    fn standard_only() -> Fixture {
        let org = org(&["basic", "standard"]);
        let subs = subscriptions_for(org.id, &[BASIC_TIER_ID, STANDARD_TIER_ID], now());
        let member = Membership::new(org.id, UserId::new(), OrgRole::Member, now())
            .with_allowed_tiers(slugs(&["basic", "standard"]))
            .unwrap();
        Fixture {
            org,
            subs,
            member,
            groups: vec![],
        }
    }

    #[test]
    fn seed_scenario_opus_is_denied_with_upgrade_to_premium() {
        let f = standard_only();
        let catalog = TierCatalog::seed_default();
        let denial =
            check_model(&catalog, &f.ctx(), &model("claude-opus-4-5-20251101")).unwrap_err();
        assert_eq!(denial.hint().as_deref(), Some("Upgrade to Premium"));
        assert_eq!(denial.upgrade_hint().as_deref(), Some("Upgrade to Premium"));
        assert!(
            denial.to_string().starts_with(
                "model `claude-opus-4-5-20251101` is in the Premium tier: your organization does not subscribe to Premium"
            ),
            "{denial}"
        );
        let grant = check_model(&catalog, &f.ctx(), &model("gpt-4o")).unwrap();
        assert_eq!(grant.tier_id, STANDARD_TIER_ID);

        let access = resolve_tiers(&catalog, &f.ctx()).unwrap();
        let premium = access.status(&TierSlug::new("premium").unwrap()).unwrap();
        assert_eq!(premium.unlock_label().as_deref(), Some("Unlock Premium"));
        assert_eq!(premium.primary_reason(), Some(&LockReason::NotSubscribed));
        assert_eq!(access.accessible_models().len(), 8);
    }

    #[test]
    fn unknown_model_is_its_own_reason() {
        let f = standard_only();
        let denial =
            check_model(&TierCatalog::seed_default(), &f.ctx(), &model("gpt-7")).unwrap_err();
        assert_eq!(denial.reason, DenialReason::UnknownModel);
        assert_eq!(denial.upgrade_hint(), None);
        assert_eq!(
            denial.to_string(),
            "model `gpt-7` is not in any tier of the catalog"
        );
    }

    #[test]
    fn each_level_locks_with_its_own_reason() {
        let catalog = TierCatalog::seed_default();
        let premium = TierSlug::new("premium").unwrap();
        let base = || {
            let org = org(&["basic", "standard", "premium"]);
            let subs = subscriptions_for(
                org.id,
                &[BASIC_TIER_ID, STANDARD_TIER_ID, PREMIUM_TIER_ID],
                now(),
            );
            let member = Membership::new(org.id, UserId::new(), OrgRole::Member, now());
            Fixture {
                org,
                subs,
                member,
                groups: vec![],
            }
        };
        let reason_of = |f: &Fixture| {
            resolve_tiers(&catalog, &f.ctx())
                .unwrap()
                .status(&premium)
                .unwrap()
                .availability
                .clone()
        };
        assert_eq!(reason_of(&base()), Availability::Accessible);

        let mut f = base();
        f.subs[2].enabled = false;
        assert_eq!(
            reason_of(&f),
            Availability::Locked {
                reasons: vec![LockReason::NotSubscribed]
            }
        );

        let mut f = base();
        f.org.settings.allowed_tiers.pop();
        assert_eq!(
            reason_of(&f),
            Availability::Locked {
                reasons: vec![LockReason::NotAllowedByOrg]
            }
        );

        let mut f = base();
        f.member.allowed_tiers = Some(slugs(&["basic"]));
        assert_eq!(
            reason_of(&f),
            Availability::Locked {
                reasons: vec![LockReason::RestrictedForMember]
            }
        );

        let mut f = base();
        let g = Group::new(f.org.id, "Marketing", now())
            .unwrap()
            .with_allowed_tiers(slugs(&["basic", "standard"]))
            .unwrap();
        let open = Group::new(f.org.id, "Engineering", now()).unwrap();
        let gid = g.id;
        f.groups = vec![open, g];
        let locked = reason_of(&f);
        assert_eq!(
            locked,
            Availability::Locked {
                reasons: vec![LockReason::RestrictedByGroup {
                    group_name: "Marketing".into(),
                    group_id: gid
                }]
            }
        );
        let denial = check_model(&catalog, &f.ctx(), &model("o1")).unwrap_err();
        assert_eq!(denial.upgrade_hint(), None);
        assert_eq!(
            denial.hint().as_deref(),
            Some("ask your organization admin for Premium access")
        );
        assert!(
            denial.to_string().contains("restricted by group Marketing"),
            "{denial}"
        );

        let mut f = base();
        f.org.active = false;
        assert_eq!(
            reason_of(&f),
            Availability::Locked {
                reasons: vec![LockReason::OrgInactive]
            }
        );

        let mut tiers = default_tiers();
        tiers[2].active = false;
        let inactive = TierCatalog::new(tiers).unwrap();
        let f = base();
        let st = resolve_tiers(&inactive, &f.ctx()).unwrap();
        assert_eq!(
            st.status(&premium).unwrap().primary_reason(),
            Some(&LockReason::TierInactive)
        );
        assert_eq!(st.status(&premium).unwrap().unlock_label(), None);
    }

    #[test]
    fn mixed_tenants_are_refused() {
        let mut f = standard_only();
        f.groups
            .push(Group::new(OrgId::new(), "Other", now()).unwrap());
        let catalog = TierCatalog::seed_default();
        assert!(matches!(
            resolve_tiers(&catalog, &f.ctx()),
            Err(ResolutionError::GroupOfOtherOrg { .. })
        ));
        assert!(matches!(
            check_model(&catalog, &f.ctx(), &model("gpt-4o"))
                .unwrap_err()
                .reason,
            DenialReason::InvalidContext { .. }
        ));
        let mut f = standard_only();
        f.member.org_id = OrgId::new();
        assert!(matches!(
            resolve_tiers(&catalog, &f.ctx()),
            Err(ResolutionError::MembershipOfOtherOrg { .. })
        ));
        // Subscriptions of another organization grant nothing.
        let mut f = standard_only();
        for s in &mut f.subs {
            s.org_id = OrgId::new();
        }
        assert!(
            resolve_tiers(&catalog, &f.ctx())
                .unwrap()
                .accessible_models()
                .is_empty()
        );
    }

    #[test]
    fn group_and_org_resolution() {
        let catalog = TierCatalog::seed_default();
        let f = standard_only();
        let org_access = resolve_org_tiers(&catalog, &f.org, &f.subs);
        assert_eq!(org_access.accessible().count(), 2);
        let g = Group::new(f.org.id, "Ops", now())
            .unwrap()
            .with_allowed_tiers(slugs(&["basic"]))
            .unwrap();
        let ga = resolve_group_tiers(&catalog, &f.org, &f.subs, &g).unwrap();
        assert_eq!(
            ga.accessible_models(),
            vec![
                model("claude-3-5-haiku-20241022"),
                model("gpt-4o-mini"),
                model("gemini-2.0-flash")
            ]
        );
    }

    // ---- laws ----

    const ALL: [&str; 3] = ["basic", "standard", "premium"];

    fn subset() -> impl Strategy<Value = Vec<TierSlug>> {
        prop::sample::subsequence(ALL.to_vec(), 0..=3).prop_map(|v| slugs(&v))
    }

    #[derive(Clone, Debug)]
    struct Input {
        active: [bool; 3],
        subscribed: [Option<bool>; 3],
        org_allowed: Vec<TierSlug>,
        member_allowed: Option<Vec<TierSlug>>,
        groups: Vec<Option<Vec<TierSlug>>>,
        org_active: bool,
    }

    fn arb_input() -> impl Strategy<Value = Input> {
        (
            any::<[bool; 3]>(),
            any::<[Option<bool>; 3]>(),
            subset(),
            prop::option::of(subset()),
            prop::collection::vec(prop::option::of(subset()), 0..4),
            any::<bool>(),
        )
            .prop_map(
                |(active, subscribed, org_allowed, member_allowed, groups, org_active)| Input {
                    active,
                    subscribed,
                    org_allowed,
                    member_allowed,
                    groups,
                    org_active,
                },
            )
    }

    /// One more restriction, anywhere.
    #[derive(Clone, Debug)]
    enum Restriction {
        Deactivate(usize),
        Unsubscribe(usize),
        DisableSubscription(usize),
        OrgDisallow(usize),
        MemberDisallow(usize),
        GroupDisallow(usize, usize),
        AddGroup(Vec<TierSlug>),
        DeactivateOrg,
    }

    fn arb_restriction() -> impl Strategy<Value = Restriction> {
        prop_oneof![
            (0..3usize).prop_map(Restriction::Deactivate),
            (0..3usize).prop_map(Restriction::Unsubscribe),
            (0..3usize).prop_map(Restriction::DisableSubscription),
            (0..3usize).prop_map(Restriction::OrgDisallow),
            (0..3usize).prop_map(Restriction::MemberDisallow),
            (0..4usize, 0..3usize).prop_map(|(g, t)| Restriction::GroupDisallow(g, t)),
            subset().prop_map(Restriction::AddGroup),
            Just(Restriction::DeactivateOrg),
        ]
    }

    fn remove(list: &mut Vec<TierSlug>, t: usize) {
        list.retain(|s| s.as_str() != ALL[t]);
    }

    fn restrict(mut input: Input, r: &Restriction) -> Input {
        match r {
            Restriction::Deactivate(t) => input.active[*t] = false,
            Restriction::Unsubscribe(t) => input.subscribed[*t] = None,
            Restriction::DisableSubscription(t) => {
                if input.subscribed[*t].is_some() {
                    input.subscribed[*t] = Some(false);
                }
            }
            Restriction::OrgDisallow(t) => remove(&mut input.org_allowed, *t),
            Restriction::MemberDisallow(t) => {
                let mut list = input.member_allowed.take().unwrap_or_else(|| slugs(&ALL));
                remove(&mut list, *t);
                input.member_allowed = Some(list);
            }
            Restriction::GroupDisallow(g, t) => {
                if let Some(group) = input.groups.get_mut(*g) {
                    let mut list = group.take().unwrap_or_else(|| slugs(&ALL));
                    remove(&mut list, *t);
                    *group = Some(list);
                }
            }
            Restriction::AddGroup(list) => input.groups.push(Some(list.clone())),
            Restriction::DeactivateOrg => input.org_active = false,
        }
        input
    }

    /// Builds the world with fixed ids so two inputs differ only where they differ.
    fn build(
        input: &Input,
    ) -> (
        TierCatalog,
        Organization,
        Vec<TierSubscription>,
        Membership,
        Vec<Group>,
    ) {
        let mut tiers = default_tiers();
        for (t, active) in tiers.iter_mut().zip(input.active) {
            t.active = active;
        }
        let catalog = TierCatalog::new(tiers).unwrap();
        let mut o = org(&["basic"]);
        o.id = OrgId::from_uuid(uuid::Uuid::from_u128(1));
        o.settings.allowed_tiers = input.org_allowed.clone();
        o.active = input.org_active;
        let ids = [BASIC_TIER_ID, STANDARD_TIER_ID, PREMIUM_TIER_ID];
        let subs = ids
            .iter()
            .zip(input.subscribed)
            .filter_map(|(id, s)| {
                s.map(|enabled| TierSubscription {
                    org_id: o.id,
                    tier_id: *id,
                    enabled,
                    monthly_budget: None,
                    enabled_at: now(),
                })
            })
            .collect();
        let mut m = Membership::new(
            o.id,
            UserId::from_uuid(uuid::Uuid::from_u128(2)),
            OrgRole::Member,
            now(),
        );
        m.allowed_tiers = input.member_allowed.clone();
        let groups = input
            .groups
            .iter()
            .enumerate()
            .map(|(i, allowed)| {
                let mut g = Group::new(o.id, &format!("g{i}"), now()).unwrap();
                g.id = GroupId::from_uuid(uuid::Uuid::from_u128(100 + i as u128));
                g.allowed_tiers = allowed.clone();
                g
            })
            .collect();
        (catalog, o, subs, m, groups)
    }

    fn accessible(input: &Input) -> Vec<ModelId> {
        let (catalog, o, subs, m, groups) = build(input);
        let ctx = MemberContext {
            org: &o,
            subscriptions: &subs,
            membership: &m,
            groups: &groups,
        };
        resolve_tiers(&catalog, &ctx).unwrap().accessible_models()
    }

    proptest! {
        #[test]
        fn adding_a_restriction_never_grants_a_model(input in arb_input(), rs in prop::collection::vec(arb_restriction(), 1..4)) {
            let before = accessible(&input);
            let mut restricted = input;
            for r in &rs { restricted = restrict(restricted, r); }
            let after = accessible(&restricted);
            for m in &after {
                prop_assert!(before.contains(m), "{m} granted after {rs:?}");
            }
        }

        #[test]
        fn resolution_is_independent_of_group_order(input in arb_input(), seed in any::<u64>()) {
            let (catalog, o, subs, m, groups) = build(&input);
            let mut shuffled = groups.clone();
            // A deterministic permutation from the seed.
            let n = shuffled.len();
            if n > 1 { for i in 0..n { shuffled.swap(i, (seed as usize).wrapping_add(i * 7) % n); } }
            let a = resolve_tiers(&catalog, &MemberContext { org: &o, subscriptions: &subs, membership: &m, groups: &groups }).unwrap();
            let b = resolve_tiers(&catalog, &MemberContext { org: &o, subscriptions: &subs, membership: &m, groups: &shuffled }).unwrap();
            prop_assert_eq!(a, b);
        }

        #[test]
        fn accessible_means_every_level_allows(input in arb_input()) {
            let got = accessible(&input);
            for (t, tier) in default_tiers().iter().enumerate() {
                let slug = &tier.slug;
                let expected = input.active[t]
                    && input.org_active
                    && input.subscribed[t] == Some(true)
                    && input.org_allowed.contains(slug)
                    && input.member_allowed.as_ref().is_none_or(|l| l.contains(slug))
                    && input.groups.iter().all(|g| g.as_ref().is_none_or(|l| l.contains(slug)));
                prop_assert_eq!(got.contains(&tier.models[0]), expected);
            }
        }
    }

    fn period(at: DateTime<Utc>, input: i64, output: i64) -> RatePeriod {
        RatePeriod {
            effective_from: at,
            input_rate_per_million: Decimal::new(input, 2),
            output_rate_per_million: Decimal::new(output, 2),
        }
    }

    #[test]
    fn a_rate_change_applies_from_its_time_and_earlier_usage_keeps_its_price() {
        let basic = default_tiers().remove(0);
        assert_eq!(
            basic.rates_at(now()),
            (Decimal::new(50, 2), Decimal::new(200, 2))
        );
        let from = now() + chrono::Duration::hours(1);
        let changed = basic
            .with_rate_change(period(from, 100, 400), now())
            .unwrap();
        // The old rates are kept as the first period, from the beginning of time.
        assert_eq!(changed.rate_schedule.len(), 2);
        assert_eq!(
            changed.rate_schedule[0].effective_from,
            DateTime::<Utc>::UNIX_EPOCH
        );
        assert_eq!(
            changed.input_rate_per_million,
            Decimal::new(50, 2),
            "fields: in force now"
        );
        let before = from - chrono::Duration::microseconds(1);
        assert_eq!(
            changed.rates_at(before),
            (Decimal::new(50, 2), Decimal::new(200, 2))
        );
        assert_eq!(
            changed.rates_at(from),
            (Decimal::new(100, 2), Decimal::new(400, 2))
        );
        assert_eq!(
            changed.as_of(from).output_rate_per_million,
            Decimal::new(400, 2)
        );
        // An earlier change does not cancel a later scheduled one; one at the same time
        // replaces it.
        let sooner = changed
            .with_rate_change(period(now(), 70, 300), now())
            .unwrap()
            .with_rate_change(period(from, 90, 350), now())
            .unwrap();
        assert_eq!(sooner.rate_schedule.len(), 3);
        assert_eq!(
            sooner.rates_at(now()),
            (Decimal::new(70, 2), Decimal::new(300, 2))
        );
        assert_eq!(
            sooner.rates_at(from),
            (Decimal::new(90, 2), Decimal::new(350, 2))
        );
        assert!(TierCatalog::new(vec![sooner]).is_ok());
    }

    #[test]
    fn a_rate_change_in_the_past_or_negative_is_refused() {
        let basic = default_tiers().remove(0);
        let past = now() - chrono::Duration::seconds(1);
        assert!(matches!(
            basic.with_rate_change(period(past, 100, 400), now()),
            Err(RateChangeError::InThePast { .. })
        ));
        let err = basic
            .with_rate_change(period(now(), 100, -1), now())
            .unwrap_err();
        assert!(err.to_string().contains("output_rate_per_million"), "{err}");
        let mut bad = basic.clone();
        bad.rate_schedule = vec![period(now(), 1, 1), period(now(), 2, 2)];
        let err = bad.validate().unwrap_err();
        assert_eq!(err.field, "rate_schedule[1].effective_from");
    }
}
