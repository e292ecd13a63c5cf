//! The storage ports the server runs on ([`Stores`], opened from `DATABASE_URL` by
//! `stratai-store`) and the store-backed user directory for authentication (the first-start
//! seed is `stratai_store::seed`).

use std::sync::Arc;

use async_trait::async_trait;
use chrono::Utc;
use stratai_core::directory::{Email, PlatformRole, User};
use stratai_core::ports::{DirectoryStore, GuardrailStore};
use stratai_core::{StoreError, UserId};
pub use stratai_store::Stores;
use uuid::Uuid;

use crate::app::Readiness;
use crate::auth::identity::{DirectoryError, IdentityDirectory, LoginIdentity, Principal};

/// Readiness: the database answers a cheap query.
#[derive(Clone)]
pub struct StoreReadiness(pub Stores);

#[async_trait]
impl Readiness for StoreReadiness {
    async fn check(&self) -> Result<(), String> {
        self.0
            .tiers
            .list_tiers()
            .await
            .map(|_| ())
            .map_err(|e| format!("database: {e}"))
    }
}

/// Authentication's view of the user directory, over [`DirectoryStore`] (and the guardrail
/// rules, which an invitation's profile gives the person joining).
#[derive(Clone)]
pub struct StoreDirectory {
    directory: Arc<dyn DirectoryStore>,
    guardrails: Arc<dyn GuardrailStore>,
}

impl StoreDirectory {
    /// The adapter over `stores`.
    #[must_use]
    pub fn new(stores: &Stores) -> Self {
        Self {
            directory: stores.directory.clone(),
            guardrails: stores.guardrails.clone(),
        }
    }
}

fn principal(user: &User) -> Principal {
    Principal {
        user_id: user.id.as_uuid(),
        email: user.email.as_str().to_owned(),
        super_admin: user.platform_role == PlatformRole::SuperAdmin,
        active: user.active,
    }
}

fn backend(e: StoreError) -> DirectoryError {
    match e {
        StoreError::Conflict(m) => DirectoryError::Conflict(m),
        other => DirectoryError::Backend(other.to_string()),
    }
}

#[async_trait]
impl IdentityDirectory for StoreDirectory {
    async fn find_by_subject(&self, subject: &str) -> Result<Option<Principal>, DirectoryError> {
        let user = self
            .directory
            .find_user_by_subject(subject)
            .await
            .map_err(backend)?;
        Ok(user.as_ref().map(principal))
    }

    async fn find_by_email(&self, email: &str) -> Result<Option<Principal>, DirectoryError> {
        let Ok(email) = Email::new(email) else {
            return Ok(None);
        };
        let user = self
            .directory
            .find_user_by_email(&email)
            .await
            .map_err(backend)?;
        Ok(user.as_ref().map(principal))
    }

    async fn find_by_id(&self, id: Uuid) -> Result<Option<Principal>, DirectoryError> {
        match self.directory.get_user(UserId::from_uuid(id)).await {
            Ok(user) => Ok(Some(principal(&user))),
            Err(StoreError::NotFound { .. }) => Ok(None),
            Err(e) => Err(backend(e)),
        }
    }

    async fn login(&self, identity: &LoginIdentity) -> Result<Principal, DirectoryError> {
        let now = Utc::now();
        if let Some(mut user) = self
            .directory
            .find_user_by_subject(&identity.subject)
            .await
            .map_err(backend)?
        {
            user.last_login_at = Some(now);
            self.directory.update_user(&user).await.map_err(backend)?;
            return Ok(principal(&user));
        }
        let email = Email::new(&identity.email).map_err(|e| {
            DirectoryError::Conflict(format!("cannot use the provider's email: {e}"))
        })?;
        if let Some(mut user) = self
            .directory
            .find_user_by_email(&email)
            .await
            .map_err(backend)?
        {
            if user
                .oidc_subject
                .as_deref()
                .is_some_and(|s| s != identity.subject)
            {
                return Err(DirectoryError::Conflict(format!(
                    "`{email}` is linked to another identity"
                )));
            }
            user.oidc_subject = Some(identity.subject.clone());
            user.last_login_at = Some(now);
            self.directory.update_user(&user).await.map_err(backend)?;
            self.join_at_first_sign_in(&user, now).await;
            return Ok(principal(&user));
        }
        let mut user = User::new(email, identity.name.as_deref(), PlatformRole::User, now)
            .map_err(|e| DirectoryError::Conflict(e.to_string()))?;
        user.oidc_subject = Some(identity.subject.clone());
        user.last_login_at = Some(now);
        self.directory.create_user(&user).await.map_err(backend)?;
        self.join_at_first_sign_in(&user, now).await;
        Ok(principal(&user))
    }

    async fn mfa_required_by(&self, user: Uuid) -> Result<Option<String>, DirectoryError> {
        let memberships = self
            .directory
            .memberships_of_user(UserId::from_uuid(user))
            .await
            .map_err(backend)?;
        for m in memberships {
            let org = self.directory.get_org(m.org_id).await.map_err(backend)?;
            if org.active && org.settings.require_mfa {
                return Ok(Some(org.name));
            }
        }
        Ok(None)
    }

    async fn signed_in(&self, user: Uuid) -> Result<(), DirectoryError> {
        let now = Utc::now();
        let mut user = match self.directory.get_user(UserId::from_uuid(user)).await {
            Ok(u) => u,
            Err(StoreError::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(backend(e)),
        };
        if !user.active {
            return Ok(());
        }
        user.last_login_at = Some(now);
        self.directory.update_user(&user).await.map_err(backend)?;
        if let Err(e) = stratai_store::people::onboarding::join_invitations(
            self.directory.as_ref(),
            self.guardrails.as_ref(),
            &user,
            now,
        )
        .await
        {
            tracing::warn!(user_id = %user.id, error = %e, "joining invitations at sign-in failed");
        }
        Ok(())
    }

    async fn is_invited(&self, email: &str) -> Result<bool, DirectoryError> {
        let Ok(email) = Email::new(email) else {
            return Ok(false);
        };
        stratai_store::people::onboarding::may_join(self.directory.as_ref(), &email, Utc::now())
            .await
            .map_err(backend)
    }
}

impl StoreDirectory {
    /// The onboarding hook of a first sign-in (the identity's email is verified: OIDC checks
    /// `email_verified`, dev mode vouches for its own): joins pending invitations and
    /// self-signup organizations. Never fails the sign-in; a failure is logged.
    async fn join_at_first_sign_in(&self, user: &User, now: chrono::DateTime<Utc>) {
        if let Err(e) = stratai_store::people::onboarding::join_at_first_sign_in(
            self.directory.as_ref(),
            self.guardrails.as_ref(),
            user,
            now,
        )
        .await
        {
            tracing::warn!(user_id = %user.id, error = %e, "onboarding at first sign-in failed");
        }
    }
}
