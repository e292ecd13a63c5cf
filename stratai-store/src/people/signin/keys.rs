//! Verification keys: a static key set (dev mode) or a cached remote JWKS.
//!
//! The algorithm a token is checked with comes from the key (its JWK `alg`, or the
//! configured algorithms of the key's family), never from the token header: the header's
//! `alg` must merely be one of the key's algorithms.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};
use url::Url;

use super::AuthError;
use super::oidc::Discovery;

/// Largest JWKS document accepted.
const MAX_JWKS_BYTES: usize = 512 * 1024;

/// One verification key and the algorithms it may be used with.
#[derive(Clone)]
pub struct VerifyingKey {
    /// The key.
    pub key: DecodingKey,
    /// Algorithms this key verifies; a token's header `alg` must be one of them.
    pub algorithms: Vec<Algorithm>,
}

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("algorithms", &self.algorithms)
            .finish_non_exhaustive()
    }
}

/// Keys by `kid`.
pub type KeyMap = HashMap<String, VerifyingKey>;

/// Whether `kid` is a plausible key id: 1..=128 characters of `[A-Za-z0-9._-]`, no `..`.
/// Anything else (paths, quotes, SQL, spaces, control characters) is refused before lookup
/// and never triggers a JWKS refetch.
#[must_use]
pub fn is_safe_kid(kid: &str) -> bool {
    !kid.is_empty()
        && kid.len() <= 128
        && !kid.contains("..")
        && kid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Parses a JWKS document into usable keys. Keys that are not for signatures, have no
/// (safe) `kid`, are symmetric, or allow none of `allowed` are skipped, as are entries
/// this library cannot read; the rest of the set still loads.
pub fn parse_jwks(body: &[u8], allowed: &[Algorithm]) -> Result<KeyMap, AuthError> {
    #[derive(serde::Deserialize)]
    struct RawSet {
        keys: Vec<serde_json::Value>,
    }
    let raw: RawSet = serde_json::from_slice(body)
        .map_err(|e| AuthError::KeysUnavailable(format!("jwks is not a key set: {e}")))?;
    let mut out = KeyMap::new();
    for value in raw.keys {
        let Ok(jwk) = serde_json::from_value::<Jwk>(value) else {
            continue;
        };
        let Some(kid) = jwk.common.key_id.clone().filter(|k| is_safe_kid(k)) else {
            continue;
        };
        if matches!(&jwk.common.public_key_use, Some(u) if *u != PublicKeyUse::Signature) {
            continue;
        }
        let Ok(key) = DecodingKey::from_jwk(&jwk) else {
            continue;
        };
        let family = key.family();
        if family == AlgorithmFamily::Hmac {
            continue;
        }
        let algorithms: Vec<Algorithm> = match jwk.common.key_algorithm {
            Some(ka) => match Algorithm::try_from(ka) {
                Ok(a) if allowed.contains(&a) && family.algorithms().contains(&a) => vec![a],
                _ => continue,
            },
            None => allowed
                .iter()
                .copied()
                .filter(|a| family.algorithms().contains(a))
                .collect(),
        };
        if algorithms.is_empty() {
            continue;
        }
        out.insert(kid, VerifyingKey { key, algorithms });
    }
    Ok(out)
}

/// Where the JWKS lives.
#[derive(Clone, Debug)]
pub enum JwksLocation {
    /// A configured URL.
    Fixed(Url),
    /// The `jwks_uri` of the provider's discovery document.
    Discovered(Arc<Discovery>),
}

#[derive(Default)]
struct CacheState {
    keys: Arc<KeyMap>,
    fetched_at: Option<Instant>,
    last_attempt: Option<Instant>,
    last_failed: bool,
}

/// A JWKS cache.
///
/// - A known `kid` is served from memory.
/// - An unknown `kid` refetches the set, at most once per `min_refresh` (concurrent
///   misses share one fetch); a flood of tokens with random `kid`s costs one request per
///   interval.
/// - A set older than `max_age` is refreshed on next use under the same limit.
/// - When the endpoint is down or answers garbage, the keys already cached stay in use.
pub struct JwksCache {
    location: JwksLocation,
    http: reqwest::Client,
    allowed: Vec<Algorithm>,
    min_refresh: Duration,
    max_age: Duration,
    state: RwLock<CacheState>,
    refresh: tokio::sync::Mutex<()>,
    fetches: AtomicU64,
}

impl std::fmt::Debug for JwksCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksCache")
            .field("location", &self.location)
            .field("min_refresh", &self.min_refresh)
            .field("max_age", &self.max_age)
            .finish_non_exhaustive()
    }
}

impl JwksCache {
    /// A cache of the set at `location`, keeping keys usable with `allowed`.
    #[must_use]
    pub fn new(
        location: JwksLocation,
        http: reqwest::Client,
        allowed: Vec<Algorithm>,
        min_refresh: Duration,
        max_age: Duration,
    ) -> Self {
        Self {
            location,
            http,
            allowed,
            min_refresh,
            max_age,
            state: RwLock::new(CacheState::default()),
            refresh: tokio::sync::Mutex::new(()),
            fetches: AtomicU64::new(0),
        }
    }

    /// How many times the JWKS endpoint was requested (for tests and metrics).
    #[must_use]
    pub fn fetch_count(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    /// The key for `kid`, fetching or refreshing the set within the rate limit.
    pub async fn key(&self, kid: &str) -> Result<VerifyingKey, AuthError> {
        let (found, fresh, may_fetch) = self.peek(kid);
        if let Some(key) = &found
            && fresh
        {
            return Ok(key.clone());
        }
        if may_fetch {
            let _guard = self.refresh.lock().await;
            // Another task may have refreshed while this one waited.
            let (found_now, fresh_now, may_fetch_now) = self.peek(kid);
            if let Some(key) = found_now
                && fresh_now
            {
                return Ok(key);
            }
            if may_fetch_now {
                self.refresh_now().await;
            }
        }
        let (found, _, _) = self.peek(kid);
        match found {
            Some(key) => Ok(key),
            None => {
                let state = self.read_state();
                if state.0 && state.1 {
                    Err(AuthError::KeysUnavailable(
                        "no signing keys could be loaded".to_owned(),
                    ))
                } else {
                    Err(AuthError::UnknownKid)
                }
            }
        }
    }

    /// (cache empty, last fetch failed)
    fn read_state(&self) -> (bool, bool) {
        match self.state.read() {
            Ok(s) => (s.keys.is_empty(), s.last_failed),
            Err(p) => {
                let s = p.into_inner();
                (s.keys.is_empty(), s.last_failed)
            }
        }
    }

    /// (key, set is fresh, a fetch is allowed now)
    fn peek(&self, kid: &str) -> (Option<VerifyingKey>, bool, bool) {
        let guard = match self.state.read() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let key = guard.keys.get(kid).cloned();
        let fresh = guard.fetched_at.is_some_and(|t| t.elapsed() < self.max_age);
        let may_fetch = guard
            .last_attempt
            .is_none_or(|t| t.elapsed() >= self.min_refresh);
        (key, fresh, may_fetch)
    }

    /// Fetches the set once; on failure keeps the cached keys.
    async fn refresh_now(&self) {
        let result = self.fetch().await;
        let mut guard = match self.state.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        guard.last_attempt = Some(Instant::now());
        match result {
            Ok(keys) => {
                guard.keys = Arc::new(keys);
                guard.fetched_at = Some(Instant::now());
                guard.last_failed = false;
            }
            Err(e) => {
                guard.last_failed = true;
                tracing::warn!(error = %e, cached_keys = guard.keys.len(), "jwks refresh failed; keeping cached keys");
            }
        }
    }

    async fn fetch(&self) -> Result<KeyMap, AuthError> {
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let url = match &self.location {
            JwksLocation::Fixed(u) => u.clone(),
            JwksLocation::Discovered(d) => d.get().await?.jwks_uri.clone(),
        };
        let response = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| AuthError::KeysUnavailable(format!("jwks request failed: {e}")))?;
        if !response.status().is_success() {
            return Err(AuthError::KeysUnavailable(format!(
                "jwks endpoint answered {}",
                response.status()
            )));
        }
        let body = read_limited(response, MAX_JWKS_BYTES).await?;
        let keys = parse_jwks(&body, &self.allowed)?;
        if keys.is_empty() {
            return Err(AuthError::KeysUnavailable(
                "jwks holds no usable signing key".to_owned(),
            ));
        }
        Ok(keys)
    }
}

/// Reads a response body, refusing more than `limit` bytes.
pub(crate) async fn read_limited(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, AuthError> {
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| AuthError::KeysUnavailable(format!("reading response failed: {e}")))?
    {
        if body.len() + chunk.len() > limit {
            return Err(AuthError::KeysUnavailable(format!(
                "response larger than {limit} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kid_charset() {
        for ok in ["abc", "A-b_c.1", "2024-01-01", "x".repeat(128).as_str()] {
            assert!(is_safe_kid(ok), "{ok}");
        }
        for bad in [
            "",
            "../../etc/passwd",
            "a/b",
            "k' OR '1'='1",
            "k;DROP TABLE users;--",
            "a b",
            "a\u{0}b",
            "..",
            &"x".repeat(129),
            "ключ",
        ] {
            assert!(!is_safe_kid(bad), "{bad:?}");
        }
    }

    #[test]
    fn jwks_parsing_skips_bad_entries_and_symmetric_keys() {
        let body = serde_json::json!({"keys": [
            {"kty": "oct", "kid": "sym", "k": "c2VjcmV0", "alg": "HS256"},
            {"kty": "RSA", "kid": "../x", "n": "AQAB", "e": "AQAB"},
            {"kty": "weird", "kid": "w"},
            {"kty": "RSA", "kid": "enc", "use": "enc", "n": "AQAB", "e": "AQAB"},
            {"kty": "RSA", "kid": "ps", "alg": "PS256", "n": "AQAB", "e": "AQAB"},
            {"kty": "RSA", "kid": "good", "alg": "RS256", "n": "AQAB", "e": "AQAB"},
            {"kty": "RSA", "kid": "noalg", "n": "AQAB", "e": "AQAB"}
        ]});
        let keys = parse_jwks(body.to_string().as_bytes(), &[Algorithm::RS256]).unwrap();
        let mut kids: Vec<_> = keys.keys().cloned().collect();
        kids.sort();
        assert_eq!(kids, vec!["good".to_owned(), "noalg".to_owned()]);
        assert_eq!(keys["noalg"].algorithms, vec![Algorithm::RS256]);
    }
}
