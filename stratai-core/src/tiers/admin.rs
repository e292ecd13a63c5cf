//! What the tier administration decides, pure: a member's tiers split into accessible and
//! locked (with the reason as a sentence and the upgrade hint), which asked tiers an
//! organization cannot grant, and the operators' edits of the price list (a tier's fields,
//! its rates from a stated time on). The stores' side is `stratai_store::admin::tiers`.

use chrono::{DateTime, TimeDelta, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::{
    Availability, CatalogError, LockReason, ModelTier, RateChangeError, RatePeriod, TierAccess,
    TierStatus,
};
use crate::error::{OpError, ValidationError};
use crate::ids::{ModelId, OrgId, TierId, TierSlug, UserId};

/// An accessible tier.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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

impl AccessibleTiers {
    /// `access` (a member's, see [`super::resolve_tiers`]) split into the usable tiers and the
    /// locked ones, each locked tier with its primary reason explained and the hint.
    #[must_use]
    pub fn split(access: TierAccess, org_id: OrgId, user_id: UserId) -> Self {
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
                (Availability::Locked { reasons }, Some(p)) => locked.push(LockedTier {
                    message: p.explain(&name),
                    hint: p.hint(&name),
                    tier_id,
                    slug,
                    models,
                    reasons,
                    unlock_label,
                    name,
                }),
                _ => accessible.push(AccessibleTier {
                    tier_id,
                    slug,
                    name,
                    models,
                }),
            }
        }
        Self {
            org_id,
            user_id,
            accessible,
            locked,
        }
    }
}

/// The slugs of `slugs` not in `catalog`, each as `field[i]`.
#[must_use]
pub fn unknown_tiers(
    catalog: &[ModelTier],
    slugs: &[TierSlug],
    field: &str,
) -> Vec<ValidationError> {
    slugs
        .iter()
        .enumerate()
        .filter(|(_, s)| !catalog.iter().any(|t| &t.slug == *s))
        .map(|(i, s)| ValidationError::new(format!("{field}[{i}]"), format!("unknown tier `{s}`")))
        .collect()
}

/// The slugs of `slugs` an organization whose tiers are `org_access` (see
/// [`super::resolve_org_tiers`]) cannot grant, each as `field[i]` with why and the tiers it
/// can: admins enable and disable tiers for groups and members within the subscription.
/// Slugs not in the catalog are left to [`unknown_tiers`].
#[must_use]
pub fn outside_subscription(
    org_access: &TierAccess,
    slugs: &[TierSlug],
    field: &str,
) -> Vec<ValidationError> {
    let usable: Vec<&str> = org_access.accessible().map(|t| t.slug.as_str()).collect();
    slugs
        .iter()
        .enumerate()
        .filter_map(|(i, slug)| {
            let status = org_access.status(slug)?;
            let primary = status.primary_reason()?;
            Some(ValidationError::new(
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
        .collect()
}

/// Body of `PATCH /api/tiers/{tier_id}`: the fields to change (rates: `POST .../rates`).
#[derive(Debug, Default, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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

impl UpdateTier {
    /// Applies the edit to `tier`, refusing every invalid field (an empty name, no models, a
    /// model listed twice or not a model id). Whether the catalog stays consistent is the
    /// caller's check ([`super::TierCatalog::with_tier`], refusal by [`catalog_refusal`]).
    pub fn apply(self, tier: &mut ModelTier) -> Result<(), OpError> {
        let mut errors = Vec::new();
        if let Some(name) = self.name {
            if name.trim().is_empty() {
                errors.push(ValidationError::new("name", "must not be empty"));
            }
            tier.name = name;
        }
        if let Some(d) = self.description {
            tier.description = d;
        }
        if let Some(b) = self.best_use_case {
            tier.best_use_case = b;
        }
        if let Some(active) = self.active {
            tier.active = active;
        }
        if let Some(models) = &self.models {
            if models.is_empty() {
                errors.push(ValidationError::new(
                    "models",
                    "must list at least one model; deactivate the tier instead (`active: false`)",
                ));
            }
            let mut parsed = Vec::with_capacity(models.len());
            for (i, m) in models.iter().enumerate() {
                match ModelId::new(m.clone()) {
                    Ok(id) if parsed.contains(&id) => errors.push(ValidationError::new(
                        format!("models[{i}]"),
                        format!("`{m}` is listed twice"),
                    )),
                    Ok(id) => parsed.push(id),
                    Err(e) => {
                        errors.push(ValidationError::new(format!("models[{i}]"), e.to_string()));
                    }
                }
            }
            tier.models = parsed;
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(OpError::Invalid(errors))
        }
    }
}

/// The refusal of an edited `tier` the catalog does not take: a model of another tier names
/// its `models[i]`, an invalid tier its field, anything else is a conflict.
#[must_use]
pub fn catalog_refusal(error: &CatalogError, tier: &ModelTier) -> OpError {
    match error {
        CatalogError::ModelInTwoTiers { model, .. } => {
            let i = tier.models.iter().position(|m| m == model).unwrap_or(0);
            ValidationError::new(format!("models[{i}]"), error.to_string()).into()
        }
        CatalogError::InvalidTier { error, .. } => error.clone().into(),
        other => OpError::Conflict(other.to_string()),
    }
}

/// How far in the past a stated `effective_from` may be and still be taken as now (clocks of
/// the operator's machine and the server differ a little).
pub const EFFECTIVE_FROM_TOLERANCE: TimeDelta = TimeDelta::seconds(60);

/// Body of `POST /api/tiers/{tier_id}/rates`.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ChangeRates {
    /// Billed $ per 1M input tokens from `effective_from` on (not negative).
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "0.80"))]
    pub input_rate_per_million: Decimal,
    /// Billed $ per 1M output tokens from `effective_from` on (not negative).
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "4.00"))]
    pub output_rate_per_million: Decimal,
    /// From when the rates apply (RFC 3339; default now). Not in the past (usage already made
    /// keeps its price; up to a minute back is taken as now), and at the earliest once every
    /// gateway's cached catalog has been reloaded (now plus `STRATAI_GATEWAY_CACHE_MS`), so
    /// every instance switches at the same instant; the answer states the time applied.
    #[serde(default)]
    pub effective_from: Option<DateTime<Utc>>,
}

impl ChangeRates {
    /// The period the change schedules at `now`, when every gateway's cached catalog is at
    /// most `lead` old: from the time asked (default now; refused when more than
    /// [`EFFECTIVE_FROM_TOLERANCE`] in the past), at the earliest `now + lead`, so every
    /// instance switches at the same instant.
    pub fn period(&self, now: DateTime<Utc>, lead: TimeDelta) -> Result<RatePeriod, OpError> {
        let asked = self.effective_from.unwrap_or(now);
        if asked < now - EFFECTIVE_FROM_TOLERANCE {
            return Err(ValidationError::new(
                "effective_from",
                format!(
                    "`{}` is in the past: usage already made keeps its price; state now or a later time",
                    asked.to_rfc3339()
                ),
            )
            .into());
        }
        Ok(RatePeriod {
            effective_from: asked.max(now + lead),
            input_rate_per_million: self.input_rate_per_million,
            output_rate_per_million: self.output_rate_per_million,
        })
    }
}

impl From<RateChangeError> for OpError {
    fn from(e: RateChangeError) -> Self {
        match e {
            RateChangeError::Invalid(v) => v.into(),
            in_the_past @ RateChangeError::InThePast { .. } => {
                ValidationError::new("effective_from", in_the_past.to_string()).into()
            }
        }
    }
}

/// Answer of `POST /api/tiers/{tier_id}/rates`.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RatesChanged {
    /// When the new rates take effect (what was asked, or the earliest time allowed).
    pub effective_from: DateTime<Utc>,
    /// The tier now (its rate fields: the rates in force now; `rate_schedule`: every period).
    pub tier: ModelTier,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tiers::TierCatalog;

    fn tier() -> ModelTier {
        TierCatalog::seed_default().tiers()[0].clone()
    }

    #[test]
    fn an_update_names_every_invalid_field() {
        let mut t = tier();
        let edit = UpdateTier {
            name: Some("  ".into()),
            models: Some(vec!["a".into(), "a".into()]),
            ..UpdateTier::default()
        };
        let Err(OpError::Invalid(fields)) = edit.apply(&mut t) else {
            panic!("accepted")
        };
        let names: Vec<&str> = fields.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(names, ["name", "models[1]"]);
    }

    #[test]
    fn no_models_is_refused_and_fields_change() {
        let mut t = tier();
        let edit = UpdateTier {
            models: Some(vec![]),
            ..UpdateTier::default()
        };
        assert!(matches!(edit.apply(&mut t), Err(OpError::Invalid(f)) if f[0].field == "models"));
        let edit = UpdateTier {
            description: Some("d".into()),
            active: Some(false),
            ..UpdateTier::default()
        };
        edit.apply(&mut t).unwrap();
        assert_eq!(t.description, "d");
        assert!(!t.active);
    }

    #[test]
    fn a_rate_change_starts_no_earlier_than_every_gateway_has_reloaded() {
        let now = Utc::now();
        let lead = TimeDelta::seconds(5);
        let change = |at| ChangeRates {
            input_rate_per_million: Decimal::ONE,
            output_rate_per_million: Decimal::TWO,
            effective_from: at,
        };
        assert_eq!(
            change(None).period(now, lead).unwrap().effective_from,
            now + lead
        );
        let later = now + TimeDelta::hours(1);
        assert_eq!(
            change(Some(later))
                .period(now, lead)
                .unwrap()
                .effective_from,
            later
        );
        let slightly_past = now - TimeDelta::seconds(30);
        assert!(change(Some(slightly_past)).period(now, lead).is_ok());
        let past = now - TimeDelta::seconds(61);
        assert!(
            matches!(change(Some(past)).period(now, lead), Err(OpError::Invalid(f)) if f[0].field == "effective_from")
        );
    }

    #[test]
    fn unknown_and_unsubscribed_tiers_are_named_by_index() {
        let catalog = TierCatalog::seed_default();
        let known = catalog.tiers()[0].slug.clone();
        let unknown = TierSlug::new("nope".to_owned()).unwrap();
        let errors = unknown_tiers(catalog.tiers(), &[known.clone(), unknown], "allowed_tiers");
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].field, "allowed_tiers[1]");
        let access = TierAccess {
            tiers: vec![TierStatus {
                tier_id: catalog.tiers()[0].id,
                slug: known.clone(),
                name: "Basic".into(),
                models: vec![],
                availability: Availability::Locked {
                    reasons: vec![LockReason::NotSubscribed],
                },
            }],
        };
        let errors = outside_subscription(&access, &[known], "allowed_tiers");
        assert_eq!(errors[0].field, "allowed_tiers[0]");
        assert!(
            errors[0].reason.ends_with("its tiers: none"),
            "{}",
            errors[0].reason
        );
    }

    #[test]
    fn split_puts_locked_tiers_apart_with_message_and_hint() {
        let catalog = TierCatalog::seed_default();
        let t = &catalog.tiers()[0];
        let status = |availability| TierStatus {
            tier_id: t.id,
            slug: t.slug.clone(),
            name: t.name.clone(),
            models: t.models.clone(),
            availability,
        };
        let access = TierAccess {
            tiers: vec![
                status(Availability::Accessible),
                status(Availability::Locked {
                    reasons: vec![LockReason::NotSubscribed],
                }),
            ],
        };
        let split = AccessibleTiers::split(access, OrgId::new(), UserId::new());
        assert_eq!(split.accessible.len(), 1);
        assert_eq!(split.locked.len(), 1);
        let locked = &split.locked[0];
        assert_eq!(locked.message, LockReason::NotSubscribed.explain(&t.name));
        assert_eq!(
            locked.unlock_label.as_deref(),
            Some(format!("Unlock {}", t.name).as_str())
        );
    }
}
