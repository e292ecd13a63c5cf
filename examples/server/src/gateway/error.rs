//! Errors of the `/v1` routes, in OpenAI's shape:
//! `{"error": {"message", "type", "code", "param"}}`.
//!
//! Clients written for OpenAI read `type` and `code`; StratAI's own detail (the rule, the
//! exhausted budget scope, the upgrade hint) rides in extra fields of the same object, which
//! such clients ignore.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;

use crate::error::{ApiError, ErrorCode};

/// Every `type` the OpenAI-compatible routes answer.
pub const KINDS: &[&str] = &[
    "invalid_request_error",
    "authentication_error",
    "permission_error",
    "not_found_error",
    "rate_limit_error",
    "insufficient_quota",
    "server_error",
];

/// Every `code` of the OpenAI-compatible routes besides the admin API's [`ErrorCode`]s (which
/// they answer for authentication and malformed requests).
pub const CODES: &[&str] = &[
    "invalid_request",
    "organization_required",
    "not_a_member",
    "model_not_found",
    "model_access_denied",
    "guardrail_blocked",
    "rate_limit_exceeded",
    "insufficient_quota",
    "upstream_rate_limited",
    "upstream_bad_request",
    "upstream_refused",
    "upstream_budget_exceeded",
    "not_provisioned",
    "upstream_unavailable",
];

/// The body of every error of the OpenAI-compatible routes.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OpenAiErrorBody {
    /// The error.
    pub error: OpenAiErrorObject,
}

/// OpenAI's error object plus StratAI's detail (`reason`, `upgrade_hint`, `scope`, `rule`,
/// `reasons`, ... depending on the code).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OpenAiErrorObject {
    /// For people.
    pub message: String,
    /// OpenAI's error type.
    #[serde(rename = "type")]
    #[schema(schema_with = kind_schema)]
    pub kind: &'static str,
    /// Stable, machine-readable.
    #[schema(schema_with = code_schema)]
    pub code: &'static str,
    /// The offending parameter, or null.
    pub param: Option<Box<str>>,
    /// StratAI's detail.
    #[serde(flatten)]
    pub detail: serde_json::Map<String, Value>,
}

fn enum_schema(values: Vec<&'static str>) -> utoipa::openapi::schema::Object {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .enum_values(Some(values))
        .build()
}

fn kind_schema() -> utoipa::openapi::schema::Object {
    enum_schema(KINDS.to_vec())
}

/// The admin API's codes ([`ErrorCode`]) followed by [`CODES`].
fn all_codes() -> Vec<&'static str> {
    let mut codes = ErrorCode::ALL
        .iter()
        .map(|c| c.as_str())
        .collect::<Vec<_>>();
    for code in CODES {
        if !codes.contains(code) {
            codes.push(code);
        }
    }
    codes
}

fn code_schema() -> utoipa::openapi::schema::Object {
    enum_schema(all_codes())
}

/// An error answered by the OpenAI-compatible routes.
#[derive(Debug, Clone)]
pub struct OpenAiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Human message.
    pub message: String,
    /// OpenAI `type` (`invalid_request_error`, `insufficient_quota`, ...).
    pub kind: &'static str,
    /// Stable machine-readable code.
    pub code: &'static str,
    /// The offending parameter, when one is.
    pub param: Option<Box<str>>,
    /// Seconds to wait (sent as `Retry-After`).
    pub retry_after_secs: Option<u64>,
    /// StratAI detail (merged into the error object).
    pub detail: Box<serde_json::Map<String, Value>>,
    /// Request id (sent as `x-stratai-request-id`).
    pub request_id: Option<Box<str>>,
}

impl OpenAiError {
    /// An error with no extra detail.
    pub fn new(
        status: StatusCode,
        kind: &'static str,
        code: &'static str,
        message: impl Into<String>,
    ) -> Self {
        debug_assert!(KINDS.contains(&kind), "undocumented error type `{kind}`");
        debug_assert!(
            all_codes().contains(&code),
            "undocumented error code `{code}`"
        );
        Self {
            status,
            message: message.into(),
            kind,
            code,
            param: None,
            retry_after_secs: None,
            detail: Box::default(),
            request_id: None,
        }
    }

    /// 400 `invalid_request_error`.
    pub fn invalid(code: &'static str, param: Option<&str>, message: impl Into<String>) -> Self {
        let mut e = Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            code,
            message,
        );
        e.param = param.map(Into::into);
        e
    }

    /// 500 with a generic message; the detail goes to the log only.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "gateway internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "internal",
            "internal error",
        )
    }

    /// Adds a detail field.
    #[must_use]
    pub fn with(mut self, key: &str, value: impl Serialize) -> Self {
        if let Ok(v) = serde_json::to_value(value) {
            self.detail.insert(key.to_owned(), v);
        }
        self
    }

    /// Sets the request id header.
    #[must_use]
    pub fn for_request(mut self, request_id: impl ToString) -> Self {
        self.request_id = Some(request_id.to_string().into_boxed_str());
        self
    }

    /// The JSON body.
    #[must_use]
    pub fn body(&self) -> Value {
        let mut detail = (*self.detail).clone();
        for key in ["message", "type", "code", "param"] {
            detail.remove(key);
        }
        serde_json::to_value(OpenAiErrorBody {
            error: OpenAiErrorObject {
                message: self.message.clone(),
                kind: self.kind,
                code: self.code,
                param: self.param.clone(),
                detail,
            },
        })
        .unwrap_or(Value::Null)
    }
}

/// The 405 of the OpenAI-compatible routes, in their shape (axum keeps the `Allow` header).
pub async fn method_not_allowed() -> OpenAiError {
    OpenAiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "invalid_request_error",
        ErrorCode::MethodNotAllowed.as_str(),
        "method not allowed on this path",
    )
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        let body = self.body();
        let mut response = (self.status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        if let Some(secs) = self.retry_after_secs {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        if let Some(id) = self
            .request_id
            .as_deref()
            .and_then(|id| HeaderValue::from_str(id).ok())
        {
            headers.insert(super::REQUEST_ID_HEADER, id);
        }
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer error=\"invalid_token\""),
            );
        }
        response
    }
}

impl From<ApiError> for OpenAiError {
    /// The admin API's errors (authentication above all) in OpenAI's shape.
    fn from(e: ApiError) -> Self {
        let status = e.status();
        let kind = match status {
            StatusCode::UNAUTHORIZED => "authentication_error",
            StatusCode::FORBIDDEN => "permission_error",
            StatusCode::NOT_FOUND => "not_found_error",
            s if s.is_server_error() => "server_error",
            _ => "invalid_request_error",
        };
        let message = match &e {
            ApiError::Internal(detail) => {
                tracing::error!(error = %detail, "gateway internal error");
                "internal error".to_owned()
            }
            ApiError::Unavailable(detail) => {
                tracing::warn!(error = %detail, "gateway dependency unavailable");
                "service temporarily unavailable".to_owned()
            }
            ApiError::Validation(fields) => fields
                .iter()
                .map(|f| format!("{}: {}", f.path, f.message))
                .collect::<Vec<_>>()
                .join("; "),
            other => other.to_string(),
        };
        let param = match &e {
            ApiError::Validation(fields) => fields.first().map(|f| f.path.clone().into_boxed_str()),
            _ => None,
        };
        let mut out = Self::new(status, kind, e.code(), message);
        out.param = param;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn body_has_the_openai_shape_plus_detail() {
        let e = OpenAiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "insufficient_quota",
            "insufficient_quota",
            "the user budget is exhausted",
        )
        .with("scope", "user")
        .for_request("r-1");
        let mut e2 = e.clone();
        e2.retry_after_secs = Some(0);
        let r = e2.into_response();
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()[header::RETRY_AFTER], "1");
        assert_eq!(r.headers()[super::super::REQUEST_ID_HEADER], "r-1");
        let b = e.body();
        assert_eq!(b["error"]["type"], "insufficient_quota");
        assert_eq!(b["error"]["code"], "insufficient_quota");
        assert_eq!(b["error"]["param"], Value::Null);
        assert_eq!(b["error"]["scope"], "user");
    }

    #[test]
    fn api_errors_map_to_openai_kinds() {
        let e: OpenAiError = ApiError::Unauthenticated("token expired").into();
        assert_eq!(e.status, StatusCode::UNAUTHORIZED);
        assert_eq!(e.body()["error"]["type"], "authentication_error");
        let e: OpenAiError = ApiError::internal("password=x").into();
        assert!(!e.body().to_string().contains("password"));
        let e: OpenAiError = ApiError::invalid("messages[0].role", "unknown role").into();
        assert_eq!(e.body()["error"]["param"], "messages[0].role");
    }
}
