//! [`LiteLlmError`]: one error type for the three error body shapes LiteLLM sends.

use std::fmt;
use std::sync::LazyLock;
use std::time::Duration;

use chrono::{DateTime, Utc};
use regex::Regex;
use serde_json::Value;

/// The largest part of a response body kept in an error.
const MAX_BODY: usize = 4096;

/// An error answer from LiteLLM, decoded from whichever body shape it used.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The endpoint, e.g. `/team/new`.
    pub endpoint: &'static str,
    /// HTTP status.
    pub status: u16,
    /// `error.type` when the body had one (`key_model_access_denied`, `budget_exceeded`, ...).
    pub kind: Option<String>,
    /// The human message, secrets redacted.
    pub message: String,
    /// `error.param` when meaningful (`"None"` is dropped).
    pub param: Option<String>,
    /// The raw body (at most 4 KiB), secrets redacted, for diagnostics.
    pub body: String,
}

impl fmt::Debug for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiError")
            .field("endpoint", &self.endpoint)
            .field("status", &self.status)
            .field("kind", &self.kind)
            .field("message", &self.message)
            .field("param", &self.param)
            .field("body", &self.body)
            .finish()
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` answered {}", self.endpoint, self.status)?;
        if let Some(kind) = &self.kind {
            write!(f, " ({kind})")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Every way a LiteLLM call can fail. Messages never contain credentials: bodies and
/// messages are redacted, and transport errors drop the URL (which may carry a key).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LiteLlmError {
    /// 401: missing, unknown or deleted key.
    #[error("unauthorized: {0}")]
    Unauthorized(Box<ApiError>),
    /// 403 `key_model_access_denied`: the virtual key may not use the model (or it is unknown).
    #[error("model denied for this key: {0}")]
    KeyModelDenied(Box<ApiError>),
    /// 403 `team_model_access_denied`: the key's team may not use the model.
    #[error("model denied for this team: {0}")]
    TeamModelDenied(Box<ApiError>),
    /// The feature needs LiteLLM Enterprise (organizations, key tags, regenerate, ...).
    #[error("litellm enterprise only: {0}")]
    EnterpriseOnly(Box<ApiError>),
    /// Any other 403.
    #[error("forbidden: {0}")]
    Forbidden(Box<ApiError>),
    /// 422 `budget_exceeded` (or any budget-exceeded answer).
    #[error("budget exceeded: {0}")]
    BudgetExceeded(Box<ApiError>),
    /// 429: rpm/tpm limit hit.
    #[error("rate limited (retry after {retry_after:?}): {error}")]
    RateLimited {
        /// `retry-after` header.
        retry_after: Option<Duration>,
        /// `rate_limit_type` header: `requests` or `tokens`.
        limit_type: Option<String>,
        /// `reset_at` header.
        reset_at: Option<DateTime<Utc>>,
        /// The answer.
        error: Box<ApiError>,
    },
    /// 400 or 422 request validation.
    #[error("bad request: {0}")]
    BadRequest(Box<ApiError>),
    /// 404 (or an empty answer where an entity was expected).
    #[error("not found: {0}")]
    NotFound(Box<ApiError>),
    /// A create of something that exists (409, or 400 "already exists"); lets creates with
    /// caller-chosen ids be idempotent.
    #[error("already exists: {0}")]
    AlreadyExists(Box<ApiError>),
    /// 5xx from the proxy or its upstream.
    #[error("upstream failure: {0}")]
    Upstream(Box<ApiError>),
    /// Any other non-success status.
    #[error("unexpected answer: {0}")]
    UnexpectedStatus(Box<ApiError>),
    /// No answer in time.
    #[error("`{endpoint}` timed out after {after:?}")]
    Timeout {
        /// The endpoint.
        endpoint: &'static str,
        /// The limit that expired.
        after: Duration,
    },
    /// The connection could not be made (the request was not sent).
    #[error("cannot connect for `{endpoint}`: {source}")]
    Connect {
        /// The endpoint.
        endpoint: &'static str,
        /// The cause, without its URL.
        source: reqwest::Error,
    },
    /// The connection broke while sending or reading.
    #[error("transport failure on `{endpoint}`: {source}")]
    Transport {
        /// The endpoint.
        endpoint: &'static str,
        /// The cause, without its URL.
        source: reqwest::Error,
    },
    /// A success answer whose body is not what the endpoint documents.
    #[error("cannot decode the answer of `{endpoint}`: {reason}")]
    Decode {
        /// The endpoint.
        endpoint: &'static str,
        /// What did not match.
        reason: String,
        /// The body (at most 4 KiB), secrets redacted.
        body: String,
    },
    /// Invalid input given to the client (bad base URL, header value, ...).
    #[error("invalid input: {0}")]
    InvalidInput(String),
}

impl LiteLlmError {
    /// The decoded error answer, for the variants that have one.
    pub fn api_error(&self) -> Option<&ApiError> {
        match self {
            Self::Unauthorized(e)
            | Self::KeyModelDenied(e)
            | Self::TeamModelDenied(e)
            | Self::EnterpriseOnly(e)
            | Self::Forbidden(e)
            | Self::BudgetExceeded(e)
            | Self::BadRequest(e)
            | Self::NotFound(e)
            | Self::AlreadyExists(e)
            | Self::Upstream(e)
            | Self::UnexpectedStatus(e)
            | Self::RateLimited { error: e, .. } => Some(e),
            _ => None,
        }
    }

    /// HTTP status of the answer, if there was one.
    pub fn status(&self) -> Option<u16> {
        self.api_error().map(|e| e.status)
    }

    /// Whether retrying the same call later may succeed (outages, 5xx, throttling), as
    /// opposed to answers that will not change (denials, validation, not found).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Upstream(_)
                | Self::RateLimited { .. }
                | Self::Timeout { .. }
                | Self::Connect { .. }
                | Self::Transport { .. }
        )
    }

    pub(crate) fn from_reqwest(
        endpoint: &'static str,
        err: reqwest::Error,
        timeout: Duration,
    ) -> Self {
        let err = err.without_url();
        if err.is_timeout() {
            Self::Timeout {
                endpoint,
                after: timeout,
            }
        } else if err.is_connect() {
            Self::Connect {
                endpoint,
                source: err,
            }
        } else {
            Self::Transport {
                endpoint,
                source: err,
            }
        }
    }

    pub(crate) fn decode(
        endpoint: &'static str,
        reason: impl fmt::Display,
        body: &[u8],
        redactor: &Redactor,
    ) -> Self {
        Self::Decode {
            endpoint,
            reason: redactor.redact(&reason.to_string()),
            body: redactor.body(body),
        }
    }
}

/// Removes credentials from text: `sk-...` keys, `Bearer` tokens and the configured secrets.
#[derive(Clone, Default)]
pub(crate) struct Redactor {
    literals: Vec<String>,
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Redactor(***)")
    }
}

static KEY_PATTERN: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"sk-[A-Za-z0-9_\-]{6,}").ok());
static BEARER_PATTERN: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r#"(?i)bearer\s+[^\s"',}]+"#).ok());

impl Redactor {
    pub(crate) fn new(literals: impl IntoIterator<Item = String>) -> Self {
        Self {
            literals: literals.into_iter().filter(|l| l.len() >= 4).collect(),
        }
    }

    pub(crate) fn redact(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for literal in &self.literals {
            if out.contains(literal.as_str()) {
                out = out.replace(literal.as_str(), "***");
            }
        }
        if let Some(re) = KEY_PATTERN.as_ref() {
            out = re.replace_all(&out, "sk-***").into_owned();
        }
        if let Some(re) = BEARER_PATTERN.as_ref() {
            out = re.replace_all(&out, "Bearer ***").into_owned();
        }
        out
    }

    pub(crate) fn body(&self, body: &[u8]) -> String {
        let cut = body.len().min(MAX_BODY);
        let text = String::from_utf8_lossy(&body[..cut]);
        let mut out = self.redact(&text);
        if body.len() > MAX_BODY {
            out.push_str("...");
        }
        out
    }
}

fn text_of(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// Message, type and param of the three body shapes:
/// `{"error":{"message","type","param","code"}}`, `{"detail":{"error":"..."}}` (or a string),
/// and FastAPI's `{"detail":[{"type","loc","msg"}]}`.
fn parse_body(body: &[u8]) -> (Option<String>, Option<String>, Option<String>) {
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        let text = String::from_utf8_lossy(body).trim().to_owned();
        return ((!text.is_empty()).then_some(text), None, None);
    };
    if let Some(error) = value.get("error") {
        if error.is_object() {
            let message = error.get("message").and_then(text_of);
            let kind = error.get("type").and_then(text_of);
            let param = error
                .get("param")
                .and_then(text_of)
                .filter(|p| p != "None" && !p.is_empty());
            return (message, kind, param);
        }
        return (text_of(error), None, None);
    }
    match value.get("detail") {
        Some(Value::Object(detail)) => {
            let message = detail
                .get("error")
                .or_else(|| detail.get("message"))
                .and_then(text_of);
            (
                message.or_else(|| Some(Value::Object(detail.clone()).to_string())),
                None,
                None,
            )
        }
        Some(Value::String(detail)) => (Some(detail.clone()), None, None),
        Some(Value::Array(items)) => {
            let parts: Vec<String> = items
                .iter()
                .map(|item| {
                    let loc = item
                        .get("loc")
                        .and_then(Value::as_array)
                        .map(|l| l.iter().filter_map(text_of).collect::<Vec<_>>().join("."))
                        .unwrap_or_default();
                    let msg = item.get("msg").and_then(text_of).unwrap_or_default();
                    if loc.is_empty() {
                        msg
                    } else {
                        format!("`{loc}`: {msg}")
                    }
                })
                .collect();
            let kind = items.first().and_then(|i| i.get("type")).and_then(text_of);
            (Some(parts.join("; ")), kind, None)
        }
        _ => (Some(value.to_string()), None, None),
    }
}

/// Facts of a 429 taken from its headers.
#[derive(Debug, Default, Clone)]
pub(crate) struct RateLimitHeaders {
    pub(crate) retry_after: Option<Duration>,
    pub(crate) limit_type: Option<String>,
    pub(crate) reset_at: Option<DateTime<Utc>>,
}

impl RateLimitHeaders {
    pub(crate) fn from_headers(headers: &reqwest::header::HeaderMap) -> Self {
        let get = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
        };
        let retry_after = get("retry-after").and_then(|v| {
            v.parse::<u64>().ok().map(Duration::from_secs).or_else(|| {
                crate::time::parse_timestamp(v)
                    .map(|at| (at - Utc::now()).to_std().unwrap_or(Duration::ZERO))
            })
        });
        Self {
            retry_after,
            limit_type: get("rate_limit_type").map(str::to_owned),
            reset_at: get("reset_at").and_then(crate::time::parse_timestamp),
        }
    }
}

/// Maps a non-success answer to its [`LiteLlmError`] variant.
pub(crate) fn classify(
    endpoint: &'static str,
    status: u16,
    rate: RateLimitHeaders,
    body: &[u8],
    redactor: &Redactor,
) -> LiteLlmError {
    let (message, kind, param) = parse_body(body);
    let message = redactor.redact(message.as_deref().unwrap_or("(empty body)"));
    let error = Box::new(ApiError {
        endpoint,
        status,
        kind,
        message,
        param,
        body: redactor.body(body),
    });
    let kind = error.kind.as_deref().unwrap_or("");
    let lower = error.message.to_ascii_lowercase();
    if lower.contains("enterprise")
        && (lower.contains("litellm enterprise")
            || lower.contains("enterprise feature")
            || lower.contains("enterprise license"))
    {
        return LiteLlmError::EnterpriseOnly(error);
    }
    if kind == "key_model_access_denied" {
        return LiteLlmError::KeyModelDenied(error);
    }
    if kind == "team_model_access_denied" {
        return LiteLlmError::TeamModelDenied(error);
    }
    if kind == "budget_exceeded"
        || lower.contains("budget has been exceeded")
        || lower.contains("exceededbudget")
    {
        return LiteLlmError::BudgetExceeded(error);
    }
    if status == 429 || kind == "throttling_error" {
        return LiteLlmError::RateLimited {
            retry_after: rate.retry_after,
            limit_type: rate.limit_type,
            reset_at: rate.reset_at,
            error,
        };
    }
    if status == 409
        || kind == "team_member_already_in_team"
        || lower.contains("already exists")
        || lower.contains("already in team")
    {
        return LiteLlmError::AlreadyExists(error);
    }
    match status {
        401 => LiteLlmError::Unauthorized(error),
        403 => LiteLlmError::Forbidden(error),
        404 => LiteLlmError::NotFound(error),
        400 | 422 => LiteLlmError::BadRequest(error),
        500..=599 => LiteLlmError::Upstream(error),
        _ => LiteLlmError::UnexpectedStatus(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(status: u16, body: &str) -> LiteLlmError {
        classify(
            "/x",
            status,
            RateLimitHeaders::default(),
            body.as_bytes(),
            &Redactor::new(["sk-master-1234".to_owned()]),
        )
    }

    #[test]
    fn the_three_body_shapes() {
        let e = class(
            400,
            r#"{"error":{"message":"{'error': 'Team id = t1 already exists. Please use a different team id.'}","type":"internal_server_error","param":null,"code":"400"}}"#,
        );
        assert!(matches!(e, LiteLlmError::AlreadyExists(_)), "{e:?}");
        let e = class(
            409,
            r#"{"error":{"message":"{'error': 'User with id u already exists'}","type":"internal_server_error","param":null,"code":"409"}}"#,
        );
        assert!(matches!(e, LiteLlmError::AlreadyExists(_)));
        let e = class(
            400,
            r#"{"detail":{"error":"Budget with id 'b' already exists."}}"#,
        );
        assert!(matches!(e, LiteLlmError::AlreadyExists(_)));
        let e = class(
            403,
            r#"{"detail":{"error":"Organizations are only available for LiteLLM Enterprise users. You must be a LiteLLM Enterprise user to use this feature."}}"#,
        );
        assert!(matches!(e, LiteLlmError::EnterpriseOnly(_)));
        let e = class(
            422,
            r#"{"detail":[{"type":"float_parsing","loc":["body","max_budget"],"msg":"Input should be a valid number"}]}"#,
        );
        let LiteLlmError::BadRequest(api) = e else {
            panic!("{e:?}")
        };
        assert_eq!(
            api.message,
            "`body.max_budget`: Input should be a valid number"
        );
        assert_eq!(api.kind.as_deref(), Some("float_parsing"));
    }

    #[test]
    fn chat_table() {
        let e = class(
            403,
            r#"{"error":{"message":"The requested model 'mock-gpt-premium' is not available","type":"key_model_access_denied","param":"model","code":"403"}}"#,
        );
        let LiteLlmError::KeyModelDenied(api) = e else {
            panic!()
        };
        assert_eq!(api.param.as_deref(), Some("model"));
        assert!(matches!(
            class(
                403,
                r#"{"error":{"message":"m","type":"team_model_access_denied","param":"model","code":"403"}}"#
            ),
            LiteLlmError::TeamModelDenied(_)
        ));
        assert!(matches!(
            class(
                404,
                r#"{"error":{"message":"Team doesn't exist in db","type":"auth_error","param":"None","code":"404"}}"#
            ),
            LiteLlmError::NotFound(_)
        ));
        assert!(matches!(
            class(
                401,
                r#"{"error":{"message":"Authentication Error, Invalid API key provided.","type":"token_not_found_in_db","param":"key","code":"401"}}"#
            ),
            LiteLlmError::Unauthorized(_)
        ));
        assert!(matches!(
            class(
                400,
                r#"{"error":{"message":"Missing required parameter: 'messages'.","type":"invalid_request_error","param":"messages","code":"400"}}"#
            ),
            LiteLlmError::BadRequest(_)
        ));
        assert!(matches!(
            class(
                422,
                r#"{"error":{"message":"Budget has been exceeded! Key=k Current cost: 0.07, Max budget: 0.05","type":"budget_exceeded","param":null,"code":"422"}}"#
            ),
            LiteLlmError::BudgetExceeded(_)
        ));
        assert!(matches!(
            class(
                500,
                r#"{"error":{"message":"Regenerating Virtual Keys is an Enterprise feature, You must be a LiteLLM Enterprise user","type":"internal_server_error","param":null,"code":"500"}}"#
            ),
            LiteLlmError::EnterpriseOnly(_)
        ));
        assert!(matches!(
            class(502, "Bad Gateway"),
            LiteLlmError::Upstream(_)
        ));
        assert!(matches!(class(418, ""), LiteLlmError::UnexpectedStatus(_)));
    }

    #[test]
    fn rate_limit_headers() {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert("retry-after", "60".parse().unwrap());
        headers.insert("rate_limit_type", "requests".parse().unwrap());
        headers.insert("reset_at", "2026-11-28 15:11:27 UTC".parse().unwrap());
        let e = classify("/v1/chat/completions", 429, RateLimitHeaders::from_headers(&headers), br#"{"error":{"message":"Rate limit exceeded","type":"throttling_error","param":null,"code":"429"}}"#, &Redactor::default());
        let LiteLlmError::RateLimited {
            retry_after,
            limit_type,
            reset_at,
            ..
        } = e
        else {
            panic!()
        };
        assert_eq!(retry_after, Some(Duration::from_secs(60)));
        assert_eq!(limit_type.as_deref(), Some("requests"));
        assert_eq!(
            reset_at,
            crate::time::parse_timestamp("2026-11-28T15:11:27Z")
        );
    }

    #[test]
    fn secrets_are_redacted_from_messages_and_bodies() {
        let e = class(
            400,
            r#"{"error":{"message":"bad key sk-vkujPDi3aeGS3J9wv-Fp2Q and master sk-master-1234, Bearer abc.def","type":"x"}}"#,
        );
        let text = format!("{e} {e:?}");
        assert!(!text.contains("vkujPDi3"), "{text}");
        assert!(!text.contains("master-1234"), "{text}");
        assert!(!text.contains("abc.def"), "{text}");
        assert!(text.contains("sk-***"));
        // Already-masked names stay readable.
        let e = class(
            422,
            r#"{"error":{"message":"Budget has been exceeded! Key=budget-seq (sk-...z9IA)","type":"budget_exceeded"}}"#,
        );
        assert!(e.to_string().contains("sk-...z9IA"));
    }

    #[test]
    fn long_bodies_are_truncated() {
        let long = format!(r#"{{"error":{{"message":"{}"}}}}"#, "x".repeat(10_000));
        let e = class(500, &long);
        assert!(e.api_error().unwrap().body.len() <= MAX_BODY + 3);
    }
}
