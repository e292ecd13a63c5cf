//! `/api/organizations/{id}/members`: list, add (invite, one as JSON or many as CSV),
//! change role/tiers/budget/profile, remove.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use stratai_core::access::{Action, Resource};
use stratai_core::directory::{Group, GroupRole, Membership, OrgRole};
use stratai_core::money::Money;
use stratai_core::{OrgId, ProfileId, TierSlug, UserId};
use stratai_store::admin::members::{self as admin, MemberEdit};

use super::invitations::{self, BulkOutcome, InviteSpec};
use super::{ApiPath, Caller, allow};
use crate::app::AppState;
use crate::error::ApiError;
use crate::extract::{ApiJson, double_option, parse_json};

/// A member as the admin API shows it.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MemberView {
    /// User id.
    pub user_id: UserId,
    /// Email.
    pub email: String,
    /// Name.
    pub name: Option<String>,
    /// Role in the organization.
    pub role: OrgRole,
    /// Tier restriction (none: no restriction at member level).
    pub allowed_tiers: Option<Vec<TierSlug>>,
    /// Personal monthly budget.
    pub monthly_budget: Option<Money>,
    /// Assigned profile.
    pub profile_id: Option<ProfileId>,
    /// When they joined.
    pub joined_at: DateTime<Utc>,
}

async fn view(state: &AppState, m: Membership) -> Result<MemberView, ApiError> {
    let user = state.stores.directory.get_user(m.user_id).await?;
    Ok(view_of(m, user))
}

/// A member's view from the membership and its user.
fn view_of(m: Membership, user: stratai_core::directory::User) -> MemberView {
    MemberView {
        user_id: m.user_id,
        email: user.email.as_str().to_owned(),
        name: user.name,
        role: m.role,
        allowed_tiers: m.allowed_tiers,
        monthly_budget: m.monthly_budget,
        profile_id: m.profile_id,
        joined_at: m.joined_at,
    }
}

/// Members of an organization (admins).
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(org_id): ApiPath<OrgId>,
) -> Result<ApiJson<Vec<MemberView>>, ApiError> {
    allow(&caller, Action::ManageMembers, Resource::Org(org_id))?;
    let dir = &state.stores.directory;
    let members = dir.list_members(org_id).await?;
    // One lookup of every member's user, not one per member.
    let ids: Vec<UserId> = members.iter().map(|m| m.user_id).collect();
    let users = dir.get_users(&ids).await?;
    let by_id: std::collections::HashMap<UserId, _> =
        users.into_iter().map(|u| (u.id, u)).collect();
    let mut out = Vec::with_capacity(members.len());
    for m in members {
        let user = by_id
            .get(&m.user_id)
            .cloned()
            .ok_or_else(|| stratai_core::StoreError::not_found("user", m.user_id))?;
        out.push(view_of(m, user));
    }
    Ok(ApiJson(out))
}

/// One member of an organization (admins).
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((org_id, user_id)): ApiPath<(OrgId, UserId)>,
) -> Result<ApiJson<MemberView>, ApiError> {
    allow(
        &caller,
        Action::ManageMembers,
        Resource::Member { org_id, user_id },
    )?;
    let member = state.stores.directory.get_member(org_id, user_id).await?;
    Ok(ApiJson(view(&state, member).await?))
}

/// A group of a member, with their role in it.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MemberGroup {
    /// The group.
    pub group: Group,
    /// The member's role in it.
    pub role: GroupRole,
}

/// The groups of one member of an organization (admins).
pub async fn groups(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((org_id, user_id)): ApiPath<(OrgId, UserId)>,
) -> Result<ApiJson<Vec<MemberGroup>>, ApiError> {
    allow(
        &caller,
        Action::ManageMembers,
        Resource::Member { org_id, user_id },
    )?;
    let dir = &state.stores.directory;
    dir.get_member(org_id, user_id).await?;
    Ok(ApiJson(
        dir.groups_of_member(org_id, user_id)
            .await?
            .into_iter()
            .map(|(group, role)| MemberGroup { group, role })
            .collect(),
    ))
}

/// Adds members by invitation: a JSON body invites one person; a `text/csv` body
/// (`email,role,groups` with `;`-separated group names or ids) invites many, all rows
/// validated before any is written.
pub async fn add(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(org_id): ApiPath<OrgId>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    allow(&caller, Action::ManageMembers, Resource::Org(org_id))?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default();
    match content_type.as_str() {
        "text/csv" => {
            let text = std::str::from_utf8(&body)
                .map_err(|_| ApiError::BadRequest("the CSV is not UTF-8".to_owned()))?;
            let outcome: BulkOutcome =
                invitations::bulk_invite(&state, &caller, org_id, text).await?;
            Ok((StatusCode::OK, ApiJson(outcome)).into_response())
        }
        "application/json" => {
            let spec: InviteSpec = parse_json(&body)?;
            let created = invitations::invite(&state, &caller, org_id, spec).await?;
            Ok((invitations::created_status(&created), ApiJson(created)).into_response())
        }
        _ => Err(ApiError::UnsupportedMediaType(
            "expected `application/json` (one invitation) or `text/csv` (bulk)".to_owned(),
        )),
    }
}

/// Body of `PATCH /api/organizations/{id}/members/{user}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateMember {
    /// New role (owner changes need an owner).
    #[serde(default)]
    pub role: Option<OrgRole>,
    /// Tier restriction (`null`: no restriction).
    #[serde(default, deserialize_with = "double_option")]
    pub allowed_tiers: Option<Option<Vec<TierSlug>>>,
    /// Personal monthly budget (`null`: none).
    #[serde(default, deserialize_with = "double_option")]
    pub monthly_budget: Option<Option<Money>>,
    /// Profile (`null`: none). Giving one sets the member's tiers to the profile's default
    /// tiers (unless `allowed_tiers` is in the same request) and its default guardrails become
    /// the member's rules, replacing those of the previous profile (`null` removes them; rules
    /// written by hand stay); a profile not available to the organization (`available_to`)
    /// is refused.
    #[serde(default, deserialize_with = "double_option")]
    pub profile_id: Option<Option<ProfileId>>,
}

/// Changes a member's role, tiers, budget or profile.
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((org_id, user_id)): ApiPath<(OrgId, UserId)>,
    ApiJson(req): ApiJson<UpdateMember>,
) -> Result<ApiJson<MemberView>, ApiError> {
    let target = Resource::Member { org_id, user_id };
    allow(&caller, Action::ManageMembers, target)?;
    let dir = &state.stores.directory;
    let member = dir.get_member(org_id, user_id).await?;
    let touches_owner = member.role == OrgRole::Owner || req.role == Some(OrgRole::Owner);
    if touches_owner && req.role.is_some_and(|r| r != member.role) {
        allow(&caller, Action::ChangeOwners, target)?;
    }
    let edit = MemberEdit {
        role: req.role,
        allowed_tiers: req.allowed_tiers,
        monthly_budget: req.monthly_budget,
        profile_id: req.profile_id,
    };
    let stores = &state.stores;
    let member = admin::update_member(
        stores.directory.as_ref(),
        stores.tiers.as_ref(),
        stores.guardrails.as_ref(),
        member,
        edit,
    )
    .await?;
    Ok(ApiJson(view(&state, member).await?))
}

/// Removes a member (and their group memberships in the organization).
pub async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((org_id, user_id)): ApiPath<(OrgId, UserId)>,
) -> Result<StatusCode, ApiError> {
    let target = Resource::Member { org_id, user_id };
    allow(&caller, Action::ManageMembers, target)?;
    let dir = &state.stores.directory;
    let member = dir.get_member(org_id, user_id).await?;
    if member.role == OrgRole::Owner {
        allow(&caller, Action::ChangeOwners, target)?;
        admin::check_removable(dir.as_ref(), &member).await?;
    }
    dir.remove_member(org_id, user_id).await?;
    Ok(StatusCode::NO_CONTENT)
}
