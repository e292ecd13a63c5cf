//! The admin API's error type and its HTTP mapping.
//!
//! Every error answers `{"error": {"code", "message", "fields"?}}` with a stable,
//! machine-readable `code`. Internal faults answer a generic 500; their detail goes to the
//! log only. Another organization's resource is reported as [`ApiError::NotFound`], never as
//! forbidden, so its existence is not confirmed.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// One invalid field of a request: where (a path such as `settings.default_tier` or
/// `members[2].email`) and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct FieldError {
    /// Path of the field in the request body or query.
    pub path: String,
    /// What is wrong with it.
    pub message: String,
}

impl FieldError {
    /// A field error at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// An error answered by the HTTP API.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No or invalid credentials (401). The reason is a short, non-secret phrase.
    #[error("unauthenticated: {0}")]
    Unauthenticated(&'static str),
    /// Authenticated, but this action on this (own-org) resource is not allowed (403).
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// The caller signed in with one factor and an organization they belong to requires
    /// multi-factor authentication (`settings.require_mfa`) (403).
    #[error("multi-factor authentication required: {0}")]
    MfaRequired(String),
    /// Does not exist, or belongs to another organization (404).
    #[error("not found: {0}")]
    NotFound(String),
    /// The request body or query failed validation (422).
    #[error("validation failed")]
    Validation(Vec<FieldError>),
    /// Malformed request that is not a field problem (400), e.g. broken JSON syntax.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// Unsupported `Content-Type` (415).
    #[error("unsupported media type: {0}")]
    UnsupportedMediaType(String),
    /// The body is larger than allowed (413).
    #[error("payload too large")]
    PayloadTooLarge,
    /// A state conflict, e.g. a slug already taken or an invitation already used (409).
    #[error("conflict: {0}")]
    Conflict(String),
    /// A dependency (database, identity provider) is not reachable (503).
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// Anything else (500). The detail is logged, never sent.
    #[error("internal: {0}")]
    Internal(String),
}

impl ApiError {
    /// A 422 with one field error.
    pub fn invalid(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Validation(vec![FieldError::new(path, message)])
    }

    /// An internal error from any displayable cause.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        Self::Internal(cause.to_string())
    }

    /// The HTTP status.
    #[must_use]
    pub fn status(&self) -> StatusCode {
        self.error_code().status()
    }

    /// The stable machine-readable code.
    #[must_use]
    pub fn code(&self) -> &'static str {
        self.error_code().as_str()
    }

    /// The stable machine-readable code, typed.
    #[must_use]
    pub fn error_code(&self) -> ErrorCode {
        match self {
            Self::Unauthenticated(_) => ErrorCode::Unauthenticated,
            Self::Forbidden(_) => ErrorCode::Forbidden,
            Self::MfaRequired(_) => ErrorCode::MfaRequired,
            Self::NotFound(_) => ErrorCode::NotFound,
            Self::Validation(_) => ErrorCode::ValidationFailed,
            Self::BadRequest(_) => ErrorCode::BadRequest,
            Self::UnsupportedMediaType(_) => ErrorCode::UnsupportedMediaType,
            Self::PayloadTooLarge => ErrorCode::PayloadTooLarge,
            Self::Conflict(_) => ErrorCode::Conflict,
            Self::Unavailable(_) => ErrorCode::Unavailable,
            Self::Internal(_) => ErrorCode::Internal,
        }
    }
}

/// Every `code` the admin API answers, one per [`ApiError`] variant (and `method_not_allowed`
/// for a method a route does not have). The OpenAPI document's error enum is this type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// 401.
    Unauthenticated,
    /// 403.
    Forbidden,
    /// 403: an organization of the caller requires multi-factor sign-in, and this token or
    /// session was obtained with one factor.
    MfaRequired,
    /// 404.
    NotFound,
    /// 405: the path exists, the method does not.
    MethodNotAllowed,
    /// 422.
    ValidationFailed,
    /// 400.
    BadRequest,
    /// 415.
    UnsupportedMediaType,
    /// 413.
    PayloadTooLarge,
    /// 409.
    Conflict,
    /// 503.
    Unavailable,
    /// 500.
    Internal,
}

impl ErrorCode {
    /// Every code.
    pub const ALL: &[ErrorCode] = &[
        Self::Unauthenticated,
        Self::Forbidden,
        Self::MfaRequired,
        Self::NotFound,
        Self::MethodNotAllowed,
        Self::ValidationFailed,
        Self::BadRequest,
        Self::UnsupportedMediaType,
        Self::PayloadTooLarge,
        Self::Conflict,
        Self::Unavailable,
        Self::Internal,
    ];

    /// The status every answer with this code has.
    #[must_use]
    pub fn status(self) -> StatusCode {
        match self {
            Self::Unauthenticated => StatusCode::UNAUTHORIZED,
            Self::Forbidden | Self::MfaRequired => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::ValidationFailed => StatusCode::UNPROCESSABLE_ENTITY,
            Self::BadRequest => StatusCode::BAD_REQUEST,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Conflict => StatusCode::CONFLICT,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The code as sent.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unauthenticated => "unauthenticated",
            Self::Forbidden => "forbidden",
            Self::MfaRequired => "mfa_required",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::ValidationFailed => "validation_failed",
            Self::BadRequest => "bad_request",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::PayloadTooLarge => "payload_too_large",
            Self::Conflict => "conflict",
            Self::Unavailable => "unavailable",
            Self::Internal => "internal",
        }
    }
}

impl From<stratai_core::ValidationError> for ApiError {
    fn from(e: stratai_core::ValidationError) -> Self {
        Self::Validation(vec![FieldError::new(e.field, e.reason)])
    }
}

impl From<stratai_core::StoreError> for ApiError {
    fn from(e: stratai_core::StoreError) -> Self {
        use stratai_core::StoreError as S;
        match e {
            S::NotFound { entity, .. } => Self::NotFound(entity.to_owned()),
            S::Conflict(msg) => Self::Conflict(msg),
            // Never confirm that another tenant's row exists.
            S::TenantMismatch(detail) => {
                tracing::warn!(detail = %detail, "tenant mismatch refused");
                Self::NotFound("resource".to_owned())
            }
            S::Invalid(v) => v.into(),
            S::Backend(detail) => Self::Internal(detail),
        }
    }
}

impl From<stratai_core::OpError> for ApiError {
    fn from(e: stratai_core::OpError) -> Self {
        use stratai_core::OpError as O;
        match e {
            O::Forbidden(why) => Self::Forbidden(why),
            O::NotFound(what) => Self::NotFound(what),
            O::Invalid(fields) => Self::Validation(
                fields
                    .into_iter()
                    .map(|f| FieldError::new(f.field, f.reason))
                    .collect(),
            ),
            O::Conflict(why) => Self::Conflict(why),
            O::Store(e) => e.into(),
        }
    }
}

/// The body of every admin API error: `{"error": {"code", "message", "fields"?}}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorObject,
}

/// The error object of an [`ErrorBody`].
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorObject {
    /// Stable, machine-readable.
    pub code: ErrorCode,
    /// For people.
    pub message: String,
    /// The invalid fields (validation errors only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fields: Option<Vec<FieldError>>,
}

/// The JSON 405 for a method a route does not have (axum keeps the `Allow` header).
pub async fn method_not_allowed() -> Response {
    let body = ErrorBody {
        error: ErrorObject {
            code: ErrorCode::MethodNotAllowed,
            message: "method not allowed on this path".to_owned(),
            fields: None,
        },
    };
    (StatusCode::METHOD_NOT_ALLOWED, axum::Json(body)).into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = match &self {
            Self::Internal(detail) => {
                tracing::error!(error = %detail, "internal error");
                "internal error".to_owned()
            }
            Self::Unavailable(detail) => {
                tracing::warn!(error = %detail, "dependency unavailable");
                "service temporarily unavailable".to_owned()
            }
            other => other.to_string(),
        };
        let code = self.error_code();
        let unauthenticated = matches!(self, Self::Unauthenticated(_));
        let step_up = matches!(self, Self::MfaRequired(_));
        let fields = match self {
            Self::Validation(f) => Some(f),
            _ => None,
        };
        let body = ErrorBody {
            error: ErrorObject {
                code,
                message,
                fields,
            },
        };
        let mut response = (status, axum::Json(body)).into_response();
        if unauthenticated {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer error=\"invalid_token\""),
            );
        }
        if step_up {
            // RFC 9470: the token is valid but its authentication was too weak.
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer error=\"insufficient_user_authentication\""),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body_of(e: ApiError) -> (StatusCode, serde_json::Value) {
        let r = e.into_response();
        let status = r.status();
        let bytes = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn internal_detail_never_reaches_the_body() {
        let (status, body) = body_of(ApiError::internal("db password=hunter2 refused")).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(body["error"]["code"], "internal");
        assert!(!body.to_string().contains("hunter2"));
    }

    #[tokio::test]
    async fn validation_lists_field_paths() {
        let (status, body) = body_of(ApiError::Validation(vec![
            FieldError::new("members[1].email", "`x` is not an email address"),
            FieldError::new("role", "unknown role `boss`"),
        ]))
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(body["error"]["code"], "validation_failed");
        assert_eq!(body["error"]["fields"][0]["path"], "members[1].email");
        assert_eq!(body["error"]["fields"][1]["path"], "role");
    }

    #[tokio::test]
    async fn every_code_is_sent_as_its_enum_value() {
        let all = [
            ApiError::Unauthenticated("x"),
            ApiError::Forbidden("x".into()),
            ApiError::NotFound("x".into()),
            ApiError::Validation(vec![]),
            ApiError::BadRequest("x".into()),
            ApiError::UnsupportedMediaType("x".into()),
            ApiError::PayloadTooLarge,
            ApiError::Conflict("x".into()),
            ApiError::Unavailable("x".into()),
            ApiError::Internal("x".into()),
        ];
        for e in all {
            let code = e.error_code();
            let (_, body) = body_of(e).await;
            assert_eq!(body["error"]["code"], serde_json::to_value(code).unwrap());
            assert_eq!(body["error"]["code"], code.as_str());
        }
        for code in ErrorCode::ALL {
            assert_eq!(serde_json::to_value(code).unwrap(), code.as_str());
        }
        let r = method_not_allowed().await;
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
        let bytes = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
        let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(body["error"]["code"], ErrorCode::MethodNotAllowed.as_str());
    }

    #[tokio::test]
    async fn unauthenticated_carries_www_authenticate() {
        let r = ApiError::Unauthenticated("token expired").into_response();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert!(r.headers().contains_key(header::WWW_AUTHENTICATE));
    }
}
