//! Tier administration over the stores: tiers asked for a member or group checked against the
//! catalog and the organization's subscription, and the operators' edits of a tier (its fields,
//! its rates from a stated time on). The decisions are pure, in
//! [`stratai_core::tiers::admin`].

use chrono::{DateTime, TimeDelta, Utc};
use stratai_core::ports::{DirectoryStore, TierStore};
use stratai_core::tiers::admin::{
    ChangeRates, RatesChanged, UpdateTier, catalog_refusal, outside_subscription, unknown_tiers,
};
use stratai_core::tiers::{ModelTier, TierCatalog, resolve_org_tiers};
use stratai_core::{OpError, OrgId, StoreError, TierId, TierSlug};

/// Tier edits of this process one at a time (a read, a change, a write of the whole tier).
static TIER_EDITS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The catalog as stored; an inconsistent one is a backend failure.
pub async fn catalog(tiers: &dyn TierStore) -> Result<TierCatalog, StoreError> {
    TierCatalog::new(tiers.list_tiers().await?).map_err(|e| StoreError::Backend(e.to_string()))
}

/// Refuses tier slugs not in the catalog, naming `field[i]`.
pub async fn check_known(
    tiers: &dyn TierStore,
    slugs: &[TierSlug],
    field: &str,
) -> Result<(), OpError> {
    let errors = unknown_tiers(&tiers.list_tiers().await?, slugs, field);
    if errors.is_empty() {
        Ok(())
    } else {
        Err(OpError::Invalid(errors))
    }
}

/// Refuses tiers the organization cannot use at all (not subscribed, subscription disabled,
/// tier inactive or outside the organization's `allowed_tiers`), naming `field[i]` and why:
/// admins enable and disable tiers for groups and members within their subscription. Checks
/// [`check_known`] first.
pub async fn check_within_subscription(
    directory: &dyn DirectoryStore,
    tiers: &dyn TierStore,
    org_id: OrgId,
    slugs: &[TierSlug],
    field: &str,
) -> Result<(), OpError> {
    check_known(tiers, slugs, field).await?;
    let org = directory.get_org(org_id).await?;
    let subscriptions = tiers.list_subscriptions(org_id).await?;
    let access = resolve_org_tiers(&catalog(tiers).await?, &org, &subscriptions);
    let errors = outside_subscription(&access, slugs, field);
    if errors.is_empty() {
        Ok(())
    } else {
        Err(OpError::Invalid(errors))
    }
}

/// Changes a tier's name, description, models or active flag; the catalog must stay
/// consistent (no model in two tiers). Returns the tier as stored.
pub async fn update_tier(
    tiers: &dyn TierStore,
    tier_id: TierId,
    edit: UpdateTier,
) -> Result<ModelTier, OpError> {
    let _one_at_a_time = TIER_EDITS.lock().await;
    let mut tier = tiers.get_tier(tier_id).await?;
    edit.apply(&mut tier)?;
    catalog(tiers)
        .await?
        .with_tier(tier.clone())
        .map_err(|e| catalog_refusal(&e, &tier))?;
    tiers.upsert_tier(&tier).await?;
    Ok(tiers.get_tier(tier_id).await?)
}

/// Schedules a tier's new rates at `now`, when every gateway's cached catalog is at most
/// `lead` old (see [`ChangeRates::period`]). Usage already recorded keeps its billed amount.
pub async fn change_rates(
    tiers: &dyn TierStore,
    tier_id: TierId,
    change: &ChangeRates,
    now: DateTime<Utc>,
    lead: TimeDelta,
) -> Result<RatesChanged, OpError> {
    let period = change.period(now, lead)?;
    let effective_from = period.effective_from;
    let _one_at_a_time = TIER_EDITS.lock().await;
    let tier = tiers.get_tier(tier_id).await?;
    let changed = tier.with_rate_change(period, now)?;
    tiers.upsert_tier(&changed).await?;
    Ok(RatesChanged {
        effective_from,
        tier: tiers.get_tier(tier_id).await?,
    })
}
