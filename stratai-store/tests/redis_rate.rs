#![cfg(feature = "redis")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! `RedisRateLimiter` against a real Redis (`STRATAI_TEST_REDIS_URL`, else `REDIS_URL`, else
//! `redis://127.0.0.1:6379`). Without one the tests say they were skipped; under `CI=true`
//! they fail instead. Each test uses its own key prefix.

use std::time::{Duration, Instant};

use futures::future::join_all;
use stratai_core::ports::{RateLimitKey, RateLimitStore, RateVerdict};
use stratai_core::{OrgId, RuleId, UserId};
use stratai_store::RedisRateLimiter;

fn url() -> String {
    ["STRATAI_TEST_REDIS_URL", "REDIS_URL"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|s| !s.trim().is_empty()))
        .unwrap_or_else(|| "redis://127.0.0.1:6379".to_owned())
}

/// A limiter ("an instance", with its own connection) under `prefix`, or `None` when no Redis
/// answers and CI is not `true`.
async fn limiter(prefix: &str) -> Option<RedisRateLimiter> {
    let limiter = RedisRateLimiter::new(&url()).unwrap().with_prefix(prefix);
    match limiter.ping().await {
        Ok(()) => Some(limiter),
        Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("Redis is required under CI=true but unavailable: {e}")
        }
        Err(e) => {
            eprintln!("SKIPPED: no Redis for this test: {e}");
            None
        }
    }
}

fn prefix() -> String {
    format!("stratai-test:{}", uuid::Uuid::new_v4().simple())
}

fn scope_key() -> RateLimitKey {
    RateLimitKey {
        rule_id: RuleId::new(),
        user: None,
    }
}

async fn raw() -> redis::aio::MultiplexedConnection {
    redis::Client::open(url().as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

#[tokio::test]
async fn two_instances_share_one_limit_under_concurrency() {
    let prefix = prefix();
    let (Some(a), Some(b)) = (limiter(&prefix).await, limiter(&prefix).await) else {
        return;
    };
    let key = scope_key();
    let minute = Duration::from_secs(60);
    let calls = (0..30).map(|i| {
        let instance = if i % 2 == 0 { a.clone() } else { b.clone() };
        tokio::spawn(async move { instance.acquire(&key, 10, minute).await.unwrap() })
    });
    let verdicts: Vec<RateVerdict> = join_all(calls)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let allowed = verdicts
        .iter()
        .filter(|v| **v == RateVerdict::Allowed)
        .count();
    assert_eq!(allowed, 10, "{verdicts:?}");
    // 10 per minute refill one every 6 s: the next request may come within 6 s, not sooner
    // than a few seconds from now.
    for v in &verdicts {
        if let RateVerdict::Limited { retry_after } = v {
            assert!(
                *retry_after > Duration::from_secs(5) && *retry_after <= Duration::from_secs(6),
                "{retry_after:?}"
            );
        }
    }
    // Both instances see the same exhausted bucket.
    assert!(matches!(
        a.peek(&key, 10, minute).await.unwrap(),
        RateVerdict::Limited { .. }
    ));
    assert!(matches!(
        b.acquire(&key, 10, minute).await.unwrap(),
        RateVerdict::Limited { .. }
    ));
}

#[tokio::test]
async fn peeking_takes_nothing_and_per_user_buckets_are_separate() {
    let Some(limiter) = limiter(&prefix()).await else {
        return;
    };
    let minute = Duration::from_secs(60);
    let rule = RuleId::new();
    let org = OrgId::new();
    let (ka, kb) = (
        RateLimitKey {
            rule_id: rule,
            user: Some((org, UserId::new())),
        },
        RateLimitKey {
            rule_id: rule,
            user: Some((org, UserId::new())),
        },
    );
    for _ in 0..5 {
        assert_eq!(
            limiter.peek(&ka, 1, minute).await.unwrap(),
            RateVerdict::Allowed
        );
    }
    assert_eq!(
        limiter.acquire(&ka, 1, minute).await.unwrap(),
        RateVerdict::Allowed
    );
    assert!(matches!(
        limiter.peek(&ka, 1, minute).await.unwrap(),
        RateVerdict::Limited { .. }
    ));
    assert!(matches!(
        limiter.acquire(&ka, 1, minute).await.unwrap(),
        RateVerdict::Limited { .. }
    ));
    assert_eq!(
        limiter.acquire(&kb, 1, minute).await.unwrap(),
        RateVerdict::Allowed
    );
    // A per-user bucket's key names its organization and user.
    let name = limiter.key(&ka, 1, minute);
    assert!(
        name.ends_with(&format!("{}:{}", org, ka.user.unwrap().1)),
        "{name}"
    );
}

#[tokio::test]
async fn the_bucket_refills_after_retry_after_and_its_key_expires() {
    let Some(limiter) = limiter(&prefix()).await else {
        return;
    };
    let key = scope_key();
    let period = Duration::from_millis(600);
    for _ in 0..2 {
        assert_eq!(
            limiter.acquire(&key, 2, period).await.unwrap(),
            RateVerdict::Allowed
        );
    }
    let RateVerdict::Limited { retry_after } = limiter.acquire(&key, 2, period).await.unwrap()
    else {
        panic!("third request within the period allowed")
    };
    assert!(
        retry_after > Duration::from_millis(200) && retry_after <= Duration::from_millis(300),
        "{retry_after:?}"
    );
    // The key lives no longer than the bucket takes to refill.
    let name = limiter.key(&key, 2, period);
    let mut conn = raw().await;
    let ttl: i64 = redis::cmd("PTTL")
        .arg(&name)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(ttl > 0 && ttl <= 600, "ttl {ttl} ms");
    tokio::time::sleep(retry_after + Duration::from_millis(20)).await;
    assert_eq!(
        limiter.acquire(&key, 2, period).await.unwrap(),
        RateVerdict::Allowed
    );
    tokio::time::sleep(Duration::from_millis(700)).await;
    let exists: i64 = redis::cmd("EXISTS")
        .arg(&name)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(exists, 0, "the key of a full bucket expired");
}

#[tokio::test]
async fn an_unreachable_redis_is_a_prompt_backend_error() {
    // Nothing listens on port 1; no Redis is needed for this test.
    let limiter = RedisRateLimiter::new("redis://127.0.0.1:1").unwrap();
    let started = Instant::now();
    let err = limiter
        .acquire(&scope_key(), 10, Duration::from_secs(60))
        .await
        .unwrap_err();
    assert!(matches!(err, stratai_core::StoreError::Backend(_)), "{err}");
    assert!(started.elapsed() < Duration::from_secs(2));
    // A malformed URL is refused up front, without echoing it (it may hold a password).
    let err = RedisRateLimiter::new("not a url:secret").unwrap_err();
    assert!(!err.to_string().contains("secret"), "{err}");
}
