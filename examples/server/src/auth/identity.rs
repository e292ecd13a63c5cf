//! The port between authentication and the user directory.
//!
//! Authentication only needs four things from the directory; they sit behind
//! [`IdentityDirectory`] so the server can run on the in-memory [`MemoryDirectory`] in tests
//! and on stratai-store in production.

use std::collections::HashMap;
use std::sync::RwLock;

use async_trait::async_trait;
use uuid::Uuid;

/// The authenticated caller, as the rest of the server sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// StratAI user id.
    pub user_id: Uuid,
    /// The user's email (lowercase).
    pub email: String,
    /// Platform super admin.
    pub super_admin: bool,
    /// Deactivated users are refused at authentication.
    pub active: bool,
}

/// A verified identity at first login: the provider's subject and its verified email.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoginIdentity {
    /// OIDC `sub` of the configured issuer.
    pub subject: String,
    /// Email the provider marked as verified (lowercase).
    pub email: String,
    /// Display name, if the provider gave one.
    pub name: Option<String>,
}

/// What the directory can fail with.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    /// The identity cannot be linked, e.g. the email's user is linked to another subject.
    #[error("conflict: {0}")]
    Conflict(String),
    /// Backend failure; the message is for logs.
    #[error("directory backend: {0}")]
    Backend(String),
}

/// The user directory as authentication sees it.
#[async_trait]
pub trait IdentityDirectory: Send + Sync + 'static {
    /// The user linked to OIDC subject `subject`.
    async fn find_by_subject(&self, subject: &str) -> Result<Option<Principal>, DirectoryError>;
    /// The user with this email (exact, lowercase).
    async fn find_by_email(&self, email: &str) -> Result<Option<Principal>, DirectoryError>;
    /// The user with this id.
    async fn find_by_id(&self, id: Uuid) -> Result<Option<Principal>, DirectoryError>;
    /// First login of a verified identity: links `subject` to the user with this email, or
    /// creates that user; a pending invitation for the email may be joined here. Linking a
    /// user already linked to a different subject is a [`DirectoryError::Conflict`].
    async fn login(&self, identity: &LoginIdentity) -> Result<Principal, DirectoryError>;
    /// Whether `email` holds a pending, unexpired invitation or is admitted by an
    /// organization's self-signup domains (dev mode lets such a person get a token, as a
    /// first OIDC login would create them).
    async fn is_invited(&self, _email: &str) -> Result<bool, DirectoryError> {
        Ok(false)
    }
    /// The name of an active organization of `user` that requires multi-factor
    /// authentication (`settings.require_mfa`), if any.
    async fn mfa_required_by(&self, _user: Uuid) -> Result<Option<String>, DirectoryError> {
        Ok(None)
    }
    /// A sign-in of `user` whose email the provider verified (a browser login, a dev-mode
    /// sign-in): records it and joins the pending invitations of that email made since
    /// their first sign-in. Never fails the sign-in for an invitation that cannot be joined.
    async fn signed_in(&self, _user: Uuid) -> Result<(), DirectoryError> {
        Ok(())
    }
}

#[derive(Clone, Debug)]
struct MemoryUser {
    principal: Principal,
    subject: Option<String>,
}

/// An in-memory directory for tests and for running before a store is attached.
#[derive(Debug, Default)]
pub struct MemoryDirectory {
    users: RwLock<HashMap<Uuid, MemoryUser>>,
}

impl MemoryDirectory {
    /// An empty directory.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a user (e.g. the seeded super admin) and returns it.
    pub fn add_user(&self, email: &str, super_admin: bool) -> Principal {
        let principal = Principal {
            user_id: Uuid::now_v7(),
            email: email.trim().to_ascii_lowercase(),
            super_admin,
            active: true,
        };
        self.write().insert(
            principal.user_id,
            MemoryUser {
                principal: principal.clone(),
                subject: None,
            },
        );
        principal
    }

    /// The user linked to `subject`, if any (synchronous, for tests and seeding).
    #[must_use]
    pub fn by_subject(&self, subject: &str) -> Option<Principal> {
        self.read()
            .values()
            .find(|u| u.subject.as_deref() == Some(subject))
            .map(|u| u.principal.clone())
    }

    /// Marks a user active or deactivated.
    pub fn set_active(&self, id: Uuid, active: bool) {
        if let Some(u) = self.write().get_mut(&id) {
            u.principal.active = active;
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<Uuid, MemoryUser>> {
        self.users
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<Uuid, MemoryUser>> {
        self.users
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait]
impl IdentityDirectory for MemoryDirectory {
    async fn find_by_subject(&self, subject: &str) -> Result<Option<Principal>, DirectoryError> {
        Ok(self
            .read()
            .values()
            .find(|u| u.subject.as_deref() == Some(subject))
            .map(|u| u.principal.clone()))
    }

    async fn find_by_email(&self, email: &str) -> Result<Option<Principal>, DirectoryError> {
        Ok(self
            .read()
            .values()
            .find(|u| u.principal.email == email)
            .map(|u| u.principal.clone()))
    }

    async fn find_by_id(&self, id: Uuid) -> Result<Option<Principal>, DirectoryError> {
        Ok(self.read().get(&id).map(|u| u.principal.clone()))
    }

    async fn login(&self, identity: &LoginIdentity) -> Result<Principal, DirectoryError> {
        let mut users = self.write();
        if let Some(u) = users
            .values()
            .find(|u| u.subject.as_deref() == Some(identity.subject.as_str()))
        {
            return Ok(u.principal.clone());
        }
        if let Some(u) = users
            .values_mut()
            .find(|u| u.principal.email == identity.email)
        {
            return match &u.subject {
                Some(other) if *other != identity.subject => Err(DirectoryError::Conflict(
                    format!("`{}` is linked to another identity", identity.email),
                )),
                _ => {
                    u.subject = Some(identity.subject.clone());
                    Ok(u.principal.clone())
                }
            };
        }
        let principal = Principal {
            user_id: Uuid::now_v7(),
            email: identity.email.clone(),
            super_admin: false,
            active: true,
        };
        users.insert(
            principal.user_id,
            MemoryUser {
                principal: principal.clone(),
                subject: Some(identity.subject.clone()),
            },
        );
        Ok(principal)
    }
}
