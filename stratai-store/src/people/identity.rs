//! Who signs in: the people of the directory as an identity provider's sign-in finds them.
//!
//! [`Identities`] resolves a provider's verified identity (an OIDC subject and its verified
//! email, see [`LoginIdentity`]) to a StratAI [`User`]: it links the subject to the user of
//! that email or creates that user, and runs the onboarding a sign-in triggers (joining
//! pending invitations and self-signup organizations, see [`super::onboarding`]). It also
//! answers what authentication asks of the directory besides: the user of a subject, an email
//! or an id, whether an email may get an account ([`Identities::is_invited`]) and whether one
//! of a user's organizations requires multi-factor authentication.
//!
//! It checks no token: the caller has verified the provider's token (signature, issuer,
//! audience, `email_verified`) before it calls [`Identities::login`]. Linking by an
//! unverified email would let anyone claim any account.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use stratai_core::directory::{Email, PlatformRole, User};
use stratai_core::ports::{DirectoryStore, GuardrailStore};
use stratai_core::{StoreError, UserId};

use super::onboarding;
use crate::Stores;

/// A verified identity at sign-in: the provider's subject and the email it verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoginIdentity {
    /// The provider's stable id of the person (OIDC `sub` of the configured issuer).
    pub subject: String,
    /// The email the provider marked as verified.
    pub email: String,
    /// Display name, if the provider gave one.
    pub name: Option<String>,
}

/// Why a sign-in or a lookup failed.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The identity cannot be linked: the email's user is linked to another subject, the
    /// provider's email or name is not acceptable, or the store refused a write as a
    /// conflict (e.g. the same person signing in twice at once).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The store failed; the message is for logs.
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for IdentityError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(m) => Self::Conflict(m),
            other => Self::Store(other),
        }
    }
}

/// The directory's people as sign-in sees them, over the directory store and the guardrail
/// store (an invitation's profile gives the person joining its default guardrails). Cheap to
/// clone.
#[derive(Clone)]
pub struct Identities {
    directory: Arc<dyn DirectoryStore>,
    guardrails: Arc<dyn GuardrailStore>,
}

impl std::fmt::Debug for Identities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identities").finish_non_exhaustive()
    }
}

impl Identities {
    /// Sign-in over these stores.
    #[must_use]
    pub fn new(directory: Arc<dyn DirectoryStore>, guardrails: Arc<dyn GuardrailStore>) -> Self {
        Self {
            directory,
            guardrails,
        }
    }

    /// Sign-in over the directory and guardrail ports of `stores`.
    #[must_use]
    pub fn over(stores: &Stores) -> Self {
        Self::new(stores.directory.clone(), stores.guardrails.clone())
    }

    /// The user linked to the provider's `subject`.
    pub async fn find_by_subject(&self, subject: &str) -> Result<Option<User>, IdentityError> {
        Ok(self.directory.find_user_by_subject(subject).await?)
    }

    /// The user with this email; none for a string that is no email address.
    pub async fn find_by_email(&self, email: &str) -> Result<Option<User>, IdentityError> {
        let Ok(email) = Email::new(email) else {
            return Ok(None);
        };
        Ok(self.directory.find_user_by_email(&email).await?)
    }

    /// The user with this id.
    pub async fn find_by_id(&self, id: UserId) -> Result<Option<User>, IdentityError> {
        match self.directory.get_user(id).await {
            Ok(user) => Ok(Some(user)),
            Err(StoreError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The sign-in of a verified identity at `now`, recorded as the user's last login:
    /// - a subject already linked finds its user;
    /// - else the user with the identity's email is linked to the subject, unless linked to
    ///   another subject already ([`IdentityError::Conflict`]);
    /// - else that user is created (a platform user, no organization of their own).
    ///
    /// A first sign-in (link or creation) joins the organizations that invited the email and
    /// those admitting its domain by self-signup; an onboarding that fails is logged and
    /// never fails the sign-in. Deactivated users are found all the same: refusing them is
    /// the caller's (`user.active`).
    pub async fn login(
        &self,
        identity: &LoginIdentity,
        now: DateTime<Utc>,
    ) -> Result<User, IdentityError> {
        if let Some(mut user) = self
            .directory
            .find_user_by_subject(&identity.subject)
            .await?
        {
            user.last_login_at = Some(now);
            self.directory.update_user(&user).await?;
            return Ok(user);
        }
        let email = Email::new(&identity.email).map_err(|e| {
            IdentityError::Conflict(format!("cannot use the provider's email: {e}"))
        })?;
        if let Some(mut user) = self.directory.find_user_by_email(&email).await? {
            if user
                .oidc_subject
                .as_deref()
                .is_some_and(|s| s != identity.subject)
            {
                return Err(IdentityError::Conflict(format!(
                    "`{email}` is linked to another identity"
                )));
            }
            user.oidc_subject = Some(identity.subject.clone());
            user.last_login_at = Some(now);
            self.directory.update_user(&user).await?;
            self.join_at_first_sign_in(&user, now).await;
            return Ok(user);
        }
        let mut user = User::new(email, identity.name.as_deref(), PlatformRole::User, now)
            .map_err(|e| IdentityError::Conflict(e.to_string()))?;
        user.oidc_subject = Some(identity.subject.clone());
        user.last_login_at = Some(now);
        self.directory.create_user(&user).await?;
        self.join_at_first_sign_in(&user, now).await;
        Ok(user)
    }

    /// A later sign-in of `user` with their verified email (a browser login, a dev-mode
    /// sign-in) at `now`: records it and joins the invitations sent to that email since.
    /// An unknown or deactivated user is left alone; an invitation that cannot be joined is
    /// logged and never fails the sign-in.
    pub async fn signed_in(&self, user: UserId, now: DateTime<Utc>) -> Result<(), IdentityError> {
        let Some(mut user) = self.find_by_id(user).await? else {
            return Ok(());
        };
        if !user.active {
            return Ok(());
        }
        user.last_login_at = Some(now);
        self.directory.update_user(&user).await?;
        if let Err(e) = onboarding::join_invitations(
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

    /// Whether `email` may get an account at its first sign-in at `now`: it holds a pending,
    /// unexpired invitation, or an active organization admits its domain by self-signup.
    /// False for a string that is no email address.
    pub async fn is_invited(&self, email: &str, now: DateTime<Utc>) -> Result<bool, IdentityError> {
        let Ok(email) = Email::new(email) else {
            return Ok(false);
        };
        Ok(onboarding::may_join(self.directory.as_ref(), &email, now).await?)
    }

    /// The name of an active organization of `user` that requires multi-factor
    /// authentication (`settings.require_mfa`), if any: a sign-in with one factor is refused
    /// while there is one.
    pub async fn mfa_required_by(&self, user: UserId) -> Result<Option<String>, IdentityError> {
        for m in self.directory.memberships_of_user(user).await? {
            let org = self.directory.get_org(m.org_id).await?;
            if org.active && org.settings.require_mfa {
                return Ok(Some(org.name));
            }
        }
        Ok(None)
    }

    /// The onboarding of a first sign-in: never fails it, a failure is logged.
    async fn join_at_first_sign_in(&self, user: &User, now: DateTime<Utc>) {
        if let Err(e) = onboarding::join_at_first_sign_in(
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
