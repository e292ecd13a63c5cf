//! The platform's people over the directory: listed and searched a page at a time, their
//! activity and platform role changed. The last active super admin stays one: the store
//! decides it atomically.

use stratai_core::directory::{Email, PlatformRole, User};
use stratai_core::ports::{DirectoryStore, UserQuery};
use stratai_core::{OpError, UserId, ValidationError};

/// Largest page of a listing.
pub const MAX_PAGE: u32 = 200;
/// Page size when none is asked.
pub const DEFAULT_PAGE: u32 = 50;
/// Longest search text.
pub const MAX_SEARCH_CHARS: usize = 200;

/// A page of people in email order, and the `after` of the next page when one follows.
#[derive(Debug)]
pub struct UsersPage {
    /// The people.
    pub users: Vec<User>,
    /// The last email of the page, when another page follows.
    pub next_after: Option<String>,
}

/// The people whose email or name contains `search` (trimmed; empty is none), after the
/// email `after`, at most `limit` (1 to [`MAX_PAGE`], default [`DEFAULT_PAGE`]). Every
/// invalid parameter is refused at once (`limit`, `search`, `after`).
pub async fn list_users(
    directory: &dyn DirectoryStore,
    search: Option<String>,
    after: Option<&str>,
    limit: Option<u32>,
) -> Result<UsersPage, OpError> {
    let mut errors = Vec::new();
    let limit = limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        errors.push(ValidationError::new(
            "limit",
            format!("`{limit}` must be between 1 and {MAX_PAGE}"),
        ));
    }
    let search = search
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty());
    if let Some(s) = &search
        && (s.chars().count() > MAX_SEARCH_CHARS || s.chars().any(char::is_control))
    {
        errors.push(ValidationError::new(
            "search",
            format!("must be at most {MAX_SEARCH_CHARS} characters, without control characters"),
        ));
    }
    let after = match after {
        Some(text) => match Email::new(text) {
            Ok(email) => Some(email),
            Err(e) => {
                errors.push(ValidationError::new("after", e.reason));
                None
            }
        },
        None => None,
    };
    if !errors.is_empty() {
        return Err(OpError::Invalid(errors));
    }
    // One more than asked tells whether another page follows.
    let mut users = directory
        .list_users(&UserQuery {
            search,
            after,
            limit: limit + 1,
        })
        .await?;
    let next_after = if users.len() > limit as usize {
        users.truncate(limit as usize);
        users.last().map(|u| u.email.as_str().to_owned())
    } else {
        None
    };
    Ok(UsersPage { users, next_after })
}

/// What changed of a person.
#[derive(Debug)]
pub struct UserChanged {
    /// The person as written.
    pub user: User,
    /// The new platform role, when it changed.
    pub role: Option<PlatformRole>,
    /// The new activity, when it changed.
    pub active: Option<bool>,
}

/// Sets person `user_id`'s platform role and activity when asked and different (the role
/// first). The store refuses (409 naming the field) to leave no active super admin.
pub async fn update_user(
    directory: &dyn DirectoryStore,
    user_id: UserId,
    role: Option<PlatformRole>,
    active: Option<bool>,
) -> Result<UserChanged, OpError> {
    let mut user = directory.get_user(user_id).await?;
    let role = role.filter(|r| *r != user.platform_role);
    if let Some(role) = role {
        user = directory.set_platform_role(user_id, role).await?;
    }
    let active = active.filter(|a| *a != user.active);
    if let Some(active) = active {
        user = directory.set_user_active(user_id, active).await?;
    }
    Ok(UserChanged { user, role, active })
}
