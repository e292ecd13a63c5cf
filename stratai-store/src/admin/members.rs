//! Member administration over the stores: the organization keeps an owner (its last owner is
//! neither demoted nor removed), and a member's edit (role, profile, tiers within the
//! subscription, budget) written with the profile's guardrails brought in step.

use stratai_core::directory::{Membership, OrgRole};
use stratai_core::money::Money;
use stratai_core::ports::{DirectoryStore, GuardrailStore, TierStore};
use stratai_core::{OpError, OrgId, ProfileId, StoreError, TierSlug, ValidationError};

use crate::people::profiles;

/// How many owners `org` has.
pub async fn owners(directory: &dyn DirectoryStore, org: OrgId) -> Result<usize, StoreError> {
    Ok(directory
        .list_members(org)
        .await?
        .iter()
        .filter(|m| m.role == OrgRole::Owner)
        .count())
}

/// Refuses removing `member` when they are their organization's last owner.
pub async fn check_removable(
    directory: &dyn DirectoryStore,
    member: &Membership,
) -> Result<(), OpError> {
    if member.role == OrgRole::Owner && owners(directory, member.org_id).await? <= 1 {
        return Err(OpError::Conflict(
            "the organization's last owner cannot be removed".to_owned(),
        ));
    }
    Ok(())
}

/// A member's edit; `None` keeps the field, `Some(None)` clears it.
#[derive(Clone, Debug, Default)]
pub struct MemberEdit {
    /// New role.
    pub role: Option<OrgRole>,
    /// Tier restriction (`Some(None)`: no restriction).
    pub allowed_tiers: Option<Option<Vec<TierSlug>>>,
    /// Personal monthly budget (`Some(None)`: none).
    pub monthly_budget: Option<Option<Money>>,
    /// Profile (`Some(None)`: none). Giving one sets the member's tiers to the profile's
    /// default tiers (unless `allowed_tiers` is set too) and its default guardrails become the
    /// member's rules, replacing the previous profile's (hand-written rules stay).
    pub profile_id: Option<Option<ProfileId>>,
}

/// Writes `edit` of `member`: the last owner is not demoted (409), a profile must exist and
/// be available to the organization, tiers must be within its subscription (422 naming the
/// field). Returns the membership as written.
pub async fn update_member(
    directory: &dyn DirectoryStore,
    tiers: &dyn TierStore,
    guardrails: &dyn GuardrailStore,
    mut member: Membership,
    edit: MemberEdit,
) -> Result<Membership, OpError> {
    let org_id = member.org_id;
    if member.role == OrgRole::Owner
        && edit.role.is_some_and(|r| r != OrgRole::Owner)
        && owners(directory, org_id).await? <= 1
    {
        return Err(OpError::Conflict(
            "the organization's last owner cannot be demoted".to_owned(),
        ));
    }
    if let Some(role) = edit.role {
        member.role = role;
    }
    // A profile first: its default tiers become the member's, unless the same edit sets
    // `allowed_tiers` too (then those win); its guardrails are synced once the member is saved.
    let previous_profile = member.profile_id;
    let mut given = None;
    if let Some(profile) = edit.profile_id {
        match profile {
            Some(p) => {
                let profile = directory.get_profile(p).await.map_err(|_| {
                    ValidationError::new("profile_id", format!("unknown profile `{p}`"))
                })?;
                let org = directory.get_org(org_id).await?;
                if let Some(why) = profiles::unavailable(&profile, &org) {
                    return Err(ValidationError::new("profile_id", why).into());
                }
                member.apply_profile(&profile);
                given = Some(profile);
            }
            None => member.profile_id = None,
        }
    }
    if let Some(allowed) = edit.allowed_tiers {
        if let Some(list) = &allowed {
            super::tiers::check_within_subscription(
                directory,
                tiers,
                org_id,
                list,
                "allowed_tiers",
            )
            .await?;
        }
        member.allowed_tiers = allowed;
    }
    if let Some(budget) = edit.monthly_budget {
        member.monthly_budget = budget;
    }
    directory.update_member(org_id, &member).await?;
    if edit.profile_id.is_some() {
        profiles::sync_rules(
            guardrails,
            org_id,
            member.user_id,
            previous_profile,
            given.as_ref(),
        )
        .await?;
    }
    Ok(member)
}
