//! Bearer and id token validation: one code path for OIDC and dev-mode tokens.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Validation, decode, decode_header};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::AuthError;
use super::keys::{JwksCache, KeyMap, VerifyingKey, is_safe_kid};

/// Longest token accepted; real tokens are a few KiB.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Where verification keys come from.
#[derive(Clone, Debug)]
pub enum KeySource {
    /// A fixed set (dev mode's per-process key).
    Static(Arc<KeyMap>),
    /// A provider's JWKS.
    Jwks(Arc<JwksCache>),
}

impl KeySource {
    async fn key(&self, kid: &str) -> Result<VerifyingKey, AuthError> {
        match self {
            Self::Static(map) => map.get(kid).cloned().ok_or(AuthError::UnknownKid),
            Self::Jwks(cache) => cache.key(kid).await,
        }
    }
}

/// What a valid token says about its bearer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedClaims {
    /// `iss`.
    pub issuer: String,
    /// `sub`.
    pub subject: String,
    /// The configured email claim, lowercased, if present and a string.
    pub email: Option<String>,
    /// Whether the provider vouches for the email (`email_verified: true`).
    pub email_verified: bool,
    /// `name`, if present.
    pub name: Option<String>,
    /// `nonce`, if present (id tokens).
    pub nonce: Option<String>,
    /// `azp` (authorized party), if present.
    pub authorized_party: Option<String>,
    /// `exp`, seconds since the epoch.
    pub expires_at: u64,
    /// Whether the provider says the bearer authenticated with more than one factor (see
    /// [`is_multi_factor`]).
    pub mfa: bool,
}

/// `acr` values that name multi-factor authentication: the OpenID PAPE policies
/// (multi-factor and multi-factor physical) and the bare `mfa` some providers send.
pub const MFA_ACR_VALUES: &[&str] = &[
    "http://schemas.openid.net/pape/policies/2007/06/multi-factor",
    "http://schemas.openid.net/pape/policies/2007/06/multi-factor-physical",
    "mfa",
];

/// Whether a token's claims say its bearer used more than one factor: `amr` (RFC 8176) holds
/// `mfa`, or `acr` is one of [`MFA_ACR_VALUES`]. Anything else (no claim, `amr: ["pwd"]`, a
/// malformed claim) is single-factor.
#[must_use]
pub fn is_multi_factor(claims: &Map<String, Value>) -> bool {
    let amr = claims
        .get("amr")
        .and_then(Value::as_array)
        .is_some_and(|values| values.iter().any(|v| v.as_str() == Some("mfa")));
    let acr = claims
        .get("acr")
        .and_then(Value::as_str)
        .is_some_and(|v| MFA_ACR_VALUES.contains(&v));
    amr || acr
}

/// Validates JWTs of one issuer.
///
/// Checks, in order: size and shape; a `kid` of safe characters; a key for that `kid`; the
/// header `alg` among the key's algorithms (so `none`, or HS256 keyed with an RSA public
/// key, never verify); the signature; required `exp`, `iss`, `aud`, `sub`; `exp` and `nbf`
/// within the leeway; the issuer and the audience.
///
/// With [`with_cache`](Self::with_cache), a token that passed all of this is remembered (by
/// the SHA-256 of audience and token) for a short while: a second use within that time skips
/// the signature and the claims' parsing but is still refused once the token has expired.
#[derive(Clone, Debug)]
pub struct TokenValidator {
    issuer: String,
    leeway: Duration,
    email_claim: String,
    email_verified_claim: String,
    keys: KeySource,
    verified: Arc<VerifiedTokens>,
}

impl TokenValidator {
    /// A validator for tokens from `issuer`, verified with `keys`.
    #[must_use]
    pub fn new(issuer: String, keys: KeySource, leeway: Duration, email_claim: String) -> Self {
        let email_verified_claim = if email_claim == "email" {
            "email_verified".to_owned()
        } else {
            format!("{email_claim}_verified")
        };
        Self {
            issuer,
            leeway,
            email_claim,
            email_verified_claim,
            keys,
            verified: Arc::new(VerifiedTokens::new(Duration::ZERO)),
        }
    }

    /// Remembers each verified token for at most `ttl` (zero, the default: never), and never
    /// past its own `exp` (plus the leeway). Within that time a key withdrawn from the
    /// provider's JWKS still verifies the tokens it already verified.
    #[must_use]
    pub fn with_cache(mut self, ttl: Duration) -> Self {
        self.verified = Arc::new(VerifiedTokens::new(ttl));
        self
    }

    /// The expected issuer.
    #[must_use]
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Validates `token` for `audience`.
    pub async fn validate(&self, token: &str, audience: &str) -> Result<VerifiedClaims, AuthError> {
        if token.len() > MAX_TOKEN_BYTES || token.split('.').count() != 3 {
            return Err(AuthError::Malformed);
        }
        let digest = self.verified.is_on().then(|| token_digest(audience, token));
        if let Some(claims) = digest.and_then(|d| self.verified.get(&d, Instant::now())) {
            return Ok(claims);
        }
        let claims = self.verify(token, audience).await?;
        if let Some(d) = digest {
            self.verified
                .put(d, &claims, self.leeway, Instant::now(), SystemTime::now());
        }
        Ok(claims)
    }

    async fn verify(&self, token: &str, audience: &str) -> Result<VerifiedClaims, AuthError> {
        // The header is read only to find the key; its `alg` is checked against the key.
        let header = decode_header(token).map_err(|_| AuthError::Malformed)?;
        let kid = header.kid.as_deref().ok_or(AuthError::MissingKid)?;
        if !is_safe_kid(kid) {
            return Err(AuthError::InvalidKid);
        }
        let key = self.keys.key(kid).await?;
        if !key.algorithms.contains(&header.alg) {
            return Err(AuthError::AlgorithmNotAllowed);
        }

        let mut validation = Validation::new(header.alg);
        validation.algorithms = key.algorithms.clone();
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[audience]);
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = true;
        validation.leeway = self.leeway.as_secs();

        let data = decode::<Map<String, Value>>(token, &key.key, &validation)
            .map_err(|e| map_jwt_error(e.kind()))?;
        self.claims(data.claims)
    }

    fn claims(&self, mut claims: Map<String, Value>) -> Result<VerifiedClaims, AuthError> {
        let subject = match claims.remove("sub") {
            Some(Value::String(s)) if !s.is_empty() && s.len() <= 255 => s,
            _ => return Err(AuthError::InvalidClaim("sub")),
        };
        // jsonwebtoken checked that `exp` parses as a number; keep it.
        let expires_at = claims
            .get("exp")
            .and_then(Value::as_u64)
            .ok_or(AuthError::InvalidClaim("exp"))?;
        // `iss` was matched against `self.issuer` by the library.
        let issuer = self.issuer.clone();
        let email = match claims.remove(&self.email_claim) {
            Some(Value::String(s)) => Some(s.trim().to_ascii_lowercase()),
            Some(Value::Null) | None => None,
            Some(_) => return Err(AuthError::InvalidClaim("email")),
        };
        let email_verified = matches!(
            claims.get(&self.email_verified_claim),
            Some(Value::Bool(true))
        );
        let name = match claims.remove("name") {
            Some(Value::String(s)) => Some(s),
            _ => None,
        };
        let nonce = match claims.remove("nonce") {
            Some(Value::String(s)) => Some(s),
            _ => None,
        };
        let authorized_party = match claims.remove("azp") {
            Some(Value::String(s)) => Some(s),
            _ => None,
        };
        let mfa = is_multi_factor(&claims);
        Ok(VerifiedClaims {
            mfa,
            authorized_party,
            issuer,
            subject,
            email,
            email_verified,
            name,
            nonce,
            expires_at,
        })
    }
}

/// Entries above this count are dropped at the next insert (a bound on memory, not an LRU).
const MAX_VERIFIED: usize = 100_000;

/// Verified tokens by digest, each with the instant it stops being served.
#[derive(Debug)]
struct VerifiedTokens {
    ttl: Duration,
    entries: Mutex<HashMap<[u8; 32], (Instant, VerifiedClaims)>>,
}

/// SHA-256 of the audience and the token: the cache keeps neither.
fn token_digest(audience: &str, token: &str) -> [u8; 32] {
    let mut hash = Sha256::new();
    hash.update(audience.as_bytes());
    hash.update([0]);
    hash.update(token.as_bytes());
    hash.finalize().into()
}

impl VerifiedTokens {
    fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn is_on(&self) -> bool {
        !self.ttl.is_zero()
    }

    fn get(&self, digest: &[u8; 32], now: Instant) -> Option<VerifiedClaims> {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let (until, claims) = entries.get(digest)?;
        (now < *until).then(|| claims.clone())
    }

    /// Remembers `claims` until `ttl` from `now` or until the token expires (its `exp` plus
    /// `leeway`, on the wall clock `wall`), whichever comes first.
    fn put(
        &self,
        digest: [u8; 32],
        claims: &VerifiedClaims,
        leeway: Duration,
        now: Instant,
        wall: SystemTime,
    ) {
        let now_secs = wall.duration_since(UNIX_EPOCH).unwrap_or_default();
        let expires = Duration::from_secs(claims.expires_at).saturating_add(leeway);
        let Some(left) = expires.checked_sub(now_secs) else {
            return;
        };
        let until = now + left.min(self.ttl);
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= MAX_VERIFIED {
            entries.retain(|_, (u, _)| now < *u);
            if entries.len() >= MAX_VERIFIED {
                entries.clear();
            }
        }
        entries.insert(digest, (until, claims.clone()));
    }
}

fn map_jwt_error(kind: &ErrorKind) -> AuthError {
    match kind {
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
        ErrorKind::InvalidAudience => AuthError::WrongAudience,
        ErrorKind::MissingRequiredClaim(_) | ErrorKind::InvalidClaimFormat(_) => {
            AuthError::InvalidClaim("required claim missing or malformed")
        }
        ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => AuthError::AlgorithmNotAllowed,
        ErrorKind::InvalidSignature => AuthError::BadSignature,
        _ => AuthError::Malformed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(expires_at: u64) -> VerifiedClaims {
        VerifiedClaims {
            issuer: "https://issuer.example/".to_owned(),
            subject: "auth0|kim".to_owned(),
            email: None,
            email_verified: false,
            name: None,
            nonce: None,
            authorized_party: None,
            expires_at,
            mfa: false,
        }
    }

    #[test]
    fn multi_factor_is_read_from_amr_or_acr() {
        let of = |v: serde_json::Value| is_multi_factor(v.as_object().unwrap());
        assert!(of(serde_json::json!({"amr": ["pwd", "mfa"]})));
        assert!(of(serde_json::json!({"acr": MFA_ACR_VALUES[0]})));
        assert!(!of(serde_json::json!({"amr": ["pwd"]})));
        assert!(!of(serde_json::json!({"amr": "mfa"})));
        assert!(!of(
            serde_json::json!({"acr": "urn:mace:incommon:iap:silver"})
        ));
        assert!(!of(serde_json::json!({})));
    }

    #[test]
    fn a_verified_token_is_served_until_its_ttl_or_its_expiry_whichever_is_first() {
        let cache = VerifiedTokens::new(Duration::from_secs(60));
        let (now, wall) = (Instant::now(), UNIX_EPOCH + Duration::from_secs(1_000));
        let (long, short) = (token_digest("api", "a.b.c"), token_digest("api", "d.e.f"));
        // expires in an hour: the TTL bounds it
        cache.put(long, &claims(4_600), Duration::ZERO, now, wall);
        // expires in 10 s, with 5 s of leeway: served for 15 s
        cache.put(short, &claims(1_010), Duration::from_secs(5), now, wall);
        let at = |s: u64| now + Duration::from_secs(s);
        assert_eq!(cache.get(&long, at(59)), Some(claims(4_600)));
        assert_eq!(cache.get(&long, at(60)), None);
        assert_eq!(cache.get(&short, at(14)), Some(claims(1_010)));
        assert_eq!(cache.get(&short, at(15)), None);
    }

    #[test]
    fn expired_tokens_and_a_zero_ttl_are_not_remembered() {
        let (now, wall) = (Instant::now(), UNIX_EPOCH + Duration::from_secs(1_000));
        let cache = VerifiedTokens::new(Duration::from_secs(60));
        let d = token_digest("api", "a.b.c");
        cache.put(d, &claims(999), Duration::ZERO, now, wall);
        assert_eq!(cache.get(&d, now), None);
        let off = VerifiedTokens::new(Duration::ZERO);
        assert!(!off.is_on());
        off.put(d, &claims(4_600), Duration::ZERO, now, wall);
        assert_eq!(off.get(&d, now), None);
    }

    #[test]
    fn the_key_covers_the_audience_and_every_byte_of_the_token() {
        let d = token_digest("api", "a.b.c");
        assert_ne!(d, token_digest("other-api", "a.b.c"));
        assert_ne!(d, token_digest("api", "a.b.d"));
        assert_ne!(token_digest("ab", "c"), token_digest("a", "bc"));
    }

    #[test]
    fn a_full_cache_drops_expired_entries_first() {
        let cache = VerifiedTokens::new(Duration::from_secs(60));
        let (now, wall) = (Instant::now(), UNIX_EPOCH + Duration::from_secs(1_000));
        for i in 0..MAX_VERIFIED {
            let token = format!("t.{i}.x");
            // half of them expire within a second
            let exp = if i % 2 == 0 { 1_001 } else { 4_600 };
            cache.put(
                token_digest("api", &token),
                &claims(exp),
                Duration::ZERO,
                now,
                wall,
            );
        }
        let later = now + Duration::from_secs(2);
        let last = token_digest("api", "t.last.x");
        cache.put(
            last,
            &claims(4_600),
            Duration::ZERO,
            later,
            wall + Duration::from_secs(2),
        );
        assert_eq!(cache.get(&last, later), Some(claims(4_600)));
        assert_eq!(
            cache.get(&token_digest("api", "t.1.x"), later),
            Some(claims(4_600))
        );
        let entries = cache.entries.lock().unwrap().len();
        assert_eq!(entries, MAX_VERIFIED / 2 + 1);
    }
}
