//! [`Guardrails`]: the current policy and a rate limiter, ready to decide.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use stratai_core::TierId;
use stratai_core::ports::{DirectoryStore, GuardrailStore, RuleRecord, TierStore};

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
    /// runtime's reloader and `litellm-worker` (its members' key limits) both run.
    pub async fn reload_from_store(
        &self,
        directory: &dyn DirectoryStore,
        tiers: &dyn TierStore,
        rules: &dyn GuardrailStore,
    ) -> Result<u64, String> {
        let mut records = rules
            .list_platform_rules()
            .await
            .map_err(|e| e.to_string())?;
        let mut known = KnownScopes::new();
        for tier in tiers.list_tiers().await.map_err(|e| e.to_string())? {
            known.add_tier(tier.id);
        }
        for org in directory.list_orgs().await.map_err(|e| e.to_string())? {
            known.add_org(org.id);
            for g in directory
                .list_groups(org.id)
                .await
                .map_err(|e| e.to_string())?
            {
                known.add_group(org.id, g.id);
            }
            for m in directory
                .list_members(org.id)
                .await
                .map_err(|e| e.to_string())?
            {
                known.add_member(org.id, m.user_id);
            }
            records.extend(
                rules
                    .list_org_rules(org.id)
                    .await
                    .map_err(|e| e.to_string())?,
            );
        }
        self.reload(&records, &known).map_err(|e| e.to_string())
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
