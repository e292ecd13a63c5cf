//! [`RedisRateLimiter`]: core's [`RateLimitStore`] in Redis, so that a rate limit holds across
//! every server instance instead of per process (feature `redis`).
//!
//! Each bucket is one Redis string holding its GCRA "theoretical arrival time" in microseconds
//! of the Redis server's clock (`TIME`): instances' clocks never enter the computation. One
//! Lua script (run by `EVALSHA`, loaded on first use) reads the time, decides and writes
//! atomically, so concurrent requests on any number of instances cannot overshoot. The law is
//! the in-process limiter's (governor's GCRA): a burst of up to `requests`, refilled evenly
//! over the period; a refused request takes nothing. A key expires when its bucket is full
//! again, so Redis only holds buckets used within their last period.
//!
//! Every call is bounded by a timeout (default 250 ms); an unreachable or slow Redis is a
//! [`StoreError::Backend`], on which the Gatekeeper decides with its in-process limiter.

use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, Script};
use stratai_core::StoreError;
use stratai_core::ports::{RateLimitKey, RateLimitStore, RateVerdict};

/// GCRA in one step. KEYS[1]: the bucket. ARGV[1]: microseconds per request (the emission
/// interval), ARGV[2]: requests per period (the burst), ARGV[3]: `1` takes, `0` only looks.
/// Returns `{1, 0}` when allowed, `{0, wait_us}` when limited.
const GCRA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local capacity = interval * tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then
  tat = now
end
local next_tat = tat + interval
local wait = next_tat - capacity - now
if wait > 0 then
  return {0, wait}
end
if ARGV[3] == '1' then
  redis.call('SET', KEYS[1], string.format('%.0f', next_tat), 'PX', math.ceil((next_tat - now) / 1000))
end
return {1, 0}
";

/// Rate-limit buckets in Redis, shared by every instance that uses the same Redis and key
/// prefix. Cheap to clone (one multiplexed connection, reconnected when it drops).
#[derive(Clone)]
pub struct RedisRateLimiter {
    connection: ConnectionManager,
    script: Script,
    prefix: String,
    timeout: Duration,
}

impl std::fmt::Debug for RedisRateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the URL: it may carry a password.
        f.debug_struct("RedisRateLimiter")
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl RedisRateLimiter {
    /// The default key prefix.
    pub const DEFAULT_PREFIX: &'static str = "stratai:rate";
    /// The default bound of one call (connecting included).
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(250);

    /// A limiter on the Redis at `url` (`redis://[:password@]host:port[/db]`, or `rediss://`
    /// when the crate is built with TLS). Connects lazily: an unreachable Redis is reported
    /// by the calls (and retried by the next ones), not here; only a malformed URL is an
    /// error.
    pub fn new(url: &str) -> Result<Self, StoreError> {
        Self::with_timeout(url, Self::DEFAULT_TIMEOUT)
    }

    /// [`new`](Self::new) with a bound on each call instead of the default 250 ms.
    pub fn with_timeout(url: &str, timeout: Duration) -> Result<Self, StoreError> {
        let client = Client::open(url).map_err(|e| {
            // Not the error's text: it may quote the URL, password included.
            StoreError::Backend(format!("invalid Redis URL ({:?})", e.kind()))
        })?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            // Reconnection is retried by later calls; a call never waits for a back-off.
            .set_number_of_retries(0);
        let connection =
            ConnectionManager::new_lazy_with_config(client, config).map_err(backend)?;
        Ok(Self {
            connection,
            script: Script::new(GCRA),
            prefix: Self::DEFAULT_PREFIX.to_owned(),
            timeout,
        })
    }

    /// The same limiter with keys under `prefix` (e.g. one per deployment sharing a Redis).
    #[must_use]
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Checks that Redis answers (a `PING` within the timeout).
    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut connection = self.connection.clone();
        let command = redis::cmd("PING");
        let ping = command.query_async::<String>(&mut connection);
        match tokio::time::timeout(self.timeout, ping).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(backend(e)),
            Err(_) => Err(timed_out(self.timeout)),
        }
    }

    /// The Redis key of a bucket: its rule, its quota (a changed limit starts a fresh
    /// bucket, as in the in-process limiter) and, for per-user buckets, the org and user.
    #[must_use]
    pub fn key(&self, key: &RateLimitKey, requests: u32, period: Duration) -> String {
        let base = format!(
            "{}:{}:{}:{}",
            self.prefix,
            key.rule_id,
            requests,
            period.as_millis()
        );
        match key.user {
            Some((org, user)) => format!("{base}:{org}:{user}"),
            None => base,
        }
    }

    async fn gcra(
        &self,
        key: &RateLimitKey,
        requests: u32,
        period: Duration,
        take: bool,
    ) -> Result<RateVerdict, StoreError> {
        if requests == 0 {
            // Validated limits are positive; a zero limit allows nothing (as in-process).
            return Ok(RateVerdict::Limited {
                retry_after: period,
            });
        }
        let period_us = u64::try_from(period.as_micros()).unwrap_or(u64::MAX);
        let interval = period_us.div_ceil(u64::from(requests)).max(1);
        let mut connection = self.connection.clone();
        let mut invocation = self.script.key(self.key(key, requests, period));
        invocation
            .arg(interval)
            .arg(requests)
            .arg(if take { 1 } else { 0 });
        let call = invocation.invoke_async::<(i64, i64)>(&mut connection);
        let (allowed, wait_us) = match tokio::time::timeout(self.timeout, call).await {
            Ok(result) => result.map_err(backend)?,
            Err(_) => return Err(timed_out(self.timeout)),
        };
        Ok(if allowed == 1 {
            RateVerdict::Allowed
        } else {
            RateVerdict::Limited {
                retry_after: Duration::from_micros(u64::try_from(wait_us).unwrap_or(0)),
            }
        })
    }
}

#[async_trait]
impl RateLimitStore for RedisRateLimiter {
    async fn acquire(
        &self,
        key: &RateLimitKey,
        requests: u32,
        period: Duration,
    ) -> Result<RateVerdict, StoreError> {
        self.gcra(key, requests, period, true).await
    }

    async fn peek(
        &self,
        key: &RateLimitKey,
        requests: u32,
        period: Duration,
    ) -> Result<RateVerdict, StoreError> {
        self.gcra(key, requests, period, false).await
    }
}

fn backend(e: redis::RedisError) -> StoreError {
    StoreError::Backend(format!("redis: {e}"))
}

fn timed_out(after: Duration) -> StoreError {
    StoreError::Backend(format!("redis: no answer within {} ms", after.as_millis()))
}
