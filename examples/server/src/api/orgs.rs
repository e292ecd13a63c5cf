//! `/api/organizations`: list, create (super admin), read, update settings, deactivate.

use axum::extract::State;
use axum::http::StatusCode;
use chrono::Utc;
use serde::Deserialize;
use stratai_core::access::{Action, Resource};
use stratai_core::directory::{
    BillingPlan, Email, Membership, OrgRole, OrgSettings, Organization, PlatformRole, Slug, User,
};
use stratai_core::tiers::subscriptions_for;
use stratai_core::{OrgId, StoreError, TierSlug};

use super::{ApiPath, Caller, allow};
use crate::app::AppState;
use crate::error::{ApiError, FieldError};
use crate::extract::{ApiJson, double_option};

/// Organizations the caller belongs to (all of them for a super admin).
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<ApiJson<Vec<Organization>>, ApiError> {
    let dir = &state.stores.directory;
    if caller.is_super_admin() {
        return Ok(ApiJson(dir.list_orgs().await?));
    }
    let mut orgs = Vec::new();
    for grant in &caller.actor.orgs {
        orgs.push(dir.get_org(grant.org_id).await?);
    }
    Ok(ApiJson(orgs))
}

/// Body of `POST /api/organizations`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateOrg {
    /// Display name.
    #[schema(min_length = 1, pattern = r"\S")]
    pub name: String,
    /// Unique slug.
    #[schema(value_type = stratai_core::directory::Slug)]
    pub slug: String,
    /// Settings (default: basic and standard allowed, standard by default).
    #[serde(default)]
    pub settings: Option<OrgSettings>,
    /// Billing plan (default: trial).
    #[serde(default)]
    pub billing_plan: Option<BillingPlan>,
    /// Billing email.
    #[serde(default)]
    #[schema(value_type = Option<stratai_core::directory::Email>)]
    pub billing_email: Option<String>,
    /// Tier slugs to subscribe to (default: the settings' allowed tiers).
    #[serde(default)]
    pub tiers: Option<Vec<String>>,
    /// Email of the first owner (created if unknown).
    #[serde(default)]
    #[schema(value_type = Option<stratai_core::directory::Email>)]
    pub owner_email: Option<String>,
}

/// Creates an organization, its tier subscriptions and optionally its first owner.
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<CreateOrg>,
) -> Result<(StatusCode, ApiJson<Organization>), ApiError> {
    allow(&caller, Action::ManageOrgs, Resource::Platform)?;
    let now = Utc::now();
    let mut errors = Vec::new();
    let slug = Slug::new(req.slug.trim())
        .map_err(|e| errors.push(FieldError::new("slug", e.reason)))
        .ok();
    let settings = match req.settings {
        Some(s) => match s.validate() {
            Ok(()) => Some(s),
            Err(e) => {
                errors.push(FieldError::new(format!("settings.{}", e.field), e.reason));
                None
            }
        },
        None => default_settings()
            .map_err(|e| errors.push(FieldError::new("settings", e.reason)))
            .ok(),
    };
    let billing_email = match &req.billing_email {
        Some(e) => Email::new(e)
            .map(Some)
            .map_err(|e| errors.push(FieldError::new("billing_email", e.reason)))
            .unwrap_or(None),
        None => None,
    };
    let owner_email = match &req.owner_email {
        Some(e) => Email::new(e)
            .map(Some)
            .map_err(|e| errors.push(FieldError::new("owner_email", e.reason)))
            .unwrap_or(None),
        None => None,
    };
    let catalog = state.stores.tiers.list_tiers().await?;
    let wanted: Vec<String> = match (&req.tiers, &settings) {
        (Some(t), _) => t.clone(),
        (None, Some(s)) => s
            .allowed_tiers
            .iter()
            .map(|t| t.as_str().to_owned())
            .collect(),
        (None, None) => Vec::new(),
    };
    let mut tier_ids = Vec::new();
    for (i, slug) in wanted.iter().enumerate() {
        match catalog.iter().find(|t| t.slug.as_str() == slug) {
            Some(t) => tier_ids.push(t.id),
            None => errors.push(FieldError::new(
                format!("tiers[{i}]"),
                format!("unknown tier `{slug}`"),
            )),
        }
    }
    let (Some(slug), Some(settings), true) = (slug, settings, errors.is_empty()) else {
        return Err(ApiError::Validation(errors));
    };
    let mut org = Organization::new(
        &req.name,
        slug,
        settings,
        req.billing_plan.unwrap_or(BillingPlan::Trial),
        now,
    )?;
    org.billing_email = billing_email;
    let dir = &state.stores.directory;
    dir.create_org(&org).await?;
    for sub in subscriptions_for(org.id, &tier_ids, now) {
        state.stores.tiers.put_subscription(org.id, &sub).await?;
    }
    if let Some(email) = owner_email {
        let user = match dir.find_user_by_email(&email).await? {
            Some(u) => u,
            None => {
                let u = User::new(email, None, PlatformRole::User, now)?;
                dir.create_user(&u).await?;
                u
            }
        };
        dir.add_member(
            org.id,
            &Membership::new(org.id, user.id, OrgRole::Owner, now),
        )
        .await?;
    }
    tracing::info!(org_id = %org.id, by = %caller.id(), "organization created");
    Ok((StatusCode::CREATED, ApiJson(org)))
}

fn default_settings() -> Result<OrgSettings, stratai_core::ValidationError> {
    OrgSettings::new(
        vec![TierSlug::new("basic")?, TierSlug::new("standard")?],
        TierSlug::new("standard")?,
    )
}

/// One organization.
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(org_id): ApiPath<OrgId>,
) -> Result<ApiJson<Organization>, ApiError> {
    allow(&caller, Action::ViewOrg, Resource::Org(org_id))?;
    Ok(ApiJson(state.stores.directory.get_org(org_id).await?))
}

/// Body of `PATCH /api/organizations/{id}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateOrg {
    /// New name.
    #[serde(default)]
    pub name: Option<String>,
    /// New settings (replaced whole).
    #[serde(default)]
    pub settings: Option<OrgSettings>,
    /// New billing email (`null` clears it).
    #[serde(default, deserialize_with = "double_option")]
    pub billing_email: Option<Option<String>>,
    /// New billing plan (super admin).
    #[serde(default)]
    pub billing_plan: Option<BillingPlan>,
    /// Reactivate or deactivate (super admin).
    #[serde(default)]
    pub active: Option<bool>,
}

/// Updates an organization's settings; plan and activation are the platform's.
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(org_id): ApiPath<OrgId>,
    ApiJson(req): ApiJson<UpdateOrg>,
) -> Result<ApiJson<Organization>, ApiError> {
    allow(&caller, Action::UpdateOrgSettings, Resource::Org(org_id))?;
    if req.billing_plan.is_some() || req.active.is_some() {
        allow(&caller, Action::ManageOrgs, Resource::Org(org_id))?;
    }
    let dir = &state.stores.directory;
    let mut org = dir.get_org(org_id).await?;
    if let Some(name) = req.name {
        org.name = name.trim().to_owned();
    }
    if let Some(settings) = req.settings {
        // Self-signup domains take in everyone at the domain: naming one is the platform's
        // call (it vouches that the organization owns the domain), never an org admin's.
        if settings.signup_domains != org.settings.signup_domains
            && allow(&caller, Action::ManageOrgs, Resource::Org(org_id)).is_err()
        {
            return Err(ApiError::Forbidden(
                "`settings.signup_domains`: only a platform super admin may change self-signup domains"
                    .to_owned(),
            ));
        }
        org.settings = settings;
    }
    if let Some(email) = req.billing_email {
        org.billing_email = match email {
            Some(e) => {
                Some(Email::new(&e).map_err(|e| ApiError::invalid("billing_email", e.reason))?)
            }
            None => None,
        };
    }
    if let Some(plan) = req.billing_plan {
        org.billing_plan = plan;
    }
    if let Some(active) = req.active {
        org.active = active;
    }
    org.validate()?;
    org.updated_at = Utc::now();
    dir.update_org(&org).await?;
    Ok(ApiJson(org))
}

/// Deactivates an organization (its data is kept).
pub async fn deactivate(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(org_id): ApiPath<OrgId>,
) -> Result<ApiJson<Organization>, ApiError> {
    // Members see their organization; only the platform may deactivate it.
    allow(&caller, Action::ViewOrg, Resource::Org(org_id))?;
    allow(&caller, Action::ManageOrgs, Resource::Org(org_id))?;
    let dir = &state.stores.directory;
    let mut org = dir.get_org(org_id).await.map_err(|e| match e {
        StoreError::NotFound { .. } => ApiError::NotFound("organization".to_owned()),
        other => other.into(),
    })?;
    org.active = false;
    org.updated_at = Utc::now();
    dir.update_org(&org).await?;
    tracing::info!(org_id = %org.id, by = %caller.id(), "organization deactivated");
    Ok(ApiJson(org))
}
