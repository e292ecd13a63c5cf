//! [`Guardrails`]: the current policy and a rate limiter, ready to decide.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use stratai_core::ports::{DirectoryStore, GuardrailStore, RuleRecord, TierStore};
use stratai_core::{GroupId, OrgId, StoreError, TierId, UserId};

use crate::decision::Decision;
use crate::policy::{Policy, PolicyError, PolicyHolder, Principal};
use crate::post::{AnswerStream, FilteredAnswer};
use crate::pre::{PreRequest, RateCheck};
use crate::rate::{GovernorRateLimiter, RateLimiter};
use crate::rule::KnownScopes;

/// The guardrail engine of one process: the current policy (swapped atomically on reload)
/// and the rate limiter its rate limit rules draw on.
pub struct Guardrails {
    policy: PolicyHolder,
    limiter: Arc<dyn RateLimiter>,
    /// What the last reload from the stores read, by organization, so that a change in one
    /// organization re-reads that organization only (see [`Guardrails::reload_org_from_store`]).
    loaded: Mutex<Option<Loaded>>,
    /// Orders the reads of concurrent reloads: a part read later replaces one read earlier.
    reads: AtomicU64,
}

/// The rule sources of the current policy, as read from the stores.
#[derive(Clone, Debug, Default)]
struct Loaded {
    platform: Vec<RuleRecord>,
    tiers: Vec<TierId>,
    orgs: BTreeMap<OrgId, OrgPart>,
}

/// One organization's part of [`Loaded`]: its scopes and rules, and when they were read.
#[derive(Clone, Debug)]
struct OrgPart {
    read: u64,
    groups: Vec<GroupId>,
    members: Vec<UserId>,
    rules: Vec<RuleRecord>,
}

impl Loaded {
    /// The records and known scopes to compile.
    fn compile_input(&self) -> (Vec<RuleRecord>, KnownScopes) {
        let mut records = self.platform.clone();
        let mut known = KnownScopes::new();
        for tier in &self.tiers {
            known.add_tier(*tier);
        }
        for (org, part) in &self.orgs {
            known.add_org(*org);
            for g in &part.groups {
                known.add_group(*org, *g);
            }
            for u in &part.members {
                known.add_member(*org, *u);
            }
            records.extend(part.rules.iter().cloned());
        }
        (records, known)
    }
}

/// Reads one organization's scopes and rules; `None` when the organization does not exist.
async fn read_org(
    org: OrgId,
    read: u64,
    directory: &dyn DirectoryStore,
    rules: &dyn GuardrailStore,
) -> Result<Option<OrgPart>, StoreError> {
    match directory.get_org(org).await {
        Ok(_) => {}
        Err(StoreError::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(e),
    }
    Ok(Some(OrgPart {
        read,
        groups: directory
            .list_groups(org)
            .await?
            .into_iter()
            .map(|g| g.id)
            .collect(),
        members: directory
            .list_members(org)
            .await?
            .into_iter()
            .map(|m| m.user_id)
            .collect(),
        rules: rules.list_org_rules(org).await?,
    }))
}

impl std::fmt::Debug for Guardrails {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guardrails")
            .field("policy", &self.policy.load())
            .field("buckets", &self.limiter.len())
            .finish()
    }
}

impl Guardrails {
    /// An engine over `policy` with the in-process governor limiter.
    #[must_use]
    pub fn new(policy: Policy) -> Self {
        Self::with_limiter(policy, Arc::new(GovernorRateLimiter::new()))
    }

    /// An engine over `policy` with the given limiter (e.g. a shared one).
    #[must_use]
    pub fn with_limiter(policy: Policy, limiter: Arc<dyn RateLimiter>) -> Self {
        Self {
            policy: PolicyHolder::new(policy),
            limiter,
            loaded: Mutex::new(None),
            reads: AtomicU64::new(0),
        }
    }

    /// The current policy.
    #[must_use]
    pub fn policy(&self) -> Arc<Policy> {
        self.policy.load()
    }

    /// The rate limiter.
    #[must_use]
    pub fn limiter(&self) -> &Arc<dyn RateLimiter> {
        &self.limiter
    }

    /// Replaces the policy (already compiled).
    pub fn replace(&self, policy: Policy) {
        self.policy.store(policy);
    }

    /// Compiles `records` as the next policy version and swaps it in; on error the current
    /// policy stays in force.
    pub fn reload(&self, records: &[RuleRecord], known: &KnownScopes) -> Result<u64, PolicyError> {
        self.policy.reload(records, known)
    }

    /// Recompiles the policy from the stores: the platform rules and every organization's
    /// rules, checked against the tiers, organizations, groups and members that exist. On
    /// an invalid rule set (or a store error) the current policy stays in force. What the
    /// runtime's periodic reloader and `litellm-worker` (its members' key limits) run; it
    /// reads every organization (three reads each), so a change in one organization reloads
    /// with [`reload_org_from_store`](Self::reload_org_from_store) instead.
    pub async fn reload_from_store(
        &self,
        directory: &dyn DirectoryStore,
        tiers: &dyn TierStore,
        rules: &dyn GuardrailStore,
    ) -> Result<u64, String> {
        let read = self.reads.fetch_add(1, Ordering::SeqCst);
        let mut fresh = Loaded {
            platform: rules.list_platform_rules().await.map_err(text)?,
            tiers: tier_ids(tiers).await?,
            orgs: BTreeMap::new(),
        };
        for org in directory.list_orgs().await.map_err(text)? {
            if let Some(part) = read_org(org.id, read, directory, rules)
                .await
                .map_err(text)?
            {
                fresh.orgs.insert(org.id, part);
            }
        }
        self.merge_and_compile(|loaded| {
            // A part some other reload read after this one began is newer: it stays.
            if let Some(current) = loaded.as_ref() {
                for (org, part) in &current.orgs {
                    if part.read > read {
                        fresh.orgs.insert(*org, part.clone());
                    }
                }
            }
            *loaded = Some(fresh);
        })
    }

    /// Recompiles the policy after a change of `org`'s rules (or of the platform's, with
    /// `None`): the platform rules, the tiers and that one organization are read again, every
    /// other organization's part is taken from the last reload. Before any full reload it is
    /// one ([`reload_from_store`](Self::reload_from_store)). On an invalid rule set (or a store
    /// error) the current policy stays in force.
    pub async fn reload_org_from_store(
        &self,
        org: Option<OrgId>,
        directory: &dyn DirectoryStore,
        tiers: &dyn TierStore,
        rules: &dyn GuardrailStore,
    ) -> Result<u64, String> {
        if self.loaded.lock().map_err(|_| poisoned())?.is_none() {
            return self.reload_from_store(directory, tiers, rules).await;
        }
        let read = self.reads.fetch_add(1, Ordering::SeqCst);
        let platform = rules.list_platform_rules().await.map_err(text)?;
        let tier_list = tier_ids(tiers).await?;
        let part = match org {
            Some(org) => Some((
                org,
                read_org(org, read, directory, rules).await.map_err(text)?,
            )),
            None => None,
        };
        self.merge_and_compile(|loaded| {
            let current = loaded.get_or_insert_with(Loaded::default);
            current.platform = platform;
            current.tiers = tier_list;
            if let Some((org, part)) = part {
                match part {
                    Some(part) => {
                        if current.orgs.get(&org).is_none_or(|p| p.read < read) {
                            current.orgs.insert(org, part);
                        }
                    }
                    None => {
                        current.orgs.remove(&org);
                    }
                }
            }
        })
    }

    /// Applies `change` to the loaded sources and compiles them, under one lock so that the
    /// policy in force is always that of the latest sources.
    fn merge_and_compile(&self, change: impl FnOnce(&mut Option<Loaded>)) -> Result<u64, String> {
        let mut loaded = self.loaded.lock().map_err(|_| poisoned())?;
        let mut next = loaded.clone();
        change(&mut next);
        let (records, known) = next.as_ref().map(Loaded::compile_input).unwrap_or_default();
        let version = self.reload(&records, &known).map_err(|e| e.to_string())?;
        *loaded = next;
        Ok(version)
    }

    /// Decides a request before the model call, taking rate-limit tokens when allowed.
    #[must_use]
    pub fn check(&self, request: &PreRequest<'_>) -> Decision {
        self.policy
            .load()
            .decide_pre(request, RateCheck::Acquire(self.limiter.as_ref()))
    }

    /// The same decision as [`check`](Self::check) for the request's `now`, with no side
    /// effect: no rate-limit token is taken.
    #[must_use]
    pub fn explain(&self, request: &PreRequest<'_>) -> Decision {
        self.policy
            .load()
            .decide_pre(request, RateCheck::Peek(self.limiter.as_ref()))
    }

    /// Filters a whole answer.
    #[must_use]
    pub fn filter_answer(
        &self,
        principal: &Principal,
        tier: Option<TierId>,
        answer: &str,
        now: DateTime<Utc>,
    ) -> FilteredAnswer {
        self.policy
            .load()
            .filter_answer(principal, tier, answer, now)
    }

    /// Starts filtering a streamed answer (on the policy current now, even if it is swapped
    /// while the stream runs).
    #[must_use]
    pub fn answer_stream(
        &self,
        principal: &Principal,
        tier: Option<TierId>,
        now: DateTime<Utc>,
    ) -> AnswerStream {
        self.policy.load().answer_stream(principal, tier, now)
    }

    /// Forgets full rate-limit buckets; call periodically (e.g. every minute).
    pub fn retain_recent(&self) {
        self.limiter.retain_recent();
    }
}

async fn tier_ids(tiers: &dyn TierStore) -> Result<Vec<TierId>, String> {
    Ok(tiers
        .list_tiers()
        .await
        .map_err(text)?
        .into_iter()
        .map(|t| t.id)
        .collect())
}

fn text(e: StoreError) -> String {
    e.to_string()
}

fn poisoned() -> String {
    "the guardrail engine's reload state was poisoned by a panic".to_owned()
}
