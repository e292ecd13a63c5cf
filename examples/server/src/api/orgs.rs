//! `/api/organizations`: list, create (super admin), read, update settings, deactivate.

use axum::extract::State;
use axum::http::StatusCode;
use chrono::Utc;
use serde::Deserialize;
use stratai_core::OrgId;
use stratai_core::access::{Action, Resource};
use stratai_core::directory::{BillingPlan, OrgSettings, Organization};
use stratai_store::admin::orgs::{self, NewOrg, OrgEdit};

use super::{ApiPath, Caller, allow};
use crate::app::AppState;
use crate::error::ApiError;
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
    let new = NewOrg {
        name: req.name,
        slug: req.slug,
        settings: req.settings,
        billing_plan: req.billing_plan,
        billing_email: req.billing_email,
        tiers: req.tiers,
        owner_email: req.owner_email,
    };
    let s = &state.stores;
    let org = orgs::create_org(&*s.directory, &*s.tiers, new, Utc::now()).await?;
    tracing::info!(org_id = %org.id, by = %caller.id(), "organization created");
    Ok((StatusCode::CREATED, ApiJson(org)))
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
    // Self-signup domains take in everyone at the domain: naming one is the platform's
    // call (it vouches that the organization owns the domain), never an org admin's.
    let may_set_signup_domains = allow(&caller, Action::ManageOrgs, Resource::Org(org_id)).is_ok();
    let edit = OrgEdit {
        name: req.name,
        settings: req.settings,
        billing_email: req.billing_email,
        billing_plan: req.billing_plan,
        active: req.active,
    };
    let dir = &*state.stores.directory;
    Ok(ApiJson(
        orgs::update_org(dir, org_id, edit, may_set_signup_domains, Utc::now()).await?,
    ))
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
    let org = orgs::deactivate_org(&*state.stores.directory, org_id, Utc::now()).await?;
    tracing::info!(org_id = %org.id, by = %caller.id(), "organization deactivated");
    Ok(ApiJson(org))
}
