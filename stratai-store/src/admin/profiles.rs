//! User profile administration over the stores: a profile created or edited with its default
//! tiers known and its rules checked, never made unavailable to an organization where a
//! member holds it, and its new rules given to every member holding it. The rules engine is
//! the caller's: it passes its rule check (`stratai_guardrails::admin::check_rule`).

use chrono::{DateTime, Utc};
use stratai_core::directory::{ProfileAvailability, ProfileGuardrail, UserProfile};
use stratai_core::ports::{DirectoryStore, GuardrailStore, RuleRecord, TierStore};
use stratai_core::{OpError, OrgId, TierSlug, UserId, ValidationError};

use super::tiers::check_known;

/// Refuses a rule record the rules engine cannot compile, naming the field.
pub type RuleCheck = dyn Fn(&RuleRecord) -> Result<(), OpError> + Send + Sync;

/// A new profile as asked.
#[derive(Clone, Debug)]
pub struct NewProfile {
    /// Name.
    pub name: String,
    /// Description (trimmed; empty is none).
    pub description: Option<String>,
    /// Tiers a member with this profile starts with.
    pub default_tiers: Vec<TierSlug>,
    /// Who may use it (default: everyone).
    pub available_to: Option<ProfileAvailability>,
    /// Rules a member given the profile gets as member-level rules.
    pub default_guardrails: Vec<ProfileGuardrail>,
}

/// An edit of a profile: the fields to change.
#[derive(Clone, Debug, Default)]
pub struct ProfileEdit {
    /// Name.
    pub name: Option<String>,
    /// Description (`Some(None)` clears).
    pub description: Option<Option<String>>,
    /// Tiers a member given the profile from now on starts with.
    pub default_tiers: Option<Vec<TierSlug>>,
    /// The rules of every member holding it, from now on.
    pub default_guardrails: Option<Vec<ProfileGuardrail>>,
    /// Who may use it.
    pub available_to: Option<ProfileAvailability>,
}

/// Sets `rules` on `profile`, each checked by `check` (errors name
/// `default_guardrails[i].<field>`, every rule's at once).
pub fn set_guardrails(
    profile: &mut UserProfile,
    rules: &[ProfileGuardrail],
    check: &RuleCheck,
) -> Result<(), OpError> {
    profile.set_guardrails(rules)?;
    let records = profile.member_rules(OrgId::new(), UserId::new(), Utc::now())?;
    let mut errors = Vec::new();
    for (i, record) in records.iter().enumerate() {
        match check(record) {
            Ok(()) => {}
            Err(OpError::Invalid(fields)) => errors.extend(fields.into_iter().map(|f| {
                ValidationError::new(format!("default_guardrails[{i}].{}", f.field), f.reason)
            })),
            Err(other) => return Err(other),
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(OpError::Invalid(errors))
    }
}

fn description(text: Option<String>) -> Option<String> {
    text.map(|d| d.trim().to_owned()).filter(|d| !d.is_empty())
}

/// Creates `new` at `now` once its tiers are known (`default_tiers[i]`) and its rules pass
/// `check`.
pub async fn create_profile(
    directory: &dyn DirectoryStore,
    tiers: &dyn TierStore,
    new: NewProfile,
    check: &RuleCheck,
    now: DateTime<Utc>,
) -> Result<UserProfile, OpError> {
    check_known(tiers, &new.default_tiers, "default_tiers").await?;
    let mut profile = UserProfile::new(
        &new.name,
        new.default_tiers,
        new.available_to.unwrap_or(ProfileAvailability::All),
        now,
    )?;
    profile.description = description(new.description);
    set_guardrails(&mut profile, &new.default_guardrails, check)?;
    directory.create_profile(&profile).await?;
    Ok(profile)
}

/// Writes `edit` of profile `id` at `now`. A change of `available_to` is refused (conflict)
/// while a member of an organization it would exclude holds the profile. New rules reach
/// every member holding it: the answer's count says how many (none when the rules did not
/// change).
pub async fn update_profile(
    directory: &dyn DirectoryStore,
    tiers: &dyn TierStore,
    guardrails: &dyn GuardrailStore,
    id: stratai_core::ProfileId,
    edit: ProfileEdit,
    check: &RuleCheck,
    now: DateTime<Utc>,
) -> Result<(UserProfile, Option<usize>), OpError> {
    let mut profile = directory.get_profile(id).await?;
    if let Some(name) = &edit.name {
        // The constructor's checks (trimmed, non-empty, no control characters).
        profile.name = UserProfile::new(name, Vec::new(), profile.available_to, now)?.name;
    }
    if let Some(text) = edit.description {
        profile.description = description(text);
    }
    if let Some(tiers_asked) = edit.default_tiers {
        check_known(tiers, &tiers_asked, "default_tiers").await?;
        profile.default_tiers =
            UserProfile::new(&profile.name, tiers_asked, profile.available_to, now)?.default_tiers;
    }
    if let Some(rules) = &edit.default_guardrails {
        set_guardrails(&mut profile, rules, check)?;
    }
    if let Some(available_to) = edit.available_to {
        profile.available_to = available_to;
        for org in directory.list_orgs().await? {
            if profile.available_for(&org) {
                continue;
            }
            let holders = directory
                .list_members(org.id)
                .await?
                .iter()
                .filter(|m| m.profile_id == Some(id))
                .count();
            if holders > 0 {
                return Err(OpError::Conflict(format!(
                    "`available_to` would exclude `{}`, where {holders} member(s) hold the \
                     profile: give them another profile first",
                    org.slug
                )));
            }
        }
    }
    directory.update_profile(&profile).await?;
    let members = match edit.default_guardrails {
        Some(_) => {
            Some(crate::people::profiles::after_update(directory, guardrails, &profile).await?)
        }
        None => None,
    };
    Ok((profile, members))
}
