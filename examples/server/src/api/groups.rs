//! Groups: list and create under an organization; update, delete and manage members by id.

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use stratai_core::access::{Action, Resource};
pub use stratai_core::directory::NewGroupMember;
use stratai_core::directory::{Group, GroupMembership, GroupRole};
use stratai_core::money::Money;
use stratai_core::{GroupId, OrgId, StoreError, TierSlug, UserId};

use super::{ApiPath, Caller, allow, group_org};
use crate::app::AppState;
use crate::error::ApiError;
use crate::extract::{ApiJson, double_option};

/// The organization of `group_id` once `caller` may do `action` to the group (404 for a
/// group of another organization, see [`group_org`] and [`allow`]).
async fn allowed_in_group(
    state: &AppState,
    caller: &Caller,
    action: Action,
    group_id: GroupId,
) -> Result<OrgId, ApiError> {
    let org_id = group_org(state, group_id).await?;
    allow(caller, action, Resource::Group { org_id, group_id })?;
    Ok(org_id)
}

/// Groups of an organization (any member may see them).
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(org_id): ApiPath<OrgId>,
) -> Result<ApiJson<Vec<Group>>, ApiError> {
    allow(&caller, Action::ViewOrg, Resource::Org(org_id))?;
    Ok(ApiJson(state.stores.directory.list_groups(org_id).await?))
}

/// Body of `POST /api/organizations/{id}/groups`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateGroup {
    /// Name, unique in the organization.
    #[schema(min_length = 1, pattern = r"\S")]
    pub name: String,
    /// Description.
    #[serde(default)]
    pub description: Option<String>,
    /// Tier restriction.
    #[serde(default)]
    pub allowed_tiers: Option<Vec<TierSlug>>,
    /// Monthly budget.
    #[serde(default)]
    pub monthly_budget: Option<Money>,
    /// First members (members of the organization, each once), added with the group in one
    /// step: at most the organization's `max_users_per_group`.
    #[serde(default)]
    pub members: Option<Vec<NewGroupMember>>,
}

/// Creates a group, with its first members when given (all or nothing).
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(org_id): ApiPath<OrgId>,
    ApiJson(req): ApiJson<CreateGroup>,
) -> Result<(StatusCode, ApiJson<Group>), ApiError> {
    allow(&caller, Action::ManageGroups, Resource::Org(org_id))?;
    let mut group = Group::new(org_id, &req.name, Utc::now())?;
    if let Some(d) = &req.description {
        group = group.with_description(d);
    }
    if let Some(tiers) = req.allowed_tiers {
        super::tiers::check_within_subscription(&state, org_id, &tiers, "allowed_tiers").await?;
        group = group.with_allowed_tiers(tiers)?;
    }
    group.monthly_budget = req.monthly_budget;
    let members = stratai_store::admin::groups::first_members(
        state.stores.directory.as_ref(),
        &group,
        req.members.as_deref().unwrap_or(&[]),
    )
    .await?;
    // The store checks the capacity again in the transaction that writes the group.
    state
        .stores
        .directory
        .create_group_with_members(org_id, &group, &members)
        .await?;
    Ok((StatusCode::CREATED, ApiJson(group)))
}

/// A member of a group as `GET /api/groups/{id}` shows them.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GroupMemberView {
    /// User id.
    pub user_id: UserId,
    /// Email.
    pub email: String,
    /// Name.
    pub name: Option<String>,
    /// Role in the group.
    pub role: GroupRole,
    /// When they joined the group.
    pub joined_at: DateTime<Utc>,
}

/// Answer of `GET /api/groups/{id}`.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GroupDetail {
    /// The group.
    pub group: Group,
    /// Its members, by user id.
    pub members: Vec<GroupMemberView>,
}

/// One group with its members (admins and the group's leads).
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(group_id): ApiPath<GroupId>,
) -> Result<ApiJson<GroupDetail>, ApiError> {
    let org_id = allowed_in_group(&state, &caller, Action::ViewGroupUsage, group_id).await?;
    let dir = &state.stores.directory;
    let group = dir.get_group(org_id, group_id).await?;
    let in_group = dir.list_group_members(org_id, group_id).await?;
    // One lookup of the members' users; it answers in the order asked (members are distinct).
    let ids: Vec<UserId> = in_group.iter().map(|m| m.user_id).collect();
    let users = dir.get_users(&ids).await?;
    let mut members = Vec::with_capacity(in_group.len());
    for (m, user) in in_group.into_iter().zip(users) {
        members.push(GroupMemberView {
            user_id: m.user_id,
            email: user.email.as_str().to_owned(),
            name: user.name,
            role: m.role,
            joined_at: m.joined_at,
        });
    }
    Ok(ApiJson(GroupDetail { group, members }))
}

/// Body of `PATCH /api/groups/{id}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateGroup {
    /// New name.
    #[serde(default)]
    pub name: Option<String>,
    /// Description (`null` clears).
    #[serde(default, deserialize_with = "double_option")]
    pub description: Option<Option<String>>,
    /// Tier restriction (`null`: none).
    #[serde(default, deserialize_with = "double_option")]
    pub allowed_tiers: Option<Option<Vec<TierSlug>>>,
    /// Monthly budget (`null`: none).
    #[serde(default, deserialize_with = "double_option")]
    pub monthly_budget: Option<Option<Money>>,
}

/// Updates a group.
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(group_id): ApiPath<GroupId>,
    ApiJson(req): ApiJson<UpdateGroup>,
) -> Result<ApiJson<Group>, ApiError> {
    let org_id = allowed_in_group(&state, &caller, Action::ManageGroups, group_id).await?;
    let dir = &state.stores.directory;
    let mut group = dir.get_group(org_id, group_id).await?;
    if let Some(name) = req.name {
        // Re-validate the name through the constructor's rules.
        group.name = Group::new(org_id, &name, group.created_at)?.name;
    }
    if let Some(d) = req.description {
        group.description = d.map(|d| d.trim().to_owned()).filter(|d| !d.is_empty());
    }
    if let Some(tiers) = req.allowed_tiers {
        group = match tiers {
            Some(list) => {
                super::tiers::check_within_subscription(&state, org_id, &list, "allowed_tiers")
                    .await?;
                group.with_allowed_tiers(list)?
            }
            None => Group {
                allowed_tiers: None,
                ..group
            },
        };
    }
    if let Some(b) = req.monthly_budget {
        group.monthly_budget = b;
    }
    group.updated_at = Utc::now();
    dir.update_group(org_id, &group).await?;
    Ok(ApiJson(group))
}

/// Deletes a group and its memberships.
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(group_id): ApiPath<GroupId>,
) -> Result<StatusCode, ApiError> {
    let org_id = allowed_in_group(&state, &caller, Action::ManageGroups, group_id).await?;
    state
        .stores
        .directory
        .delete_group(org_id, group_id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Members of a group (admins and the group's leads).
pub async fn list_members(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(group_id): ApiPath<GroupId>,
) -> Result<ApiJson<Vec<GroupMembership>>, ApiError> {
    let org_id = allowed_in_group(&state, &caller, Action::ViewGroupUsage, group_id).await?;
    Ok(ApiJson(
        state
            .stores
            .directory
            .list_group_members(org_id, group_id)
            .await?,
    ))
}

/// Body of `POST /api/groups/{id}/members`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddGroupMember {
    /// A member of the group's organization.
    pub user_id: UserId,
    /// Role in the group (default member).
    #[serde(default)]
    pub role: Option<GroupRole>,
}

/// Adds an organization member to a group (or changes their group role).
pub async fn add_member(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(group_id): ApiPath<GroupId>,
    ApiJson(req): ApiJson<AddGroupMember>,
) -> Result<(StatusCode, ApiJson<GroupMembership>), ApiError> {
    let org_id = allowed_in_group(&state, &caller, Action::ManageGroups, group_id).await?;
    let dir = &state.stores.directory;
    match dir.get_member(org_id, req.user_id).await {
        Ok(_) => {}
        Err(StoreError::NotFound { .. }) => {
            return Err(ApiError::invalid(
                "user_id",
                format!("`{}` is not a member of the organization", req.user_id),
            ));
        }
        Err(e) => return Err(e.into()),
    }
    // The store checks `max_users_per_group` in the transaction that adds the member (409
    // when the group is full), so concurrent adds cannot pass it.
    let membership = GroupMembership {
        org_id,
        group_id,
        user_id: req.user_id,
        role: req.role.unwrap_or(GroupRole::Member),
        joined_at: Utc::now(),
    };
    dir.put_group_member(org_id, &membership).await?;
    Ok((StatusCode::CREATED, ApiJson(membership)))
}

/// Removes a user from a group.
pub async fn remove_member(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((group_id, user_id)): ApiPath<(GroupId, UserId)>,
) -> Result<StatusCode, ApiError> {
    let org_id = allowed_in_group(&state, &caller, Action::ManageGroups, group_id).await?;
    state
        .stores
        .directory
        .remove_group_member(org_id, group_id, user_id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
