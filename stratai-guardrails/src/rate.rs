//! Rate limits: the [`RateLimiter`] port and an in-process implementation on `governor`.
//!
//! A rate limit rule owns its buckets: one for the whole scope (`bucket: scope`, the
//! default) or one per user (`bucket: per_user`). The in-process limiter is exact for one
//! process; several server instances share their buckets through core's
//! [`RateLimitStore`] port (Redis in stratai-store),
//! which the [`Gatekeeper`](crate::Gatekeeper) consults when one is configured
//! ([`Gatekeeper::with_shared_rate_limiter`](crate::Gatekeeper::with_shared_rate_limiter)).

use std::collections::HashMap;
use std::convert::Infallible;
use std::hash::{Hash, Hasher};
use std::num::NonZeroU32;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::StateStore;
use governor::state::keyed::{DashMapStateStore, ShrinkableKeyedStateStore};
use governor::{Quota, RateLimiter as Governor};
use smallvec::SmallVec;
pub use stratai_core::ports::RateVerdict;
use stratai_core::ports::{RateLimitKey, RateLimitStore};
use stratai_core::{OrgId, RuleId, StoreError, UserId};

use crate::pre::RateQuery;
use crate::rule::{RateBucket, RateLimit};

/// Identifies one bucket: the rule, and the user for per-user buckets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BucketKey {
    /// The rate limit rule.
    pub rule_id: RuleId,
    /// The user, for `per_user` buckets.
    pub user: Option<(OrgId, UserId)>,
}

impl BucketKey {
    /// The bucket a request of `user` in `org` draws from under `rule_id`'s limit.
    #[must_use]
    pub fn for_request(rule_id: RuleId, limit: &RateLimit, org: OrgId, user: UserId) -> Self {
        Self {
            rule_id,
            user: match limit.bucket {
                RateBucket::Scope => None,
                RateBucket::PerUser => Some((org, user)),
            },
        }
    }
}

impl From<BucketKey> for RateLimitKey {
    fn from(key: BucketKey) -> Self {
        Self {
            rule_id: key.rule_id,
            user: key.user,
        }
    }
}

/// Counts requests per bucket.
pub trait RateLimiter: Send + Sync {
    /// Takes one request from the bucket when the limit allows it.
    fn acquire(&self, key: &BucketKey, limit: &RateLimit) -> RateVerdict;
    /// What [`acquire`](RateLimiter::acquire) would answer, taking nothing.
    fn peek(&self, key: &BucketKey, limit: &RateLimit) -> RateVerdict;
    /// Forgets buckets that are back to full, so memory stays bounded. Call periodically.
    fn retain_recent(&self);
    /// Number of buckets held.
    fn len(&self) -> usize;
    /// Whether no bucket is held.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The key governor sees: a bucket, and whether this access only looks.
#[derive(Clone, Copy, Debug)]
struct Probe {
    bucket: BucketKey,
    peek: bool,
}

impl PartialEq for Probe {
    fn eq(&self, other: &Self) -> bool {
        self.bucket == other.bucket
    }
}

impl Eq for Probe {}

impl Hash for Probe {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.bucket.hash(state);
    }
}

/// governor's dashmap store, with a look-only mode: a peek measures the bucket and never
/// writes the new state back, so `explain` takes no token.
#[derive(Debug, Default)]
struct PeekableStore {
    inner: DashMapStateStore<Probe, foldhash::fast::RandomState>,
}

impl StateStore for PeekableStore {
    type Key = Probe;

    fn measure_and_replace<T, F, E>(&self, key: &Probe, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        if !key.peek {
            return self.inner.measure_and_replace(key, f);
        }
        if !self.inner.contains_key(key) {
            return f(None).map(|(t, _)| t);
        }
        // Refuse the write: the closure's verdict comes back in the error, the state stays.
        let probe = self
            .inner
            .measure_and_replace(key, |prev| Err::<(Infallible, Nanos), _>(f(prev)));
        match probe {
            Ok(never) => match never {},
            Err(verdict) => verdict.map(|(t, _)| t),
        }
    }
}

impl ShrinkableKeyedStateStore<Probe> for PeekableStore {
    fn retain_recent(&self, drop_below: Nanos) {
        self.inner.retain_recent(drop_below);
    }

    fn shrink_to_fit(&self) {
        self.inner.shrink_to_fit();
    }

    fn len(&self) -> usize {
        ShrinkableKeyedStateStore::len(&self.inner)
    }

    fn is_empty(&self) -> bool {
        ShrinkableKeyedStateStore::is_empty(&self.inner)
    }
}

/// Limiters by quota (requests, period seconds).
type QuotaMap<C> = HashMap<(u32, u64), Arc<Keyed<C>>, foldhash::fast::RandomState>;

type Keyed<C> = Governor<Probe, PeekableStore, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// An in-process [`RateLimiter`] on `governor` (GCRA): one keyed limiter per distinct quota,
/// keyed by bucket. Bursts up to the full quota are allowed, refilled evenly over the period.
pub struct GovernorRateLimiter<C: Clock = DefaultClock> {
    clock: C,
    limiters: RwLock<QuotaMap<C>>,
}

impl GovernorRateLimiter<DefaultClock> {
    /// A limiter on the system's monotonic clock.
    #[must_use]
    pub fn new() -> Self {
        Self::with_clock(DefaultClock::default())
    }
}

impl Default for GovernorRateLimiter<DefaultClock> {
    fn default() -> Self {
        Self::new()
    }
}

impl<C: Clock + Clone + Send + Sync> GovernorRateLimiter<C>
where
    C::Instant: Send + Sync,
{
    /// A limiter on the given clock (tests use governor's `FakeRelativeClock`).
    #[must_use]
    pub fn with_clock(clock: C) -> Self {
        Self {
            clock,
            limiters: RwLock::new(HashMap::default()),
        }
    }

    fn limiter(&self, limit: &RateLimit) -> Option<Arc<Keyed<C>>> {
        let key = (limit.requests, limit.period.seconds());
        if let Ok(map) = self.limiters.read()
            && let Some(l) = map.get(&key)
        {
            return Some(Arc::clone(l));
        }
        let burst = NonZeroU32::new(limit.requests)?;
        let quota = Quota::with_period(Duration::from_secs(limit.period.seconds()) / burst.get())?
            .allow_burst(burst);
        let mut map = self.limiters.write().ok()?;
        let l = map.entry(key).or_insert_with(|| {
            Arc::new(Governor::new(
                quota,
                PeekableStore::default(),
                self.clock.clone(),
            ))
        });
        Some(Arc::clone(l))
    }

    fn check(&self, key: &BucketKey, limit: &RateLimit, peek: bool) -> RateVerdict {
        let Some(limiter) = self.limiter(limit) else {
            // Validated limits are positive; a zero limit allows nothing.
            return RateVerdict::Limited {
                retry_after: Duration::from_secs(limit.period.seconds()),
            };
        };
        match limiter.check_key(&Probe { bucket: *key, peek }) {
            Ok(()) => RateVerdict::Allowed,
            Err(not_until) => RateVerdict::Limited {
                retry_after: not_until.wait_time_from(self.clock.now()),
            },
        }
    }
}

impl<C: Clock + Clone + Send + Sync> RateLimiter for GovernorRateLimiter<C>
where
    C::Instant: Send + Sync,
{
    fn acquire(&self, key: &BucketKey, limit: &RateLimit) -> RateVerdict {
        self.check(key, limit, false)
    }

    fn peek(&self, key: &BucketKey, limit: &RateLimit) -> RateVerdict {
        self.check(key, limit, true)
    }

    fn retain_recent(&self) {
        let limiters: Vec<_> = match self.limiters.read() {
            Ok(map) => map.values().cloned().collect(),
            Err(_) => return,
        };
        for l in limiters {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }

    fn len(&self) -> usize {
        match self.limiters.read() {
            Ok(map) => map.values().map(|l| l.len()).sum(),
            Err(_) => 0,
        }
    }
}

/// Verdicts of a shared [`RateLimitStore`] fetched before the (synchronous) decision, then
/// answered to it as a [`RateLimiter`]: the decision explains a shared limit exactly as a
/// local one.
#[derive(Debug, Default)]
pub struct FetchedVerdicts {
    peeked: SmallVec<[(BucketKey, RateVerdict); 4]>,
    taken: SmallVec<[(BucketKey, RateVerdict); 4]>,
}

impl FetchedVerdicts {
    /// Asks `store` about `queries` (from [`PendingPre::rate_queries`](crate::pre::PendingPre::rate_queries))
    /// in the order the decision consults its limiter: with several limits, the blocking ones
    /// are peeked first and nothing is taken when one of them is exhausted; otherwise each
    /// bucket is acquired (`take`) or peeked.
    pub async fn fetch(
        store: &dyn RateLimitStore,
        queries: &[RateQuery],
        take: bool,
    ) -> Result<Self, StoreError> {
        let mut out = Self::default();
        let quota = |q: &RateQuery| {
            (
                q.limit.requests,
                Duration::from_secs(q.limit.period.seconds()),
            )
        };
        if queries.len() > 1 {
            let mut refused = false;
            for q in queries.iter().filter(|q| q.blocking) {
                let (requests, period) = quota(q);
                let verdict = store.peek(&q.bucket.into(), requests, period).await?;
                refused |= verdict != RateVerdict::Allowed;
                out.peeked.push((q.bucket, verdict));
            }
            if refused {
                return Ok(out);
            }
        }
        for q in queries {
            let (requests, period) = quota(q);
            let key = q.bucket.into();
            if take {
                let verdict = store.acquire(&key, requests, period).await?;
                out.taken.push((q.bucket, verdict));
            } else {
                let verdict = store.peek(&key, requests, period).await?;
                out.peeked.push((q.bucket, verdict));
            }
        }
        Ok(out)
    }

    fn find(list: &[(BucketKey, RateVerdict)], key: &BucketKey) -> RateVerdict {
        // Every bucket the decision asks about was fetched; an unknown one cannot occur.
        list.iter()
            .rev()
            .find(|(k, _)| k == key)
            .map_or(RateVerdict::Allowed, |(_, v)| *v)
    }
}

impl RateLimiter for FetchedVerdicts {
    fn acquire(&self, key: &BucketKey, _limit: &RateLimit) -> RateVerdict {
        Self::find(&self.taken, key)
    }

    fn peek(&self, key: &BucketKey, _limit: &RateLimit) -> RateVerdict {
        Self::find(&self.peeked, key)
    }

    fn retain_recent(&self) {}

    fn len(&self) -> usize {
        self.peeked.len() + self.taken.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rule::RatePeriod;
    use governor::clock::FakeRelativeClock;

    fn limit(requests: u32, bucket: RateBucket) -> RateLimit {
        RateLimit {
            requests,
            period: RatePeriod::Minute,
            bucket,
        }
    }

    #[test]
    fn allows_the_quota_then_reports_retry_after() {
        let clock = FakeRelativeClock::default();
        let limiter = GovernorRateLimiter::with_clock(clock.clone());
        let l = limit(3, RateBucket::Scope);
        let key = BucketKey {
            rule_id: RuleId::new(),
            user: None,
        };
        for _ in 0..3 {
            assert_eq!(limiter.acquire(&key, &l), RateVerdict::Allowed);
        }
        let RateVerdict::Limited { retry_after } = limiter.acquire(&key, &l) else {
            panic!("fourth request allowed")
        };
        assert_eq!(retry_after, Duration::from_secs(20));
        clock.advance(Duration::from_secs(20));
        assert_eq!(limiter.acquire(&key, &l), RateVerdict::Allowed);
    }

    #[test]
    fn peeking_takes_nothing() {
        let limiter = GovernorRateLimiter::with_clock(FakeRelativeClock::default());
        let l = limit(1, RateBucket::Scope);
        let key = BucketKey {
            rule_id: RuleId::new(),
            user: None,
        };
        for _ in 0..5 {
            assert_eq!(limiter.peek(&key, &l), RateVerdict::Allowed);
        }
        assert_eq!(limiter.acquire(&key, &l), RateVerdict::Allowed);
        assert!(matches!(
            limiter.peek(&key, &l),
            RateVerdict::Limited { .. }
        ));
        assert!(matches!(
            limiter.acquire(&key, &l),
            RateVerdict::Limited { .. }
        ));
    }

    #[test]
    fn per_user_buckets_are_separate_and_memory_is_reclaimed() {
        let clock = FakeRelativeClock::default();
        let limiter = GovernorRateLimiter::with_clock(clock.clone());
        let l = limit(1, RateBucket::PerUser);
        let rule = RuleId::new();
        let org = OrgId::new();
        let (a, b) = (UserId::new(), UserId::new());
        let ka = BucketKey::for_request(rule, &l, org, a);
        let kb = BucketKey::for_request(rule, &l, org, b);
        assert_ne!(ka, kb);
        assert_eq!(limiter.acquire(&ka, &l), RateVerdict::Allowed);
        assert_eq!(limiter.acquire(&kb, &l), RateVerdict::Allowed);
        assert!(matches!(
            limiter.acquire(&ka, &l),
            RateVerdict::Limited { .. }
        ));
        assert_eq!(limiter.len(), 2);
        clock.advance(Duration::from_secs(120));
        limiter.retain_recent();
        assert_eq!(limiter.len(), 0);
    }
}
