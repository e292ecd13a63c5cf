//! Request extractors whose failures are [`ApiError`]s with field paths.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{ApiError, FieldError};

/// A JSON body. Like `axum::Json`, but a body that does not fit the type (unknown field,
/// wrong type, missing field) answers 422 with the field path; broken JSON syntax answers
/// 400, a non-JSON content type 415, an oversized body 413. Request types should carry
/// `#[serde(deny_unknown_fields)]` so unknown fields are refused.
#[derive(Clone, Copy, Debug, Default)]
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(&req) {
            return Err(ApiError::UnsupportedMediaType(
                "expected `Content-Type: application/json`".to_owned(),
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge
            } else {
                ApiError::BadRequest("could not read the request body".to_owned())
            }
        })?;
        parse_json(&bytes).map(ApiJson)
    }
}

impl<T: Serialize> IntoResponse for ApiJson<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

fn is_json(req: &Request) -> bool {
    let Some(ct) = req.headers().get(header::CONTENT_TYPE) else {
        return false;
    };
    let Ok(ct) = ct.to_str() else {
        return false;
    };
    let essence = ct.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case("application/json")
        || (essence.len() > 5
            && essence[..essence.len() - 5].contains('/')
            && essence.to_ascii_lowercase().ends_with("+json"))
}

/// Deserializes `bytes` as `T`, reporting the failing field path. Every request body of the
/// API is a JSON object: anything else (an array, which serde would read into a struct
/// field by field) answers 422.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') | None => {}
        Some(_) => {
            // Broken JSON stays a 400; valid JSON of another kind is a 422.
            if serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_ok() {
                return Err(ApiError::invalid("body", "expected a JSON object"));
            }
        }
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = match serde_path_to_error::deserialize(&mut de) {
        Ok(v) => v,
        Err(err) => {
            let path = field_path(&err.path().to_string());
            let inner = err.into_inner();
            return Err(match inner.classify() {
                serde_json::error::Category::Data => {
                    ApiError::Validation(vec![FieldError::new(path, strip_position(&inner))])
                }
                _ => ApiError::BadRequest(format!("malformed JSON: {}", strip_position(&inner))),
            });
        }
    };
    // Trailing characters after the value are a syntax error, not silently ignored.
    de.end()
        .map_err(|e| ApiError::BadRequest(format!("malformed JSON: {}", strip_position(&e))))?;
    Ok(value)
}

/// A query string. Like `axum::extract::Query`, but failures answer 422 with the parameter
/// name as the field path. Query types should carry `#[serde(deny_unknown_fields)]`.
#[derive(Clone, Copy, Debug, Default)]
pub struct ApiQuery<T>(pub T);

impl<T, S> axum::extract::FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or("");
        let de = serde_urlencoded::Deserializer::new(url::form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(de)
            .map(ApiQuery)
            .map_err(|e| {
                let path = e.path().to_string();
                let path = if path == "." {
                    "query".to_owned()
                } else {
                    path
                };
                ApiError::Validation(vec![FieldError::new(path, e.into_inner().to_string())])
            })
    }
}

/// For PATCH bodies: tells an absent field (`None`) from an explicit `null`
/// (`Some(None)`). Use with `#[serde(default, deserialize_with = "double_option")]`.
pub fn double_option<'de, T, D>(de: D) -> Result<Option<Option<T>>, D::Error>
where
    T: serde::Deserialize<'de>,
    D: serde::Deserializer<'de>,
{
    <Option<T> as serde::Deserialize>::deserialize(de).map(Some)
}

fn field_path(p: &str) -> String {
    if p == "." || p.is_empty() {
        "body".to_owned()
    } else {
        p.to_owned()
    }
}

/// serde_json appends " at line 1 column 17"; the path already says where.
fn strip_position(e: &serde_json::Error) -> String {
    let s = e.to_string();
    match s.rfind(" at line ") {
        Some(i) => s[..i].to_owned(),
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Member {
        email: String,
        #[allow(dead_code)]
        role: Option<String>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Invite {
        members: Vec<Member>,
    }

    fn fields(e: ApiError) -> Vec<FieldError> {
        match e {
            ApiError::Validation(f) => f,
            other => panic!("expected validation, got {other:?}"),
        }
    }

    #[test]
    fn unknown_field_is_a_422_naming_it() {
        let e = parse_json::<Invite>(
            br#"{"members":[{"email":"a@b"},{"email":"c@d","is_admin":true}]}"#,
        )
        .unwrap_err();
        let f = fields(e);
        assert_eq!(f.len(), 1);
        assert!(f[0].path.starts_with("members[1]"), "{f:?}");
        assert!(f[0].message.contains("is_admin"), "{f:?}");
    }

    #[test]
    fn wrong_type_names_the_path() {
        let f = fields(parse_json::<Invite>(br#"{"members":[{"email":5}]}"#).unwrap_err());
        assert_eq!(f[0].path, "members[0].email");
        assert!(f[0].message.contains("invalid type"), "{f:?}");
    }

    #[test]
    fn missing_field_is_a_422() {
        let f = fields(parse_json::<Invite>(br#"{"members":[{}]}"#).unwrap_err());
        assert!(f[0].message.contains("missing field `email`"), "{f:?}");
    }

    #[test]
    fn syntax_errors_and_trailing_garbage_are_400() {
        assert!(matches!(
            parse_json::<Invite>(br#"{"members":["#).unwrap_err(),
            ApiError::BadRequest(_)
        ));
        assert!(matches!(
            parse_json::<Invite>(br#"{"members":[]} x"#).unwrap_err(),
            ApiError::BadRequest(_)
        ));
        let ok: Invite = parse_json(br#"{"members":[{"email":"a@b"}]}"#).unwrap();
        assert_eq!(ok.members[0].email, "a@b");
    }

    #[test]
    fn a_body_that_is_not_an_object_is_refused() {
        #[derive(Debug, serde::Deserialize)]
        struct Patch {
            #[allow(dead_code)]
            name: Option<String>,
        }
        // serde would read `[null]` into the struct field by field.
        let f = fields(parse_json::<Patch>(b" [null]").unwrap_err());
        assert_eq!(f[0].path, "body");
        assert!(fields(parse_json::<Patch>(b"5").unwrap_err())[0].path == "body");
        assert!(matches!(
            parse_json::<Patch>(b"[nul").unwrap_err(),
            ApiError::BadRequest(_)
        ));
        assert!(parse_json::<Patch>(b" {}").is_ok());
    }
}
