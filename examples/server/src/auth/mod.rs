//! Authentication at the HTTP edge: a request's `Authorization` header or session cookie
//! (with the cross-site check of cookie-authenticated unsafe requests) to a [`Principal`],
//! through stratai-store's sign-in library (`people::signin`: token validation, JWKS, the
//! OIDC login flow, dev tokens, sessions; re-exported here under their module names) and
//! its [`Identities`] (linking, creating and onboarding users at sign-in, the MFA
//! requirement of their organizations). [`Auth`] adds the auth cache and the cookie
//! settings; [`routes`] serves `/auth/*`.

pub mod cookies;
pub mod routes;

pub use stratai_store::people::signin::{AuthError, dev, keys, oidc, session, validator};

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, header};

use crate::config::Config;
use crate::error::ApiError;
use crate::fresh_cache::{FreshCache, Lookup};
use dev::DevTokens;
use keys::{JwksCache, JwksLocation};
use oidc::{Discovery, OidcLogin};
use session::{SessionStore, hash_session_id};
use stratai_core::UserId;
use stratai_core::directory::{PlatformRole, User};
use stratai_store::people::identity::{Identities, IdentityError};
use stratai_store::people::signin::{active, resolve_claims};
use validator::{KeySource, TokenValidator, VerifiedClaims};

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::KeysUnavailable(detail) => ApiError::Unavailable(detail),
            AuthError::Directory(IdentityError::Store(e)) => ApiError::Internal(e.to_string()),
            AuthError::Directory(IdentityError::Conflict(msg)) => ApiError::Conflict(msg),
            AuthError::Sessions(e) => ApiError::Internal(e.to_string()),
            AuthError::Signing(e) => ApiError::Internal(e),
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

/// The authenticated caller, as the rest of the server sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// StratAI user id.
    pub user_id: uuid::Uuid,
    /// The user's email (lowercase).
    pub email: String,
    /// Platform super admin.
    pub super_admin: bool,
    /// Deactivated users are refused at authentication.
    pub active: bool,
}

impl From<&User> for Principal {
    fn from(user: &User) -> Self {
        Self {
            user_id: user.id.as_uuid(),
            email: user.email.as_str().to_owned(),
            super_admin: user.platform_role == PlatformRole::SuperAdmin,
            active: user.active,
        }
    }
}

impl Principal {
    /// `self` if the account is active, else [`AuthError::Deactivated`].
    fn active(self) -> Result<Self, AuthError> {
        if self.active {
            Ok(self)
        } else {
            Err(AuthError::Deactivated)
        }
    }
}

/// How tokens are issued in this process.
#[derive(Debug)]
pub enum Mode {
    /// An OIDC provider issues tokens.
    Oidc {
        /// Expected `aud` of bearer tokens.
        audience: String,
        /// Browser login, if configured.
        login: Option<Arc<OidcLogin>>,
        /// The provider's metadata.
        discovery: Arc<Discovery>,
    },
    /// No provider: the server signs short-lived tokens itself.
    Dev(Arc<DevTokens>),
}

/// Everything authentication needs, shared by handlers.
pub struct Auth {
    mode: Mode,
    validator: TokenValidator,
    jwks: Option<Arc<JwksCache>>,
    identities: Identities,
    sessions: Arc<dyn SessionStore>,
    public_origin: String,
    session_ttl: Duration,
    secure_cookies: bool,
    principals: PrincipalCache,
}

/// Principals resolved from bearer tokens by subject, reused for at most the cache's time to
/// live (off by default): refreshed ahead of expiry by one background lookup, looked up once
/// for concurrent requests that miss (see [`FreshCache`]).
type PrincipalCache = Arc<FreshCache<String, Principal>>;

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("mode", &self.mode)
            .field("issuer", &self.validator.issuer())
            .finish_non_exhaustive()
    }
}

impl Auth {
    /// Builds authentication from the configuration: OIDC when an issuer is configured,
    /// dev mode otherwise.
    pub fn from_config(
        config: &Config,
        identities: Identities,
        sessions: Arc<dyn SessionStore>,
    ) -> Result<Self, ApiError> {
        let public_origin = config.public_url.origin().ascii_serialization();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(ApiError::internal)?;
        match &config.oidc {
            Some(oidc) => {
                let discovery = Arc::new(Discovery::new(oidc.issuer.clone(), http.clone()));
                let location = match &oidc.jwks_url {
                    Some(u) => JwksLocation::Fixed(u.clone()),
                    None => JwksLocation::Discovered(discovery.clone()),
                };
                let jwks = Arc::new(JwksCache::new(
                    location,
                    http.clone(),
                    oidc.algorithms.clone(),
                    oidc.jwks_min_refresh,
                    oidc.jwks_max_age,
                ));
                let validator = TokenValidator::new(
                    oidc.issuer.clone(),
                    KeySource::Jwks(jwks.clone()),
                    oidc.leeway,
                    oidc.email_claim.clone(),
                );
                let secure_cookies = oidc.login.as_ref().is_none_or(|l| l.secure_cookies);
                let login = oidc
                    .login
                    .clone()
                    .map(|l| Arc::new(OidcLogin::new(l, discovery.clone(), http.clone())));
                Ok(Self {
                    mode: Mode::Oidc {
                        audience: oidc.audience.clone(),
                        login,
                        discovery,
                    },
                    validator,
                    jwks: Some(jwks),
                    identities,
                    sessions,
                    public_origin,
                    session_ttl: config.session_ttl,
                    secure_cookies,
                    principals: Arc::new(FreshCache::new(Duration::ZERO)),
                })
            }
            None => {
                let (dev, keys) = DevTokens::generate(config.dev_token_ttl)?;
                let validator = TokenValidator::new(
                    dev::DEV_ISSUER.to_owned(),
                    KeySource::Static(Arc::new(keys)),
                    // Issued and checked by this process on one clock: no skew to allow.
                    Duration::ZERO,
                    "email".to_owned(),
                );
                Ok(Self {
                    mode: Mode::Dev(Arc::new(dev)),
                    validator,
                    jwks: None,
                    identities,
                    sessions,
                    public_origin,
                    session_ttl: config.session_ttl,
                    secure_cookies: false,
                    principals: Arc::new(FreshCache::new(Duration::ZERO)),
                })
            }
        }
    }

    /// Reuses what authenticating a bearer token found for `ttl` (zero: never, the default),
    /// so a busy gateway neither reads the directory nor recomputes a signature on every
    /// request:
    /// - the user a token resolves to: a *deactivation* of the user takes effect after at
    ///   most `ttl` (at once on the instance that made it, see [`Auth::forget_user`]);
    /// - the token's verified claims (see [`TokenValidator::with_cache`]): a token is still
    ///   refused from its expiry on, and a different or altered token is verified in full;
    ///   a key withdrawn from the provider's JWKS stops verifying new tokens at once and the
    ///   tokens it already verified after at most `ttl`.
    ///
    /// `STRATAI_AUTH_CACHE_MS` sets it for the server.
    #[must_use]
    pub fn with_auth_cache(mut self, ttl: Duration) -> Self {
        self.principals = Arc::new(FreshCache::new(ttl));
        self.validator = self.validator.clone().with_cache(ttl);
        self
    }

    /// Forgets what the auth cache remembers of `user` in this process, so their next request
    /// is checked against the directory (a deactivation or a revoked role applies at once
    /// here; other instances see it within their cache's time to live, at most
    /// [`crate::config::MAX_AUTH_CACHE`]).
    pub fn forget_user(&self, user: uuid::Uuid) {
        self.principals.forget_where(|p| p.user_id == user);
    }

    /// The issuing mode.
    #[must_use]
    pub fn mode(&self) -> &Mode {
        &self.mode
    }

    /// The JWKS cache (OIDC mode).
    #[must_use]
    pub fn jwks(&self) -> Option<&Arc<JwksCache>> {
        self.jwks.as_ref()
    }

    /// Who signs in: the users of verified identities.
    #[must_use]
    pub fn identities(&self) -> &Identities {
        &self.identities
    }

    /// The token validator.
    #[must_use]
    pub fn validator(&self) -> &TokenValidator {
        &self.validator
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

    /// The session store.
    #[must_use]
    pub fn sessions(&self) -> &Arc<dyn SessionStore> {
        &self.sessions
    }

    /// The principal behind a request: its bearer token if it has an `Authorization`
    /// header, else its session cookie.
    pub async fn authenticate(
        &self,
        method: &Method,
        headers: &HeaderMap,
    ) -> Result<Principal, AuthError> {
        if let Some(value) = headers.get(header::AUTHORIZATION) {
            let token = bearer_token(value.as_bytes()).ok_or(AuthError::Malformed)?;
            return self.authenticate_bearer(token).await;
        }
        let cookie_name = self.session_cookie_name();
        if let Some(session_id) = cookies::find(headers, cookie_name) {
            if !is_safe_method(method) && !self.same_origin(headers) {
                return Err(AuthError::CrossSite);
            }
            let session = self
                .sessions
                .get(&hash_session_id(&session_id))
                .await?
                .ok_or(AuthError::Missing)?;
            let user = self
                .identities
                .find_by_id(UserId::from_uuid(session.user_id))
                .await?
                .ok_or(AuthError::UnknownUser)?;
            let principal = Principal::from(&active(user)?);
            // An organization may have started requiring MFA, or the person joined one that
            // does, since this session began.
            self.check_mfa(&principal, session.mfa).await?;
            return Ok(principal);
        }
        Err(AuthError::Missing)
    }

    /// Refuses a sign-in (token or session) made with one factor when an organization of
    /// the user requires multi-factor authentication (`settings.require_mfa`). Dev mode
    /// issues its own tokens with no second factor to prove, so it enforces nothing.
    pub async fn check_mfa(&self, principal: &Principal, mfa: bool) -> Result<(), AuthError> {
        if mfa || matches!(self.mode, Mode::Dev(_)) {
            return Ok(());
        }
        match self
            .identities
            .mfa_required_by(UserId::from_uuid(principal.user_id))
            .await?
        {
            Some(organization) => Err(AuthError::MfaRequired(organization)),
            None => Ok(()),
        }
    }

    /// Validates a bearer token and resolves its user. In OIDC mode a first use with a
    /// verified email creates or links the user, as a login would.
    pub async fn authenticate_bearer(&self, token: &str) -> Result<Principal, AuthError> {
        match &self.mode {
            Mode::Dev(_) => {
                let claims = self.validator.validate(token, dev::DEV_AUDIENCE).await?;
                let id = uuid::Uuid::parse_str(&claims.subject)
                    .map_err(|_| AuthError::InvalidClaim("sub"))?;
                let identities = self.identities.clone();
                let by_id = move || async move {
                    identities
                        .find_by_id(UserId::from_uuid(id))
                        .await?
                        .map(|user| Principal::from(&user))
                        .ok_or(AuthError::UnknownUser)
                };
                let principal = self.cached(claims.subject, by_id.clone(), by_id).await?;
                principal.active()
            }
            Mode::Oidc { audience, .. } => {
                let claims = self.validator.validate(token, audience).await?;
                let identities = self.identities.clone();
                let subject = claims.subject.clone();
                // A cached subject is linked to its user already: a refresh looks it up.
                let by_subject = move || async move {
                    identities
                        .find_by_subject(&subject)
                        .await?
                        .map(|user| Principal::from(&user))
                        .ok_or(AuthError::UnknownUser)
                };
                let principal = self
                    .cached(claims.subject.clone(), by_subject, || {
                        self.resolve_oidc(&claims)
                    })
                    .await?;
                let principal = principal.active()?;
                self.check_mfa(&principal, claims.mfa).await?;
                Ok(principal)
            }
        }
    }

    /// The principal of `subject` from the cache; `load` on a miss (one caller at a time per
    /// subject), `refresh` in a background task when the entry is past half its life.
    async fn cached<R, RFut, L, LFut>(
        &self,
        subject: String,
        refresh: R,
        load: L,
    ) -> Result<Principal, AuthError>
    where
        R: FnOnce() -> RFut + Send + 'static,
        RFut: std::future::Future<Output = Result<Principal, AuthError>> + Send + 'static,
        L: FnOnce() -> LFut,
        LFut: std::future::Future<Output = Result<Principal, AuthError>>,
    {
        match self.principals.lookup(&subject) {
            Lookup::Fresh(p) => Ok(p),
            Lookup::Refresh(p) => {
                let cache = self.principals.clone();
                tokio::spawn(async move {
                    if let Err(e) = cache.refresh(subject, refresh).await {
                        tracing::debug!(error = %e, "principal not refreshed ahead of expiry");
                    }
                });
                Ok(p)
            }
            Lookup::Miss => self.principals.load(subject, load).await,
        }
    }

    /// Maps verified OIDC claims to a user (see [`resolve_claims`]).
    pub async fn resolve_oidc(&self, claims: &VerifiedClaims) -> Result<Principal, AuthError> {
        resolve_claims(&self.identities, claims)
            .await
            .map(|user| Principal::from(&user))
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

impl<S> FromRequestParts<S> for Principal
where
    Arc<Auth>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let auth = Arc::<Auth>::from_ref(state);
        auth.authenticate(&parts.method, &parts.headers)
            .await
            .map_err(ApiError::from)
    }
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
