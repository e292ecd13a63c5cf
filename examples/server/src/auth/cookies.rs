//! Minimal cookie reading and writing; only what the session and login cookies need.

use axum::http::{HeaderMap, HeaderValue, header};

/// The value of cookie `name` among the request's `Cookie` headers.
#[must_use]
pub fn find(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"').to_owned())
        .filter(|v| !v.is_empty())
}

/// Attributes of a cookie to set.
#[derive(Clone, Copy, Debug)]
pub struct CookieSpec<'a> {
    /// Cookie name.
    pub name: &'a str,
    /// `Path` attribute.
    pub path: &'a str,
    /// `Max-Age` in seconds; 0 deletes the cookie.
    pub max_age_secs: u64,
    /// Whether to add `Secure`.
    pub secure: bool,
}

/// A `Set-Cookie` value: always `HttpOnly` and `SameSite=Lax`. `value` must be a token of
/// URL-safe characters (ours are base64url); anything else yields `None`.
#[must_use]
pub fn set_cookie(spec: CookieSpec<'_>, value: &str) -> Option<HeaderValue> {
    if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
    {
        return None;
    }
    let secure = if spec.secure { "; Secure" } else { "" };
    let text = format!(
        "{}={}; Path={}; Max-Age={}; HttpOnly; SameSite=Lax{}",
        spec.name, value, spec.path, spec.max_age_secs, secure
    );
    HeaderValue::from_str(&text).ok()
}

/// A `Set-Cookie` value that deletes cookie `name` at `path`.
#[must_use]
pub fn clear_cookie(name: &str, path: &str, secure: bool) -> Option<HeaderValue> {
    set_cookie(
        CookieSpec {
            name,
            path,
            max_age_secs: 0,
            secure,
        },
        "",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_cookie_among_several_headers() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("a=1; b=2"));
        h.append(
            header::COOKIE,
            HeaderValue::from_static("stratai_session=xyz"),
        );
        assert_eq!(find(&h, "b").as_deref(), Some("2"));
        assert_eq!(find(&h, "stratai_session").as_deref(), Some("xyz"));
        assert_eq!(find(&h, "missing"), None);
    }

    #[test]
    fn set_cookie_has_the_safety_attributes_and_refuses_odd_values() {
        let v = set_cookie(
            CookieSpec {
                name: "__Host-s",
                path: "/",
                max_age_secs: 60,
                secure: true,
            },
            "abc_DEF-1",
        )
        .unwrap();
        let s = v.to_str().unwrap();
        assert!(
            s.contains("HttpOnly") && s.contains("SameSite=Lax") && s.contains("Secure"),
            "{s}"
        );
        assert!(
            set_cookie(
                CookieSpec {
                    name: "s",
                    path: "/",
                    max_age_secs: 1,
                    secure: false
                },
                "a; Domain=evil"
            )
            .is_none()
        );
        assert!(
            clear_cookie("s", "/", false)
                .unwrap()
                .to_str()
                .unwrap()
                .contains("Max-Age=0")
        );
    }
}
