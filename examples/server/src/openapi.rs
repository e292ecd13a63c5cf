//! The OpenAPI document, generated from the route tables (the admin API's
//! [`OPERATIONS`](crate::api::OPERATIONS) plus the auth and health routes), served at
//! `GET /openapi.json`. A test compares it with the router and with the checked-in
//! `openapi.json`, so routes and document cannot drift apart.

use serde_json::{Map, Value, json};

/// Routes outside the admin API table: `(METHOD, path, operation, public, note)`.
pub const OTHER_OPERATIONS: &[(&str, &str, &str, bool, &str)] = &[
    ("GET", "/health/live", "health::live", true, "liveness"),
    (
        "GET",
        "/health/ready",
        "health::ready",
        true,
        "readiness (database reachable)",
    ),
    (
        "GET",
        "/openapi.json",
        "openapi::document",
        true,
        "this document",
    ),
    (
        "GET",
        "/auth/me",
        "auth::me",
        false,
        "the authenticated user",
    ),
    (
        "GET",
        "/auth/login",
        "auth::login",
        true,
        "OIDC mode: redirect to the provider (code + PKCE, state, nonce)",
    ),
    (
        "POST",
        "/auth/login",
        "auth::login",
        true,
        "OIDC mode: redirect to the provider (code + PKCE, state, nonce)",
    ),
    (
        "GET",
        "/auth/callback",
        "auth::callback",
        true,
        "OIDC mode: code exchange, id token validation, session cookie",
    ),
    (
        "POST",
        "/auth/logout",
        "auth::logout",
        true,
        "OIDC mode: end the session",
    ),
    (
        "POST",
        "/auth/dev/token",
        "auth::dev_token",
        true,
        "dev mode only (no OIDC issuer): a short-lived token for an existing or invited user",
    ),
    (
        "POST",
        "/v1/chat/completions",
        "gateway::chat_completions",
        false,
        "OpenAI-compatible chat (JSON or SSE); `x-stratai-org` picks the organization",
    ),
    (
        "GET",
        "/v1/models",
        "gateway::list_models",
        false,
        "the caller's accessible models",
    ),
    (
        "GET",
        "/api/explain",
        "gateway::explain_get",
        false,
        "what-if decision for a user, model and time",
    ),
    (
        "POST",
        "/api/explain",
        "gateway::explain_post",
        false,
        "what-if decision for a user, model and time",
    ),
    (
        "GET",
        "/metrics",
        "gateway::metrics",
        true,
        "Prometheus metrics",
    ),
];

/// Admin API routes that need no credentials.
const PUBLIC_API: &[&str] = &["/api/invitations/{token}"];

fn operation(method: &str, path: &str, handler: &str, public: bool, note: &str) -> Value {
    let tag = handler.split("::").next().unwrap_or("api");
    let params: Vec<Value> = path
        .split('/')
        .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
        .collect();
    let success = match method {
        "POST" if path.ends_with("/accept") || path.starts_with("/auth") => "200",
        "POST" => "201",
        "DELETE"
            if path.starts_with("/api/organizations/{org_id}")
                && path.matches('{').count() == 1 =>
        {
            "200"
        }
        "DELETE" => "204",
        _ => "200",
    };
    let mut op = Map::new();
    op.insert("operationId".into(), json!(handler.replace("::", "_")));
    op.insert("tags".into(), json!([tag]));
    if !note.is_empty() {
        op.insert("summary".into(), json!(note));
    }
    if !params.is_empty() {
        op.insert("parameters".into(), Value::Array(params));
    }
    if matches!(method, "POST" | "PATCH" | "PUT")
        && !path.starts_with("/auth/login")
        && !path.ends_with("/accept")
        && path != "/auth/logout"
    {
        op.insert(
            "requestBody".into(),
            json!({"required": true, "content": {"application/json": {"schema": {"type": "object"}}}}),
        );
    }
    if public {
        op.insert("security".into(), json!([]));
    }
    op.insert(
        "responses".into(),
        json!({
            success: {"description": "success"},
            "default": {"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
        }),
    );
    Value::Object(op)
}

/// The document.
#[must_use]
pub fn document() -> Value {
    let mut paths: Map<String, Value> = Map::new();
    let all = crate::api::OPERATIONS
        .iter()
        .map(|(m, p, h)| (*m, *p, h.to_string(), PUBLIC_API.contains(p), ""))
        .chain(
            OTHER_OPERATIONS
                .iter()
                .map(|(m, p, h, public, note)| (*m, *p, (*h).to_owned(), *public, *note)),
        );
    for (method, path, handler, public, note) in all {
        let entry = paths
            .entry(path.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(ops) = entry {
            ops.insert(
                method.to_ascii_lowercase(),
                operation(method, path, &handler, public, note),
            );
        }
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "StratAI server",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Admin API (the seed's Appendix B), authentication. Errors: {\"error\": {\"code\", \"message\", \"fields\"?}}; another organization's resources answer 404."
        },
        "security": [{"bearer": []}],
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "session": {"type": "apiKey", "in": "cookie", "name": "__Host-stratai_session"}
            },
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {"error": {
                        "type": "object",
                        "required": ["code", "message"],
                        "properties": {
                            "code": {"type": "string", "enum": ["unauthenticated", "forbidden", "not_found", "validation_failed", "bad_request", "unsupported_media_type", "payload_too_large", "conflict", "unavailable", "internal"]},
                            "message": {"type": "string"},
                            "fields": {"type": "array", "items": {"type": "object", "properties": {"path": {"type": "string"}, "message": {"type": "string"}}}}
                        }
                    }}
                }
            }
        },
        "paths": Value::Object(paths),
    })
}

/// `GET /openapi.json`.
pub async fn serve() -> axum::Json<Value> {
    axum::Json(document())
}
