//! The sync engine: pushes StratAI's directory to LiteLLM from core's outbox, and the
//! reconcilers that find and repair drift and compare spend.
//!
//! Events carry no payload: applying an event pushes the entity's *current* state, so
//! events of one entity within a batch are coalesced into one push at their highest
//! version, and an event older than the version already applied is completed without a
//! call (a stale update never overwrites a newer one).

mod limits;
mod mapping;
mod orgs;
mod reconcile;
pub mod runner;
mod source;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::AtomicU8;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use chrono::{DateTime, Utc};
use stratai_core::StoreError;
use stratai_core::ids::{GroupId, OrgId, UserId};
use stratai_core::ports::{OutboxEntity, OutboxEvent, OutboxStore};
use tokio::sync::Mutex;

pub use limits::PolicyKeyLimits;
pub use mapping::{
    DesiredKey, DesiredOrg, DesiredTeam, KeyLimits, MANAGED_BY, ModelNames, NO_MODELS,
    block_key_unless_active, desired_key, desired_org, desired_team, is_managed, key_alias,
    key_metadata, litellm_period, org_metadata, org_monthly_budget, place_key, place_team,
    recorded_version, scope_budget, team_metadata,
};
pub use reconcile::{CostMismatch, Drift, DriftKind, DriftReport, SpendReport, compare_spend};
pub use runner::{SyncRunner, SyncSchedule, TickReport};
pub use source::{CoreDirectory, KeyVault, MemoryKeyVault, RateLimitSource, SyncSource};

use crate::Secret;
use crate::client::{LiteLlmClient, RetryPolicy};
use crate::error::LiteLlmError;
use crate::types::{
    KeyGenerate, KeyInfo, KeyListQuery, KeyRef, KeyUpdate, TeamNew, TeamUpdate, UserNew,
};
use mapping::{metadata_str, same_budget, sorted};

/// Sync settings.
#[derive(Clone, Debug)]
pub struct SyncConfig {
    /// Outbox events read per pass.
    pub batch_size: u32,
    /// Attempts before an event failing with a permanent error (bad request, denial, ...)
    /// is dead-lettered.
    pub max_attempts: u32,
    /// Attempts before an event failing with transient errors only (LiteLLM down, 5xx,
    /// timeouts) is dead-lettered: high, so outages are waited out, not dead-lettered.
    pub max_transient_attempts: u32,
    /// Delay before retrying a failed event: exponential with jitter between these bounds.
    pub backoff: RetryPolicy,
    /// LiteLLM `budget_duration` of monthly budgets: `1mo`, which LiteLLM 1.108 resets at
    /// 00:00 on the 1st of each month in the proxy's timezone (`litellm_settings.timezone`,
    /// UTC by default), i.e. on StratAI's calendar month for organizations in that timezone
    /// (see the crate README, "Budget periods").
    pub budget_duration: String,
    /// StratAI model id -> LiteLLM model name.
    pub model_names: ModelNames,
    /// Whether organizations become LiteLLM organizations (LiteLLM Enterprise).
    pub organizations: Organizations,
    /// Lifetime of a member's virtual key (LiteLLM duration syntax, `365d`): LiteLLM refuses
    /// the key after it. `None`: keys never expire.
    pub key_duration: Option<String>,
    /// A key expiring within this is rotated by [`SyncEngine::rotate_keys`].
    pub rotate_before: Duration,
    /// How long a rotated key keeps working (for calls that read it before the rotation)
    /// before [`SyncEngine::rotate_keys`] deletes it.
    pub key_grace: Duration,
}

/// Whether StratAI organizations become LiteLLM organizations, which LiteLLM offers only
/// with an Enterprise license.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Organizations {
    /// Probe the proxy once (`GET /organization/info`) and use organizations when it offers
    /// them, else the metadata mapping. The answer is kept; [`SyncEngine::reconcile`] probes
    /// again, so a license added or removed later is noticed.
    #[default]
    Auto,
    /// Never: org ids only in team and key metadata, the org budget enforced by StratAI.
    Off,
    /// Always: a proxy without the license makes every organization push fail
    /// (`EnterpriseOnly`, dead-lettered like any permanent error).
    On,
}

/// How organizations are mapped, once known ([`SyncEngine::org_mapping`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OrgMapping {
    /// Each organization is a LiteLLM organization (`organization_id` = the org id) with the
    /// models of its tiers and its monthly budget; its teams and keys belong to it.
    Organizations,
    /// No LiteLLM object: the org id is in every team's and key's metadata and StratAI
    /// enforces the org budget itself.
    Metadata,
}

impl Default for SyncConfig {
    fn default() -> Self {
        Self {
            batch_size: 200,
            max_attempts: 5,
            max_transient_attempts: 1000,
            backoff: RetryPolicy {
                max_retries: 0,
                min_delay: Duration::from_secs(1),
                max_delay: Duration::from_secs(300),
            },
            budget_duration: "1mo".to_owned(),
            model_names: ModelNames::identity(),
            organizations: Organizations::Auto,
            key_duration: Some("365d".to_owned()),
            rotate_before: Duration::from_secs(30 * 86_400),
            key_grace: Duration::from_secs(3600),
        }
    }
}

/// Why syncing an entity failed.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// LiteLLM refused or could not be reached.
    #[error("litellm: {0}")]
    LiteLlm(#[from] LiteLlmError),
    /// The StratAI store failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// The directory state cannot be mapped (e.g. inconsistent tenant data).
    #[error("mapping: {0}")]
    Mapping(String),
}

impl SyncError {
    /// Whether a retry may succeed without anyone changing anything.
    pub fn is_transient(&self) -> bool {
        match self {
            SyncError::LiteLlm(e) => e.is_transient(),
            SyncError::Store(StoreError::Backend(_)) => true,
            SyncError::Store(_) | SyncError::Mapping(_) => false,
        }
    }
}

/// What applying one entity did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// LiteLLM now matches the entity's current state.
    Done,
    /// LiteLLM already holds a newer version: nothing was written.
    Stale,
}

/// Outcome of one pass over the outbox.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PassReport {
    /// Events read.
    pub events: usize,
    /// Entities pushed.
    pub entities: usize,
    /// Events completed (including coalesced and stale ones).
    pub completed: usize,
    /// Events completed without a write because a newer version was applied.
    pub stale: usize,
    /// Events that failed and will be retried.
    pub failed: usize,
    /// Events given up on.
    pub dead_lettered: usize,
    /// How organizations were mapped (`None` while not needed yet, in [`Organizations::Auto`]).
    pub org_mapping: Option<OrgMapping>,
    /// Members pushed again because the rate-limit rules changed.
    pub limit_pushes: usize,
}

/// Pushes StratAI's directory to LiteLLM. Run one per deployment (the outbox is consumed
/// by a single worker; versions make a second one harmless but wasteful).
pub struct SyncEngine {
    client: LiteLlmClient,
    source: Arc<dyn SyncSource>,
    outbox: Arc<dyn OutboxStore>,
    vault: Arc<dyn KeyVault>,
    config: SyncConfig,
    /// By organization and entity: a member's events of two organizations are two entities
    /// (their versions count per organization in the stores).
    applied: Mutex<HashMap<(OrgId, OutboxEntity), i64>>,
    /// Held while a member's key is pushed, so the outbox pass and an on-demand
    /// [`SyncEngine::provision_member`] never create two keys for one member.
    members: Mutex<()>,
    /// The detected [`OrgMapping`] (see `orgs.rs`): 0 unknown.
    mapping: AtomicU8,
    /// Organizations known to exist in LiteLLM (organizations mode), so a member push does
    /// not look its organization up every time.
    orgs_pushed: Mutex<HashSet<OrgId>>,
    /// The [`SyncSource::limits_version`] every member was last pushed at.
    limits_seen: Mutex<Option<u64>>,
}

impl std::fmt::Debug for SyncEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncEngine")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn tolerate_not_found(result: Result<(), LiteLlmError>) -> Result<(), LiteLlmError> {
    match result {
        Err(LiteLlmError::NotFound(_)) => Ok(()),
        other => other,
    }
}

impl SyncEngine {
    /// An engine over `source`, consuming `outbox`, keeping key secrets in `vault`.
    pub fn new(
        client: LiteLlmClient,
        source: Arc<dyn SyncSource>,
        outbox: Arc<dyn OutboxStore>,
        vault: Arc<dyn KeyVault>,
        config: SyncConfig,
    ) -> Self {
        Self {
            client,
            source,
            outbox,
            vault,
            config,
            applied: Mutex::new(HashMap::new()),
            members: Mutex::new(()),
            mapping: AtomicU8::new(0),
            orgs_pushed: Mutex::new(HashSet::new()),
            limits_seen: Mutex::new(None),
        }
    }

    /// The LiteLLM client.
    pub fn client(&self) -> &LiteLlmClient {
        &self.client
    }

    /// The settings.
    pub fn config(&self) -> &SyncConfig {
        &self.config
    }

    /// The virtual key of a member, once synced.
    pub async fn member_key(&self, org: OrgId, user: UserId) -> Result<Option<Secret>, StoreError> {
        Ok(self.vault.get(org, user).await?.map(|(_, key)| key))
    }

    /// The member's virtual key, pushing the member now when the vault has none yet (the
    /// outbox has not reached them, or this process restarted and lost its in-memory vault).
    /// `None` when the member does not belong to the organization. A caller that found the
    /// key refused by the proxy passes `refused` = its secret: a vault still holding that
    /// secret is cleared first, so the member gets a fresh key.
    pub async fn provision_member(
        &self,
        org: OrgId,
        user: UserId,
        refused: Option<&Secret>,
    ) -> Result<Option<Secret>, SyncError> {
        let guard = self.members.lock().await;
        if let Some((_, key)) = self.vault.get(org, user).await? {
            match refused {
                Some(bad) if bad.expose() == key.expose() => {
                    self.vault.remove(org, user).await?;
                }
                _ => return Ok(Some(key)),
            }
        }
        self.sync_member_locked(org, user, None).await?;
        let key = self.vault.get(org, user).await?.map(|(_, key)| key);
        drop(guard);
        Ok(key)
    }

    fn retry_delay(&self, attempts: u32) -> Duration {
        let policy = &self.config.backoff;
        let n = attempts as usize;
        ExponentialBuilder::default()
            .with_min_delay(policy.min_delay)
            .with_max_delay(policy.max_delay)
            .with_max_times(n + 1)
            .with_jitter()
            .build()
            .nth(n)
            .unwrap_or(policy.max_delay)
    }

    /// One pass: reads up to `batch_size` pending events, pushes each entity once (in the
    /// order of its first event), completes, fails (with backoff) or dead-letters them.
    /// Errors only when the outbox itself fails.
    pub async fn run_once(&self) -> Result<PassReport, StoreError> {
        let now = Utc::now();
        let events = self.outbox.pending(now, self.config.batch_size).await?;
        let mut report = PassReport {
            events: events.len(),
            ..PassReport::default()
        };
        // One push per (organization, entity): a person's memberships of two organizations
        // are two keys, so their events are never merged into one.
        let mut order: Vec<(OrgId, OutboxEntity)> = Vec::new();
        let mut by_entity: HashMap<(OrgId, OutboxEntity), Vec<OutboxEvent>> = HashMap::new();
        for event in events {
            let key = (event.org_id, event.entity);
            let list = by_entity.entry(key).or_default();
            if list.is_empty() {
                order.push(key);
            }
            list.push(event);
        }
        for entity in order {
            let Some(events) = by_entity.remove(&entity) else {
                continue;
            };
            let Some(latest) = events.iter().max_by_key(|e| (e.version, e.seq)).cloned() else {
                continue;
            };
            let known = self.applied.lock().await.get(&entity).copied();
            if known.is_some_and(|v| v >= latest.version) {
                for event in &events {
                    self.outbox.complete(event.seq).await?;
                }
                report.completed += events.len();
                report.stale += events.len();
                continue;
            }
            report.entities += 1;
            match self.apply(&latest).await {
                Ok(applied) => {
                    let mut versions = self.applied.lock().await;
                    let slot = versions.entry(entity).or_insert(latest.version);
                    *slot = (*slot).max(latest.version);
                    drop(versions);
                    for event in &events {
                        self.outbox.complete(event.seq).await?;
                    }
                    report.completed += events.len();
                    if applied == Applied::Stale {
                        report.stale += events.len();
                    }
                }
                Err(error) => {
                    let reason = error.to_string();
                    let limit = if error.is_transient() {
                        self.config.max_transient_attempts
                    } else {
                        self.config.max_attempts
                    };
                    for event in &events {
                        if event.attempts.saturating_add(1) >= limit {
                            let why =
                                format!("gave up after {} attempts: {reason}", event.attempts + 1);
                            self.outbox.dead_letter(event.seq, &why).await?;
                            report.dead_lettered += 1;
                        } else {
                            let delay =
                                chrono::Duration::from_std(self.retry_delay(event.attempts))
                                    .unwrap_or_else(|_| chrono::Duration::seconds(60));
                            self.outbox.fail(event.seq, &reason, now + delay).await?;
                            report.failed += 1;
                        }
                    }
                }
            }
        }
        report.org_mapping = self.org_mapping();
        self.follow_limits(&mut report).await;
        Ok(report)
    }

    /// Rate-limit rules changed ([`SyncSource::limits_version`] moved since the last pass):
    /// every member is pushed again, so their keys' `rpm_limit`/`tpm_limit` follow (a push
    /// writes only keys that differ). The first pass only records the version: the
    /// reconcile at start covers what changed before. A failure leaves the version unseen,
    /// so the next pass tries again.
    async fn follow_limits(&self, report: &mut PassReport) {
        let Some(version) = self.source.limits_version() else {
            return;
        };
        let mut seen = self.limits_seen.lock().await;
        let Some(previous) = *seen else {
            *seen = Some(version);
            return;
        };
        if previous == version {
            return;
        }
        match self.push_every_member().await {
            Ok(pushed) => {
                report.limit_pushes += pushed;
                *seen = Some(version);
            }
            Err(error) => {
                tracing::warn!(%error, "litellm sync: keys not yet in step with the rate-limit rules; retried next pass");
            }
        }
    }

    async fn push_every_member(&self) -> Result<usize, SyncError> {
        let mut pushed = 0;
        for org in self.source.orgs().await? {
            for member in self.source.members(org.id).await? {
                self.sync_member(org.id, member.user_id, None).await?;
                pushed += 1;
            }
        }
        Ok(pushed)
    }

    /// Pushes one event's entity.
    pub async fn apply(&self, event: &OutboxEvent) -> Result<Applied, SyncError> {
        match event.entity {
            OutboxEntity::Group(group) => {
                self.sync_group(event.org_id, group, Some(event.version))
                    .await
            }
            OutboxEntity::Member(user) => {
                self.sync_member(event.org_id, user, Some(event.version))
                    .await
            }
            OutboxEntity::Org(org) => self.sync_org(org, Some(event.version)).await,
        }
    }

    /// Runs passes every `interval` until `shutdown` resolves.
    pub async fn run(&self, interval: Duration, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            // Outbox failures are retried on the next tick; the report is for callers of run_once.
            let _ = self.run_once().await;
            tokio::select! {
                () = &mut shutdown => return,
                () = tokio::time::sleep(interval) => {}
            }
        }
    }

    /// An organization changed: its tiers or settings may change every group and member,
    /// so all of them are pushed, after the LiteLLM organization itself when the proxy has
    /// them ([`OrgMapping::Organizations`]; an older `version` than the organization's
    /// recorded one is then [`Applied::Stale`]). A deleted organization loses all its
    /// managed teams and keys, and its LiteLLM organization.
    pub async fn sync_org(
        &self,
        org_id: OrgId,
        version: Option<i64>,
    ) -> Result<Applied, SyncError> {
        let org_text = org_id.to_string();
        let Some(org) = self.source.org(org_id).await? else {
            let keys = self.client.key_list(&KeyListQuery::default()).await?;
            let tokens: Vec<KeyRef> = keys
                .into_iter()
                .filter(|k| {
                    is_managed(k.metadata.as_ref())
                        && metadata_str(k.metadata.as_ref(), "stratai_org_id") == Some(&org_text)
                })
                .filter_map(|k| k.token.map(KeyRef::Token))
                .collect();
            if !tokens.is_empty() {
                tolerate_not_found(self.client.key_delete(&tokens).await)?;
            }
            let teams: Vec<String> = self
                .client
                .team_list()
                .await?
                .into_iter()
                .filter(|t| {
                    is_managed(t.metadata.as_ref())
                        && metadata_str(t.metadata.as_ref(), "stratai_org_id") == Some(&org_text)
                })
                .map(|t| t.team_id)
                .collect();
            if !teams.is_empty() {
                tolerate_not_found(self.client.team_delete(&teams).await)?;
            }
            self.delete_organization(org_id).await?;
            return Ok(Applied::Done);
        };
        if self.push_organization(&org, version).await? == Applied::Stale {
            return Ok(Applied::Stale);
        }
        for group in self.source.groups(org_id).await? {
            self.sync_group(org_id, group.id, None).await?;
        }
        for member in self.source.members(org_id).await? {
            self.sync_member(org_id, member.user_id, None).await?;
        }
        Ok(Applied::Done)
    }

    /// Pushes a group as a LiteLLM team (created with `team_id` = the group id, so a
    /// repeated create is "already exists" and becomes an update), with its members. A
    /// deleted group's members are moved off the team first, then the team is deleted.
    pub async fn sync_group(
        &self,
        org_id: OrgId,
        group_id: GroupId,
        version: Option<i64>,
    ) -> Result<Applied, SyncError> {
        let team_id = group_id.to_string();
        let org = self.source.org(org_id).await?;
        let group = match &org {
            Some(_) => self.source.group(org_id, group_id).await?,
            None => None,
        };
        let existing = match self.client.team_info(&team_id).await {
            Ok(info) => Some(info),
            Err(LiteLlmError::NotFound(_)) => None,
            Err(e) => return Err(e.into()),
        };
        let (Some(org), Some(group)) = (org, group) else {
            if let Some(info) = existing {
                for key in &info.keys {
                    let user = metadata_str(key.metadata.as_ref(), "stratai_user_id")
                        .and_then(|u| u.parse::<UserId>().ok());
                    if let (true, Some(user)) = (is_managed(key.metadata.as_ref()), user) {
                        Box::pin(self.sync_member(org_id, user, None)).await?;
                    }
                }
                tolerate_not_found(
                    self.client
                        .team_delete(std::slice::from_ref(&team_id))
                        .await,
                )?;
            }
            return Ok(Applied::Done);
        };
        let remote_version = existing
            .as_ref()
            .map_or(0, |i| recorded_version(i.team_info.metadata.as_ref()));
        if version.is_some_and(|v| remote_version > v) {
            return Ok(Applied::Stale);
        }
        // Organizations mode: the organization first, up to date, since LiteLLM checks the
        // team's models and budget against it.
        let organization = self.organization_for(&org, true).await?;
        let catalog = self.source.catalog().await?;
        let subscriptions = self.source.subscriptions(org_id).await?;
        let members = self.source.group_members(org_id, group_id).await?;
        let budgets = self.source.budgets(org_id).await?;
        let mut desired = desired_team(
            &catalog,
            &org,
            &subscriptions,
            &group,
            &members,
            &self.config.model_names,
            &self.config.budget_duration,
            &budgets,
        )
        .map_err(SyncError::Mapping)?;
        if let Some(organization) = &organization {
            place_team(&mut desired, organization);
        }
        let write_version = version.unwrap_or(0).max(remote_version);
        let metadata = team_metadata(&desired, write_version);
        let update = TeamUpdate {
            team_id: team_id.clone(),
            organization_id: desired.organization_id.clone(),
            team_alias: Some(desired.alias.clone()),
            models: Some(desired.models.clone()),
            max_budget: desired.max_budget,
            budget_duration: desired.budget_duration.clone(),
            metadata: Some(metadata.clone()),
            clear_max_budget: desired.max_budget.is_none()
                && existing
                    .as_ref()
                    .is_some_and(|i| i.team_info.max_budget.is_some()),
            ..TeamUpdate::default()
        };
        let models_changed = existing
            .as_ref()
            .is_some_and(|i| sorted(&i.team_info.models) != desired.models);
        let team = match existing {
            None => {
                let create = TeamNew {
                    team_id: Some(team_id.clone()),
                    organization_id: desired.organization_id.clone(),
                    team_alias: Some(desired.alias.clone()),
                    models: Some(desired.models.clone()),
                    max_budget: desired.max_budget,
                    budget_duration: desired.budget_duration.clone(),
                    metadata: Some(metadata),
                    ..TeamNew::default()
                };
                match self.client.team_new(&create).await {
                    Ok(team) => team,
                    Err(LiteLlmError::AlreadyExists(_)) => self.client.team_update(&update).await?,
                    Err(e) => return Err(e.into()),
                }
            }
            Some(info) => {
                let team = info.team_info;
                let same = team.team_alias.as_deref() == Some(desired.alias.as_str())
                    && (desired.organization_id.is_none()
                        || team.organization_id == desired.organization_id)
                    && sorted(&team.models) == desired.models
                    && same_budget(team.max_budget, desired.max_budget)
                    && (desired.max_budget.is_none()
                        || team.budget_duration == desired.budget_duration)
                    && team.metadata.as_ref() == Some(&metadata_of(&update));
                if same {
                    team
                } else {
                    self.client.team_update(&update).await?
                }
            }
        };
        let current: Vec<String> = team
            .members_with_roles
            .iter()
            .filter(|m| m.role.as_deref() != Some("admin"))
            .filter_map(|m| m.user_id.clone())
            .collect();
        for user in desired.members.iter().filter(|u| !current.contains(u)) {
            match self.client.team_member_add(&team_id, user).await {
                Ok(_) | Err(LiteLlmError::AlreadyExists(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        for user in current.iter().filter(|u| !desired.members.contains(u)) {
            match self.client.team_member_delete(&team_id, user).await {
                Ok(_) | Err(LiteLlmError::BadRequest(_) | LiteLlmError::NotFound(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        if models_changed {
            // The group's tiers bound its members' keys: push them too.
            for user in &members {
                Box::pin(self.sync_member(org_id, *user, None)).await?;
            }
        }
        Ok(Applied::Done)
    }

    /// The managed keys of a member in an organization (normally one).
    async fn member_keys(
        &self,
        org_id: OrgId,
        user_id: UserId,
    ) -> Result<Vec<KeyInfo>, LiteLlmError> {
        let org_text = org_id.to_string();
        let keys = self
            .client
            .key_list(&KeyListQuery {
                user_id: Some(user_id.to_string()),
                ..KeyListQuery::default()
            })
            .await?;
        Ok(keys
            .into_iter()
            .filter(|k| {
                is_managed(k.metadata.as_ref())
                    && metadata_str(k.metadata.as_ref(), "stratai_org_id")
                        == Some(org_text.as_str())
                    && !k.is_deleted()
            })
            .collect())
    }

    /// Pushes a member as a LiteLLM user with one virtual key for (user, org); a removed
    /// member's keys are deleted. Keeps exactly one key: duplicates, and keys whose secret
    /// the vault does not hold (a lost `/key/generate` answer), are deleted and replaced.
    pub async fn sync_member(
        &self,
        org_id: OrgId,
        user_id: UserId,
        version: Option<i64>,
    ) -> Result<Applied, SyncError> {
        let _guard = self.members.lock().await;
        self.sync_member_locked(org_id, user_id, version).await
    }

    async fn sync_member_locked(
        &self,
        org_id: OrgId,
        user_id: UserId,
        version: Option<i64>,
    ) -> Result<Applied, SyncError> {
        let org = self.source.org(org_id).await?;
        let membership = match &org {
            Some(_) => self.source.member(org_id, user_id).await?,
            None => None,
        };
        let all_keys = self.member_keys(org_id, user_id).await?;
        let vault = self.vault.get(org_id, user_id).await?;
        let (Some(org), Some(membership)) = (org, membership) else {
            // Removed (or its organization deleted): every key goes at once, rotated ones
            // still in their grace period too.
            let tokens: Vec<KeyRef> = all_keys
                .iter()
                .filter_map(|k| k.token.clone().map(KeyRef::Token))
                .collect();
            if !tokens.is_empty() {
                tolerate_not_found(self.client.key_delete(&tokens).await)?;
            }
            self.vault.remove(org_id, user_id).await?;
            return Ok(Applied::Done);
        };
        let remote_version = all_keys
            .iter()
            .map(|k| recorded_version(k.metadata.as_ref()))
            .max()
            .unwrap_or(0);
        if version.is_some_and(|v| remote_version > v) {
            return Ok(Applied::Stale);
        }
        // A rotated key in its grace period is not the member's key any more: it is left
        // to expire (LiteLLM refuses it after its `duration`) and be deleted by
        // [`SyncEngine::rotate_keys`].
        let existing: Vec<KeyInfo> = all_keys.into_iter().filter(|k| !is_retiring(k)).collect();
        let organization = self.organization_for(&org, false).await?;
        let catalog = self.source.catalog().await?;
        let subscriptions = self.source.subscriptions(org_id).await?;
        let groups = self.source.member_groups(org_id, user_id).await?;
        let budgets = self.source.budgets(org_id).await?;
        let group_ids: Vec<GroupId> = groups.iter().map(|g| g.id).collect();
        let limits = self.source.key_limits(org_id, user_id, &group_ids).await?;
        let mut desired = desired_key(
            &catalog,
            &org,
            &subscriptions,
            &membership,
            &groups,
            &self.config.model_names,
            &self.config.budget_duration,
            &budgets,
            limits,
        )
        .map_err(SyncError::Mapping)?;
        if let Some(organization) = &organization {
            place_key(&mut desired, organization);
        }
        let active = self
            .source
            .user(user_id)
            .await?
            .is_none_or(|user| user.active);
        block_key_unless_active(&mut desired, active);
        let write_version = version.unwrap_or(0).max(remote_version);
        let metadata = key_metadata(&desired, write_version);

        // The LiteLLM user may be missing (first sync, or deleted by hand): one cheap call,
        // "already exists" being the usual answer.
        ensure_user(&self.client, &membership, self.source.as_ref()).await?;
        let vault_token = vault.as_ref().map(|(token, _)| token.clone());
        let (keep, extras): (Vec<KeyInfo>, Vec<KeyInfo>) = existing
            .into_iter()
            .partition(|k| k.token.is_some() && k.token == vault_token);
        let extras: Vec<KeyRef> = extras
            .into_iter()
            .filter_map(|k| k.token.map(KeyRef::Token))
            .collect();
        if !extras.is_empty() {
            tolerate_not_found(self.client.key_delete(&extras).await)?;
        }
        match keep.into_iter().next() {
            None => {
                let generate = KeyGenerate {
                    key_alias: Some(desired.alias.clone()),
                    user_id: Some(desired.user_id.clone()),
                    team_id: desired.team_id.clone(),
                    organization_id: desired.organization_id.clone(),
                    models: Some(desired.models.clone()),
                    max_budget: desired.max_budget,
                    budget_duration: desired.budget_duration.clone(),
                    duration: self.config.key_duration.clone(),
                    metadata: Some(metadata),
                    blocked: desired.blocked.then_some(true),
                    rpm_limit: desired.rpm_limit,
                    tpm_limit: desired.tpm_limit,
                };
                let key = match self.client.key_generate(&generate).await {
                    Ok(key) => key,
                    Err(LiteLlmError::AlreadyExists(_)) => {
                        // A key with our alias we could not see (e.g. of a deleted user id
                        // filter mismatch): remove it by alias, then create ours.
                        let stale = self
                            .client
                            .key_list(&KeyListQuery {
                                key_alias: Some(desired.alias.clone()),
                                ..KeyListQuery::default()
                            })
                            .await?;
                        let tokens: Vec<KeyRef> = stale
                            .into_iter()
                            .filter(|k| k.key_alias.as_deref() == Some(desired.alias.as_str()))
                            .filter_map(|k| k.token.map(KeyRef::Token))
                            .collect();
                        if !tokens.is_empty() {
                            tolerate_not_found(self.client.key_delete(&tokens).await)?;
                        }
                        self.client.key_generate(&generate).await?
                    }
                    Err(e) => return Err(e.into()),
                };
                let token = key.token_hash();
                self.vault.put(org_id, user_id, &token, &key.key).await?;
                self.source
                    .record_key(org_id, user_id, Some(&token))
                    .await?;
            }
            Some(key) => {
                let token = key.token.clone().unwrap_or_default();
                let same = sorted(&key.models) == desired.models
                    && same_budget(key.max_budget, desired.max_budget)
                    && (desired.max_budget.is_none()
                        || key.budget_duration == desired.budget_duration)
                    && key.team_id == desired.team_id
                    && (desired.organization_id.is_none()
                        || key.organization_id == desired.organization_id)
                    && key.key_alias.as_deref() == Some(desired.alias.as_str())
                    && key.blocked.unwrap_or(false) == desired.blocked
                    && key.rpm_limit == desired.rpm_limit
                    && key.tpm_limit == desired.tpm_limit
                    && key.metadata.as_ref() == Some(&metadata);
                if !same {
                    let update = KeyUpdate {
                        models: Some(desired.models.clone()),
                        max_budget: desired.max_budget,
                        clear_max_budget: desired.max_budget.is_none() && key.max_budget.is_some(),
                        budget_duration: desired.budget_duration.clone(),
                        metadata: Some(metadata),
                        key_alias: Some(desired.alias.clone()),
                        team_id: desired.team_id.clone(),
                        organization_id: desired.organization_id.clone(),
                        blocked: Some(desired.blocked),
                        rpm_limit: desired.rpm_limit,
                        tpm_limit: desired.tpm_limit,
                        clear_limits: true,
                        ..KeyUpdate::default()
                    };
                    self.client
                        .key_update(&KeyRef::Token(token.clone()), &update)
                        .await?;
                }
                if membership.litellm_key_id.as_deref() != Some(token.as_str()) {
                    self.source
                        .record_key(org_id, user_id, Some(&token))
                        .await?;
                }
            }
        }
        Ok(Applied::Done)
    }
}

/// Metadata key of a rotated key: until when (RFC 3339) it keeps working.
pub const RETIRING_UNTIL: &str = "stratai_retiring_until";

/// When a rotated key stops working, `None` for a key that was not rotated.
pub fn retiring_until(key: &KeyInfo) -> Option<DateTime<Utc>> {
    metadata_str(key.metadata.as_ref(), RETIRING_UNTIL)
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
}

/// Whether a key was rotated (is in, or past, its grace period).
pub fn is_retiring(key: &KeyInfo) -> bool {
    key.metadata
        .as_ref()
        .is_some_and(|m| m.contains_key(RETIRING_UNTIL))
}

/// What [`SyncEngine::rotate_keys`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RotationReport {
    /// Members whose key was rotated (it expired within `rotate_before`).
    pub rotated: Vec<(OrgId, UserId)>,
    /// Rotated keys deleted at the end of their grace period.
    pub revoked: usize,
}

impl SyncEngine {
    /// Rotates a member's key now: the current key is renamed (`<alias>:retiring:<token>`),
    /// marked [`RETIRING_UNTIL`] and given `key_grace` to live (LiteLLM refuses it after),
    /// then a new key is generated (with the configured lifetime) and sealed in the vault.
    /// A call that read the old secret before the vault changed still succeeds. False when
    /// the member has no key to rotate.
    pub async fn rotate_member(
        &self,
        org_id: OrgId,
        user_id: UserId,
        now: DateTime<Utc>,
    ) -> Result<bool, SyncError> {
        let _guard = self.members.lock().await;
        let Some((token, _)) = self.vault.get(org_id, user_id).await? else {
            return Ok(false);
        };
        let keys = self.member_keys(org_id, user_id).await?;
        let Some(current) = keys
            .iter()
            .find(|k| k.token.as_deref() == Some(token.as_str()) && !is_retiring(k))
        else {
            return Ok(false);
        };
        let grace = chrono::Duration::from_std(self.config.key_grace)
            .unwrap_or_else(|_| chrono::Duration::hours(1));
        let mut metadata = current.metadata.clone().unwrap_or_default();
        metadata.insert(
            RETIRING_UNTIL.to_owned(),
            serde_json::Value::String((now + grace).to_rfc3339()),
        );
        let alias = current
            .key_alias
            .clone()
            .unwrap_or_else(|| key_alias(org_id, user_id));
        let short: String = token.chars().take(12).collect();
        self.client
            .key_update(
                &KeyRef::Token(token.clone()),
                &KeyUpdate {
                    key_alias: Some(format!("{alias}:retiring:{short}")),
                    metadata: Some(metadata),
                    duration: Some(format!("{}s", self.config.key_grace.as_secs().max(1))),
                    ..KeyUpdate::default()
                },
            )
            .await?;
        self.sync_member_locked(org_id, user_id, None).await?;
        Ok(true)
    }

    /// Rotates every managed key expiring within `rotate_before` (keys without an expiry
    /// are left alone) and deletes rotated keys whose grace period is over. Run it on the
    /// reconcile schedule.
    pub async fn rotate_keys(&self, now: DateTime<Utc>) -> Result<RotationReport, SyncError> {
        let before = chrono::Duration::from_std(self.config.rotate_before)
            .unwrap_or_else(|_| chrono::Duration::days(30));
        let mut report = RotationReport::default();
        let keys = self.client.key_list(&KeyListQuery::default()).await?;
        let mut revoke = Vec::new();
        let mut due = Vec::new();
        for key in keys
            .iter()
            .filter(|k| is_managed(k.metadata.as_ref()) && !k.is_deleted())
        {
            if let Some(until) = retiring_until(key) {
                if until <= now
                    && let Some(token) = &key.token
                {
                    revoke.push(KeyRef::Token(token.clone()));
                }
                continue;
            }
            if key.expires.is_some_and(|e| e - now <= before) {
                let org = metadata_str(key.metadata.as_ref(), "stratai_org_id")
                    .and_then(|o| o.parse::<OrgId>().ok());
                let user = metadata_str(key.metadata.as_ref(), "stratai_user_id")
                    .and_then(|u| u.parse::<UserId>().ok());
                if let (Some(org), Some(user)) = (org, user) {
                    due.push((org, user));
                }
            }
        }
        if !revoke.is_empty() {
            tolerate_not_found(self.client.key_delete(&revoke).await)?;
            report.revoked = revoke.len();
        }
        for (org, user) in due {
            if self.rotate_member(org, user, now).await? {
                report.rotated.push((org, user));
            }
        }
        Ok(report)
    }
}

fn metadata_of(update: &TeamUpdate) -> crate::types::Metadata {
    update.metadata.clone().unwrap_or_default()
}

/// Creates the LiteLLM user of a member when missing ("already exists" is fine); true when
/// it was created.
async fn ensure_user(
    client: &LiteLlmClient,
    membership: &stratai_core::directory::Membership,
    source: &dyn SyncSource,
) -> Result<bool, SyncError> {
    let user = source.user(membership.user_id).await?;
    let mut new = UserNew::new(membership.user_id.to_string());
    if let Some(user) = &user {
        new.user_email = Some(user.email.to_string());
        new.user_alias = user.name.clone();
    }
    new.user_role = Some("internal_user".to_owned());
    match client.user_new(&new).await {
        Ok(_) => Ok(true),
        Err(LiteLlmError::AlreadyExists(_)) => Ok(false),
        Err(e) => Err(e.into()),
    }
}
