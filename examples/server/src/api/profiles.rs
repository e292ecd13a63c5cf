//! The caller's own account (`/api/me`) and user profiles (templates for user types).

use axum::extract::State;
use axum::http::StatusCode;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use stratai_core::access::{Action, Resource};
use stratai_core::directory::{
    Membership, ProfileAvailability, ProfileGuardrail, User, UserProfile,
};
use stratai_core::{OrgId, ProfileId, TierSlug, UserId};
use stratai_guardrails::Rule;

use super::{ApiPath, Caller, allow};
use crate::app::AppState;
use crate::error::{ApiError, FieldError};
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

/// Sets `rules` on `profile`, each validated by stratai-guardrails (errors name
/// `default_guardrails[i].<field>`).
fn set_guardrails(profile: &mut UserProfile, rules: &[ProfileGuardrail]) -> Result<(), ApiError> {
    profile.set_guardrails(rules)?;
    let records = profile.member_rules(OrgId::new(), UserId::new(), Utc::now())?;
    let errors: Vec<FieldError> = records
        .iter()
        .enumerate()
        .filter_map(|(i, record)| {
            Rule::from_record(record)
                .err()
                .map(|e| FieldError::new(format!("default_guardrails[{i}].{}", e.field), e.reason))
        })
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::Validation(errors))
    }
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
    set_guardrails(&mut profile, &req.default_guardrails)?;
    state.stores.directory.create_profile(&profile).await?;
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
    let dir = &state.stores.directory;
    let mut profile = dir.get_profile(profile_id).await?;
    if let Some(name) = &req.name {
        // The constructor's checks (trimmed, non-empty, no control characters).
        profile.name = UserProfile::new(name, Vec::new(), profile.available_to, Utc::now())?.name;
    }
    if let Some(description) = req.description {
        profile.description = description
            .map(|d| d.trim().to_owned())
            .filter(|d| !d.is_empty());
    }
    if let Some(tiers) = req.default_tiers {
        super::tiers::check_known(&state, &tiers, "default_tiers").await?;
        profile.default_tiers =
            UserProfile::new(&profile.name, tiers, profile.available_to, Utc::now())?.default_tiers;
    }
    if let Some(rules) = &req.default_guardrails {
        set_guardrails(&mut profile, rules)?;
    }
    if let Some(available_to) = req.available_to {
        profile.available_to = available_to;
        for org in dir.list_orgs().await? {
            if profile.available_for(&org) {
                continue;
            }
            let holders = dir
                .list_members(org.id)
                .await?
                .iter()
                .filter(|m| m.profile_id == Some(profile_id))
                .count();
            if holders > 0 {
                return Err(ApiError::Conflict(format!(
                    "`available_to` would exclude `{}`, where {holders} member(s) hold the \
                     profile: give them another profile first",
                    org.slug
                )));
            }
        }
    }
    dir.update_profile(&profile).await?;
    if req.default_guardrails.is_some() {
        let members = stratai_store::people::profiles::after_update(
            dir.as_ref(),
            state.stores.guardrails.as_ref(),
            &profile,
        )
        .await?;
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
