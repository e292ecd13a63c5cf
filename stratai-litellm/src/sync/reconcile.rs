//! Reconcilers: directory drift (teams, keys, users) and spend (LiteLLM spend logs against
//! StratAI's usage records).

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use stratai_core::ids::{OrgId, UserId};
use stratai_core::usage::{UsageRecord, UsageStatus};

use super::mapping::{
    block_key_unless_active, desired_key, desired_team, is_managed, metadata_str, place_key,
    place_team, same_budget, sorted,
};
use super::{OrgMapping, SyncEngine, SyncError};
use crate::types::{
    KeyInfo, KeyListQuery, KeyRef, Organization, SpendLogRow, SpendLogsQuery, Team,
};

/// A kind of difference between StratAI and LiteLLM.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DriftKind {
    /// A group has no team.
    MissingTeam,
    /// A managed team has no group (of a known organization).
    ExtraTeam,
    /// A team's models differ from the group's tiers.
    TeamModels,
    /// A team's budget differs.
    TeamBudget,
    /// A team's alias differs.
    TeamAlias,
    /// A team's members differ from the group's.
    TeamMembers,
    /// A member has no key.
    MissingKey,
    /// A managed key belongs to no member (e.g. a removed member).
    ExtraKey,
    /// A member has more than one key.
    DuplicateKey,
    /// A key's models differ from the member's accessible models.
    KeyModels,
    /// A key's budget differs.
    KeyBudget,
    /// A key is in the wrong team.
    KeyTeam,
    /// The vault lacks the secret of the member's key.
    MissingSecret,
    /// A member has no LiteLLM user.
    MissingUser,
    /// An organization has no LiteLLM organization (organizations mode).
    MissingOrg,
    /// A LiteLLM organization's models differ from the organization's tiers.
    OrgModels,
    /// A LiteLLM organization's budget differs from the organization's monthly budget.
    OrgBudget,
    /// A LiteLLM organization's alias differs from the organization's slug.
    OrgAlias,
    /// A team is not in its organization's LiteLLM organization (organizations mode).
    TeamOrg,
    /// A key is not in its organization's LiteLLM organization (organizations mode).
    KeyOrg,
    /// A key's `rpm_limit` or `tpm_limit` differs from the member's rate-limit rules.
    KeyLimits,
    /// A key is blocked while its user is active, or usable while the user is deactivated.
    KeyBlocked,
}

impl DriftKind {
    /// Every kind, in order.
    pub const ALL: [DriftKind; 22] = [
        DriftKind::MissingTeam,
        DriftKind::ExtraTeam,
        DriftKind::TeamModels,
        DriftKind::TeamBudget,
        DriftKind::TeamAlias,
        DriftKind::TeamMembers,
        DriftKind::MissingKey,
        DriftKind::ExtraKey,
        DriftKind::DuplicateKey,
        DriftKind::KeyModels,
        DriftKind::KeyBudget,
        DriftKind::KeyTeam,
        DriftKind::MissingSecret,
        DriftKind::MissingUser,
        DriftKind::MissingOrg,
        DriftKind::OrgModels,
        DriftKind::OrgBudget,
        DriftKind::OrgAlias,
        DriftKind::TeamOrg,
        DriftKind::KeyOrg,
        DriftKind::KeyLimits,
        DriftKind::KeyBlocked,
    ];

    /// Snake-case name, for metrics labels and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            DriftKind::MissingTeam => "missing_team",
            DriftKind::ExtraTeam => "extra_team",
            DriftKind::TeamModels => "team_models",
            DriftKind::TeamBudget => "team_budget",
            DriftKind::TeamAlias => "team_alias",
            DriftKind::TeamMembers => "team_members",
            DriftKind::MissingKey => "missing_key",
            DriftKind::ExtraKey => "extra_key",
            DriftKind::DuplicateKey => "duplicate_key",
            DriftKind::KeyModels => "key_models",
            DriftKind::KeyBudget => "key_budget",
            DriftKind::KeyTeam => "key_team",
            DriftKind::MissingSecret => "missing_secret",
            DriftKind::MissingUser => "missing_user",
            DriftKind::MissingOrg => "missing_org",
            DriftKind::OrgModels => "org_models",
            DriftKind::OrgBudget => "org_budget",
            DriftKind::OrgAlias => "org_alias",
            DriftKind::TeamOrg => "team_org",
            DriftKind::KeyOrg => "key_org",
            DriftKind::KeyLimits => "key_limits",
            DriftKind::KeyBlocked => "key_blocked",
        }
    }
}

/// One difference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Drift {
    /// The organization.
    pub org_id: OrgId,
    /// What differs.
    pub kind: DriftKind,
    /// The LiteLLM or StratAI id concerned (team id, key token, user id).
    pub subject: String,
    /// Details.
    pub detail: String,
}

/// What a reconcile pass found (and repaired).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DriftReport {
    /// Organizations compared.
    pub orgs: usize,
    /// Differences found.
    pub drifts: Vec<Drift>,
    /// Repairs made (0 for a dry run).
    pub repaired: usize,
    /// Managed organizations, teams and keys of organizations StratAI does not know (left
    /// alone).
    pub foreign: usize,
    /// How organizations were mapped in this pass.
    pub org_mapping: Option<OrgMapping>,
}

impl DriftReport {
    /// Whether nothing differs.
    pub fn is_clean(&self) -> bool {
        self.drifts.is_empty()
    }

    /// How many differences of each kind were found (kinds without any left out).
    pub fn counts(&self) -> BTreeMap<DriftKind, usize> {
        let mut counts = BTreeMap::new();
        for drift in &self.drifts {
            *counts.entry(drift.kind).or_insert(0) += 1;
        }
        counts
    }
}

enum Repair {
    Org(OrgId),
    Group(OrgId, stratai_core::ids::GroupId),
    Member(OrgId, UserId),
    DeleteTeam(String),
    DeleteKey(String),
}

impl SyncEngine {
    /// Lists LiteLLM's teams, keys and users (and organizations, in organizations mode),
    /// compares them with StratAI's state for every organization and, with `repair`, fixes
    /// each difference (pushing the organization, group or member again, deleting extras).
    /// Managed entities of unknown organizations are only counted. In
    /// [`super::Organizations::Auto`] the proxy is probed again first, so a license added or
    /// removed since is noticed (and the drift it makes is reported).
    pub async fn reconcile(&self, repair: bool) -> Result<DriftReport, SyncError> {
        let mapping = self.detect_org_mapping(true).await?;
        let mut managed_orgs: BTreeMap<String, Organization> = BTreeMap::new();
        if mapping == OrgMapping::Organizations {
            match self.client.organization_list().await {
                Ok(list) => {
                    managed_orgs = list
                        .into_iter()
                        .filter(|o| is_managed(o.metadata.as_ref()))
                        .map(|o| (o.organization_id.clone(), o))
                        .collect();
                }
                Err(error) => self.enterprise_gone(error)?,
            }
        }
        let mapping = self.org_mapping().unwrap_or(mapping);
        let teams = self.client.team_list().await?;
        let keys = self.client.key_list(&KeyListQuery::default()).await?;
        let users: HashSet<String> = self
            .client
            .user_list()
            .await?
            .into_iter()
            .map(|u| u.user_id)
            .collect();
        let mut managed_teams: BTreeMap<String, Team> = teams
            .into_iter()
            .filter(|t| is_managed(t.metadata.as_ref()))
            .map(|t| (t.team_id.clone(), t))
            .collect();
        let mut managed_keys: BTreeMap<(String, String), Vec<KeyInfo>> = BTreeMap::new();
        for key in keys.into_iter().filter(|k| {
            is_managed(k.metadata.as_ref()) && !k.is_deleted() && !super::is_retiring(k)
        }) {
            let org = metadata_str(key.metadata.as_ref(), "stratai_org_id")
                .unwrap_or_default()
                .to_owned();
            let user = metadata_str(key.metadata.as_ref(), "stratai_user_id")
                .unwrap_or_default()
                .to_owned();
            managed_keys.entry((org, user)).or_default().push(key);
        }
        let catalog = self.source.catalog().await?;
        let names = &self.config.model_names;
        let duration = &self.config.budget_duration;
        let mut report = DriftReport {
            org_mapping: Some(mapping),
            ..DriftReport::default()
        };
        let mut repairs: Vec<Repair> = Vec::new();
        let orgs = self.source.orgs().await?;
        let known: HashSet<String> = orgs.iter().map(|o| o.id.to_string()).collect();
        for org in &orgs {
            report.orgs += 1;
            let org_text = org.id.to_string();
            let subscriptions = self.source.subscriptions(org.id).await?;
            let budgets = self.source.budgets(org.id).await?;
            let organization = match mapping {
                OrgMapping::Organizations => Some(self.desired_organization(org).await?),
                OrgMapping::Metadata => None,
            };
            let mut drift = |kind: DriftKind, subject: String, detail: String| {
                report.drifts.push(Drift {
                    org_id: org.id,
                    kind,
                    subject,
                    detail,
                });
            };
            if let Some(desired) = &organization {
                let mut wrong: Vec<(DriftKind, String)> = Vec::new();
                match managed_orgs.remove(&desired.organization_id) {
                    None => {
                        wrong.push((DriftKind::MissingOrg, format!("alias `{}`", desired.alias)))
                    }
                    Some(found) => {
                        if sorted(&found.models) != desired.models {
                            wrong.push((
                                DriftKind::OrgModels,
                                format!("{:?} instead of {:?}", found.models, desired.models),
                            ));
                        }
                        if !same_budget(found.max_budget(), desired.max_budget)
                            || (desired.max_budget.is_some()
                                && found.budget_duration() != desired.budget_duration.as_deref())
                        {
                            wrong.push((
                                DriftKind::OrgBudget,
                                format!(
                                    "{:?} per {:?} instead of {:?} per {:?}",
                                    found.max_budget(),
                                    found.budget_duration(),
                                    desired.max_budget,
                                    desired.budget_duration
                                ),
                            ));
                        }
                        if found.organization_alias.as_deref() != Some(desired.alias.as_str()) {
                            wrong.push((
                                DriftKind::OrgAlias,
                                format!(
                                    "{:?} instead of `{}`",
                                    found.organization_alias, desired.alias
                                ),
                            ));
                        }
                    }
                }
                if !wrong.is_empty() {
                    repairs.push(Repair::Org(org.id));
                }
                for (kind, detail) in wrong {
                    drift(kind, desired.organization_id.clone(), detail);
                }
            }
            for group in self.source.groups(org.id).await? {
                let members = self.source.group_members(org.id, group.id).await?;
                let mut desired = desired_team(
                    &catalog,
                    org,
                    &subscriptions,
                    &group,
                    &members,
                    names,
                    duration,
                    &budgets,
                )
                .map_err(SyncError::Mapping)?;
                if let Some(organization) = &organization {
                    place_team(&mut desired, organization);
                }
                let mut wrong: Vec<(DriftKind, String)> = Vec::new();
                match managed_teams.remove(&desired.team_id) {
                    None => wrong.push((DriftKind::MissingTeam, format!("group `{}`", group.name))),
                    Some(team) => {
                        if sorted(&team.models) != desired.models {
                            wrong.push((
                                DriftKind::TeamModels,
                                format!("{:?} instead of {:?}", team.models, desired.models),
                            ));
                        }
                        if !same_budget(team.max_budget, desired.max_budget)
                            || (desired.max_budget.is_some()
                                && team.budget_duration != desired.budget_duration)
                        {
                            wrong.push((
                                DriftKind::TeamBudget,
                                format!(
                                    "{:?} per {:?} instead of {:?} per {:?}",
                                    team.max_budget,
                                    team.budget_duration,
                                    desired.max_budget,
                                    desired.budget_duration
                                ),
                            ));
                        }
                        if desired.organization_id.is_some()
                            && team.organization_id != desired.organization_id
                        {
                            wrong.push((
                                DriftKind::TeamOrg,
                                format!(
                                    "{:?} instead of {:?}",
                                    team.organization_id, desired.organization_id
                                ),
                            ));
                        }
                        if team.team_alias.as_deref() != Some(desired.alias.as_str()) {
                            wrong.push((
                                DriftKind::TeamAlias,
                                format!("{:?} instead of `{}`", team.team_alias, desired.alias),
                            ));
                        }
                        let mut current: Vec<String> = team
                            .members_with_roles
                            .iter()
                            .filter(|m| m.role.as_deref() != Some("admin"))
                            .filter_map(|m| m.user_id.clone())
                            .collect();
                        current.sort();
                        if current != desired.members {
                            wrong.push((
                                DriftKind::TeamMembers,
                                format!("{current:?} instead of {:?}", desired.members),
                            ));
                        }
                    }
                }
                if !wrong.is_empty() {
                    repairs.push(Repair::Group(org.id, group.id));
                }
                for (kind, detail) in wrong {
                    drift(kind, desired.team_id.clone(), detail);
                }
            }
            for membership in self.source.members(org.id).await? {
                let user = membership.user_id;
                let user_text = user.to_string();
                let groups = self.source.member_groups(org.id, user).await?;
                let group_ids: Vec<_> = groups.iter().map(|g| g.id).collect();
                let limits = self.source.key_limits(org.id, user, &group_ids).await?;
                let mut desired = desired_key(
                    &catalog,
                    org,
                    &subscriptions,
                    &membership,
                    &groups,
                    names,
                    duration,
                    &budgets,
                    limits,
                )
                .map_err(SyncError::Mapping)?;
                if let Some(organization) = &organization {
                    place_key(&mut desired, organization);
                }
                let active = self.source.user(user).await?.is_none_or(|u| u.active);
                block_key_unless_active(&mut desired, active);
                let vault = self.vault.get(org.id, user).await?;
                let found = managed_keys
                    .remove(&(org_text.clone(), user_text.clone()))
                    .unwrap_or_default();
                let mut needs_push = false;
                if !users.contains(&user_text) {
                    drift(
                        DriftKind::MissingUser,
                        user_text.clone(),
                        "no LiteLLM user".to_owned(),
                    );
                    needs_push = true;
                }
                match found.as_slice() {
                    [] => {
                        drift(
                            DriftKind::MissingKey,
                            user_text.clone(),
                            format!("alias `{}`", desired.alias),
                        );
                        needs_push = true;
                    }
                    [key] => {
                        let token = key.token.clone().unwrap_or_default();
                        if sorted(&key.models) != desired.models {
                            drift(
                                DriftKind::KeyModels,
                                token.clone(),
                                format!("{:?} instead of {:?}", key.models, desired.models),
                            );
                            needs_push = true;
                        }
                        if !same_budget(key.max_budget, desired.max_budget)
                            || (desired.max_budget.is_some()
                                && key.budget_duration != desired.budget_duration)
                        {
                            drift(
                                DriftKind::KeyBudget,
                                token.clone(),
                                format!(
                                    "{:?} per {:?} instead of {:?} per {:?}",
                                    key.max_budget,
                                    key.budget_duration,
                                    desired.max_budget,
                                    desired.budget_duration
                                ),
                            );
                            needs_push = true;
                        }
                        if desired.organization_id.is_some()
                            && key.organization_id != desired.organization_id
                        {
                            drift(
                                DriftKind::KeyOrg,
                                token.clone(),
                                format!(
                                    "{:?} instead of {:?}",
                                    key.organization_id, desired.organization_id
                                ),
                            );
                            needs_push = true;
                        }
                        if key.rpm_limit != desired.rpm_limit || key.tpm_limit != desired.tpm_limit
                        {
                            drift(
                                DriftKind::KeyLimits,
                                token.clone(),
                                format!(
                                    "rpm {:?} tpm {:?} instead of rpm {:?} tpm {:?}",
                                    key.rpm_limit,
                                    key.tpm_limit,
                                    desired.rpm_limit,
                                    desired.tpm_limit
                                ),
                            );
                            needs_push = true;
                        }
                        if key.blocked.unwrap_or(false) != desired.blocked {
                            drift(
                                DriftKind::KeyBlocked,
                                token.clone(),
                                format!(
                                    "blocked {} while the user is {}",
                                    key.blocked.unwrap_or(false),
                                    if desired.blocked {
                                        "deactivated"
                                    } else {
                                        "active"
                                    }
                                ),
                            );
                            needs_push = true;
                        }
                        if key.team_id != desired.team_id {
                            drift(
                                DriftKind::KeyTeam,
                                token.clone(),
                                format!("{:?} instead of {:?}", key.team_id, desired.team_id),
                            );
                            needs_push = true;
                        }
                        if vault.as_ref().map(|(t, _)| t) != Some(&token) {
                            drift(
                                DriftKind::MissingSecret,
                                token,
                                "the vault has no secret for this key".to_owned(),
                            );
                            needs_push = true;
                        }
                    }
                    many => {
                        drift(
                            DriftKind::DuplicateKey,
                            user_text.clone(),
                            format!("{} keys", many.len()),
                        );
                        needs_push = true;
                    }
                }
                if needs_push {
                    repairs.push(Repair::Member(org.id, user));
                }
            }
        }
        // Managed LiteLLM organizations left over are of organizations StratAI does not know
        // (a known one's id is its own, so it was taken above).
        report.foreign += managed_orgs.len();
        for (team_id, team) in managed_teams {
            let org = metadata_str(team.metadata.as_ref(), "stratai_org_id").unwrap_or_default();
            match (known.contains(org), org.parse::<OrgId>()) {
                (true, Ok(org_id)) => {
                    report.drifts.push(Drift {
                        org_id,
                        kind: DriftKind::ExtraTeam,
                        subject: team_id.clone(),
                        detail: "no such group".to_owned(),
                    });
                    repairs.push(Repair::DeleteTeam(team_id));
                }
                _ => report.foreign += 1,
            }
        }
        for ((org, _user), keys) in managed_keys {
            match (known.contains(&org), org.parse::<OrgId>()) {
                (true, Ok(org_id)) => {
                    for key in keys {
                        let token = key.token.unwrap_or_default();
                        report.drifts.push(Drift {
                            org_id,
                            kind: DriftKind::ExtraKey,
                            subject: token.clone(),
                            detail: "no such member".to_owned(),
                        });
                        repairs.push(Repair::DeleteKey(token));
                    }
                }
                _ => report.foreign += keys.len(),
            }
        }
        if repair {
            for fix in repairs {
                match fix {
                    Repair::Org(org) => {
                        if let Some(org) = orgs.iter().find(|o| o.id == org) {
                            self.push_organization(org, None).await?;
                        }
                    }
                    Repair::Group(org, group) => {
                        self.sync_group(org, group, None).await?;
                    }
                    Repair::Member(org, user) => {
                        self.sync_member(org, user, None).await?;
                    }
                    Repair::DeleteTeam(team) => {
                        super::tolerate_not_found(self.client.team_delete(&[team]).await)?;
                    }
                    Repair::DeleteKey(token) => {
                        super::tolerate_not_found(
                            self.client.key_delete(&[KeyRef::Token(token)]).await,
                        )?;
                    }
                }
                report.repaired += 1;
            }
        }
        Ok(report)
    }

    /// Pulls LiteLLM's spend logs for `[from, to]` and compares them with `records` (StratAI's
    /// usage records of the same window). LiteLLM rows are those of the managed keys of the
    /// source's organizations (and any row whose request id a record names); rows are written
    /// in batches, so leave a lag of ~30 s before `to`.
    pub async fn reconcile_spend(
        &self,
        records: &[UsageRecord],
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        tolerance: Decimal,
    ) -> Result<SpendReport, SyncError> {
        let rows = self
            .client
            .spend_logs_range(&SpendLogsQuery::between(from, to))
            .await?;
        let known: HashSet<String> = self
            .source
            .orgs()
            .await?
            .iter()
            .map(|o| o.id.to_string())
            .collect();
        let mut tokens: HashSet<String> = self
            .client
            .key_list(&KeyListQuery::default())
            .await?
            .into_iter()
            .filter(|k| {
                is_managed(k.metadata.as_ref())
                    && metadata_str(k.metadata.as_ref(), "stratai_org_id")
                        .is_some_and(|o| known.contains(o))
            })
            .filter_map(|k| k.token)
            .collect();
        for org in records.iter().map(|r| r.org_id).collect::<HashSet<_>>() {
            for member in self.source.members(org).await? {
                if let Some((token, _)) = self.vault.get(org, member.user_id).await? {
                    tokens.insert(token);
                }
            }
        }
        let named: HashSet<&str> = records
            .iter()
            .filter_map(|r| r.litellm_request_id.as_deref())
            .collect();
        let ours: Vec<SpendLogRow> = rows
            .into_iter()
            .filter(|r| {
                named.contains(r.request_id.as_str())
                    || r.api_key.as_ref().is_some_and(|k| tokens.contains(k))
            })
            .collect();
        let mut report = compare_spend(records, &ours, tolerance);
        report.from = Some(from);
        report.to = Some(to);
        Ok(report)
    }
}

/// A call whose cost differs between the two sides by more than the tolerance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CostMismatch {
    /// LiteLLM's request id.
    pub litellm_request_id: String,
    /// StratAI's provider cost.
    pub stratai: Decimal,
    /// LiteLLM's spend.
    pub litellm: Decimal,
}

/// Outcome of a spend reconciliation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SpendReport {
    /// Window start.
    pub from: Option<DateTime<Utc>>,
    /// Window end.
    pub to: Option<DateTime<Utc>>,
    /// Calls found on both sides.
    pub matched: usize,
    /// StratAI records without a LiteLLM row (their LiteLLM request id, or StratAI's
    /// request id when the record has none).
    pub missing_in_litellm: Vec<String>,
    /// LiteLLM rows without a StratAI record (request ids).
    pub missing_in_stratai: Vec<String>,
    /// Costs differing beyond the tolerance.
    pub cost_mismatches: Vec<CostMismatch>,
    /// Sum of matched StratAI provider costs.
    pub stratai_total: Decimal,
    /// Sum of matched LiteLLM spend.
    pub litellm_total: Decimal,
}

impl SpendReport {
    /// Whether both sides agree.
    pub fn is_clean(&self) -> bool {
        self.missing_in_litellm.is_empty()
            && self.missing_in_stratai.is_empty()
            && self.cost_mismatches.is_empty()
    }
}

/// Matches usage records (not failed) with successful spend-log rows by LiteLLM request id
/// and reports what is missing on either side and costs differing by more than `tolerance`
/// (LiteLLM computes in float: `0.009000000000000001` for `0.009`).
pub fn compare_spend(
    records: &[UsageRecord],
    rows: &[SpendLogRow],
    tolerance: Decimal,
) -> SpendReport {
    let rows: HashMap<&str, &SpendLogRow> = rows
        .iter()
        .filter(|r| r.is_success())
        .map(|r| (r.request_id.as_str(), r))
        .collect();
    let mut report = SpendReport::default();
    let mut seen: HashSet<&str> = HashSet::new();
    for record in records.iter().filter(|r| r.status != UsageStatus::Failed) {
        let Some(id) = record.litellm_request_id.as_deref() else {
            report
                .missing_in_litellm
                .push(record.request_id.to_string());
            continue;
        };
        seen.insert(id);
        match rows.get(id) {
            None => report.missing_in_litellm.push(id.to_owned()),
            Some(row) => {
                report.matched += 1;
                let ours = record.provider_cost.amount();
                report.stratai_total += ours;
                report.litellm_total += row.spend;
                if (ours - row.spend).abs() > tolerance {
                    report.cost_mismatches.push(CostMismatch {
                        litellm_request_id: id.to_owned(),
                        stratai: ours,
                        litellm: row.spend,
                    });
                }
            }
        }
    }
    let mut extra: Vec<String> = rows
        .keys()
        .filter(|id| !seen.contains(*id))
        .map(|id| (*id).to_owned())
        .collect();
    extra.sort();
    report.missing_in_stratai = extra;
    report.missing_in_litellm.sort();
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;
    use stratai_core::Money;
    use stratai_core::ids::{ModelId, RequestId};

    fn record(id: &str, cost: Decimal) -> UsageRecord {
        UsageRecord {
            request_id: RequestId::new(),
            org_id: OrgId::new(),
            group_id: None,
            user_id: UserId::new(),
            tier_id: None,
            model: ModelId::new("mock-gpt").unwrap(),
            input_tokens: 1,
            output_tokens: 4,
            provider_cost: Money::new(cost).unwrap(),
            billed_amount: Money::new(cost).unwrap(),
            overage: Default::default(),
            litellm_request_id: Some(id.to_owned()),
            conversation_id: None,
            endpoint: "/v1/chat/completions".to_owned(),
            status: UsageStatus::Success,
            created_at: Utc::now(),
            lease_id: None,
        }
    }

    fn row(id: &str, spend: &str, status: &str) -> SpendLogRow {
        serde_json::from_str(&format!(
            r#"{{"request_id":"{id}","spend":{spend},"status":"{status}"}}"#
        ))
        .unwrap()
    }

    #[test]
    fn matches_reports_gaps_and_mismatches() {
        let records = [
            record("a", dec!(0.009)),
            record("b", dec!(0.02)),
            record("c", dec!(0.01)),
        ];
        let rows = [
            row("a", "0.009000000000000001", "success"),
            row("b", "0.03", "success"),
            row("d", "0.5", "success"),
            row("e", "0", "failure"),
        ];
        let report = compare_spend(&records, &rows, dec!(0.000001));
        assert_eq!(report.matched, 2);
        assert_eq!(report.missing_in_litellm, ["c"]);
        assert_eq!(report.missing_in_stratai, ["d"]);
        assert_eq!(report.cost_mismatches.len(), 1);
        assert_eq!(report.cost_mismatches[0].litellm_request_id, "b");
        assert!(!report.is_clean());
        let clean = compare_spend(&records[..1], &rows[..1], dec!(0.000001));
        assert!(clean.is_clean());
    }
}
