//! Authentication at the HTTP edge: a request's `Authorization` header or session cookie
//! (with the cross-site check of cookie-authenticated unsafe requests) to a [`Principal`]
//! through stratai-store's [`SignIn`] (`people::signin`: token validation, JWKS, the OIDC
//! login flow, dev tokens, sessions, the auth cache, users resolved through `Identities`;
//! its modules re-exported here under their names). [`Auth`] adds the cookie settings and
//! the public origin; [`routes`] serves `/auth/*`.

pub mod cookies;
pub mod routes;

pub use stratai_store::people::signin::{
    AuthError, Mode, Principal, SignIn, dev, keys, oidc, session, validator,
};

use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, Method, header};

use crate::config::Config;
use crate::error::ApiError;
use session::SessionStore;
use stratai_store::people::identity::{Identities, IdentityError};

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::KeysUnavailable(detail) => ApiError::Unavailable(detail),
            AuthError::Directory(IdentityError::Store(e)) => ApiError::Internal(e.to_string()),
            AuthError::Directory(IdentityError::Conflict(msg)) => ApiError::Conflict(msg),
            AuthError::Sessions(e) => ApiError::Internal(e.to_string()),
            AuthError::Signing(e) | AuthError::Client(e) => ApiError::Internal(e),
            AuthError::Deactivated => ApiError::Forbidden("account deactivated".to_owned()),
            AuthError::CrossSite => ApiError::Forbidden("cross-site request refused".to_owned()),
            e @ AuthError::MfaRequired(_) => ApiError::MfaRequired(e.to_string()),
            AuthError::EmailNotVerified => {
                ApiError::Forbidden("email not verified by the identity provider".to_owned())
            }
            AuthError::LoginFailed(detail) => {
                tracing::warn!(reason = %detail, "login refused");
                ApiError::Unauthenticated("login failed")
            }
            AuthError::Missing => ApiError::Unauthenticated("missing credentials"),
            AuthError::Expired => ApiError::Unauthenticated("token expired"),
            AuthError::UnknownUser => ApiError::Unauthenticated("unknown user"),
            AuthError::Malformed
            | AuthError::MissingKid
            | AuthError::InvalidKid
            | AuthError::UnknownKid
            | AuthError::AlgorithmNotAllowed
            | AuthError::BadSignature
            | AuthError::NotYetValid
            | AuthError::WrongIssuer
            | AuthError::WrongAudience
            | AuthError::InvalidClaim(_) => ApiError::Unauthenticated("invalid token"),
        }
    }
}

/// Sign-in and the HTTP edge's settings, shared by handlers.
#[derive(Debug)]
pub struct Auth {
    signin: SignIn,
    public_origin: String,
    session_ttl: Duration,
    secure_cookies: bool,
}

impl Auth {
    /// Builds authentication from the configuration: OIDC when an issuer is configured,
    /// dev mode otherwise.
    pub fn from_config(
        config: &Config,
        identities: Identities,
        sessions: Arc<dyn SessionStore>,
    ) -> Result<Self, ApiError> {
        let oidc = config.oidc.as_ref();
        Ok(Self {
            signin: SignIn::new(oidc, config.dev_token_ttl, identities, sessions)?,
            public_origin: config.public_url.origin().ascii_serialization(),
            session_ttl: config.session_ttl,
            // Dev mode serves plain-http loopback; a provider's login says for itself.
            secure_cookies: oidc.is_some_and(|o| o.login.as_ref().is_none_or(|l| l.secure_cookies)),
        })
    }

    /// Turns the auth cache on for `ttl` (`STRATAI_AUTH_CACHE_MS`; see
    /// [`SignIn::with_auth_cache`]).
    #[must_use]
    pub fn with_auth_cache(mut self, ttl: Duration) -> Self {
        self.signin = self.signin.with_auth_cache(ttl);
        self
    }

    /// Credentials to principals.
    #[must_use]
    pub fn signin(&self) -> &SignIn {
        &self.signin
    }

    /// Name of the session cookie (`__Host-` prefixed when cookies are `Secure`).
    #[must_use]
    pub fn session_cookie_name(&self) -> &'static str {
        if self.secure_cookies {
            "__Host-stratai_session"
        } else {
            "stratai_session"
        }
    }

    /// Whether cookies carry `Secure`.
    #[must_use]
    pub fn secure_cookies(&self) -> bool {
        self.secure_cookies
    }

    /// Lifetime of browser sessions.
    #[must_use]
    pub fn session_ttl(&self) -> Duration {
        self.session_ttl
    }

    /// The principal behind a request: its bearer token if it has an `Authorization`
    /// header, else its session cookie (an unsafe method only from this server's origin).
    pub async fn authenticate(
        &self,
        method: &Method,
        headers: &HeaderMap,
    ) -> Result<Principal, AuthError> {
        if let Some(value) = headers.get(header::AUTHORIZATION) {
            let token = bearer_token(value.as_bytes()).ok_or(AuthError::Malformed)?;
            return self.signin.authenticate_bearer(token).await;
        }
        let Some(session_id) = cookies::find(headers, self.session_cookie_name()) else {
            return Err(AuthError::Missing);
        };
        if !is_safe_method(method) && !self.same_origin(headers) {
            return Err(AuthError::CrossSite);
        }
        self.signin.authenticate_session(&session_id).await
    }

    /// Whether the request's `Origin` is this server's public origin (the cross-site check
    /// of cookie-authenticated unsafe requests; the web UI's forms use it too).
    pub fn same_origin(&self, headers: &HeaderMap) -> bool {
        headers
            .get(header::ORIGIN)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|o| o == self.public_origin)
    }
}

fn is_safe_method(m: &Method) -> bool {
    matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The token of an `Authorization: Bearer <token>` header value (scheme case-insensitive).
fn bearer_token(value: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(value).ok()?;
    let (scheme, token) = text.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = token.trim();
    (!token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_parsing() {
        assert_eq!(bearer_token(b"Bearer abc.def.ghi"), Some("abc.def.ghi"));
        assert_eq!(bearer_token(b"bearer abc"), Some("abc"));
        assert_eq!(bearer_token(b"Basic dXNlcjpwYXNz"), None);
        assert_eq!(bearer_token(b"Bearer "), None);
        assert_eq!(bearer_token(b"Bearer"), None);
    }
}
