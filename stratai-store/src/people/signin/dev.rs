//! Dev mode: with no OIDC issuer configured, the server signs short-lived tokens itself
//! with a random per-process key, so demos and black-box tests can act as any existing user.
//! These tokens go through the same [`super::validator::TokenValidator`] as provider tokens.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, encode, get_current_timestamp};
use rand::RngCore as _;
use serde::Serialize;
use uuid::Uuid;

use super::AuthError;
use super::keys::{KeyMap, VerifyingKey};

/// `iss` of dev tokens.
pub const DEV_ISSUER: &str = "urn:stratai:dev";
/// `aud` of dev tokens.
pub const DEV_AUDIENCE: &str = "stratai-dev";

/// Issues dev tokens.
pub struct DevTokens {
    key: EncodingKey,
    kid: String,
    ttl: Duration,
}

impl std::fmt::Debug for DevTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevTokens")
            .field("kid", &self.kid)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct DevClaims<'a> {
    iss: &'a str,
    aud: &'a str,
    sub: String,
    email: &'a str,
    email_verified: bool,
    iat: u64,
    nbf: u64,
    exp: u64,
}

impl DevTokens {
    /// A fresh random key (never stored, gone at exit) and the key set that verifies it.
    pub fn generate(ttl: Duration) -> Result<(Self, KeyMap), AuthError> {
        let mut secret = [0u8; 32];
        rand::rng().fill_bytes(&mut secret);
        let mut kid_bytes = [0u8; 6];
        rand::rng().fill_bytes(&mut kid_bytes);
        let kid = format!("dev-{}", URL_SAFE_NO_PAD.encode(kid_bytes));
        let key = EncodingKey::from_secret(&secret).map_err(signing)?;
        let verifying = DecodingKey::from_secret(&secret).map_err(signing)?;
        let mut keys = KeyMap::new();
        keys.insert(
            kid.clone(),
            VerifyingKey {
                key: verifying,
                algorithms: vec![Algorithm::HS256],
            },
        );
        Ok((Self { key, kid, ttl }, keys))
    }

    /// Lifetime of issued tokens.
    #[must_use]
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// A token for the user `subject` (their StratAI id) with `email`.
    pub fn issue(&self, subject: Uuid, email: &str) -> Result<String, AuthError> {
        self.issue_at(subject, email, get_current_timestamp())
    }

    /// A correctly signed token for `subject` that expired a minute ago: for tests proving
    /// that expired tokens are refused everywhere. (Dev mode already lets anyone mint tokens;
    /// a dead one grants nothing more.)
    pub fn issue_expired(&self, subject: Uuid, email: &str) -> Result<String, AuthError> {
        let now = get_current_timestamp();
        self.issue_at(subject, email, now.saturating_sub(self.ttl.as_secs() + 60))
    }

    fn issue_at(&self, subject: Uuid, email: &str, now: u64) -> Result<String, AuthError> {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(self.kid.clone());
        let claims = DevClaims {
            iss: DEV_ISSUER,
            aud: DEV_AUDIENCE,
            sub: subject.to_string(),
            email,
            email_verified: true,
            iat: now,
            nbf: now,
            exp: now + self.ttl.as_secs(),
        };
        encode(&header, &claims, &self.key).map_err(signing)
    }
}

fn signing(e: jsonwebtoken::errors::Error) -> AuthError {
    AuthError::Signing(e.to_string())
}
