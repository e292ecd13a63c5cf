//! [`PolicyKeyLimits`]: the rate-limit guardrails as the per-minute limits of members'
//! LiteLLM keys, the [`RateLimitSource`] of both processes that run the sync (the server's
//! in-process sync over its runtime's policy, `litellm-worker` over a policy it loads from
//! the store itself).

use std::collections::HashSet;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use stratai_core::StoreError;
use stratai_core::ids::{GroupId, OrgId, UserId};
use stratai_core::ports::{DirectoryStore, GuardrailStore, RuleAction, TierStore};
use stratai_guardrails::{Guardrails, Policy, Principal, Rule, RuleKind};

use super::mapping::KeyLimits;
use super::source::RateLimitSource;

/// The rate-limit guardrails as the per-minute limits of members' LiteLLM keys: the
/// current compiled policy of a [`Guardrails`] engine, resolved for the member by the rules
/// engine ([`Policy::effective`], tier-independent rules: a key serves every tier), blocking
/// rules only (a `warn` or `log` limit refuses nothing in StratAI, so it refuses nothing on
/// the proxy either), each bounded as [`KeyLimits::from_rate_limits`] says.
///
/// Unset until a policy is given ([`set`](Self::set): the server's runtime engine, which
/// reloads itself) or loaded ([`load`](Self::load): `litellm-worker`, from the store at
/// start and periodically): the sync then fails as transient and retries, rather than
/// pushing keys with no limit.
#[derive(Debug, Default)]
pub struct PolicyKeyLimits {
    guardrails: OnceLock<Arc<Guardrails>>,
    /// (policy version, fingerprint of its blocking rate-limit rules).
    fingerprint: Mutex<(u64, u64)>,
}

impl PolicyKeyLimits {
    /// Unset: every answer is a transient error until [`set`](Self::set) or
    /// [`load`](Self::load).
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads the policy of `guardrails` from now on (whoever reloads it). `false` when a
    /// policy was already set or loaded (that one stays).
    pub fn set(&self, guardrails: Arc<Guardrails>) -> bool {
        self.guardrails.set(guardrails).is_ok()
    }

    /// Whether a policy is set or loaded.
    #[must_use]
    pub fn is_loaded(&self) -> bool {
        self.guardrails.get().is_some()
    }

    /// Recompiles the policy from the stores (the runtime's reload,
    /// [`Guardrails::reload_from_store`]) and reads it from now on; returns its version.
    /// The first success sets the source; an error leaves the current policy (or none) in
    /// force.
    pub async fn load(
        &self,
        directory: &dyn DirectoryStore,
        tiers: &dyn TierStore,
        rules: &dyn GuardrailStore,
    ) -> Result<u64, String> {
        if let Some(guardrails) = self.guardrails.get() {
            return guardrails.reload_from_store(directory, tiers, rules).await;
        }
        let fresh = Arc::new(Guardrails::new(Policy::empty()));
        let version = fresh.reload_from_store(directory, tiers, rules).await?;
        if !self.set(fresh) {
            // Set meanwhile by another caller: reload that one instead.
            if let Some(guardrails) = self.guardrails.get() {
                return guardrails.reload_from_store(directory, tiers, rules).await;
            }
        }
        Ok(version)
    }

    fn blocking_limits(policy: &Policy) -> impl Iterator<Item = &Rule> {
        policy.rules().iter().filter(|r| {
            r.active && r.action == RuleAction::Block && matches!(r.kind, RuleKind::RateLimit(_))
        })
    }
}

#[async_trait]
impl RateLimitSource for PolicyKeyLimits {
    async fn key_limits(
        &self,
        org: OrgId,
        user: UserId,
        groups: &[GroupId],
    ) -> Result<KeyLimits, StoreError> {
        let Some(guardrails) = self.guardrails.get() else {
            return Err(StoreError::Backend(
                "the guardrail policy is not loaded yet".to_owned(),
            ));
        };
        let policy = guardrails.policy();
        let principal = Principal {
            org_id: org,
            user_id: user,
            groups: groups.to_vec(),
        };
        let blocking: HashSet<_> = Self::blocking_limits(&policy).map(|r| r.id).collect();
        let effective = policy.effective(&principal, None);
        Ok(KeyLimits::from_rate_limits(
            effective
                .rate_limits
                .iter()
                .filter(|(id, _)| blocking.contains(id))
                .map(|(_, limit)| (limit.requests, Duration::from_secs(limit.period.seconds()))),
        ))
    }

    fn version(&self) -> u64 {
        let Some(guardrails) = self.guardrails.get() else {
            return 0;
        };
        let policy = guardrails.policy();
        let mut cached = self
            .fingerprint
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if cached.0 != policy.version() {
            // The policy is recompiled on every reload; only its blocking rate limits matter.
            let mut rules: Vec<String> = Self::blocking_limits(&policy)
                .map(|r| format!("{}|{:?}|{:?}", r.id, r.scope, r.kind))
                .collect();
            rules.sort();
            let mut hasher = DefaultHasher::new();
            rules.hash(&mut hasher);
            *cached = (policy.version(), hasher.finish().max(1));
        }
        cached.1
    }
}
