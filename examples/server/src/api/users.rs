//! `/api/users`: the platform's people (super admins): list and search them page by page,
//! look at one with their memberships, deactivate and reactivate them, grant and revoke the
//! super admin role.
//!
//! A deactivation is refused from the person's next request on this instance (the auth
//! cache forgets them) and on others within `STRATAI_AUTH_CACHE_MS` (at most
//! [`MAX_AUTH_CACHE`](crate::config::MAX_AUTH_CACHE)); sessions are checked against the
//! directory on every request. The store writes an outbox event per membership in the same
//! transaction, so the LiteLLM sync blocks the person's virtual keys (and unblocks them on
//! reactivation). The last active super admin can neither be deactivated nor lose the role:
//! the store decides it atomically (409 naming the field).

use axum::extract::State;
use serde::{Deserialize, Serialize};
use stratai_core::UserId;
use stratai_core::access::{Action, Resource};
use stratai_core::directory::{Membership, PlatformRole, User};
use stratai_store::admin::users;

use super::{ApiPath, Caller, allow};
use crate::app::AppState;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery};

/// Query of `GET /api/users`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ListUsers {
    /// Only people whose email or name contains this text (ASCII letters in any case).
    #[serde(default)]
    pub search: Option<String>,
    /// The page after this email: the previous page's `next_after`.
    #[serde(default)]
    pub after: Option<String>,
    /// Page size, 1 to 200 (default 50).
    #[serde(default)]
    pub limit: Option<u32>,
}

/// Answer of `GET /api/users`.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UserPage {
    /// People in email order.
    pub users: Vec<User>,
    /// Pass as `after` for the next page; absent on the last page.
    pub next_after: Option<String>,
}

/// Lists and searches the platform's people, a page at a time (super admins).
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ListUsers>,
) -> Result<ApiJson<UserPage>, ApiError> {
    allow(&caller, Action::ManageUsers, Resource::Platform)?;
    let dir = &*state.stores.directory;
    let page = users::list_users(dir, q.search, q.after.as_deref(), q.limit).await?;
    Ok(ApiJson(UserPage {
        users: page.users,
        next_after: page.next_after,
    }))
}

/// Answer of `GET /api/users/{id}`.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UserDetail {
    /// The person.
    pub user: User,
    /// Their memberships, by organization id.
    pub memberships: Vec<Membership>,
}

/// One person with their memberships (super admins).
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(user_id): ApiPath<UserId>,
) -> Result<ApiJson<UserDetail>, ApiError> {
    allow(&caller, Action::ManageUsers, Resource::Platform)?;
    let dir = &state.stores.directory;
    let user = dir.get_user(user_id).await?;
    let memberships = dir.memberships_of_user(user_id).await?;
    Ok(ApiJson(UserDetail { user, memberships }))
}

/// Body of `PATCH /api/users/{id}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUser {
    /// `false` deactivates the person (their tokens, sessions and LiteLLM keys stop working),
    /// `true` reactivates them.
    #[serde(default)]
    pub active: Option<bool>,
    /// `super_admin` grants the platform role, `user` revokes it.
    #[serde(default)]
    pub platform_role: Option<PlatformRole>,
}

/// Deactivates or reactivates a person, grants or revokes super admin (super admins). The
/// last active super admin stays one (409 naming `active` or `platform_role`).
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(user_id): ApiPath<UserId>,
    ApiJson(req): ApiJson<UpdateUser>,
) -> Result<ApiJson<User>, ApiError> {
    allow(&caller, Action::ManageUsers, Resource::Platform)?;
    let dir = &*state.stores.directory;
    let changed = users::update_user(dir, user_id, req.platform_role, req.active).await?;
    if let Some(role) = changed.role {
        tracing::info!(user_id = %user_id, by = %caller.id(), role = role.as_str(), "platform role changed");
    }
    if let Some(active) = changed.active {
        tracing::info!(user_id = %user_id, by = %caller.id(), active, "user activity changed");
    }
    // Whatever this instance remembers of them is stale now.
    state.auth.signin().forget_user(user_id.as_uuid());
    Ok(ApiJson(changed.user))
}
