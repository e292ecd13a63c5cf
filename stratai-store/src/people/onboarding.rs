//! What happens when a person signs in with a verified email (the seed's onboarding flows):
//! their pending invitations are joined (flow A/C), at the first sign-in and every later
//! one, and at the first sign-in organizations that admit their email domain by
//! self-signup take them in with the default tier (flow B).
//!
//! Called by a sign-in (the server's store-backed directory, when it links or creates a user);
//! a failure to join one organization is logged and never blocks the sign-in.

use chrono::{DateTime, Utc};
use stratai_core::directory::{Email, Membership, OrgRole, User};
use stratai_core::ports::{DirectoryStore, GuardrailStore};
use stratai_core::{OrgId, StoreError};

/// What a first sign-in joined.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Joined {
    /// Organizations joined by accepting a pending invitation.
    pub by_invitation: Vec<OrgId>,
    /// Organizations joined by self-signup (their `signup_domains` admit the email).
    pub by_signup: Vec<OrgId>,
}

/// Whether `email` may be taken in at a first sign-in: it holds a pending, unexpired
/// invitation, or an active organization admits its domain by self-signup.
pub async fn may_join(
    directory: &dyn DirectoryStore,
    email: &Email,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let invited = directory
        .pending_invitations_for(email)
        .await?
        .iter()
        .any(|i| i.expires_at > now);
    if invited {
        return Ok(true);
    }
    Ok(directory
        .list_orgs()
        .await?
        .iter()
        .any(|org| org.active && org.settings.admits_signup(email)))
}

/// Joins `user` (whose email the identity provider verified) to every organization that
/// invited them and to every active organization admitting their domain by self-signup.
pub async fn join_at_first_sign_in(
    directory: &dyn DirectoryStore,
    guardrails: &dyn GuardrailStore,
    user: &User,
    now: DateTime<Utc>,
) -> Result<Joined, StoreError> {
    let mut joined = Joined {
        by_invitation: join_invitations(directory, guardrails, user, now).await?,
        by_signup: Vec::new(),
    };
    for org in &directory.list_orgs().await? {
        if !org.active
            || !org.settings.admits_signup(&user.email)
            || joined.by_invitation.contains(&org.id)
        {
            continue;
        }
        let membership = Membership::new(org.id, user.id, OrgRole::Member, now)
            .with_allowed_tiers(vec![org.settings.default_tier.clone()])
            .map_err(StoreError::from)?;
        match directory.add_member(org.id, &membership).await {
            Ok(()) => {
                tracing::info!(org_id = %org.id, user_id = %user.id, tier = %org.settings.default_tier, "joined by self-signup");
                joined.by_signup.push(org.id);
            }
            // Already a member (e.g. joined another way meanwhile).
            Err(StoreError::Conflict(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(joined)
}

/// Joins `user` (whose email the identity provider verified) to every organization holding
/// a pending, unexpired invitation for that email, with the invitation's profile applied
/// (its default tiers and guardrails). Run at every sign-in, so an invitation sent to
/// someone who already has an account is joined at their next sign-in. Self-signup is not
/// re-run at later sign-ins: a person an admin removed would otherwise be taken back in.
pub async fn join_invitations(
    directory: &dyn DirectoryStore,
    guardrails: &dyn GuardrailStore,
    user: &User,
    now: DateTime<Utc>,
) -> Result<Vec<OrgId>, StoreError> {
    let mut joined = Vec::new();
    let pending = directory.pending_invitations_for(&user.email).await?;
    for invitation in pending.iter().filter(|i| i.expires_at > now) {
        let org = invitation.org_id;
        match directory
            .accept_invitation(&invitation.token_hash, user, now)
            .await
        {
            Ok(membership) => {
                tracing::info!(org_id = %org, user_id = %user.id, "invitation joined at sign-in");
                joined.push(org);
                if let Err(e) = super::profiles::after_join(directory, guardrails, membership).await
                {
                    tracing::warn!(org_id = %org, user_id = %user.id, error = %e, "the invitation's profile was not applied");
                }
            }
            Err(
                e
                @ (StoreError::Conflict(_) | StoreError::Invalid(_) | StoreError::NotFound { .. }),
            ) => {
                // Already a member, a full group, or a race with another acceptance: the
                // invitation stays as the store left it; the link still works if pending.
                tracing::warn!(org_id = %org, user_id = %user.id, error = %e, "pending invitation not joined at sign-in");
            }
            Err(e) => return Err(e),
        }
    }
    Ok(joined)
}
