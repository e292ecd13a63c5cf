//! The caller's own account (`/api/me`) and user profiles (templates for user types).

use axum::extract::State;
use axum::http::StatusCode;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use stratai_core::TierSlug;
use stratai_core::access::{Action, Resource};
use stratai_core::directory::{Membership, ProfileAvailability, User, UserProfile};

use super::{Caller, allow};
use crate::app::AppState;
use crate::error::ApiError;
use crate::extract::ApiJson;

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
}

/// Creates a profile (platform).
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<CreateProfile>,
) -> Result<(StatusCode, ApiJson<UserProfile>), ApiError> {
    allow(&caller, Action::ManageProfiles, Resource::Platform)?;
    super::tiers::check_known(&state, &req.default_tiers, "default_tiers").await?;
    let mut profile = UserProfile::new(
        &req.name,
        req.default_tiers,
        req.available_to.unwrap_or(ProfileAvailability::All),
        Utc::now(),
    )?;
    profile.description = req
        .description
        .map(|d| d.trim().to_owned())
        .filter(|d| !d.is_empty());
    state.stores.directory.create_profile(&profile).await?;
    Ok((StatusCode::CREATED, ApiJson(profile)))
}
