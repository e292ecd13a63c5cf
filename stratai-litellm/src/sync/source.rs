//! What the sync reads from StratAI ([`SyncSource`]) and where it keeps virtual keys
//! ([`KeyVault`]), with adapters over stratai-core's ports.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use stratai_core::Money;
use stratai_core::StoreError;
use stratai_core::budget::Budget;
use stratai_core::directory::{Group, Membership, Organization, User};
use stratai_core::ids::{GroupId, OrgId, UserId};
use stratai_core::ports::{BudgetLedger, DirectoryStore, TierStore};
use stratai_core::tiers::{TierCatalog, TierSubscription};
use tokio::sync::Mutex;

use super::mapping::KeyLimits;
use crate::Secret;

/// Where a member's per-minute key limits come from: the guardrail rules engine's
/// resolution of the rate-limit rules that apply to the member ([`super::PolicyKeyLimits`],
/// over a compiled policy; the server's and `litellm-worker`'s).
#[async_trait]
pub trait RateLimitSource: Send + Sync {
    /// The limits of `user`'s key in `org`, where they belong to `groups`.
    async fn key_limits(
        &self,
        org: OrgId,
        user: UserId,
        groups: &[GroupId],
    ) -> Result<KeyLimits, StoreError>;
    /// A number that changes whenever the rules may have changed (the policy version), so
    /// the sync pushes every member again ([`super::SyncEngine::run_once`]).
    fn version(&self) -> u64;
}

/// The StratAI state the sync pushes to LiteLLM: the source of truth. [`CoreDirectory`]
/// implements it over stratai-core's `DirectoryStore` + `TierStore`; tests use fakes.
/// "Missing" answers are `Ok(None)` / empty, not errors.
#[async_trait]
pub trait SyncSource: Send + Sync {
    /// Every organization.
    async fn orgs(&self) -> Result<Vec<Organization>, StoreError>;
    /// One organization.
    async fn org(&self, org: OrgId) -> Result<Option<Organization>, StoreError>;
    /// The organization's groups.
    async fn groups(&self, org: OrgId) -> Result<Vec<Group>, StoreError>;
    /// One group.
    async fn group(&self, org: OrgId, group: GroupId) -> Result<Option<Group>, StoreError>;
    /// Members of a group.
    async fn group_members(&self, org: OrgId, group: GroupId) -> Result<Vec<UserId>, StoreError>;
    /// The organization's members.
    async fn members(&self, org: OrgId) -> Result<Vec<Membership>, StoreError>;
    /// One membership.
    async fn member(&self, org: OrgId, user: UserId) -> Result<Option<Membership>, StoreError>;
    /// The groups of a member in the organization.
    async fn member_groups(&self, org: OrgId, user: UserId) -> Result<Vec<Group>, StoreError>;
    /// One user.
    async fn user(&self, user: UserId) -> Result<Option<User>, StoreError>;
    /// The tier catalog.
    async fn catalog(&self) -> Result<TierCatalog, StoreError>;
    /// The organization's tier subscriptions.
    async fn subscriptions(&self, org: OrgId) -> Result<Vec<TierSubscription>, StoreError>;
    /// The organization's monthly budget LiteLLM Enterprise enforces on its organization
    /// (see [`super::org_monthly_budget`]); `None` without one, or from a source that does
    /// not read budgets (StratAI enforces them anyway).
    async fn org_budget(&self, org: OrgId) -> Result<Option<Money>, StoreError> {
        let _ = org;
        Ok(None)
    }
    /// Every budget of the organization (`/api/budgets`): the hard ones of a member, group
    /// or the organization become the LiteLLM key's, team's or organization's
    /// ([`super::scope_budget`]). Empty from a source that does not read budgets.
    async fn budgets(&self, org: OrgId) -> Result<Vec<Budget>, StoreError> {
        let _ = org;
        Ok(Vec::new())
    }
    /// The per-minute limits of a member's key ([`RateLimitSource`]); none by default.
    async fn key_limits(
        &self,
        org: OrgId,
        user: UserId,
        groups: &[GroupId],
    ) -> Result<KeyLimits, StoreError> {
        let _ = (org, user, groups);
        Ok(KeyLimits::default())
    }
    /// Changes whenever [`SyncSource::key_limits`] may answer differently (`None`: never).
    fn limits_version(&self) -> Option<u64> {
        None
    }
    /// Writes back the LiteLLM key id (token hash) of a membership (`None` when deleted).
    /// Must not emit an outbox event (the stores treat it as a sync-only change).
    async fn record_key(
        &self,
        org: OrgId,
        user: UserId,
        token: Option<&str>,
    ) -> Result<(), StoreError>;
}

fn not_found_as_none<T>(result: Result<T, StoreError>) -> Result<Option<T>, StoreError> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(StoreError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// [`SyncSource`] over stratai-core's ports (any stratai-store backend).
pub struct CoreDirectory<D: ?Sized, T: ?Sized> {
    directory: Arc<D>,
    tiers: Arc<T>,
    budgets: Option<Arc<dyn BudgetLedger>>,
    limits: Option<Arc<dyn RateLimitSource>>,
}

impl<D: ?Sized, T: ?Sized> CoreDirectory<D, T> {
    /// Reads the directory from `directory` and tiers from `tiers` (often the same store).
    pub fn new(directory: Arc<D>, tiers: Arc<T>) -> Self {
        Self {
            directory,
            tiers,
            budgets: None,
            limits: None,
        }
    }

    /// Also gives each member's key the per-minute limits of `limits` (the rate-limit
    /// guardrails that apply to the member).
    #[must_use]
    pub fn with_rate_limits(mut self, limits: Arc<dyn RateLimitSource>) -> Self {
        self.limits = Some(limits);
        self
    }

    /// Also reads the budgets of `/api/budgets` from `budgets`: the hard ones of members,
    /// groups and (LiteLLM Enterprise) organizations become their keys', teams' and
    /// organizations' ([`SyncSource::budgets`], [`SyncSource::org_budget`]).
    #[must_use]
    pub fn with_budgets(mut self, budgets: Arc<dyn BudgetLedger>) -> Self {
        self.budgets = Some(budgets);
        self
    }
}

#[async_trait]
impl<D, T> SyncSource for CoreDirectory<D, T>
where
    D: DirectoryStore + ?Sized,
    T: TierStore + ?Sized,
{
    async fn orgs(&self) -> Result<Vec<Organization>, StoreError> {
        self.directory.list_orgs().await
    }
    async fn org(&self, org: OrgId) -> Result<Option<Organization>, StoreError> {
        not_found_as_none(self.directory.get_org(org).await)
    }
    async fn groups(&self, org: OrgId) -> Result<Vec<Group>, StoreError> {
        match self.directory.list_groups(org).await {
            Err(StoreError::NotFound { .. }) => Ok(Vec::new()),
            other => other,
        }
    }
    async fn group(&self, org: OrgId, group: GroupId) -> Result<Option<Group>, StoreError> {
        not_found_as_none(self.directory.get_group(org, group).await)
    }
    async fn group_members(&self, org: OrgId, group: GroupId) -> Result<Vec<UserId>, StoreError> {
        match self.directory.list_group_members(org, group).await {
            Ok(members) => Ok(members.into_iter().map(|m| m.user_id).collect()),
            Err(StoreError::NotFound { .. }) => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }
    async fn members(&self, org: OrgId) -> Result<Vec<Membership>, StoreError> {
        match self.directory.list_members(org).await {
            Err(StoreError::NotFound { .. }) => Ok(Vec::new()),
            other => other,
        }
    }
    async fn member(&self, org: OrgId, user: UserId) -> Result<Option<Membership>, StoreError> {
        not_found_as_none(self.directory.get_member(org, user).await)
    }
    async fn member_groups(&self, org: OrgId, user: UserId) -> Result<Vec<Group>, StoreError> {
        match self.directory.groups_of_member(org, user).await {
            Ok(groups) => Ok(groups.into_iter().map(|(g, _)| g).collect()),
            Err(StoreError::NotFound { .. }) => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }
    async fn user(&self, user: UserId) -> Result<Option<User>, StoreError> {
        not_found_as_none(self.directory.get_user(user).await)
    }
    async fn catalog(&self) -> Result<TierCatalog, StoreError> {
        let tiers = self.tiers.list_tiers().await?;
        TierCatalog::new(tiers).map_err(|e| StoreError::Backend(format!("tier catalog: {e}")))
    }
    async fn subscriptions(&self, org: OrgId) -> Result<Vec<TierSubscription>, StoreError> {
        self.tiers.list_subscriptions(org).await
    }
    async fn org_budget(&self, org: OrgId) -> Result<Option<Money>, StoreError> {
        Ok(super::org_monthly_budget(&self.budgets(org).await?))
    }
    async fn budgets(&self, org: OrgId) -> Result<Vec<Budget>, StoreError> {
        let Some(budgets) = &self.budgets else {
            return Ok(Vec::new());
        };
        match budgets.list_budgets(org).await {
            Err(StoreError::NotFound { .. }) => Ok(Vec::new()),
            other => other,
        }
    }
    async fn key_limits(
        &self,
        org: OrgId,
        user: UserId,
        groups: &[GroupId],
    ) -> Result<KeyLimits, StoreError> {
        match &self.limits {
            Some(limits) => limits.key_limits(org, user, groups).await,
            None => Ok(KeyLimits::default()),
        }
    }
    fn limits_version(&self) -> Option<u64> {
        self.limits.as_ref().map(|l| l.version())
    }
    async fn record_key(
        &self,
        org: OrgId,
        user: UserId,
        token: Option<&str>,
    ) -> Result<(), StoreError> {
        // One targeted update: a get-then-update_member could overwrite an admin's concurrent
        // change of the membership with the stale copy read here.
        match self.directory.set_litellm_key_id(org, user, token).await {
            // Removed meanwhile: there is no membership to record a key on.
            Err(StoreError::NotFound { .. }) => Ok(()),
            other => other,
        }
    }
}

/// Where the secrets of the virtual keys the sync creates are kept (LiteLLM shows a secret
/// only once, at `/key/generate`). The server reads them to call LiteLLM for a member.
/// Production uses [`EncryptedKeyVault`](crate::vault::EncryptedKeyVault): sealed in the
/// database, shared by the server and the worker, kept across restarts. [`MemoryKeyVault`]
/// is for tests and single-process demos.
#[async_trait]
pub trait KeyVault: Send + Sync {
    /// Stores the key of a member (replacing any previous one).
    async fn put(
        &self,
        org: OrgId,
        user: UserId,
        token: &str,
        key: &Secret,
    ) -> Result<(), StoreError>;
    /// The member's key: its token hash and secret.
    async fn get(&self, org: OrgId, user: UserId) -> Result<Option<(String, Secret)>, StoreError>;
    /// Forgets the member's key.
    async fn remove(&self, org: OrgId, user: UserId) -> Result<(), StoreError>;
}

/// A [`KeyVault`] in memory.
#[derive(Debug, Default)]
pub struct MemoryKeyVault {
    keys: Mutex<HashMap<(OrgId, UserId), (String, Secret)>>,
}

impl MemoryKeyVault {
    /// An empty vault.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many keys it holds.
    pub async fn len(&self) -> usize {
        self.keys.lock().await.len()
    }

    /// Whether it is empty.
    pub async fn is_empty(&self) -> bool {
        self.keys.lock().await.is_empty()
    }
}

#[async_trait]
impl KeyVault for MemoryKeyVault {
    async fn put(
        &self,
        org: OrgId,
        user: UserId,
        token: &str,
        key: &Secret,
    ) -> Result<(), StoreError> {
        self.keys
            .lock()
            .await
            .insert((org, user), (token.to_owned(), key.clone()));
        Ok(())
    }
    async fn get(&self, org: OrgId, user: UserId) -> Result<Option<(String, Secret)>, StoreError> {
        Ok(self.keys.lock().await.get(&(org, user)).cloned())
    }
    async fn remove(&self, org: OrgId, user: UserId) -> Result<(), StoreError> {
        self.keys.lock().await.remove(&(org, user));
        Ok(())
    }
}
