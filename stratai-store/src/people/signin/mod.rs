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
//! - [`resolve_claims`] finds the active user of verified claims through [`Identities`]: by subject, else by a *verified* email (linking or creating the user).
//!
//! Behind the `signin` feature (it brings jsonwebtoken and an HTTP client).

pub mod dev;
pub mod keys;
pub mod oidc;
pub mod session;
pub mod validator;

use chrono::Utc;
use stratai_core::directory::User;

use crate::people::identity::{Identities, IdentityError, LoginIdentity};
use session::SessionError;
use validator::VerifiedClaims;

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
}

/// The active user behind verified OIDC claims: the one linked to the subject, else (first sign-in)
/// the one with the claims' email, linked or created by [`Identities::login`], and only for
/// an email the provider verified (an unverified one would let anyone claim any account).
pub async fn resolve_claims(
    identities: &Identities,
    claims: &VerifiedClaims,
) -> Result<User, AuthError> {
    if let Some(user) = identities.find_by_subject(&claims.subject).await? {
        return active(user);
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
    let user = identities.login(&identity, Utc::now()).await?;
    active(user)
}

/// `user` if their account is active, else [`AuthError::Deactivated`].
pub fn active(user: User) -> Result<User, AuthError> {
    if user.active {
        Ok(user)
    } else {
        Err(AuthError::Deactivated)
    }
}
