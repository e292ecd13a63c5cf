//! Tiers: the catalog, what a member may use (accessible or locked, with the reason and the
//! upgrade hint), an organization's subscriptions, and the price list operators edit (a
//! tier's models and active flag, its rates from a stated time on).

use axum::extract::State;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use stratai_core::access::{Action, Resource};
use stratai_core::money::Money;
use stratai_core::tiers::{
    CatalogError, LockReason, MemberContext, ModelTier, RateChangeError, RatePeriod, TierAccess,
    TierCatalog, TierStatus, TierSubscription, resolve_org_tiers, resolve_tiers,
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

/// Tier edits of this process one at a time (a read, a change, a write of the whole tier).
static TIER_EDITS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How far in the past a stated `effective_from` may be and still be taken as now (clocks of
/// the operator's machine and the server differ a little).
pub const EFFECTIVE_FROM_TOLERANCE: chrono::TimeDelta = chrono::TimeDelta::seconds(60);

fn platform_tiers(caller: &Caller) -> Result<(), ApiError> {
    allow(caller, Action::ManageTiers, Resource::Platform)
}

/// Body of `PATCH /api/tiers/{tier_id}`: the fields to change (rates: `POST .../rates`).
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateTier {
    /// Display name (not empty).
    #[serde(default)]
    pub name: Option<String>,
    /// Description.
    #[serde(default)]
    pub description: Option<String>,
    /// What the tier is best used for.
    #[serde(default)]
    pub best_use_case: Option<String>,
    /// The tier's models, replacing its list: at least one, none in another tier, none twice.
    #[serde(default)]
    pub models: Option<Vec<String>>,
    /// Inactive tiers grant nothing.
    #[serde(default)]
    pub active: Option<bool>,
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
    let _one_at_a_time = TIER_EDITS.lock().await;
    let mut tier = state.stores.tiers.get_tier(tier_id).await?;
    let mut errors = Vec::new();
    if let Some(name) = req.name {
        if name.trim().is_empty() {
            errors.push(FieldError::new("name", "must not be empty"));
        }
        tier.name = name;
    }
    if let Some(d) = req.description {
        tier.description = d;
    }
    if let Some(b) = req.best_use_case {
        tier.best_use_case = b;
    }
    if let Some(active) = req.active {
        tier.active = active;
    }
    if let Some(models) = &req.models {
        if models.is_empty() {
            errors.push(FieldError::new(
                "models",
                "must list at least one model; deactivate the tier instead (`active: false`)",
            ));
        }
        let mut parsed = Vec::with_capacity(models.len());
        for (i, m) in models.iter().enumerate() {
            match ModelId::new(m.clone()) {
                Ok(id) if parsed.contains(&id) => {
                    errors.push(FieldError::new(
                        format!("models[{i}]"),
                        format!("`{m}` is listed twice"),
                    ));
                }
                Ok(id) => parsed.push(id),
                Err(e) => errors.push(FieldError::new(format!("models[{i}]"), e.to_string())),
            }
        }
        tier.models = parsed;
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    catalog(&state)
        .await?
        .with_tier(tier.clone())
        .map_err(|e| catalog_error(&e, &tier))?;
    state.stores.tiers.upsert_tier(&tier).await?;
    Ok(ApiJson(state.stores.tiers.get_tier(tier_id).await?))
}

fn catalog_error(error: &CatalogError, tier: &ModelTier) -> ApiError {
    match error {
        CatalogError::ModelInTwoTiers { model, .. } => {
            let i = tier.models.iter().position(|m| m == model).unwrap_or(0);
            ApiError::invalid(format!("models[{i}]"), error.to_string())
        }
        CatalogError::InvalidTier { error, .. } => {
            ApiError::invalid(error.field.clone(), error.reason.clone())
        }
        other => ApiError::Conflict(other.to_string()),
    }
}

/// Body of `POST /api/tiers/{tier_id}/rates`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangeRates {
    /// Billed $ per 1M input tokens from `effective_from` on (not negative).
    #[schema(value_type = String, example = "0.80")]
    pub input_rate_per_million: Decimal,
    /// Billed $ per 1M output tokens from `effective_from` on (not negative).
    #[schema(value_type = String, example = "4.00")]
    pub output_rate_per_million: Decimal,
    /// From when the rates apply (RFC 3339; default now). Not in the past (usage already made
    /// keeps its price; up to a minute back is taken as now), and at the earliest once every
    /// gateway's cached catalog has been reloaded (now plus `STRATAI_GATEWAY_CACHE_MS`), so
    /// every instance switches at the same instant; the answer states the time applied.
    #[serde(default)]
    pub effective_from: Option<DateTime<Utc>>,
}

/// Answer of `POST /api/tiers/{tier_id}/rates`.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RatesChanged {
    /// When the new rates take effect (what was asked, or the earliest time allowed).
    pub effective_from: DateTime<Utc>,
    /// The tier now (its rate fields: the rates in force now; `rate_schedule`: every period).
    pub tier: ModelTier,
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
    let now = Utc::now();
    let asked = req.effective_from.unwrap_or(now);
    if asked < now - EFFECTIVE_FROM_TOLERANCE {
        return Err(ApiError::invalid(
            "effective_from",
            format!(
                "`{}` is in the past: usage already made keeps its price; state now or a later time",
                asked.to_rfc3339()
            ),
        ));
    }
    // Every gateway's cached view was loaded at most its cache age ago; from then on, each
    // holds a catalog with the change, which it applies from its time on.
    let lead = state
        .gateway
        .as_ref()
        .map(|g| g.pipeline.deps().view_ttl)
        .unwrap_or_default();
    let lead = chrono::TimeDelta::from_std(lead).map_err(ApiError::internal)?;
    let effective_from = asked.max(now + lead);
    let change = RatePeriod {
        effective_from,
        input_rate_per_million: req.input_rate_per_million,
        output_rate_per_million: req.output_rate_per_million,
    };
    let _one_at_a_time = TIER_EDITS.lock().await;
    let tier = state.stores.tiers.get_tier(tier_id).await?;
    let changed = tier.with_rate_change(change, now).map_err(|e| match e {
        RateChangeError::Invalid(v) => ApiError::invalid(v.field, v.reason),
        in_the_past @ RateChangeError::InThePast { .. } => {
            ApiError::invalid("effective_from", in_the_past.to_string())
        }
    })?;
    state.stores.tiers.upsert_tier(&changed).await?;
    Ok(ApiJson(RatesChanged {
        effective_from,
        tier: state.stores.tiers.get_tier(tier_id).await?,
    }))
}
