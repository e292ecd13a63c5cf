//! Sign-in: who a request's credentials belong to, for any service that accepts StratAI's
//! sign-ins (the server's HTTP edge reads the headers and cookies and calls these).
//!
//! - [`validator::TokenValidator`] checks every token, an OIDC provider's or a dev-mode one,
//!   on one path: key from the key set (never the token's word for the algorithm), issuer,
//!   audience, expiry with leeway, nonce for id tokens, and an optional short cache of
//!   verified tokens.
//! - [`keys::JwksCache`] holds the provider's keys, refetched at most once per interval when
//!   an unknown key id shows up.
//! - [`oidc::OidcLogin`] runs the browser login: authorization code with PKCE (S256), `state`
//!   bound to the browser, `nonce` checked in the id token; [`oidc::Discovery`] reads the
//!   provider's metadata.
//! - [`dev::DevTokens`] signs short-lived tokens with a per-process key when no provider is
//!   configured (demos and black-box tests).
//! - [`session::SessionStore`] keeps browser sessions by the SHA-256 of their cookie.
//! - [`SignIn`] puts them together: a bearer token or a session to an active [`Principal`],
//!   resolved through [`Identities`] (by subject, else by a *verified* email, linking or
//!   creating the user), the MFA requirement of their organizations checked, and with the
//!   auth cache on, principals and verified tokens reused for a short while.
//!
//! Behind the `signin` feature (it brings jsonwebtoken and an HTTP client).

pub mod dev;
pub mod keys;
pub mod oidc;
pub mod session;
pub mod validator;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use jsonwebtoken::Algorithm;
use stratai_core::UserId;
use stratai_core::directory::{PlatformRole, User};
use stratai_guardrails::runtime::fresh_cache::{FreshCache, Lookup};
use url::Url;
use uuid::Uuid;

use crate::people::identity::{Identities, IdentityError, LoginIdentity};
use dev::DevTokens;
use keys::{JwksCache, JwksLocation};
use oidc::{Discovery, LoginClient, OidcLogin};
use session::{SessionError, SessionStore, hash_session_id};
use validator::{KeySource, TokenValidator, VerifiedClaims};

/// Why a credential was refused. The messages are deliberately short and carry no token
/// material; an HTTP edge maps them to its answers (the server: 401, 403 or 503).
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No credentials where they are needed.
    #[error("missing credentials")]
    Missing,
    /// Not a JWT, or an unreadable one.
    #[error("malformed token")]
    Malformed,
    /// The token header names no `kid`.
    #[error("token has no key id")]
    MissingKid,
    /// The `kid` has characters no key id has.
    #[error("invalid key id")]
    InvalidKid,
    /// No key with this `kid` (after a refetch, if one was allowed).
    #[error("unknown signing key")]
    UnknownKid,
    /// The header `alg` is not an algorithm of the key.
    #[error("signing algorithm not allowed")]
    AlgorithmNotAllowed,
    /// Signature does not verify.
    #[error("invalid signature")]
    BadSignature,
    /// `exp` is past (beyond the leeway).
    #[error("token expired")]
    Expired,
    /// `nbf` is in the future (beyond the leeway).
    #[error("token not yet valid")]
    NotYetValid,
    /// `iss` is not the configured issuer.
    #[error("wrong issuer")]
    WrongIssuer,
    /// `aud` does not include the expected audience.
    #[error("wrong audience")]
    WrongAudience,
    /// A claim is missing or has the wrong type.
    #[error("invalid claim: {0}")]
    InvalidClaim(&'static str),
    /// The token is valid but names no active StratAI user.
    #[error("unknown user")]
    UnknownUser,
    /// The user exists but is deactivated.
    #[error("account deactivated")]
    Deactivated,
    /// The provider does not vouch for the email, so it cannot link or create a user.
    #[error("email not verified by the identity provider")]
    EmailNotVerified,
    /// Keys or provider metadata cannot be loaded (provider down, bad document).
    #[error("identity provider unavailable: {0}")]
    KeysUnavailable(String),
    /// The login callback failed (state, nonce, code exchange); detail is for the log.
    #[error("login failed: {0}")]
    LoginFailed(String),
    /// The token or session was obtained with one factor and `organization` (a name)
    /// requires multi-factor authentication of its members (`settings.require_mfa`).
    #[error("`{0}` requires multi-factor authentication: sign in again with a second factor")]
    MfaRequired(String),
    /// A cookie-authenticated unsafe request came from another origin.
    #[error("cross-site request refused")]
    CrossSite,
    /// The user directory failed, or refused to link an identity.
    #[error(transparent)]
    Directory(#[from] IdentityError),
    /// The session store failed.
    #[error(transparent)]
    Sessions(#[from] SessionError),
    /// Signing a dev token failed (a key the signer could not use).
    #[error("signing: {0}")]
    Signing(String),
    /// The HTTP client for the provider could not be built.
    #[error("HTTP client: {0}")]
    Client(String),
}

/// The authenticated caller: who a request acts as once its credentials checked out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// StratAI user id.
    pub user_id: Uuid,
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
    pub fn active(self) -> Result<Self, AuthError> {
        if self.active {
            Ok(self)
        } else {
            Err(AuthError::Deactivated)
        }
    }
}

/// An OIDC provider (Auth0 first; any provider with discovery works).
#[derive(Clone, Debug)]
pub struct OidcSettings {
    /// Issuer exactly as it appears in `iss` (Auth0: `https://<tenant>.auth0.com/`).
    pub issuer: String,
    /// Expected `aud` of bearer access tokens (Auth0: the API identifier).
    pub audience: String,
    /// Accepted signing algorithms; a key's algorithm must be one of these.
    pub algorithms: Vec<Algorithm>,
    /// JWKS location; `None` means "from the discovery document".
    pub jwks_url: Option<Url>,
    /// Clock skew allowed on `exp` and `nbf`.
    pub leeway: Duration,
    /// An unknown `kid` triggers at most one JWKS refetch per this interval.
    pub jwks_min_refresh: Duration,
    /// Keys older than this are refreshed (if the endpoint answers) on next use.
    pub jwks_max_age: Duration,
    /// Claim carrying the email (Auth0 access tokens need a namespaced custom claim).
    pub email_claim: String,
    /// Browser login; `None` means bearer tokens only.
    pub login: Option<LoginClient>,
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
    /// No provider: this process signs short-lived tokens itself.
    Dev(Arc<DevTokens>),
}

/// Credentials to principals: see the module docs.
pub struct SignIn {
    mode: Mode,
    validator: TokenValidator,
    jwks: Option<Arc<JwksCache>>,
    identities: Identities,
    sessions: Arc<dyn SessionStore>,
    /// Principals resolved from bearer tokens by subject, reused for at most the cache's
    /// time to live (off by default): refreshed ahead of expiry by one background lookup,
    /// looked up once for concurrent requests that miss (see [`FreshCache`]).
    principals: Arc<FreshCache<String, Principal>>,
}

impl std::fmt::Debug for SignIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignIn")
            .field("mode", &self.mode)
            .field("issuer", &self.validator.issuer())
            .finish_non_exhaustive()
    }
}

impl SignIn {
    /// Sign-in against the OIDC provider `oidc`, or in dev mode without one (tokens this
    /// process signs, valid for `dev_token_ttl`). The auth cache is off.
    pub fn new(
        oidc: Option<&OidcSettings>,
        dev_token_ttl: Duration,
        identities: Identities,
        sessions: Arc<dyn SessionStore>,
    ) -> Result<Self, AuthError> {
        let principals = Arc::new(FreshCache::new(Duration::ZERO));
        let Some(oidc) = oidc else {
            let (dev, keys) = DevTokens::generate(dev_token_ttl)?;
            let validator = TokenValidator::new(
                dev::DEV_ISSUER.to_owned(),
                KeySource::Static(Arc::new(keys)),
                // Issued and checked by this process on one clock: no skew to allow.
                Duration::ZERO,
                "email".to_owned(),
            );
            let mode = Mode::Dev(Arc::new(dev));
            return Ok(Self {
                mode,
                validator,
                jwks: None,
                identities,
                sessions,
                principals,
            });
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| AuthError::Client(e.to_string()))?;
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
        let login = oidc
            .login
            .clone()
            .map(|l| Arc::new(OidcLogin::new(l, discovery.clone(), http)));
        let mode = Mode::Oidc {
            audience: oidc.audience.clone(),
            login,
            discovery,
        };
        Ok(Self {
            mode,
            validator,
            jwks: Some(jwks),
            identities,
            sessions,
            principals,
        })
    }

    /// Reuses what authenticating a bearer token found for `ttl` (zero: never, the default),
    /// so a busy service neither reads the directory nor recomputes a signature on every
    /// request:
    /// - the user a token resolves to: a *deactivation* of the user takes effect after at
    ///   most `ttl` (at once in the process that made it, see [`SignIn::forget_user`]);
    /// - the token's verified claims (see [`TokenValidator::with_cache`]): a token is still
    ///   refused from its expiry on, and a different or altered token is verified in full;
    ///   a key withdrawn from the provider's JWKS stops verifying new tokens at once and the
    ///   tokens it already verified after at most `ttl`.
    #[must_use]
    pub fn with_auth_cache(mut self, ttl: Duration) -> Self {
        self.principals = Arc::new(FreshCache::new(ttl));
        self.validator = self.validator.clone().with_cache(ttl);
        self
    }

    /// Forgets what the auth cache remembers of `user` in this process, so their next request
    /// is checked against the directory (a deactivation or a revoked role applies at once
    /// here; other processes see it within their cache's time to live).
    pub fn forget_user(&self, user: Uuid) {
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

    /// The session store.
    #[must_use]
    pub fn sessions(&self) -> &Arc<dyn SessionStore> {
        &self.sessions
    }

    /// The principal of the browser session `session_id` (the cookie's value): its user,
    /// active, and the MFA requirement of their organizations checked against the factor the
    /// session's sign-in used (an organization may have started requiring MFA, or the person
    /// joined one that does, since the session began).
    pub async fn authenticate_session(&self, session_id: &str) -> Result<Principal, AuthError> {
        let session = self
            .sessions
            .get(&hash_session_id(session_id))
            .await?
            .ok_or(AuthError::Missing)?;
        let user = self
            .identities
            .find_by_id(UserId::from_uuid(session.user_id))
            .await?
            .ok_or(AuthError::UnknownUser)?;
        let principal = Principal::from(&user).active()?;
        self.check_mfa(&principal, session.mfa).await?;
        Ok(principal)
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
                let id =
                    Uuid::parse_str(&claims.subject).map_err(|_| AuthError::InvalidClaim("sub"))?;
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
                    .await?
                    .active()?;
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
        RFut: Future<Output = Result<Principal, AuthError>> + Send + 'static,
        L: FnOnce() -> LFut,
        LFut: Future<Output = Result<Principal, AuthError>>,
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

    /// Completes a browser login at its callback: the provider's `issuer` parameter, when
    /// sent, must be ours (RFC 9207); `state` must match the browser's `cookie_state` and a
    /// pending login of `login`, whose code is exchanged with its PKCE verifier; the id token
    /// must verify for the client, carry the login's nonce and, with an `azp`, name the
    /// client. Its user is resolved as a bearer token's would be (see
    /// [`SignIn::resolve_oidc`]), and a verified email joins the invitations sent to it since
    /// the last sign-in. Returns the principal and whether the sign-in used more than one
    /// factor; the MFA requirement is the caller's to check (it answers with a page).
    pub async fn finish_login(
        &self,
        login: &OidcLogin,
        issuer: Option<&str>,
        state: &str,
        cookie_state: Option<&str>,
        code: &str,
    ) -> Result<(Principal, bool), AuthError> {
        if issuer.is_some_and(|iss| iss != self.validator.issuer()) {
            return Err(AuthError::LoginFailed(
                "callback from another issuer".to_owned(),
            ));
        }
        let (id_token, nonce) = login.exchange(state, cookie_state, code).await?;
        let client_id = &login.config().client_id;
        let claims = self.validator.validate(&id_token, client_id).await?;
        if claims.nonce.as_deref() != Some(nonce.as_str()) {
            return Err(AuthError::LoginFailed("id token nonce mismatch".to_owned()));
        }
        if claims
            .authorized_party
            .as_deref()
            .is_some_and(|azp| azp != client_id)
        {
            return Err(AuthError::LoginFailed(
                "id token issued to another client".to_owned(),
            ));
        }
        let principal = self.resolve_oidc(&claims).await?;
        if claims.email_verified && claims.email.as_deref() == Some(principal.email.as_str()) {
            self.identities
                .signed_in(UserId::from_uuid(principal.user_id), Utc::now())
                .await?;
        }
        Ok((principal, claims.mfa))
    }

    /// The active user behind verified OIDC claims: the one linked to the subject, else
    /// (first sign-in) the one with the claims' email, linked or created by
    /// [`Identities::login`], and only for an email the provider verified (an unverified one
    /// would let anyone claim any account).
    pub async fn resolve_oidc(&self, claims: &VerifiedClaims) -> Result<Principal, AuthError> {
        if let Some(user) = self.identities.find_by_subject(&claims.subject).await? {
            return Principal::from(&user).active();
        }
        let Some(email) = claims.email.clone() else {
            return Err(AuthError::UnknownUser);
        };
        if !claims.email_verified {
            return Err(AuthError::EmailNotVerified);
        }
        let identity = LoginIdentity {
            subject: claims.subject.clone(),
            email,
            name: claims.name.clone(),
        };
        let user = self.identities.login(&identity, Utc::now()).await?;
        Principal::from(&user).active()
    }
}
