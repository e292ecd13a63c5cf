//! The OpenAPI 3.1 document, served at `GET /openapi.json`: paths and methods from the route
//! tables (the admin API's [`OPERATIONS`](crate::api::OPERATIONS) plus [`OTHER_OPERATIONS`]),
//! request and response schemas derived (`utoipa::ToSchema`) from the types the handlers
//! deserialize and serialize, one `describe` entry per operation. Tests compare the document
//! with the router and with the checked-in `openapi.json`; `scripts/api-check.sh` validates it
//! and runs Schemathesis against a server.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};
use utoipa::ToSchema;

use crate::api::guardrails::{CreateRule, OrgScope, PlatformScope};
use crate::api::{
    billing, budgets, groups, guardrails, invitations, litellm, members, orgs, profiles, tiers,
    usage, users,
};
use crate::auth::routes as auth;
use crate::error::{ErrorBody, ErrorCode};
use crate::gateway::error::OpenAiErrorBody;
use crate::gateway::explain;
use stratai_core::billing::MonthlyInvoice;
use stratai_core::budget::Budget;
use stratai_core::directory::{Group, GroupMembership, Membership, Organization, UserProfile};
use stratai_core::gateway::{ChatChunk, ChatRequest, ChatResponse};
use stratai_core::ports::RuleRecord;
use stratai_core::tiers::{ModelTier, TierSubscription};
use stratai_core::{BudgetId, GroupId, InvoiceId, OrgId, RuleId, TierId, UserId};

/// Routes outside the admin API table: `(METHOD, path, operation, public, summary)`.
#[rustfmt::skip]
pub const OTHER_OPERATIONS: &[(&str, &str, &str, bool, &str)] = &[
    ("GET", "/health/live", "health::live", true, "liveness"),
    ("GET", "/health/ready", "health::ready", true, "readiness (database reachable)"),
    ("GET", "/openapi.json", "openapi::document", true, "this document"),
    ("GET", "/auth/me", "auth::me", false, "the authenticated user"),
    ("GET", "/auth/login", "auth::login", true, "OIDC mode: redirect to the provider (code + PKCE, state, nonce); 404 in dev mode"),
    ("POST", "/auth/login", "auth::login", true, "OIDC mode: redirect to the provider (code + PKCE, state, nonce); 404 in dev mode"),
    ("GET", "/auth/callback", "auth::callback", true, "OIDC mode: code exchange, id token validation, session cookie; 404 in dev mode"),
    ("POST", "/auth/logout", "auth::logout", true, "OIDC mode: end the session; 404 in dev mode"),
    ("POST", "/auth/dev/token", "auth::dev_token", true, "dev mode only (404 otherwise): a short-lived token for an existing or invited user"),
    ("POST", "/v1/chat/completions", "gateway::chat_completions", false, "OpenAI-compatible chat (JSON or SSE); `x-stratai-org` picks the organization"),
    ("GET", "/v1/models", "gateway::list_models", false, "the caller's accessible models"),
    ("GET", "/api/explain", "gateway::explain_get", false, "what-if decision for a user, model and time"),
    ("POST", "/api/explain", "gateway::explain_post", false, "what-if decision for a user, model and time"),
    ("GET", "/metrics", "gateway::metrics", true, "Prometheus metrics"),
];

/// Admin API routes that need no credentials.
const PUBLIC_API: &[&str] = &["/api/invitations/{token}"];

/// The `x-stratai-org` header of the gateway routes.
const ORG_HEADER_DOC: &str = "the organization (id or slug) the call acts in: needed when the caller belongs to several (else 400 `organization_required`), optional otherwise";

/// The components being collected while the document is built.
#[derive(Default)]
struct Schemas(BTreeMap<String, Value>);

impl Schemas {
    /// A `$ref` to `T`, registering it and every schema it refers to.
    fn of<T: ToSchema>(&mut self) -> Value {
        self.named::<T>(&T::name())
    }

    /// Like [`Schemas::of`], under `name` (for generic types).
    fn named<T: ToSchema>(&mut self, name: &str) -> Value {
        let mut deps = Vec::new();
        T::schemas(&mut deps);
        for (dep, schema) in deps {
            self.0
                .insert(dep, serde_json::to_value(schema).unwrap_or(Value::Null));
        }
        self.0.insert(
            name.to_owned(),
            serde_json::to_value(T::schema()).unwrap_or(Value::Null),
        );
        json!({"$ref": format!("#/components/schemas/{name}")})
    }

    /// An array of `T`.
    fn list<T: ToSchema>(&mut self) -> Value {
        json!({"type": "array", "items": self.of::<T>()})
    }

    /// The query parameters of the query type `T`: one per property.
    fn query<T: ToSchema>(&mut self) -> Vec<Value> {
        let mut deps = Vec::new();
        T::schemas(&mut deps);
        for (dep, schema) in deps {
            self.0
                .insert(dep, serde_json::to_value(schema).unwrap_or(Value::Null));
        }
        let schema = serde_json::to_value(T::schema()).unwrap_or(Value::Null);
        let required: Vec<&str> = schema["required"]
            .as_array()
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        schema["properties"]
            .as_object()
            .map(|props| {
                props
                    .iter()
                    .map(|(name, prop)| {
                        let mut p = json!({
                            "name": name,
                            "in": "query",
                            "required": required.contains(&name.as_str()),
                            "schema": non_null(prop),
                        });
                        if let Some(d) = prop.get("description") {
                            p["description"] = d.clone();
                        }
                        p
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// A query parameter cannot be null (absent is its `None`): drops `null` from `prop`.
fn non_null(prop: &Value) -> Value {
    let mut prop = prop.clone();
    if let Some(alts) = prop.get("oneOf").and_then(Value::as_array) {
        let rest: Vec<&Value> = alts.iter().filter(|a| a["type"] != "null").collect();
        if let [only] = rest.as_slice() {
            return (*only).clone();
        }
    }
    if let Some(types) = prop.get("type").and_then(Value::as_array) {
        let rest: Vec<Value> = types.iter().filter(|t| *t != "null").cloned().collect();
        prop["type"] = match rest.as_slice() {
            [only] => only.clone(),
            _ => Value::Array(rest),
        };
    }
    if let Some(obj) = prop.as_object_mut() {
        obj.remove("description");
    }
    prop
}

/// What one operation takes and answers.
struct Op {
    query: Vec<Value>,
    headers: Vec<Value>,
    /// `(media type, schema)` of the request body.
    body: Vec<(&'static str, Value)>,
    /// `(status, description, media type, schema)` of the answers other than errors.
    ok: Vec<(u16, &'static str, &'static str, Value)>,
}

impl Op {
    fn new() -> Self {
        Self {
            query: Vec::new(),
            headers: Vec::new(),
            body: Vec::new(),
            ok: Vec::new(),
        }
    }
    fn ok(mut self, status: u16, schema: Value) -> Self {
        self.ok
            .push((status, "success", "application/json", schema));
        self
    }
    fn json(mut self, schema: Value) -> Self {
        self.body.push(("application/json", schema));
        self
    }
    fn query(mut self, params: Vec<Value>) -> Self {
        self.query = params;
        self
    }
}

/// The request and answers of `method path`, or `None` for an operation not described yet
/// (a test requires every routed operation to be described).
#[allow(clippy::too_many_lines)]
fn describe(s: &mut Schemas, method: &str, path: &str) -> Option<Op> {
    let op = Op::new();
    let no_content = |mut op: Op| {
        op.ok.push((204, "done", "", Value::Null));
        op
    };
    let redirect = |mut op: Op| {
        op.ok.push((303, "redirect (`Location`)", "", Value::Null));
        op
    };
    Some(match (method, path) {
        ("GET", "/api/me") => op.ok(200, s.of::<profiles::Me>()),
        ("GET", "/api/organizations") => op.ok(200, s.list::<Organization>()),
        ("POST", "/api/organizations") => op
            .json(s.of::<orgs::CreateOrg>())
            .ok(201, s.of::<Organization>()),
        ("GET", "/api/organizations/{org_id}") => op.ok(200, s.of::<Organization>()),
        ("PATCH", "/api/organizations/{org_id}") => op
            .json(s.of::<orgs::UpdateOrg>())
            .ok(200, s.of::<Organization>()),
        ("DELETE", "/api/organizations/{org_id}") => op.ok(200, s.of::<Organization>()),
        ("GET", "/api/organizations/{org_id}/members") => {
            op.ok(200, s.list::<members::MemberView>())
        }
        ("POST", "/api/organizations/{org_id}/members") => {
            let mut op = op
                .json(s.of::<invitations::InviteSpec>())
                .ok(201, s.of::<invitations::InvitationCreated>());
            op.body.push((
                "text/csv",
                json!({"type": "string", "description": "bulk: a header naming `email` and optionally `role`, `groups` (`;`-separated names or ids) and `profile` (a name or id), one invitation per row; every row is validated before any is written (a bad row is named with its line) and then all are written at once or none"}),
            ));
            let bulk = s.of::<invitations::BulkOutcome>();
            let renewed = s.of::<invitations::InvitationCreated>();
            op.ok.push((
                200,
                "bulk (CSV) outcome, row by row; or (JSON) the address's pending invitation renewed and emailed again",
                "application/json",
                json!({"anyOf": [bulk, renewed]}),
            ));
            op
        }
        ("GET", "/api/organizations/{org_id}/members/{user_id}") => {
            op.ok(200, s.of::<members::MemberView>())
        }
        ("GET", "/api/organizations/{org_id}/members/{user_id}/groups") => {
            op.ok(200, s.list::<members::MemberGroup>())
        }
        ("PATCH", "/api/organizations/{org_id}/members/{user_id}") => op
            .json(s.of::<members::UpdateMember>())
            .ok(200, s.of::<members::MemberView>()),
        ("DELETE", "/api/organizations/{org_id}/members/{user_id}") => no_content(op),
        ("GET", "/api/organizations/{org_id}/groups") => op.ok(200, s.list::<Group>()),
        ("POST", "/api/organizations/{org_id}/groups") => op
            .json(s.of::<groups::CreateGroup>())
            .ok(201, s.of::<Group>()),
        ("GET", "/api/organizations/{org_id}/invitations") => {
            op.ok(200, s.list::<invitations::InvitationView>())
        }
        ("DELETE", "/api/organizations/{org_id}/invitations/{invitation_id}") => no_content(op),
        ("GET", "/api/organizations/{org_id}/tiers") => op.ok(200, s.of::<tiers::OrgTiers>()),
        ("PUT", "/api/organizations/{org_id}/tiers/{tier_id}") => op
            .json(s.of::<tiers::PutSubscription>())
            .ok(200, s.of::<TierSubscription>()),
        ("GET", "/api/groups/{group_id}") => op.ok(200, s.of::<groups::GroupDetail>()),
        ("PATCH", "/api/groups/{group_id}") => op
            .json(s.of::<groups::UpdateGroup>())
            .ok(200, s.of::<Group>()),
        ("DELETE", "/api/groups/{group_id}") => no_content(op),
        ("GET", "/api/groups/{group_id}/members") => op.ok(200, s.list::<GroupMembership>()),
        ("POST", "/api/groups/{group_id}/members") => op
            .json(s.of::<groups::AddGroupMember>())
            .ok(201, s.of::<GroupMembership>()),
        ("DELETE", "/api/groups/{group_id}/members/{user_id}") => no_content(op),
        ("POST", "/api/invitations") => {
            let mut op = op
                .json(s.of::<invitations::CreateInvitation>())
                .ok(201, s.of::<invitations::InvitationCreated>());
            op.ok.push((
                200,
                "the address had a pending invitation: renewed (new link and expiry) and emailed again",
                "application/json",
                s.of::<invitations::InvitationCreated>(),
            ));
            op
        }
        ("GET", "/api/invitations/{token}") => op.ok(200, s.of::<invitations::InvitationDetails>()),
        ("POST", "/api/invitations/{token}/accept") => op.ok(200, s.of::<Membership>()),
        ("GET", "/api/tiers") => op.ok(200, s.list::<ModelTier>()),
        ("GET", "/api/tiers/accessible") => op
            .query(s.query::<tiers::AccessibleQuery>())
            .ok(200, s.of::<tiers::AccessibleTiers>()),
        ("PATCH", "/api/tiers/{tier_id}") => op
            .json(s.of::<tiers::UpdateTier>())
            .ok(200, s.of::<ModelTier>()),
        ("POST", "/api/tiers/{tier_id}/rates") => op
            .json(s.of::<tiers::ChangeRates>())
            .ok(200, s.of::<tiers::RatesChanged>()),
        ("GET", "/api/usage") => op
            .query(s.query::<usage::UsageParams>())
            .ok(200, s.of::<usage::UsageSummary>()),
        ("GET", "/api/usage/export") => {
            let mut op = op.query(s.query::<usage::UsageParams>());
            op.ok.push((
                200,
                "the matching usage records as CSV (streamed), a header line first",
                "text/csv",
                json!({"type": "string"}),
            ));
            op
        }
        ("GET", "/api/budgets") => op
            .query(s.query::<budgets::BudgetsQuery>())
            .ok(200, s.list::<budgets::ListedBudget>()),
        ("GET", "/api/me/budgets") => op
            .query(s.query::<budgets::MyBudgetsQuery>())
            .ok(200, s.list::<budgets::MyBudget>()),
        ("POST", "/api/budgets") => op
            .json(s.of::<budgets::CreateBudget>())
            .ok(201, s.of::<Budget>()),
        ("PATCH", "/api/budgets/{budget_id}") => op
            .json(s.of::<budgets::UpdateBudget>())
            .ok(200, s.of::<Budget>()),
        ("GET", "/api/organizations/{org_id}/guardrails") | ("GET", "/api/guardrails") => {
            op.ok(200, s.list::<RuleRecord>())
        }
        ("POST", "/api/organizations/{org_id}/guardrails") => op
            .json({
                s.of::<OrgScope>();
                s.named::<CreateRule<OrgScope>>("CreateOrgRule")
            })
            .ok(201, s.of::<RuleRecord>()),
        ("POST", "/api/guardrails") => op
            .json({
                s.of::<PlatformScope>();
                s.named::<CreateRule<PlatformScope>>("CreatePlatformRule")
            })
            .ok(201, s.of::<RuleRecord>()),
        ("PATCH", "/api/organizations/{org_id}/guardrails/{rule_id}")
        | ("PATCH", "/api/guardrails/{rule_id}") => op
            .json(s.of::<guardrails::UpdateRule>())
            .ok(200, s.of::<RuleRecord>()),
        ("DELETE", "/api/organizations/{org_id}/guardrails/{rule_id}")
        | ("DELETE", "/api/guardrails/{rule_id}") => no_content(op),
        ("GET", "/api/profiles") => op.ok(200, s.list::<UserProfile>()),
        ("POST", "/api/profiles") => op
            .json(s.of::<profiles::CreateProfile>())
            .ok(201, s.of::<UserProfile>()),
        ("GET", "/api/profiles/{profile_id}") => op.ok(200, s.of::<UserProfile>()),
        ("PATCH", "/api/profiles/{profile_id}") => op
            .json(s.of::<profiles::UpdateProfile>())
            .ok(200, s.of::<UserProfile>()),
        ("DELETE", "/api/profiles/{profile_id}") => no_content(op),
        ("GET", "/api/users") => op
            .query(s.query::<users::ListUsers>())
            .ok(200, s.of::<users::UserPage>()),
        ("GET", "/api/users/{user_id}") => op.ok(200, s.of::<users::UserDetail>()),
        ("PATCH", "/api/users/{user_id}") => op
            .json(s.of::<users::UpdateUser>())
            .ok(200, s.of::<stratai_core::directory::User>()),

        ("GET", "/api/organizations/{org_id}/invoices") => op.ok(200, s.list::<MonthlyInvoice>()),
        ("POST", "/api/organizations/{org_id}/invoices") => op
            .json(s.of::<billing::DraftInvoice>())
            .ok(201, s.of::<MonthlyInvoice>()),
        ("GET", "/api/organizations/{org_id}/invoices/{invoice_id}") => {
            op.ok(200, s.of::<MonthlyInvoice>())
        }
        ("PATCH", "/api/organizations/{org_id}/invoices/{invoice_id}") => op
            .json(s.of::<billing::InvoiceStatusChange>())
            .ok(200, s.of::<MonthlyInvoice>()),
        ("GET", "/api/organizations/{org_id}/invoices/{invoice_id}/csv") => {
            let mut op = op;
            op.ok.push((
                200,
                "the invoice as CSV: a header, one row per line, then subtotal, tax and total",
                "text/csv",
                json!({"type": "string"}),
            ));
            op
        }
        ("GET", "/api/billing/invoices") => op
            .query(s.query::<billing::AllInvoicesQuery>())
            .ok(200, s.list::<MonthlyInvoice>()),
        ("GET", "/api/billing/overview") => op
            .query(s.query::<billing::OverviewQuery>())
            .ok(200, s.of::<billing::BillingOverview>()),
        ("GET", "/api/billing/pricing-report") => op
            .query(s.query::<billing::PricingReportQuery>())
            .ok(200, s.of::<billing::PricingReport>()),
        ("GET", "/api/billing/provider-prices") => op
            .query(s.query::<billing::ProviderPricesQuery>())
            .ok(200, s.of::<billing::ProviderPrices>()),

        ("GET", "/api/organizations/{org_id}/audit") | ("GET", "/api/audit") => op
            .query(s.query::<crate::api::audit::AuditParams>())
            .ok(200, s.of::<crate::api::audit::AuditPage>()),
        ("GET", "/api/organizations/{org_id}/audit/verify") => {
            op.ok(200, s.of::<stratai_core::audit::ChainReport>())
        }
        ("GET", "/api/audit/verify") => op.ok(200, s.list::<stratai_core::audit::ChainReport>()),
        ("GET", "/api/organizations/{org_id}/audit/export") | ("GET", "/api/audit/export") => {
            let mut op = if path == "/api/audit/export" {
                op.query(s.query::<crate::api::audit::ExportParams>())
            } else {
                op
            };
            op.ok.push((
                200,
                "the chain as JSON lines, oldest first: one audit entry (with its hashes) per line",
                "application/x-ndjson",
                s.of::<stratai_core::audit::AuditEntry>(),
            ));
            op
        }
        ("GET", "/api/litellm/spend") => op.ok(200, s.of::<litellm::SpendStatus>()),
        ("POST", "/api/litellm/spend-callback") => op
            .json(json!({
                "description": "LiteLLM's `generic_api` logging callback: a JSON array of LiteLLM `StandardLoggingPayload` objects (`log_format: json_array`), one object, or NDJSON; sent with `Authorization: Bearer <STRATAI_LITELLM_CALLBACK_SECRET>`",
                "type": ["array", "object"]
            }))
            .ok(200, s.of::<litellm::CallbackOutcome>()),
        ("GET", "/health/live") => op.ok(200, s.of::<crate::app::Live>()),
        ("GET", "/health/ready") => {
            let ready = s.of::<crate::app::Ready>();
            let mut op = op.ok(200, ready.clone());
            op.ok.push((503, "not ready", "application/json", ready));
            op
        }
        ("GET", "/openapi.json") => op.ok(200, json!({"type": "object"})),
        ("GET", "/auth/me") => op.ok(200, s.of::<auth::Me>()),
        ("GET" | "POST", "/auth/login") => redirect(op),
        ("GET", "/auth/callback") => redirect(op.query(s.query::<auth::CallbackQuery>())),
        ("POST", "/auth/logout") => redirect(op),
        ("POST", "/auth/dev/token") => op
            .json(s.of::<auth::DevTokenRequest>())
            .ok(200, s.of::<auth::DevTokenResponse>()),
        ("POST", "/v1/chat/completions") => {
            let mut op = op
                .json(s.of::<ChatRequest>())
                .ok(200, s.of::<ChatResponse>());
            op.ok.push((
                200,
                "`stream: true`: server-sent events, one `data:` line per chunk, `data: [DONE]` last",
                "text/event-stream",
                // Before OpenAPI 3.2's `itemSchema`, an event stream's schema describes one
                // event: its `data` is a chunk as JSON, `[DONE]` the last.
                json!({
                    "type": "object",
                    "description": "one server-sent event",
                    "required": ["data"],
                    "properties": {
                        "data": {"anyOf": [
                            {"type": "string", "contentMediaType": "application/json", "contentSchema": s.of::<ChatChunk>()},
                            {"const": "[DONE]", "description": "the last event"},
                        ]},
                        "event": {"type": "string"},
                        "id": {"type": "string"},
                        "retry": {"type": "integer", "minimum": 0},
                    },
                }),
            ));
            op.headers.push(json!({"name": crate::gateway::ENDPOINT_HEADER, "in": "header", "required": false, "description": "the product endpoint the usage record is attributed to (default `chat`): 1-64 of a-z, 0-9, `_`, `-`, `.`, starting with a letter", "schema": {"type": "string", "pattern": "^[a-z][a-z0-9_.-]{0,63}$"}}));
            op.headers.push(json!({"name": crate::gateway::CONVERSATION_HEADER, "in": "header", "required": false, "description": "the product conversation the usage record is attributed to", "schema": {"type": "string", "format": "uuid"}}));
            op
        }
        ("GET", "/v1/models") => op.ok(200, s.of::<crate::gateway::ModelList>()),
        // A query string cannot carry `messages` (POST only).
        ("GET", "/api/explain") => op
            .query(
                s.query::<explain::ExplainQuery>()
                    .into_iter()
                    .filter(|p| p["name"] != "messages")
                    .collect(),
            )
            .ok(200, s.of::<explain::Explanation>()),
        ("POST", "/api/explain") => op
            .json(s.of::<explain::ExplainQuery>())
            .ok(200, s.of::<explain::Explanation>()),
        ("GET", "/metrics") => {
            let mut op = op;
            op.ok.push((
                200,
                "Prometheus text format",
                "text/plain",
                json!({"type": "string"}),
            ));
            op
        }
        _ => return None,
    })
}

/// A decimal in (0, 1] (a budget's alert threshold): a decimal string or a JSON number.
#[must_use]
pub fn fraction() -> utoipa::openapi::schema::Object {
    fraction_of(vec![
        utoipa::openapi::schema::Type::String,
        utoipa::openapi::schema::Type::Number,
    ])
}

/// [`fraction`] or `null` (an optional field that takes `null` as absent).
#[must_use]
pub fn fraction_or_null() -> utoipa::openapi::schema::Object {
    fraction_of(vec![
        utoipa::openapi::schema::Type::String,
        utoipa::openapi::schema::Type::Number,
        utoipa::openapi::schema::Type::Null,
    ])
}

fn fraction_of(types: Vec<utoipa::openapi::schema::Type>) -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{ObjectBuilder, SchemaFormat, SchemaType};
    ObjectBuilder::new()
        .schema_type(SchemaType::Array(types))
        .format(Some(SchemaFormat::Custom("decimal".to_owned())))
        .pattern(Some(
            r"^\+?0*(1(\.0*)?|\.[0-9]*[1-9][0-9]*|0*\.[0-9]*[1-9][0-9]*)$",
        ))
        .exclusive_minimum(Some(0))
        .maximum(Some(1))
        .description(Some("a fraction in (0, 1], e.g. \"0.8\""))
        .build()
}

/// A user named by id or by email (`/api/explain`'s `user`), or `null` for the caller.
#[must_use]
pub fn user_or_email() -> utoipa::openapi::schema::Object {
    let uuid = "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}";
    let email = stratai_core::openapi::EMAIL_PATTERN;
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::SchemaType::Array(vec![
            utoipa::openapi::schema::Type::String,
            utoipa::openapi::schema::Type::Null,
        ]))
        .pattern(Some(format!(r"^\s*(?:|{uuid}|{email})\s*$")))
        .description(Some(
            "a user id, or an email address (default, also when empty: the caller)",
        ))
        .build()
}

/// The schema of a path parameter, by name.
fn path_param(s: &mut Schemas, name: &str) -> Value {
    match name {
        "org_id" => s.of::<OrgId>(),
        "user_id" => s.of::<UserId>(),
        "group_id" => s.of::<GroupId>(),
        "tier_id" => s.of::<TierId>(),
        "budget_id" => s.of::<BudgetId>(),
        "rule_id" => s.of::<RuleId>(),
        "invitation_id" => s.of::<stratai_core::InvitationId>(),
        "invoice_id" => s.of::<InvoiceId>(),
        _ => json!({"type": "string", "minLength": 1}),
    }
}

/// Whether `path` answers in OpenAI's error shape.
fn openai_shaped(path: &str) -> bool {
    path.starts_with("/v1/") || path == "/api/explain"
}

fn operation(
    s: &mut Schemas,
    method: &str,
    path: &str,
    handler: &str,
    public: bool,
    summary: &str,
) -> Option<Value> {
    let spec = describe(s, method, path)?;
    let tag = handler.split("::").next().unwrap_or("api");
    let mut params: Vec<Value> = path
        .split('/')
        .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(|name| json!({"name": name, "in": "path", "required": true, "schema": path_param(s, name)}))
        .collect();
    params.extend(spec.query.iter().cloned());
    params.extend(spec.headers.iter().cloned());
    if openai_shaped(path) {
        params.push(json!({"name": "x-stratai-org", "in": "header", "required": false, "description": ORG_HEADER_DOC, "schema": {"type": "string"}}));
    }

    let mut op = Map::new();
    // A handler serving two methods (`/auth/login`) gets one id per method.
    let shared = all_operations()
        .filter(|(_, p, h, ..)| *p == path && h == handler)
        .count()
        > 1;
    let id = handler.replace("::", "_");
    let id = if shared {
        format!("{id}_{}", method.to_ascii_lowercase())
    } else {
        id
    };
    op.insert("operationId".into(), json!(id));
    op.insert("tags".into(), json!([tag]));
    if !summary.is_empty() {
        op.insert("summary".into(), json!(summary));
    }
    if !params.is_empty() {
        op.insert("parameters".into(), Value::Array(params));
    }
    if !spec.body.is_empty() {
        let content: Map<String, Value> = spec
            .body
            .iter()
            .map(|(media, schema)| ((*media).to_owned(), json!({"schema": schema})))
            .collect();
        op.insert(
            "requestBody".into(),
            json!({"required": true, "content": content}),
        );
    }
    if public {
        op.insert("security".into(), json!([]));
    }

    let mut responses = Map::new();
    for (status, description, media, schema) in &spec.ok {
        let entry = responses
            .entry(status.to_string())
            .or_insert_with(|| json!({"description": description}));
        if !media.is_empty() {
            entry["content"][*media] = json!({"schema": schema});
        }
    }
    for (status, answers) in errors(method, path, public, &spec) {
        let description = format!(
            "error; code: {}",
            answers
                .iter()
                .map(|a| format!("`{}`", a.code))
                .collect::<Vec<_>>()
                .join(", ")
        );
        responses.entry(status.to_string()).or_insert_with(|| {
            json!({"description": description, "content": {"application/json": {"schema": error_schema(s, &answers)}}})
        });
    }
    op.insert("responses".into(), Value::Object(responses));
    Some(Value::Object(op))
}

/// One error an operation can answer: its status, its shape (the admin API's [`ErrorBody`]
/// or OpenAI's [`OpenAiErrorBody`]) and its code. Each error response's description lists
/// its codes (`the_error_codes_of_each_status_are_listed` checks them against the server).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Answer {
    status: u16,
    openai: bool,
    code: &'static str,
}

impl Answer {
    fn api(code: ErrorCode) -> Self {
        Self {
            status: code.status().as_u16(),
            openai: false,
            code: code.as_str(),
        }
    }
    fn openai(status: u16, code: &'static str) -> Self {
        Self {
            status,
            openai: true,
            code,
        }
    }
}

/// The errors of every OpenAI-shaped route: authentication (`Authorization` or the session
/// cookie) and failures of the server itself.
const OPENAI_COMMON: &[(u16, &str)] = &[
    (401, "unauthenticated"),
    (403, "forbidden"),
    (500, "internal"),
    (503, "unavailable"),
];

/// Choosing the organization a call acts in (`x-stratai-org`, else the caller's only one).
const OPENAI_ORGANIZATION: &[(u16, &str)] =
    &[(400, "organization_required"), (403, "not_a_member")];

/// The gateway's refusals of a request (`/api/explain` answers them for a denied decision's
/// preconditions too).
const OPENAI_REFUSALS: &[(u16, &str)] = &[
    (400, "invalid_request"),
    (403, "model_access_denied"),
    (403, "guardrail_blocked"),
    (404, "model_not_found"),
    (429, "rate_limit_exceeded"),
    (429, "insufficient_quota"),
];

/// What the upstream provider's failures become.
const OPENAI_UPSTREAM: &[(u16, &str)] = &[
    (400, "upstream_bad_request"),
    (403, "upstream_refused"),
    (429, "upstream_rate_limited"),
    (429, "upstream_budget_exceeded"),
    (502, "upstream_unavailable"),
    (503, "not_provisioned"),
];

/// Every error `method path` can answer, by status. Every route shares the middleware's: a
/// request with two `Authorization` headers (400 `bad_request`), a body over the limit (413),
/// a panic (500), in the admin API's shape. Invalid input: the admin API answers 400 for
/// broken JSON and 422 (`validation_failed`, with the fields) for a well-formed body or
/// query that does not fit; `/v1/*` answers 400 `invalid_request` for both, as OpenAI does;
/// `/api/explain` answers 400 for a query that does not fit and, as a POST, like the admin
/// API (in OpenAI's shape).
fn errors(method: &str, path: &str, public: bool, spec: &Op) -> BTreeMap<u16, Vec<Answer>> {
    use ErrorCode as C;
    let mut all: Vec<Answer> = [
        C::BadRequest,
        C::PayloadTooLarge,
        C::Internal,
        C::Unavailable,
    ]
    .into_iter()
    .map(Answer::api)
    .collect();
    if openai_shaped(path) {
        let mut tables = vec![OPENAI_COMMON, OPENAI_ORGANIZATION];
        match (method, path) {
            ("POST", "/v1/chat/completions") => tables.extend([OPENAI_REFUSALS, OPENAI_UPSTREAM]),
            (_, "/api/explain") => {
                tables.extend([OPENAI_REFUSALS, &[(403, "forbidden"), (404, "not_found")]]);
                if method == "POST" {
                    tables.push(&[(400, "bad_request"), (422, "validation_failed")]);
                }
            }
            _ => {}
        }
        all.extend(
            tables
                .into_iter()
                .flatten()
                .map(|(status, code)| Answer::openai(*status, code)),
        );
    } else {
        let mut codes = Vec::new();
        if !public || path == "/auth/me" {
            codes.extend([C::Unauthenticated, C::Forbidden]);
        }
        // `/api/litellm/*`: 404 where no LiteLLM proxy (or no callback secret) is configured.
        if path.contains('{')
            || path.starts_with("/auth/") && path != "/auth/me"
            || path.starts_with("/api/litellm/")
        {
            codes.push(C::NotFound);
        }
        if !spec.body.is_empty() {
            codes.extend([C::UnsupportedMediaType, C::ValidationFailed]);
        }
        if !spec.query.is_empty() {
            // A query naming an id that does not exist (or is another organization's) is a 404.
            codes.extend([C::NotFound, C::ValidationFailed]);
        }
        if method != "GET" {
            codes.extend([C::NotFound, C::Conflict, C::ValidationFailed]);
        }
        all.extend(codes.into_iter().map(Answer::api));
    }
    all.sort_unstable();
    all.dedup();
    let mut by_status: BTreeMap<u16, Vec<Answer>> = BTreeMap::new();
    for answer in all {
        by_status.entry(answer.status).or_default().push(answer);
    }
    by_status
}

/// The schema of `answers` (one status): the error body of their shape ([`ErrorBody`],
/// whose code determines the status, or [`OpenAiErrorBody`]), either when both occur. One
/// type per shape, so generated clients share it; the codes are in the description.
fn error_schema(s: &mut Schemas, answers: &[Answer]) -> Value {
    let mut shapes = Vec::new();
    if answers.iter().any(|a| !a.openai) {
        shapes.push(s.of::<ErrorBody>());
    }
    if answers.iter().any(|a| a.openai) {
        shapes.push(s.of::<OpenAiErrorBody>());
    }
    if shapes.len() == 1 {
        shapes.remove(0)
    } else {
        json!({"anyOf": shapes})
    }
}

/// Every routed operation as `(METHOD, path, handler, public, summary)`.
fn all_operations() -> impl Iterator<Item = (&'static str, &'static str, String, bool, &'static str)>
{
    crate::api::OPERATIONS
        .iter()
        .map(|(m, p, h)| (*m, *p, (*h).to_owned(), PUBLIC_API.contains(p), ""))
        .chain(
            OTHER_OPERATIONS
                .iter()
                .map(|(m, p, h, public, note)| (*m, *p, (*h).to_owned(), *public, *note)),
        )
}

/// The routed operations `describe` does not know, as `METHOD path` (a test keeps it empty).
#[must_use]
pub fn undescribed() -> Vec<String> {
    let mut s = Schemas::default();
    all_operations()
        .filter(|(m, p, ..)| describe(&mut s, m, p).is_none())
        .map(|(m, p, ..)| format!("{m} {p}"))
        .collect()
}

/// The document.
#[must_use]
pub fn document() -> Value {
    let mut s = Schemas::default();
    let mut paths: Map<String, Value> = Map::new();
    for (method, path, handler, public, note) in all_operations() {
        let Some(op) = operation(&mut s, method, path, &handler, public, note) else {
            continue;
        };
        let entry = paths
            .entry(path.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(ops) = entry {
            ops.insert(method.to_ascii_lowercase(), op);
        }
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "StratAI server",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Admin API (the seed's Appendix B), authentication and the governed OpenAI-compatible gateway. Admin API errors: `ErrorBody`; `/v1/*` and `/api/explain` errors: `OpenAiErrorBody` (OpenAI's shape). Another organization's resources answer 404. A method a path does not have answers 405 with an `Allow` header. Invalid input: the admin API answers 400 `bad_request` for broken JSON and 422 `validation_failed` (naming the fields) for a well-formed body or query that does not fit its schema; `/v1/*` answers 400 `invalid_request` for both, as OpenAI does. Every error response lists its codes; a request that times out answers 503 with an empty body."
        },
        "security": [{"bearer": []}, {"session": []}],
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT", "description": "an OIDC access token (or, in dev mode, a token from `POST /auth/dev/token`)"},
                "session": {"type": "apiKey", "in": "cookie", "name": "__Host-stratai_session", "description": "the browser session set by `/auth/callback` (`stratai_session` over plain HTTP); CSRF: an unsafe method with the cookie needs an `Origin` header equal to the server's public origin, else 403"}
            },
            "schemas": Value::Object(s.0.into_iter().collect()),
        },
        "paths": Value::Object(paths),
    })
}

/// `GET /openapi.json`.
pub async fn serve() -> axum::Json<Value> {
    axum::Json(document())
}
