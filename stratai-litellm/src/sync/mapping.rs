//! The StratAI -> LiteLLM mapping, as pure functions from directory state to the desired
//! LiteLLM entities (see the crate README, "Mapping").

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde_json::{Value, json};
use stratai_core::directory::{Group, Membership, Organization};
use stratai_core::ids::{ModelId, OrgId, UserId};
use stratai_core::tiers::{
    MemberContext, TierCatalog, TierSubscription, resolve_group_tiers, resolve_tiers,
};

use crate::types::Metadata;

/// The model name a key or team gets when nothing is allowed: LiteLLM reads an empty
/// `models` list as "every model", so an empty list must never be sent.
pub const NO_MODELS: &str = "stratai-no-models";

/// Metadata marker of the entities the sync manages.
pub const MANAGED_BY: &str = "stratai";

/// How StratAI model ids become LiteLLM model names: identity unless overridden.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ModelNames {
    overrides: BTreeMap<String, String>,
}

impl ModelNames {
    /// Identity mapping.
    pub fn identity() -> Self {
        Self::default()
    }

    /// Maps `model` (a StratAI model id) to `litellm_name`.
    pub fn with(mut self, model: impl Into<String>, litellm_name: impl Into<String>) -> Self {
        self.overrides.insert(model.into(), litellm_name.into());
        self
    }

    /// The LiteLLM names of `models`, sorted and deduplicated, never empty (see [`NO_MODELS`]).
    pub fn litellm_models(&self, models: &[ModelId]) -> Vec<String> {
        let mut names: Vec<String> = models
            .iter()
            .map(|m| {
                self.overrides
                    .get(m.as_str())
                    .cloned()
                    .unwrap_or_else(|| m.as_str().to_owned())
            })
            .collect();
        names.sort();
        names.dedup();
        if names.is_empty() {
            names.push(NO_MODELS.to_owned());
        }
        names
    }
}

/// A team as a group should look in LiteLLM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredTeam {
    /// `team_id` = the group id.
    pub team_id: String,
    /// `<org slug>/<group name>`.
    pub alias: String,
    /// Models of the tiers the group may use.
    pub models: Vec<String>,
    /// The group budget.
    pub max_budget: Option<Decimal>,
    /// Budget period when there is a budget.
    pub budget_duration: Option<String>,
    /// Members (user ids).
    pub members: Vec<String>,
    /// The organization.
    pub org_id: OrgId,
}

/// A virtual key as a member should have it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredKey {
    /// `stratai:<org id>:<user id>`.
    pub alias: String,
    /// The LiteLLM user (= our user id).
    pub user_id: String,
    /// The member's first group (by name, then id) as the key's team, if any.
    pub team_id: Option<String>,
    /// The member's accessible models.
    pub models: Vec<String>,
    /// The member budget.
    pub max_budget: Option<Decimal>,
    /// Budget period when there is a budget.
    pub budget_duration: Option<String>,
    /// The organization.
    pub org_id: OrgId,
    /// The member.
    pub member: UserId,
}

/// The key alias of a member: unique per (org, user), which LiteLLM enforces.
pub fn key_alias(org: OrgId, user: UserId) -> String {
    format!("stratai:{org}:{user}")
}

/// The team of a group.
pub fn desired_team(
    catalog: &TierCatalog,
    org: &Organization,
    subscriptions: &[TierSubscription],
    group: &Group,
    members: &[UserId],
    names: &ModelNames,
    budget_duration: &str,
) -> Result<DesiredTeam, String> {
    let access =
        resolve_group_tiers(catalog, org, subscriptions, group).map_err(|e| e.to_string())?;
    let mut members: Vec<String> = members.iter().map(ToString::to_string).collect();
    members.sort();
    members.dedup();
    Ok(DesiredTeam {
        team_id: group.id.to_string(),
        alias: format!("{}/{}", org.slug, group.name),
        models: names.litellm_models(&access.accessible_models()),
        max_budget: group.monthly_budget.map(|m| m.amount().normalize()),
        budget_duration: group.monthly_budget.map(|_| budget_duration.to_owned()),
        members,
        org_id: org.id,
    })
}

/// The key of a member.
pub fn desired_key(
    catalog: &TierCatalog,
    org: &Organization,
    subscriptions: &[TierSubscription],
    membership: &Membership,
    groups: &[Group],
    names: &ModelNames,
    budget_duration: &str,
) -> Result<DesiredKey, String> {
    let ctx = MemberContext {
        org,
        subscriptions,
        membership,
        groups,
    };
    let access = resolve_tiers(catalog, &ctx).map_err(|e| e.to_string())?;
    let team = groups
        .iter()
        .min_by(|a, b| (&a.name, a.id).cmp(&(&b.name, b.id)));
    Ok(DesiredKey {
        alias: key_alias(org.id, membership.user_id),
        user_id: membership.user_id.to_string(),
        team_id: team.map(|g| g.id.to_string()),
        models: names.litellm_models(&access.accessible_models()),
        max_budget: membership.monthly_budget.map(|m| m.amount().normalize()),
        budget_duration: membership
            .monthly_budget
            .map(|_| budget_duration.to_owned()),
        org_id: org.id,
        member: membership.user_id,
    })
}

/// Metadata of a managed team.
pub fn team_metadata(team: &DesiredTeam, version: i64) -> Metadata {
    let value = json!({
        "managed_by": MANAGED_BY,
        "stratai_org_id": team.org_id.to_string(),
        "stratai_group_id": team.team_id,
        "stratai_version": version,
    });
    value.as_object().cloned().unwrap_or_default()
}

/// Metadata of a managed key.
pub fn key_metadata(key: &DesiredKey, version: i64) -> Metadata {
    let value = json!({
        "managed_by": MANAGED_BY,
        "stratai_org_id": key.org_id.to_string(),
        "stratai_user_id": key.member.to_string(),
        "stratai_version": version,
    });
    value.as_object().cloned().unwrap_or_default()
}

/// Whether metadata marks an entity managed by StratAI.
pub fn is_managed(metadata: Option<&Metadata>) -> bool {
    metadata
        .and_then(|m| m.get("managed_by"))
        .and_then(Value::as_str)
        == Some(MANAGED_BY)
}

/// The StratAI version recorded in metadata (0 when none).
pub fn recorded_version(metadata: Option<&Metadata>) -> i64 {
    metadata
        .and_then(|m| m.get("stratai_version"))
        .and_then(Value::as_i64)
        .unwrap_or(0)
}

/// A string field of the metadata.
pub(super) fn metadata_str<'a>(metadata: Option<&'a Metadata>, field: &str) -> Option<&'a str> {
    metadata.and_then(|m| m.get(field)).and_then(Value::as_str)
}

/// Sorted copy of a model list, for comparisons.
pub(super) fn sorted(models: &[String]) -> Vec<String> {
    let mut models = models.to_vec();
    models.sort();
    models.dedup();
    models
}

/// Budgets compare by value (`10.0` == `10`).
pub(super) fn same_budget(a: Option<Decimal>, b: Option<Decimal>) -> bool {
    a.map(|d| d.normalize()) == b.map(|d| d.normalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_model_lists_become_the_sentinel() {
        let names = ModelNames::identity().with("gpt-4o-mini", "mock-gpt");
        assert_eq!(names.litellm_models(&[]), [NO_MODELS]);
        let models = [
            ModelId::new("gpt-4o-mini").unwrap(),
            ModelId::new("claude-x").unwrap(),
            ModelId::new("gpt-4o-mini").unwrap(),
        ];
        assert_eq!(names.litellm_models(&models), ["claude-x", "mock-gpt"]);
    }

    #[test]
    fn budgets_compare_by_value() {
        assert!(same_budget(
            Some(Decimal::new(100, 1)),
            Some(Decimal::new(10, 0))
        ));
        assert!(!same_budget(None, Some(Decimal::ONE)));
    }
}
