#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The Gatekeeper with a shared rate limiter (core's `RateLimitStore`): decisions read exactly
//! as with the in-process limiter, two gatekeepers over one store share the limit, and a
//! failing store falls back to the in-process limiter. The store here is an in-memory fake
//! over governor; stratai-store's Redis limiter is tested against a real Redis in its crate.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use common::{at, record};
use governor::clock::FakeRelativeClock;
use serde_json::json;
use stratai_core::directory::{BillingPlan, Membership, OrgRole, OrgSettings, Organization, Slug};
use stratai_core::gateway::{ChatMessage, ChatRequest};
use stratai_core::ports::{
    MockBudgetLedger, MockDirectoryStore, MockTierStore, MockUsageStore, RateLimitKey,
    RateLimitStore, RateVerdict, RuleAction, RuleRecord, RuleScope,
};
use stratai_core::tiers::{BASIC_TIER_ID, STANDARD_TIER_ID, default_tiers, subscriptions_for};
use stratai_core::{OrgId, StoreError, TierSlug, UserId};
use stratai_guardrails::rule::{RateBucket, RateLimit, RatePeriod};
use stratai_guardrails::{
    BucketKey, Caller, Decision, Gatekeeper, GatekeeperConfig, GovernorRateLimiter, Guardrails,
    KnownScopes, Policy, PreRequest, Principal, RateLimiter, Refusal,
};

const NOW: &str = "2026-11-27T10:00:00Z";

/// A "shared" store in memory: governor on a fake clock, answering through the async port.
struct FakeShared {
    buckets: GovernorRateLimiter<FakeRelativeClock>,
    calls: AtomicUsize,
    down: bool,
}

impl FakeShared {
    fn new(clock: &FakeRelativeClock) -> Self {
        Self {
            buckets: GovernorRateLimiter::with_clock(clock.clone()),
            calls: AtomicUsize::new(0),
            down: false,
        }
    }

    fn down() -> Self {
        Self {
            down: true,
            ..Self::new(&FakeRelativeClock::default())
        }
    }

    fn ask(
        &self,
        key: &RateLimitKey,
        requests: u32,
        period: Duration,
        take: bool,
    ) -> Result<RateVerdict, StoreError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.down {
            return Err(StoreError::Backend("connection refused".into()));
        }
        let period = match period.as_secs() {
            60 => RatePeriod::Minute,
            3600 => RatePeriod::Hour,
            _ => RatePeriod::Day,
        };
        let limit = RateLimit {
            requests,
            period,
            bucket: if key.user.is_some() {
                RateBucket::PerUser
            } else {
                RateBucket::Scope
            },
        };
        let bucket = BucketKey {
            rule_id: key.rule_id,
            user: key.user,
        };
        Ok(if take {
            self.buckets.acquire(&bucket, &limit)
        } else {
            self.buckets.peek(&bucket, &limit)
        })
    }
}

#[async_trait]
impl RateLimitStore for FakeShared {
    async fn acquire(
        &self,
        key: &RateLimitKey,
        requests: u32,
        period: Duration,
    ) -> Result<RateVerdict, StoreError> {
        self.ask(key, requests, period, true)
    }

    async fn peek(
        &self,
        key: &RateLimitKey,
        requests: u32,
        period: Duration,
    ) -> Result<RateVerdict, StoreError> {
        self.ask(key, requests, period, false)
    }
}

struct World {
    org: OrgId,
    users: [UserId; 2],
}

impl World {
    fn new() -> Self {
        Self {
            org: OrgId::new(),
            users: [UserId::new(), UserId::new()],
        }
    }

    fn rate(&self, n: u128, requests: u32, bucket: &str, action: RuleAction) -> RuleRecord {
        record(
            n,
            &format!("rate {n}"),
            "rate_limit",
            json!({"requests": requests, "period": "minute", "bucket": bucket}),
            RuleScope::Org { org_id: self.org },
            action,
        )
    }

    fn policy(&self, records: &[RuleRecord]) -> Policy {
        let mut known = KnownScopes::new();
        known
            .add_org(self.org)
            .add_tier(BASIC_TIER_ID)
            .add_tier(STANDARD_TIER_ID);
        Policy::compile(records, &known, 1).unwrap()
    }

    /// A gatekeeper ("an instance") with its own in-process limiter on `clock`.
    fn gate(
        &self,
        records: &[RuleRecord],
        clock: &FakeRelativeClock,
        shared: Option<Arc<dyn RateLimitStore>>,
    ) -> Gatekeeper {
        let org = Organization {
            id: self.org,
            name: "Rate Co".into(),
            slug: Slug::new("rate-co").unwrap(),
            settings: OrgSettings {
                allowed_tiers: vec![TierSlug::new("basic").unwrap()],
                default_tier: TierSlug::new("basic").unwrap(),
                max_users_per_group: 50,
                require_mfa: false,
                timezone: None,
                signup_domains: Vec::new(),
            },
            billing_email: None,
            billing_plan: BillingPlan::Business,
            active: true,
            litellm_org_id: None,
            created_at: at(NOW),
            updated_at: at(NOW),
        };
        let mut directory = MockDirectoryStore::new();
        directory
            .expect_get_org()
            .returning(move |_| Ok(org.clone()));
        let org_id = self.org;
        directory.expect_get_member().returning(move |_, user_id| {
            Ok(Membership {
                org_id,
                user_id,
                role: OrgRole::Member,
                allowed_tiers: None,
                monthly_budget: None,
                profile_id: None,
                litellm_key_id: None,
                joined_at: at(NOW),
            })
        });
        directory
            .expect_groups_of_member()
            .returning(|_, _| Ok(Vec::new()));
        let mut tiers = MockTierStore::new();
        tiers.expect_list_tiers().returning(|| Ok(default_tiers()));
        tiers
            .expect_list_subscriptions()
            .returning(move |_| Ok(subscriptions_for(org_id, &[BASIC_TIER_ID], at(NOW))));
        let mut ledger = MockBudgetLedger::new();
        ledger.expect_list_budgets().returning(|_| Ok(Vec::new()));
        let guardrails = Arc::new(Guardrails::with_limiter(
            self.policy(records),
            Arc::new(GovernorRateLimiter::with_clock(clock.clone())),
        ));
        let gate = Gatekeeper::new(
            Arc::new(directory),
            Arc::new(tiers),
            Arc::new(ledger),
            Arc::new(MockUsageStore::new()),
            guardrails,
            GatekeeperConfig::default(),
        );
        match shared {
            Some(store) => gate.with_shared_rate_limiter(store),
            None => gate,
        }
    }

    fn caller(&self, user: UserId) -> Caller {
        Caller {
            org_id: self.org,
            user_id: user,
            group_id: None,
            conversation_id: None,
            endpoint: "chat".into(),
        }
    }
}

fn chat() -> ChatRequest {
    ChatRequest {
        model: "gpt-4o-mini".into(),
        messages: vec![ChatMessage {
            role: "user".into(),
            content: "hello".into(),
        }],
        max_tokens: Some(50),
        temperature: None,
        stream: false,
        user: None,
    }
}

/// The pre decision of an admission or a guardrail refusal (other refusals fail the test).
async fn admit(gate: &Gatekeeper, caller: &Caller) -> Decision {
    match gate.admit(caller, &chat(), at(NOW)).await {
        Ok(admission) => admission.decision().clone(),
        Err(Refusal::Guardrails(decision)) => *decision,
        Err(other) => panic!("unexpected refusal: {other}"),
    }
}

async fn explain(gate: &Gatekeeper, world: &World, user: UserId) -> Decision {
    let principal = Principal {
        org_id: world.org,
        user_id: user,
        groups: Vec::new(),
    };
    let messages = common::user_message("hello");
    let pre = PreRequest {
        principal: &principal,
        model: "gpt-4o-mini",
        tier: Some(BASIC_TIER_ID),
        input_tokens: 10,
        max_tokens: Some(50),
        messages: &messages,
        estimated_cost: stratai_core::Money::ZERO,
        spend: None,
        now: at(NOW),
    };
    gate.explain(&pre).await
}

#[tokio::test]
async fn a_shared_limiter_decides_and_explains_exactly_as_the_local_one() {
    let w = World::new();
    // Several limits: two blocking (one per user), one advisory; the blocking ones are peeked
    // first, so a refused request takes nothing from the others.
    let records = [
        w.rate(1, 3, "scope", RuleAction::Block),
        w.rate(2, 2, "per_user", RuleAction::Block),
        w.rate(3, 1, "scope", RuleAction::Warn),
    ];
    let clock = FakeRelativeClock::default();
    let local = w.gate(&records, &clock, None);
    let store = Arc::new(FakeShared::new(&clock));
    let shared = w.gate(&records, &clock, Some(store.clone()));
    let mut outcomes = Vec::new();
    for i in 0..10 {
        let user = w.users[i % 3 % 2];
        let caller = w.caller(user);
        let (a, b) = (
            explain(&local, &w, user).await,
            explain(&shared, &w, user).await,
        );
        assert_eq!(a, b, "explain #{i}");
        let (a, b) = (admit(&local, &caller).await, admit(&shared, &caller).await);
        assert_eq!(a, b, "request #{i}");
        outcomes.push((a.outcome, a.retry_after.is_some()));
        if i == 6 {
            clock.advance(Duration::from_secs(20));
        }
    }
    // The sequence did exercise allowed, warned and rate-limited decisions.
    use stratai_guardrails::Outcome;
    assert!(outcomes.contains(&(Outcome::Warn, false)), "{outcomes:?}");
    assert!(outcomes.contains(&(Outcome::Deny, true)), "{outcomes:?}");
    assert!(outcomes.contains(&(Outcome::Allow, false)), "{outcomes:?}");
    assert!(store.calls.load(Ordering::SeqCst) > 0);
}

#[tokio::test]
async fn two_gatekeepers_over_one_store_share_the_limit() {
    let w = World::new();
    let records = [w.rate(1, 3, "scope", RuleAction::Block)];
    let clock = FakeRelativeClock::default();
    let count = |gates: [Gatekeeper; 2]| {
        let w = &w;
        async move {
            let mut admitted = 0;
            for i in 0..8 {
                let d = admit(&gates[i % 2], &w.caller(w.users[i % 2])).await;
                if d.retry_after.is_none() {
                    admitted += 1;
                } else {
                    assert!(
                        d.reasons[0]
                            .detail
                            .starts_with("rate limit of 3 per minute reached")
                    );
                }
            }
            admitted
        }
    };
    // Each instance alone allows the full limit: 2 x 3.
    let alone = [
        w.gate(&records, &clock, None),
        w.gate(&records, &clock, None),
    ];
    assert_eq!(count(alone).await, 6);
    let store: Arc<dyn RateLimitStore> = Arc::new(FakeShared::new(&clock));
    let shared = [
        w.gate(&records, &clock, Some(store.clone())),
        w.gate(&records, &clock, Some(store)),
    ];
    assert_eq!(count(shared).await, 3);
}

#[tokio::test]
async fn an_unreachable_store_falls_back_to_the_local_limiter() {
    let w = World::new();
    let records = [w.rate(1, 2, "scope", RuleAction::Block)];
    let clock = FakeRelativeClock::default();
    let store = Arc::new(FakeShared::down());
    let gate = w.gate(&records, &clock, Some(store.clone()));
    let caller = w.caller(w.users[0]);
    // explain looks only, in the fallback too.
    for _ in 0..3 {
        assert!(explain(&gate, &w, w.users[0]).await.retry_after.is_none());
    }
    assert!(admit(&gate, &caller).await.retry_after.is_none());
    assert!(admit(&gate, &caller).await.retry_after.is_none());
    let refused = admit(&gate, &caller).await;
    assert_eq!(refused.retry_after, Some(Duration::from_secs(30)));
    assert!(explain(&gate, &w, w.users[0]).await.retry_after.is_some());
    // The store was asked every time.
    assert_eq!(store.calls.load(Ordering::SeqCst), 7);
}
