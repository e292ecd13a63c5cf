//! What giving a member a profile does (the seed's user profiles): the member's tiers become
//! the profile's default tiers, and the profile's default guardrails become member-level
//! rules. Those rules have fixed ids ([`profile_rule_id`](stratai_core::directory::profile_rule_id)), so when the profile changes, is
//! taken away or is edited, exactly the rules it gave are replaced or removed; rules an admin
//! wrote by hand for the member are never touched.
//!
//! Every path that gives a profile goes through here: `PATCH .../members/{user}`, an
//! invitation with a profile accepted (API, accept page, sign-in), and a profile's update.

use chrono::Utc;
use stratai_core::directory::{
    Membership, Organization, ProfileAvailability, UserProfile, is_profile_rule,
};
use stratai_core::ports::{DirectoryStore, GuardrailStore};
use stratai_core::{OrgId, ProfileId, StoreError, UserId};

/// Why `profile` cannot be given in `org`, if it cannot (`available_to`).
#[must_use]
pub fn unavailable(profile: &UserProfile, org: &Organization) -> Option<String> {
    (!profile.available_for(org)).then(|| {
        format!(
            "profile `{}` is available to {} organizations only",
            profile.name,
            match profile.available_to {
                ProfileAvailability::All => "all",
                ProfileAvailability::Internal => "the internal",
                ProfileAvailability::Enterprise => "enterprise",
            }
        )
    })
}

/// Replaces the member-level rules `previous` gave `user` in `org` with those of `next`
/// (`None`: none). Hand-written rules stay.
pub async fn sync_rules(
    guardrails: &dyn GuardrailStore,
    org: OrgId,
    user: UserId,
    previous: Option<ProfileId>,
    next: Option<&UserProfile>,
) -> Result<(), StoreError> {
    let wanted = match next {
        Some(p) => p.member_rules(org, user, Utc::now())?,
        None => Vec::new(),
    };
    let owners: Vec<ProfileId> = previous.into_iter().chain(next.map(|p| p.id)).collect();
    for rule in guardrails.list_org_rules(org).await? {
        let given = owners.iter().any(|p| is_profile_rule(&rule, org, user, *p));
        if given && !wanted.iter().any(|w| w.id == rule.id) {
            match guardrails.delete_rule(org, rule.id).await {
                Ok(()) | Err(StoreError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
    }
    for rule in &wanted {
        guardrails.put_rule(org, rule).await?;
    }
    Ok(())
}

/// After an invitation with a profile was accepted: the new member takes the profile's
/// default tiers and its guardrails. Returns the membership as stored.
pub async fn after_join(
    directory: &dyn DirectoryStore,
    guardrails: &dyn GuardrailStore,
    mut membership: Membership,
) -> Result<Membership, StoreError> {
    let Some(profile_id) = membership.profile_id else {
        return Ok(membership);
    };
    let profile = directory.get_profile(profile_id).await?;
    membership.apply_profile(&profile);
    directory
        .update_member(membership.org_id, &membership)
        .await?;
    sync_rules(
        guardrails,
        membership.org_id,
        membership.user_id,
        None,
        Some(&profile),
    )
    .await?;
    Ok(membership)
}

/// After a profile was edited: every member holding it gets its new guardrails (their tiers
/// are theirs to change once given, so they stay). Answers how many members were updated.
pub async fn after_update(
    directory: &dyn DirectoryStore,
    guardrails: &dyn GuardrailStore,
    profile: &UserProfile,
) -> Result<usize, StoreError> {
    let mut updated = 0;
    for org in directory.list_orgs().await? {
        for member in directory.list_members(org.id).await? {
            if member.profile_id == Some(profile.id) {
                sync_rules(
                    guardrails,
                    org.id,
                    member.user_id,
                    Some(profile.id),
                    Some(profile),
                )
                .await?;
                updated += 1;
            }
        }
    }
    Ok(updated)
}
