//! A stateful fake of the LiteLLM management API (wiremock), for the paths the kit's proxy
//! cannot run: LiteLLM Enterprise organizations.
//!
//! Where the shapes come from: the installed LiteLLM 1.108.7 source (the kit's version,
//! `litellm/proxy/management_endpoints/organization_endpoints.py` and `team_endpoints.py`,
//! `litellm/proxy/_types.py`, `litellm/models/{organization,budget}.py`) and, for everything
//! the kit's proxy does answer, the recorded samples of `../shared/litellm/samples`:
//!
//! - without a license every `/organization/*` route answers 403 with the body of
//!   `01-organization-new.json` (LiteLLM checks the license in a router dependency, before
//!   anything else);
//! - `/organization/new` takes the caller's `organization_id` and keeps the budget fields in
//!   a budget row (`litellm_budget_table`); a duplicate id is a database error (500);
//! - `PATCH /organization/update` merges `metadata` and writes sent budget fields (a `null`
//!   clears) to the budget row; `/organization/info` of an unknown id is 404
//!   `{"detail":{"error":"Organization not found"}}`; `DELETE /organization/delete` also
//!   deletes the organization's teams and keys;
//! - `/team/new` and `/team/update` with an `organization_id` refuse (400) an unknown
//!   organization (sample 09's body), a model outside the organization's models and a
//!   `max_budget` above the organization's (`_check_org_team_limits`);
//! - `/key/generate` refuses an unknown `organization_id` and inherits the team's otherwise;
//! - team, user and key answers and errors are shaped like samples 05, 07, 11, 19, 22, 26.
//!
//! Only what the sync engine and its runner call is implemented.
#![allow(dead_code, unreachable_pub)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use serde_json::{Map, Value, json};
use stratai_litellm::{Secret, key_token};
use wiremock::matchers::any;
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

/// The 403 every `/organization/*` route answers without a license (sample 01).
pub const ENTERPRISE_ONLY: &str = "Organizations are only available for LiteLLM Enterprise users. You must be a LiteLLM Enterprise user to use this feature. If you have a license please set `LITELLM_LICENSE` in your env. Get a 7 day trial key here: https://www.litellm.ai/enterprise#trial. \nPricing: https://www.litellm.ai/#pricing";

const NOW: &str = "2026-11-28T15:10:14.226000Z";

/// What the fake holds.
#[derive(Default)]
pub struct State {
    /// Whether it plays a licensed proxy.
    pub enterprise: bool,
    /// Organizations by id (their budget row inline, as LiteLLM answers them).
    pub orgs: BTreeMap<String, Value>,
    /// Teams by id.
    pub teams: BTreeMap<String, Value>,
    /// Users.
    pub users: BTreeSet<String>,
    /// Keys by token.
    pub keys: BTreeMap<String, Value>,
    next: u64,
}

impl State {
    fn fresh(&mut self) -> u64 {
        self.next += 1;
        self.next
    }

    /// The organization's teams.
    pub fn teams_of(&self, org: &str) -> Vec<&Value> {
        self.teams
            .values()
            .filter(|t| t["organization_id"] == json!(org))
            .collect()
    }

    /// The keys of a StratAI member (by metadata).
    pub fn keys_of(&self, org: &str, user: &str) -> Vec<&Value> {
        self.keys
            .values()
            .filter(|k| {
                k["metadata"]["stratai_org_id"] == json!(org)
                    && k["metadata"]["stratai_user_id"] == json!(user)
            })
            .collect()
    }
}

/// Shared handle on the fake's state.
pub type Shared = Arc<Mutex<State>>;

struct Fake(Shared);

/// Starts the fake; `enterprise` = whether organizations are licensed.
pub async fn start(enterprise: bool) -> (MockServer, Shared) {
    let server = MockServer::start().await;
    let state: Shared = Arc::new(Mutex::new(State {
        enterprise,
        ..State::default()
    }));
    Mock::given(any())
        .respond_with(Fake(state.clone()))
        .mount(&server)
        .await;
    (server, state)
}

/// How many requests went to `/organization/*` (all methods).
pub async fn organization_calls(server: &MockServer) -> usize {
    server
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .filter(|r| r.url.path().starts_with("/organization/"))
        .count()
}

/// How many `method path` requests were made.
pub async fn calls(server: &MockServer, method: &str, path: &str) -> usize {
    server
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .filter(|r| r.method.as_str() == method && r.url.path() == path)
        .count()
}

fn error(status: u16, message: &str, kind: &str, param: Option<&str>) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_json(json!({
        "error": {"message": message, "type": kind, "param": param, "code": status.to_string()}
    }))
}

fn detail(status: u16, message: &str) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_json(json!({"detail": {"error": message}}))
}

fn ok(body: Value) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(body)
}

fn query(request: &Request, name: &str) -> Option<String> {
    request
        .url
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// `_check_org_team_limits`: models within the organization's, budget not above it; the
/// refusal when not.
fn check_team_in_org(org: &Value, body: &Value) -> Option<ResponseTemplate> {
    let org_id = org["organization_id"].as_str().unwrap_or_default();
    let org_models = strings(&org["models"]);
    if let Some(org_budget) = org["litellm_budget_table"]["max_budget"].as_f64()
        && let Some(team_budget) = body.get("max_budget").and_then(Value::as_f64)
        && team_budget > org_budget
    {
        return Some(error(
            400,
            &format!(
                "{{'error': \"Team max_budget ({team_budget}) exceeds organization's max_budget ({org_budget}). Organization: {org_id}\"}}"
            ),
            "internal_server_error",
            None,
        ));
    }
    if !org_models.is_empty() {
        for model in strings(body.get("models").unwrap_or(&Value::Null)) {
            if !org_models.contains(&model) {
                return Some(error(
                    400,
                    &format!(
                        "{{'error': \"Model '{model}' not in organization's allowed models. Organization allowed models={org_models:?}. Organization: {org_id}\"}}"
                    ),
                    "internal_server_error",
                    None,
                ));
            }
        }
    }
    None
}

fn org_not_found_for(id: &str) -> ResponseTemplate {
    // sample 09-team-new-unknown-org.json
    error(
        400,
        &format!("Organization not found for organization_id={id}"),
        "internal_server_error",
        None,
    )
}

fn org_answer(state: &State, org: &Value) -> Value {
    let mut answer = org.clone();
    let id = org["organization_id"].as_str().unwrap_or_default();
    answer["teams"] = Value::Array(state.teams_of(id).into_iter().cloned().collect());
    answer
}

fn key_answer(key: &Value) -> Value {
    let mut answer = key.clone();
    if let Some(map) = answer.as_object_mut() {
        map.remove("key");
    }
    answer
}

impl Respond for Fake {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let mut state = self.0.lock().unwrap();
        let path = request.url.path().to_owned();
        let body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
        if path.starts_with("/organization/") && !state.enterprise {
            return detail(403, ENTERPRISE_ONLY);
        }
        match (request.method.as_str(), path.as_str()) {
            // ---------------------------------------------------------------- organizations
            ("GET", "/organization/info") => {
                let id = query(request, "organization_id").unwrap_or_default();
                match state.orgs.get(&id) {
                    Some(org) => ok(org_answer(&state, org)),
                    None => detail(404, "Organization not found"),
                }
            }
            ("GET", "/organization/list") => ok(Value::Array(
                state.orgs.values().map(|o| org_answer(&state, o)).collect(),
            )),
            ("POST", "/organization/new") => {
                let n = state.fresh();
                let id = body["organization_id"]
                    .as_str()
                    .map_or_else(|| format!("org-{n}"), str::to_owned);
                if state.orgs.contains_key(&id) {
                    // prisma's unique violation, unhandled by the endpoint
                    return error(
                        500,
                        "Unique constraint failed on the fields: (`organization_id`)",
                        "internal_server_error",
                        None,
                    );
                }
                let org = json!({
                    "organization_id": id,
                    "organization_alias": body["organization_alias"],
                    "budget_id": format!("budget-{n}"),
                    "spend": 0.0,
                    "metadata": body.get("metadata").cloned().unwrap_or_else(|| json!({})),
                    "models": body.get("models").cloned().unwrap_or_else(|| json!([])),
                    "model_spend": {},
                    "created_by": "default_user_id",
                    "updated_by": "default_user_id",
                    "users": null,
                    "litellm_budget_table": {
                        "budget_id": format!("budget-{n}"),
                        "soft_budget": null,
                        "max_budget": body.get("max_budget").cloned().unwrap_or(Value::Null),
                        "max_parallel_requests": null,
                        "tpm_limit": null,
                        "rpm_limit": null,
                        "tpd_limit": null,
                        "model_max_budget": null,
                        "budget_duration": body.get("budget_duration").cloned().unwrap_or(Value::Null),
                        "allowed_models": [],
                        "temp_budget_increase": null,
                        "temp_budget_expiry": null
                    },
                    "object_permission": null,
                    "object_permission_id": null,
                    "members": [],
                    "teams": [],
                    "created_at": NOW,
                    "updated_at": NOW
                });
                state.orgs.insert(id, org.clone());
                ok(org)
            }
            ("PATCH", "/organization/update") => {
                let id = body["organization_id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                let Some(org) = state.orgs.get_mut(&id) else {
                    // a ValueError the endpoint does not catch
                    return error(
                        500,
                        &format!("Organization not found for organization_id={id}"),
                        "internal_server_error",
                        None,
                    );
                };
                for field in ["organization_alias", "models"] {
                    if let Some(v) = body.get(field).filter(|v| !v.is_null()) {
                        org[field] = v.clone();
                    }
                }
                if let Some(Value::Object(new)) = body.get("metadata") {
                    let merged = org["metadata"].as_object_mut().unwrap();
                    for (k, v) in new {
                        merged.insert(k.clone(), v.clone());
                    }
                }
                for field in ["max_budget", "budget_duration"] {
                    if let Some(v) = body.get(field) {
                        org["litellm_budget_table"][field] = v.clone();
                    }
                }
                org["updated_at"] = json!(NOW);
                let org = org.clone();
                ok(org_answer(&state, &org))
            }
            ("DELETE", "/organization/delete") => {
                let mut deleted = Vec::new();
                for id in strings(&body["organization_ids"]) {
                    state.teams.retain(|_, t| t["organization_id"] != json!(id));
                    state.keys.retain(|_, k| k["organization_id"] != json!(id));
                    match state.orgs.remove(&id) {
                        Some(org) => deleted.push(org),
                        None => return detail(404, &format!("Organization={id} not found")),
                    }
                }
                ok(Value::Array(deleted))
            }
            // ---------------------------------------------------------------- teams
            ("GET", "/team/info") => {
                let id = query(request, "team_id").unwrap_or_default();
                match state.teams.get(&id) {
                    Some(team) => {
                        let keys: Vec<Value> = state
                            .keys
                            .values()
                            .filter(|k| k["team_id"] == json!(id))
                            .map(key_answer)
                            .collect();
                        ok(json!({"team_id": id, "team_info": team, "keys": keys}))
                    }
                    None => error(
                        404,
                        &format!("Team not found, passed team_id={id}"),
                        "auth_error",
                        Some("None"),
                    ),
                }
            }
            ("GET", "/team/list") => ok(Value::Array(state.teams.values().cloned().collect())),
            ("POST", "/team/new") => {
                let n = state.fresh();
                let id = body["team_id"]
                    .as_str()
                    .map_or_else(|| format!("team-{n}"), str::to_owned);
                if state.teams.contains_key(&id) {
                    return error(
                        400,
                        &format!(
                            "{{'error': 'Team id = {id} already exists. Please use a different team id.'}}"
                        ),
                        "internal_server_error",
                        None,
                    );
                }
                if let Some(org_id) = body["organization_id"].as_str() {
                    let Some(org) = state.orgs.get(org_id) else {
                        return org_not_found_for(org_id);
                    };
                    if let Some(refusal) = check_team_in_org(org, &body) {
                        return refusal;
                    }
                }
                let team = json!({
                    "team_id": id,
                    "team_alias": body["team_alias"],
                    "organization_id": body.get("organization_id").cloned().unwrap_or(Value::Null),
                    "members_with_roles": [{"user_id": "default_user_id", "user_email": null, "role": "admin"}],
                    "metadata": body.get("metadata").cloned().unwrap_or_else(|| json!({})),
                    "max_budget": body.get("max_budget").cloned().unwrap_or(Value::Null),
                    "budget_duration": body.get("budget_duration").cloned().unwrap_or(Value::Null),
                    "models": body.get("models").cloned().unwrap_or_else(|| json!([])),
                    "blocked": false,
                    "spend": 0.0,
                    "budget_reset_at": null,
                    "created_at": NOW,
                    "updated_at": NOW
                });
                state.teams.insert(id, team.clone());
                ok(team)
            }
            ("POST", "/team/update") => {
                let id = body["team_id"].as_str().unwrap_or_default().to_owned();
                if !state.teams.contains_key(&id) {
                    return error(
                        404,
                        &format!("Team not found, passed team_id={id}"),
                        "not_found",
                        None,
                    );
                }
                let org_id = body["organization_id"]
                    .as_str()
                    .map(str::to_owned)
                    .or_else(|| {
                        state.teams[&id]["organization_id"]
                            .as_str()
                            .map(str::to_owned)
                    });
                if let Some(org_id) = org_id {
                    let Some(org) = state.orgs.get(&org_id) else {
                        return org_not_found_for(&org_id);
                    };
                    if let Some(refusal) = check_team_in_org(org, &body) {
                        return refusal;
                    }
                }
                let team = state.teams.get_mut(&id).unwrap();
                for (k, v) in body.as_object().unwrap() {
                    if k != "team_id" {
                        team[k] = v.clone();
                    }
                }
                ok(json!({"data": team.clone()}))
            }
            ("POST", "/team/delete") => {
                let ids = strings(&body["team_ids"]);
                if !ids.iter().any(|id| state.teams.contains_key(id)) {
                    return error(404, "Team not found", "not_found", None);
                }
                for id in ids {
                    state.teams.remove(&id);
                }
                ok(json!({"deleted_teams": body["team_ids"]}))
            }
            ("POST", "/team/member_add") => {
                let id = body["team_id"].as_str().unwrap_or_default().to_owned();
                let user = body["member"]["user_id"].clone();
                let Some(team) = state.teams.get_mut(&id) else {
                    return error(404, "Team not found", "not_found", None);
                };
                let members = team["members_with_roles"].as_array_mut().unwrap();
                if members.iter().any(|m| m["user_id"] == user) {
                    return error(
                        400,
                        "User is already in team",
                        "team_member_already_in_team",
                        None,
                    );
                }
                members.push(json!({"user_id": user, "user_email": null, "role": "user"}));
                ok(team.clone())
            }
            ("POST", "/team/member_delete") => {
                let id = body["team_id"].as_str().unwrap_or_default().to_owned();
                let Some(team) = state.teams.get_mut(&id) else {
                    return error(404, "Team not found", "not_found", None);
                };
                let members = team["members_with_roles"].as_array_mut().unwrap();
                let before = members.len();
                members.retain(|m| m["user_id"] != body["user_id"]);
                if members.len() == before {
                    return error(400, "User not in team", "bad_request_error", None);
                }
                ok(team.clone())
            }
            // ---------------------------------------------------------------- users
            ("POST", "/user/new") => {
                let id = body["user_id"].as_str().unwrap_or_default().to_owned();
                if !state.users.insert(id.clone()) {
                    return error(
                        409,
                        &format!("{{'error': 'User with id {id} already exists'}}"),
                        "internal_server_error",
                        None,
                    );
                }
                ok(
                    json!({"user_id": id, "user_email": body["user_email"], "models": [], "teams": []}),
                )
            }
            ("GET", "/user/list") => {
                let users: Vec<Value> = state.users.iter().map(|u| json!({"user_id": u})).collect();
                ok(
                    json!({"users": users, "total": state.users.len(), "page": 1, "page_size": 100, "total_pages": 1}),
                )
            }
            // ---------------------------------------------------------------- keys
            ("POST", "/key/generate") => {
                if let Some(alias) = body["key_alias"].as_str()
                    && state.keys.values().any(|k| k["key_alias"] == json!(alias))
                {
                    return error(
                        400,
                        &format!(
                            "Key with alias '{alias}' already exists. Unique key aliases across all keys are required."
                        ),
                        "bad_request_error",
                        Some("key_alias"),
                    );
                }
                let mut organization = body.get("organization_id").cloned().unwrap_or(Value::Null);
                if let Some(org_id) = organization.as_str()
                    && !state.orgs.contains_key(org_id)
                {
                    return org_not_found_for(org_id);
                }
                if organization.is_null()
                    && let Some(team) = body["team_id"].as_str().and_then(|t| state.teams.get(t))
                {
                    organization = team["organization_id"].clone();
                }
                let n = state.fresh();
                let secret = format!("sk-fake{n:012}");
                let token = key_token(&Secret::new(secret.clone()));
                let key = json!({
                    "key": secret,
                    "token": token,
                    "key_name": format!("sk-...{:04}", n % 10_000),
                    "key_alias": body["key_alias"],
                    "user_id": body["user_id"],
                    "team_id": body.get("team_id").cloned().unwrap_or(Value::Null),
                    "organization_id": organization,
                    "models": body.get("models").cloned().unwrap_or_else(|| json!([])),
                    "max_budget": body.get("max_budget").cloned().unwrap_or(Value::Null),
                    "budget_duration": body.get("budget_duration").cloned().unwrap_or(Value::Null),
                    "metadata": body.get("metadata").cloned().unwrap_or_else(|| json!({})),
                    "rpm_limit": body.get("rpm_limit").cloned().unwrap_or(Value::Null),
                    "tpm_limit": body.get("tpm_limit").cloned().unwrap_or(Value::Null),
                    "spend": 0.0,
                    "blocked": null,
                    "created_at": NOW,
                    "updated_at": NOW
                });
                state.keys.insert(token, key.clone());
                ok(key)
            }
            ("POST", "/key/update") => {
                let token = body["key"].as_str().unwrap_or_default().to_owned();
                if let Some(org_id) = body["organization_id"].as_str()
                    && !state.orgs.contains_key(org_id)
                {
                    return org_not_found_for(org_id);
                }
                let Some(key) = state.keys.get_mut(&token) else {
                    return error(404, "Key not found", "not_found", None);
                };
                for (k, v) in body.as_object().unwrap() {
                    if k != "key" {
                        key[k] = v.clone();
                    }
                }
                ok(key_answer(key))
            }
            ("GET", "/key/list") => {
                let user = query(request, "user_id");
                let alias = query(request, "key_alias");
                let team = query(request, "team_id");
                let keys: Vec<Value> = state
                    .keys
                    .values()
                    .filter(|k| user.as_ref().is_none_or(|u| k["user_id"] == json!(u)))
                    .filter(|k| alias.as_ref().is_none_or(|a| k["key_alias"] == json!(a)))
                    .filter(|k| team.as_ref().is_none_or(|t| k["team_id"] == json!(t)))
                    .map(key_answer)
                    .collect();
                let total = keys.len();
                ok(json!({"keys": keys, "total_count": total, "current_page": 1, "total_pages": 1}))
            }
            ("POST", "/key/delete") => {
                let tokens = strings(&body["keys"]);
                if !tokens.iter().any(|t| state.keys.contains_key(t)) {
                    return error(404, "Key not found", "not_found", None);
                }
                for token in &tokens {
                    state.keys.remove(token);
                }
                ok(json!({"deleted_keys": tokens}))
            }
            ("GET", "/key/info") => {
                let token = query(request, "key").unwrap_or_default();
                match state.keys.get(&token) {
                    Some(key) => ok(json!({"key": token, "info": key_answer(key)})),
                    None => error(404, "Key not found", "not_found", None),
                }
            }
            // No call goes through this fake, so its spend log is empty.
            ("GET", "/spend/logs/v2") => ok(json!({
                "data": [], "total": 0, "page": 1, "page_size": 50, "total_pages": 0
            })),
            _ => ResponseTemplate::new(404).set_body_json(json!({"detail": "Not Found"})),
        }
    }
}

/// A metadata map, for hand-made drift.
pub fn map(value: Value) -> Map<String, Value> {
    value.as_object().cloned().unwrap_or_default()
}
