//! Tiers: the catalog, what a member may use (accessible or locked, with the reason and the
//! upgrade hint), an organization's subscriptions, and the price list operators edit (a
//! tier's models and active flag, its rates from a stated time on).

use axum::extract::State;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use stratai_core::access::{Action, Resource};
use stratai_core::money::Money;
pub use stratai_core::tiers::admin::{
    AccessibleTier, AccessibleTiers, ChangeRates, LockedTier, RatesChanged, UpdateTier,
};
use stratai_core::tiers::{
    MemberContext, ModelTier, TierAccess, TierSubscription, resolve_org_tiers, resolve_tiers,
};
use stratai_core::{OrgId, TierId, TierSlug, UserId};
use stratai_store::admin::tiers as admin;

use super::{ApiPath, Caller, allow};
use crate::app::AppState;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery};

/// Refuses tier slugs not in the catalog, naming `field[i]`.
pub async fn check_known(
    state: &AppState,
    slugs: &[TierSlug],
    field: &str,
) -> Result<(), ApiError> {
    Ok(admin::check_known(state.stores.tiers.as_ref(), slugs, field).await?)
}

/// Refuses tiers the organization cannot use at all, naming `field[i]` and why
/// ([`admin::check_within_subscription`]).
pub async fn check_within_subscription(
    state: &AppState,
    org_id: OrgId,
    slugs: &[TierSlug],
    field: &str,
) -> Result<(), ApiError> {
    let stores = &state.stores;
    Ok(admin::check_within_subscription(
        stores.directory.as_ref(),
        stores.tiers.as_ref(),
        org_id,
        slugs,
        field,
    )
    .await?)
}

/// The tier catalog (any signed-in user).
pub async fn list(
    State(state): State<AppState>,
    _caller: Caller,
) -> Result<ApiJson<Vec<ModelTier>>, ApiError> {
    Ok(ApiJson(state.stores.tiers.list_tiers().await?))
}

/// Query of `GET /api/tiers/accessible`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AccessibleQuery {
    /// Organization (default: the caller's only one).
    #[serde(default)]
    pub org_id: Option<OrgId>,
    /// Member to look at (default: the caller; others need admin rights).
    #[serde(default)]
    pub user_id: Option<UserId>,
}

/// The caller's (or, for admins, a member's) tiers: accessible or locked with reasons.
pub async fn accessible(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<AccessibleQuery>,
) -> Result<ApiJson<AccessibleTiers>, ApiError> {
    let org_id = caller.org_or_only(q.org_id)?;
    let user_id = q.user_id.unwrap_or(caller.id());
    allow(
        &caller,
        Action::ViewAccessibleModels,
        Resource::Member { org_id, user_id },
    )?;
    let dir = &state.stores.directory;
    let org = dir.get_org(org_id).await?;
    let membership = dir.get_member(org_id, user_id).await?;
    let groups: Vec<_> = dir
        .groups_of_member(org_id, user_id)
        .await?
        .into_iter()
        .map(|(g, _)| g)
        .collect();
    let subscriptions = state.stores.tiers.list_subscriptions(org_id).await?;
    let catalog = admin::catalog(state.stores.tiers.as_ref()).await?;
    let access = resolve_tiers(
        &catalog,
        &MemberContext {
            org: &org,
            subscriptions: &subscriptions,
            membership: &membership,
            groups: &groups,
        },
    )
    .map_err(ApiError::internal)?;
    Ok(ApiJson(AccessibleTiers::split(access, org_id, user_id)))
}

/// Answer of `GET /api/organizations/{id}/tiers`.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OrgTiers {
    /// The subscriptions.
    pub subscriptions: Vec<TierSubscription>,
    /// What the organization may use at all.
    pub access: TierAccess,
}

/// An organization's subscriptions and resulting tiers (members may look).
pub async fn org_tiers(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(org_id): ApiPath<OrgId>,
) -> Result<ApiJson<OrgTiers>, ApiError> {
    allow(&caller, Action::ViewOrg, Resource::Org(org_id))?;
    let org = state.stores.directory.get_org(org_id).await?;
    let subscriptions = state.stores.tiers.list_subscriptions(org_id).await?;
    let access = resolve_org_tiers(
        &admin::catalog(state.stores.tiers.as_ref()).await?,
        &org,
        &subscriptions,
    );
    Ok(ApiJson(OrgTiers {
        subscriptions,
        access,
    }))
}

/// Body of `PUT /api/organizations/{id}/tiers/{tier}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutSubscription {
    /// Whether the subscription grants the tier.
    pub enabled: bool,
    /// Optional monthly budget of the tier in the organization.
    #[serde(default)]
    pub monthly_budget: Option<Money>,
}

/// Subscribes an organization to a tier or changes the subscription (platform).
pub async fn put_subscription(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((org_id, tier_id)): ApiPath<(OrgId, TierId)>,
    ApiJson(req): ApiJson<PutSubscription>,
) -> Result<ApiJson<TierSubscription>, ApiError> {
    allow(&caller, Action::ViewOrg, Resource::Org(org_id))?;
    allow(&caller, Action::ManageTiers, Resource::Org(org_id))?;
    state.stores.tiers.get_tier(tier_id).await?;
    let sub = TierSubscription {
        org_id,
        tier_id,
        enabled: req.enabled,
        monthly_budget: req.monthly_budget,
        enabled_at: Utc::now(),
    };
    state.stores.tiers.put_subscription(org_id, &sub).await?;
    Ok(ApiJson(sub))
}

fn platform_tiers(caller: &Caller) -> Result<(), ApiError> {
    allow(caller, Action::ManageTiers, Resource::Platform)
}

/// Changes a tier's name, description, models or active flag (platform operators). Gateways
/// see the change within their view cache age (`STRATAI_GATEWAY_CACHE_MS`).
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(tier_id): ApiPath<TierId>,
    ApiJson(req): ApiJson<UpdateTier>,
) -> Result<ApiJson<ModelTier>, ApiError> {
    platform_tiers(&caller)?;
    Ok(ApiJson(
        admin::update_tier(state.stores.tiers.as_ref(), tier_id, req).await?,
    ))
}

/// Schedules a tier's new rates from a stated time (platform operators). Requests are billed at
/// the rates in force when they are made; usage already recorded keeps its billed amount, so an
/// invoice of a month spanning the change bills each request at its own rate.
pub async fn change_rates(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(tier_id): ApiPath<TierId>,
    ApiJson(req): ApiJson<ChangeRates>,
) -> Result<ApiJson<RatesChanged>, ApiError> {
    platform_tiers(&caller)?;
    // Every gateway's cached view was loaded at most its cache age ago; from then on, each
    // holds a catalog with the change, which it applies from its time on.
    let lead = state
        .gateway
        .as_ref()
        .map(|g| g.pipeline.deps().view_ttl)
        .unwrap_or_default();
    let lead = chrono::TimeDelta::from_std(lead).map_err(ApiError::internal)?;
    Ok(ApiJson(
        admin::change_rates(state.stores.tiers.as_ref(), tier_id, &req, Utc::now(), lead).await?,
    ))
}
