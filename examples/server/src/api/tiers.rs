//! Tiers: the catalog, what a member may use (accessible or locked, with the reason and the
//! upgrade hint), an organization's subscriptions.

use axum::extract::State;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use stratai_core::access::{Action, Resource};
use stratai_core::money::Money;
use stratai_core::tiers::{
    LockReason, MemberContext, ModelTier, TierAccess, TierCatalog, TierStatus, TierSubscription,
    resolve_org_tiers, resolve_tiers,
};
use stratai_core::{ModelId, OrgId, TierId, TierSlug, UserId};

use super::{ApiPath, Caller, allow};
use crate::app::AppState;
use crate::error::{ApiError, FieldError};
use crate::extract::{ApiJson, ApiQuery};

/// Refuses tier slugs not in the catalog, naming `field[i]`.
pub async fn check_known(
    state: &AppState,
    slugs: &[TierSlug],
    field: &str,
) -> Result<(), ApiError> {
    let catalog = state.stores.tiers.list_tiers().await?;
    let errors: Vec<FieldError> = slugs
        .iter()
        .enumerate()
        .filter(|(_, s)| !catalog.iter().any(|t| &t.slug == *s))
        .map(|(i, s)| FieldError::new(format!("{field}[{i}]"), format!("unknown tier `{s}`")))
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::Validation(errors))
    }
}

/// Refuses tiers the organization cannot use at all (not subscribed, subscription disabled,
/// tier inactive or outside the organization's `allowed_tiers`), naming `field[i]` and why:
/// admins enable and disable tiers for groups and members within their subscription. Checks
/// [`check_known`] first.
pub async fn check_within_subscription(
    state: &AppState,
    org_id: OrgId,
    slugs: &[TierSlug],
    field: &str,
) -> Result<(), ApiError> {
    check_known(state, slugs, field).await?;
    let org = state.stores.directory.get_org(org_id).await?;
    let subscriptions = state.stores.tiers.list_subscriptions(org_id).await?;
    let access = resolve_org_tiers(&catalog(state).await?, &org, &subscriptions);
    let usable: Vec<&str> = access.accessible().map(|t| t.slug.as_str()).collect();
    let errors: Vec<FieldError> = slugs
        .iter()
        .enumerate()
        .filter_map(|(i, slug)| {
            let status = access.status(slug)?;
            let primary = status.primary_reason()?;
            Some(FieldError::new(
                format!("{field}[{i}]"),
                format!(
                    "tier `{slug}` is not within the organization's subscription ({}); its tiers: {}",
                    primary.explain(&status.name),
                    if usable.is_empty() {
                        "none".to_owned()
                    } else {
                        usable.join(", ")
                    }
                ),
            ))
        })
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::Validation(errors))
    }
}

async fn catalog(state: &AppState) -> Result<TierCatalog, ApiError> {
    TierCatalog::new(state.stores.tiers.list_tiers().await?).map_err(ApiError::internal)
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

/// An accessible tier.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AccessibleTier {
    /// Tier id.
    pub tier_id: TierId,
    /// Slug.
    pub slug: TierSlug,
    /// Name.
    pub name: String,
    /// Models.
    pub models: Vec<ModelId>,
}

/// A locked tier with why and what to do.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LockedTier {
    /// Tier id.
    pub tier_id: TierId,
    /// Slug.
    pub slug: TierSlug,
    /// Name.
    pub name: String,
    /// Models.
    pub models: Vec<ModelId>,
    /// Every reason, primary first.
    pub reasons: Vec<LockReason>,
    /// The primary reason as a sentence.
    pub message: String,
    /// What to do about it (`Upgrade to Premium`, `ask your organization admin ...`).
    pub hint: String,
    /// The selector's upsell button, when the organization could subscribe.
    pub unlock_label: Option<String>,
}

/// Answer of `GET /api/tiers/accessible`.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AccessibleTiers {
    /// Organization.
    pub org_id: OrgId,
    /// Member.
    pub user_id: UserId,
    /// Usable tiers, catalog order.
    pub accessible: Vec<AccessibleTier>,
    /// Locked tiers, catalog order.
    pub locked: Vec<LockedTier>,
}

fn split(access: TierAccess, org_id: OrgId, user_id: UserId) -> AccessibleTiers {
    let mut accessible = Vec::new();
    let mut locked = Vec::new();
    for t in access.tiers {
        let unlock_label = t.unlock_label();
        let primary = t.primary_reason().cloned();
        let TierStatus {
            tier_id,
            slug,
            name,
            models,
            availability,
        } = t;
        match (availability, primary) {
            (stratai_core::tiers::Availability::Locked { reasons }, Some(p)) => {
                locked.push(LockedTier {
                    message: p.explain(&name),
                    hint: p.hint(&name),
                    tier_id,
                    slug,
                    models,
                    reasons,
                    unlock_label,
                    name,
                })
            }
            _ => accessible.push(AccessibleTier {
                tier_id,
                slug,
                name,
                models,
            }),
        }
    }
    AccessibleTiers {
        org_id,
        user_id,
        accessible,
        locked,
    }
}

/// The caller's (or, for admins, a member's) tiers: accessible or locked with reasons.
pub async fn accessible(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<AccessibleQuery>,
) -> Result<ApiJson<AccessibleTiers>, ApiError> {
    let org_id = match q.org_id {
        Some(o) => o,
        None => match caller.actor.orgs.as_slice() {
            [only] => only.org_id,
            [] => return Err(ApiError::NotFound("organization".to_owned())),
            _ => {
                return Err(ApiError::invalid(
                    "org_id",
                    "you belong to several organizations; name one",
                ));
            }
        },
    };
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
    let catalog = catalog(&state).await?;
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
    Ok(ApiJson(split(access, org_id, user_id)))
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
    let access = resolve_org_tiers(&catalog(&state).await?, &org, &subscriptions);
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
