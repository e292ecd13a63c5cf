//! Cross-site request forgery protection of the UI's forms, two independent walls:
//! - the request's `Origin` must be this server's public origin ([`Auth::same_origin`]);
//! - the form carries a token derived from the browser's session cookie (or, before sign-in,
//!   from a random pre-session cookie): `base64url(SHA-256("stratai-ui-csrf\0" ++ cookie))`.
//!
//! The cookie is HttpOnly, 256 random bits, so another site can neither read it nor compute
//! the token; the hash does not reveal the cookie to whoever sees the page. Being derived, the
//! token needs no storage and lives exactly as long as the session it is tied to.

use axum::http::{HeaderMap, HeaderValue};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

use crate::auth::Auth;
use crate::auth::cookies::{self, CookieSpec};

/// Name of the cookie that binds the sign-in form's token before a session exists.
pub const PRESESSION_COOKIE: &str = "stratai_presession";
/// Name of the token's form field.
pub const FIELD: &str = "csrf";

/// The form token tied to `cookie` (a session id or a pre-session value).
#[must_use]
pub fn token_for(cookie: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"stratai-ui-csrf\0");
    hasher.update(cookie.as_bytes());
    URL_SAFE_NO_PAD.encode(hasher.finalize())
}

/// The cookie a form token is bound to: the session cookie when there is one, else the
/// pre-session cookie.
#[must_use]
pub fn binding(auth: &Auth, headers: &HeaderMap) -> Option<String> {
    cookies::find(headers, auth.session_cookie_name())
        .or_else(|| cookies::find(headers, PRESESSION_COOKIE))
}

/// The `Set-Cookie` value of a fresh pre-session cookie and its value.
#[must_use]
pub fn new_presession(auth: &Auth) -> Option<(HeaderValue, String)> {
    let (value, _) = crate::auth::session::new_session_id();
    let header = cookies::set_cookie(
        CookieSpec {
            name: PRESESSION_COOKIE,
            path: "/",
            max_age_secs: 3600,
            secure: auth.secure_cookies(),
        },
        &value,
    )?;
    Some((header, value))
}

/// Why a form post was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// `Origin` missing or another site's.
    CrossOrigin,
    /// No token, or not the one of this browser's cookie.
    BadToken,
}

/// Checks both walls for a form post carrying `token`.
pub fn check(auth: &Auth, headers: &HeaderMap, token: Option<&str>) -> Result<(), Refused> {
    if !auth.same_origin(headers) {
        return Err(Refused::CrossOrigin);
    }
    let expected = binding(auth, headers).map(|c| token_for(&c));
    match (expected, token) {
        (Some(e), Some(t)) if constant_time_eq(e.as_bytes(), t.as_bytes()) => Ok(()),
        _ => Err(Refused::BadToken),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_per_cookie_and_hide_it() {
        let a = token_for("cookie-a");
        assert_eq!(a, token_for("cookie-a"));
        assert_ne!(a, token_for("cookie-b"));
        assert!(!a.contains("cookie-a"));
        assert_eq!(a.len(), 43);
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
