//! Bearer and id token validation: one code path for OIDC and dev-mode tokens.

use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Validation, decode, decode_header};
use serde_json::{Map, Value};

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
}

/// Validates JWTs of one issuer.
///
/// Checks, in order: size and shape; a `kid` of safe characters; a key for that `kid`; the
/// header `alg` among the key's algorithms (so `none`, or HS256 keyed with an RSA public
/// key, never verify); the signature; required `exp`, `iss`, `aud`, `sub`; `exp` and `nbf`
/// within the leeway; the issuer and the audience.
#[derive(Clone, Debug)]
pub struct TokenValidator {
    issuer: String,
    leeway: Duration,
    email_claim: String,
    email_verified_claim: String,
    keys: KeySource,
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
        }
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
        Ok(VerifiedClaims {
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
