//! The caller's own account (`/api/me`) and user profiles (templates for user types).

use axum::extract::State;
use axum::http::StatusCode;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use stratai_core::access::{Action, Resource};
use stratai_core::directory::{
    Membership, ProfileAvailability, ProfileGuardrail, User, UserProfile,
};
use stratai_core::{ProfileId, TierSlug};
use stratai_guardrails::admin::check_rule;
use stratai_store::admin::profiles::{self, NewProfile, ProfileEdit};

use super::{ApiPath, Caller, allow};
use crate::app::AppState;
use crate::error::ApiError;
use crate::extract::{ApiJson, double_option};

/// Answer of `GET /api/me`.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = MeProfile)]
pub struct Me {
    /// The user.
    pub user: User,
    /// Their memberships.
    pub memberships: Vec<Membership>,
}

/// The caller's account and memberships.
pub async fn me(State(state): State<AppState>, caller: Caller) -> Result<ApiJson<Me>, ApiError> {
    let memberships = state
        .stores
        .directory
        .memberships_of_user(caller.id())
        .await?;
    Ok(ApiJson(Me {
        user: caller.user,
        memberships,
    }))
}

/// Every profile (any signed-in user; profiles hold no tenant data).
pub async fn list(
    State(state): State<AppState>,
    _caller: Caller,
) -> Result<ApiJson<Vec<UserProfile>>, ApiError> {
    Ok(ApiJson(state.stores.directory.list_profiles().await?))
}

/// Body of `POST /api/profiles`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateProfile {
    /// Name ("Internal Employee").
    #[schema(min_length = 1, pattern = r"\S")]
    pub name: String,
    /// Description.
    #[serde(default)]
    pub description: Option<String>,
    /// Tiers a member with this profile starts with.
    pub default_tiers: Vec<TierSlug>,
    /// Who may use it.
    #[serde(default)]
    pub available_to: Option<ProfileAvailability>,
    /// Rules a member given the profile gets as member-level rules (at most 32; each is
    /// validated like a rule of `POST /api/organizations/{id}/guardrails`).
    #[serde(default)]
    pub default_guardrails: Vec<ProfileGuardrail>,
}

/// Creates a profile (platform).
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<CreateProfile>,
) -> Result<(StatusCode, ApiJson<UserProfile>), ApiError> {
    allow(&caller, Action::ManageProfiles, Resource::Platform)?;
    let new = NewProfile {
        name: req.name,
        description: req.description,
        default_tiers: req.default_tiers,
        available_to: req.available_to,
        default_guardrails: req.default_guardrails,
    };
    let s = &state.stores;
    let profile =
        profiles::create_profile(&*s.directory, &*s.tiers, new, &check_rule, Utc::now()).await?;
    Ok((StatusCode::CREATED, ApiJson(profile)))
}

/// One profile (any signed-in user).
pub async fn get(
    State(state): State<AppState>,
    _caller: Caller,
    ApiPath(profile_id): ApiPath<ProfileId>,
) -> Result<ApiJson<UserProfile>, ApiError> {
    Ok(ApiJson(
        state.stores.directory.get_profile(profile_id).await?,
    ))
}

/// Body of `PATCH /api/profiles/{profile_id}`: the fields to change.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateProfile {
    /// Name.
    #[serde(default)]
    pub name: Option<String>,
    /// Description (`null` clears).
    #[serde(default, deserialize_with = "double_option")]
    pub description: Option<Option<String>>,
    /// Tiers a member given the profile from now on starts with (members who hold it keep
    /// their tiers: once given, they are the member's to change).
    #[serde(default)]
    pub default_tiers: Option<Vec<TierSlug>>,
    /// The rules a member with the profile has: every member holding it gets the new set
    /// at once (the rules the profile gave them are replaced; hand-written ones stay).
    #[serde(default)]
    pub default_guardrails: Option<Vec<ProfileGuardrail>>,
    /// Who may use it; refused (409) while a member of an organization it would no longer
    /// be available to holds it.
    #[serde(default)]
    pub available_to: Option<ProfileAvailability>,
}

/// Changes a profile (platform); its guardrails reach every member holding it.
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(profile_id): ApiPath<ProfileId>,
    ApiJson(req): ApiJson<UpdateProfile>,
) -> Result<ApiJson<UserProfile>, ApiError> {
    allow(&caller, Action::ManageProfiles, Resource::Platform)?;
    let edit = ProfileEdit {
        name: req.name,
        description: req.description,
        default_tiers: req.default_tiers,
        default_guardrails: req.default_guardrails,
        available_to: req.available_to,
    };
    let s = &state.stores;
    let (profile, members) = profiles::update_profile(
        &*s.directory,
        &*s.tiers,
        &*s.guardrails,
        profile_id,
        edit,
        &check_rule,
        Utc::now(),
    )
    .await?;
    if let Some(members) = members {
        tracing::info!(profile_id = %profile.id, members, "profile guardrails given to its members");
    }
    Ok(ApiJson(profile))
}

/// Deletes a profile (platform). Refused (409, with the counts) while a member holds it or a
/// pending invitation names it: deleting it then would silently leave those people without
/// the defaults an admin chose for them (and the rules it gave would lose their owner).
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(profile_id): ApiPath<ProfileId>,
) -> Result<StatusCode, ApiError> {
    allow(&caller, Action::ManageProfiles, Resource::Platform)?;
    state.stores.directory.delete_profile(profile_id).await?;
    tracing::info!(%profile_id, "profile deleted");
    Ok(StatusCode::NO_CONTENT)
}
