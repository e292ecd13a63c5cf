//! `/org/{org_id}/guardrails` (list, create, edit, delete, with the validation errors of
//! stratai-guardrails shown on their field) and `/org/{org_id}/explain` (would this member be
//! allowed this model now, and why: the answer of `GET /api/explain`, asked in-process with
//! the browser's own credentials).

use askama::Template;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use axum::response::Response;
use serde::Deserialize;
use stratai_core::access::{Action, Resource};
use stratai_core::directory::Organization;
use stratai_core::ports::{RuleAction, RuleRecord, RuleScope};
use stratai_core::{GroupId, OrgId, RuleId, TierId, UserId};
use stratai_guardrails::rule::{RuleType, action_str};
use tower::ServiceExt as _;

use super::org::org_of;
use crate::api::guardrails::{self, CreateRule, OrgScope, UpdateRule};
use crate::api::{ApiPath, allow};
use crate::app::AppState;
use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::ui::view::{
    CheckedForm, Chrome, FieldErrors, ListQuery, Notice, Pager, UiError, Viewer, paginate, render,
    see_other,
};

/// A choice of a select.
pub(crate) struct Choice {
    pub(crate) value: String,
    pub(crate) label: String,
}

/// The rule form, as stored or as typed.
#[derive(Clone, Debug)]
pub(crate) struct RuleForm {
    pub(crate) name: String,
    pub(crate) description: String,
    pub(crate) rule_type: String,
    pub(crate) config: String,
    pub(crate) scope: String,
    pub(crate) action: String,
    pub(crate) priority: String,
    pub(crate) active: bool,
}

impl Default for RuleForm {
    fn default() -> Self {
        Self {
            name: String::new(),
            description: String::new(),
            rule_type: "content_filter".to_owned(),
            config: "{\"blocked_topics\": []}".to_owned(),
            scope: "org".to_owned(),
            action: "block".to_owned(),
            priority: "0".to_owned(),
            active: true,
        }
    }
}

impl RuleForm {
    pub(crate) fn read(form: &CheckedForm) -> Self {
        Self {
            name: form.text("name"),
            description: form.text("description"),
            rule_type: form.text("rule_type"),
            config: form.text("config"),
            scope: form.text("scope"),
            action: form.text("action"),
            priority: form.text("priority"),
            active: form.text("active") == "on",
        }
    }

    fn of(rule: &RuleRecord) -> Self {
        Self {
            name: rule.name.clone(),
            description: rule.description.clone().unwrap_or_default(),
            rule_type: rule.rule_type.clone(),
            config: serde_json::to_string_pretty(&rule.config).unwrap_or_default(),
            scope: scope_value(&rule.scope),
            action: action_str(rule.action).to_owned(),
            priority: rule.priority.to_string(),
            active: rule.active,
        }
    }

    /// The create body of this form at `scope` (the organization's or the platform's), from
    /// the checked fields of [`RuleForm::parse`].
    pub(crate) fn create_body<S>(
        &self,
        scope: S,
        (config, action, priority): (serde_json::Value, RuleAction, i32),
    ) -> CreateRule<S> {
        CreateRule {
            name: self.name.clone(),
            description: Some(self.description.clone()),
            rule_type: self.rule_type.clone(),
            config,
            scope,
            action,
            priority,
            active: self.active,
        }
    }

    /// The fields every rule has, checked; errors go on their field.
    pub(crate) fn parse(
        &self,
        errors: &mut FieldErrors,
    ) -> Option<(serde_json::Value, RuleAction, i32)> {
        if self.rule_type.parse::<RuleType>().is_err() {
            errors.add("rule_type", "choose a rule type from the list");
        }
        let config = match serde_json::from_str::<serde_json::Value>(&self.config) {
            Ok(v) => Some(v),
            Err(e) => {
                errors.add("config", format!("not JSON: {e}"));
                None
            }
        };
        let action = match serde_json::from_value::<RuleAction>(serde_json::Value::String(
            self.action.clone(),
        )) {
            Ok(a) => Some(a),
            Err(_) => {
                errors.add("action", "choose log, warn, modify or block");
                None
            }
        };
        let priority = match self.priority.parse::<i32>() {
            Ok(p) => Some(p),
            Err(_) => {
                errors.add("priority", "a whole number");
                None
            }
        };
        Some((config?, action?, priority?))
    }
}

/// The scope select's value of a stored scope.
fn scope_value(scope: &RuleScope) -> String {
    match scope {
        RuleScope::Group { group_id, .. } => format!("group:{group_id}"),
        RuleScope::User { user_id, .. } => format!("user:{user_id}"),
        RuleScope::Tier { tier_id, .. } => format!("tier:{tier_id}"),
        _ => "org".to_owned(),
    }
}

/// The scope select's value as the API's scope.
fn parse_scope(value: &str) -> Option<OrgScope> {
    match value.split_once(':') {
        None if value == "org" => Some(OrgScope::Org {}),
        Some(("group", id)) => id
            .parse::<GroupId>()
            .ok()
            .map(|group_id| OrgScope::Group { group_id }),
        Some(("user", id)) => id
            .parse::<UserId>()
            .ok()
            .map(|user_id| OrgScope::User { user_id }),
        Some(("tier", id)) => id
            .parse::<TierId>()
            .ok()
            .map(|tier_id| OrgScope::Tier { tier_id }),
        _ => None,
    }
}

/// The select lists of the rule form: types, actions, scopes of this organization.
pub(crate) struct RuleChoices {
    pub(crate) types: Vec<String>,
    pub(crate) actions: Vec<String>,
    pub(crate) scopes: Vec<Choice>,
}

async fn choices(state: &AppState, org_id: OrgId) -> Result<RuleChoices, UiError> {
    let dir = &state.stores.directory;
    let mut scopes = vec![Choice {
        value: "org".to_owned(),
        label: "The whole organization".to_owned(),
    }];
    for t in state.stores.tiers.list_tiers().await? {
        scopes.push(Choice {
            value: format!("tier:{}", t.id),
            label: format!("Tier {}", t.name),
        });
    }
    for g in dir.list_groups(org_id).await? {
        scopes.push(Choice {
            value: format!("group:{}", g.id),
            label: format!("Group {}", g.name),
        });
    }
    for (id, email) in super::org::member_emails(state, org_id).await? {
        scopes.push(Choice {
            value: format!("user:{id}"),
            label: format!("Member {email}"),
        });
    }
    Ok(RuleChoices {
        types: RuleType::ALL
            .iter()
            .map(|t| t.as_str().to_owned())
            .collect(),
        actions: ["log", "warn", "modify", "block"]
            .iter()
            .map(|a| (*a).to_owned())
            .collect(),
        scopes,
    })
}

/// One row of the rules table.
struct RuleLine {
    id: String,
    name: String,
    rule_type: String,
    level: String,
    action: &'static str,
    priority: i32,
    active: bool,
}

#[derive(Template)]
#[template(path = "ui/org_guardrails.html")]
struct RulesPage {
    chrome: Chrome,
    org: Organization,
    rules: Vec<RuleLine>,
    pager: Pager,
    form: RuleForm,
    choices: RuleChoices,
    errors: FieldErrors,
}

async fn rules_page(
    state: &AppState,
    viewer: &Viewer,
    org_id: OrgId,
    notice: Option<Notice>,
    page: usize,
) -> Result<RulesPage, UiError> {
    // `GET /api/organizations/{id}/guardrails` (`manage_guardrails`).
    let ApiJson(rules): ApiJson<Vec<RuleRecord>> =
        guardrails::list_org(State(state.clone()), viewer.caller.clone(), ApiPath(org_id)).await?;
    let org = org_of(state, org_id).await?;
    let choices = choices(state, org_id).await?;
    let (rules, pager) = paginate(rules, page, &format!("/org/{org_id}/guardrails"));
    let rules = rules
        .into_iter()
        .map(|r| {
            let value = scope_value(&r.scope);
            RuleLine {
                id: r.id.to_string(),
                level: choices
                    .scopes
                    .iter()
                    .find(|c| c.value == value)
                    .map_or_else(|| value.clone(), |c| c.label.clone()),
                action: action_str(r.action),
                name: r.name,
                rule_type: r.rule_type,
                priority: r.priority,
                active: r.active,
            }
        })
        .collect();
    Ok(RulesPage {
        chrome: viewer.chrome(&format!("/org/{org_id}/guardrails"), notice),
        org,
        rules,
        pager,
        form: RuleForm::default(),
        choices,
        errors: FieldErrors::default(),
    })
}

/// `GET /org/{org_id}/guardrails`: the organization's rules and the create form.
pub(crate) async fn list(
    State(state): State<AppState>,
    viewer: Viewer,
    ApiPath(org_id): ApiPath<OrgId>,
    Query(q): Query<ListQuery>,
) -> Result<Response, UiError> {
    let page = rules_page(&state, &viewer, org_id, q.notice(), q.page()).await?;
    render(StatusCode::OK, &page)
}

/// `POST /org/{org_id}/guardrails`: creates a rule
/// (`POST /api/organizations/{org_id}/guardrails`).
pub(crate) async fn create(
    State(state): State<AppState>,
    viewer: Viewer,
    ApiPath(org_id): ApiPath<OrgId>,
    form: CheckedForm,
) -> Result<Response, UiError> {
    allow(
        &viewer.caller,
        Action::ManageGuardrails,
        Resource::Org(org_id),
    )?;
    let typed = RuleForm::read(&form);
    let mut errors = FieldErrors::default();
    let scope = parse_scope(&typed.scope);
    if scope.is_none() {
        errors.add("scope", "choose where the rule applies");
    }
    let parsed = typed.parse(&mut errors);
    if let (Some(checked), Some(scope), true) = (parsed, scope, errors.is_empty()) {
        let result = guardrails::create_org(
            State(state.clone()),
            viewer.caller.clone(),
            ApiPath(org_id),
            ApiJson(typed.create_body(scope, checked)),
        )
        .await;
        match result {
            Ok(_) => {
                return Ok(see_other(&format!(
                    "/org/{org_id}/guardrails?done=rule_created"
                )));
            }
            Err(ApiError::Validation(fields)) => errors = FieldErrors::from_fields(&fields),
            Err(e) => return Err(e.into()),
        }
    }
    let mut page = rules_page(
        &state,
        &viewer,
        org_id,
        Some(Notice::error(
            "The guardrail was not created: see the form.",
        )),
        1,
    )
    .await?;
    page.form = typed;
    page.errors = errors;
    render(StatusCode::UNPROCESSABLE_ENTITY, &page)
}

#[derive(Template)]
#[template(path = "ui/org_guardrail.html")]
struct RulePage {
    chrome: Chrome,
    org: Organization,
    rule_id: RuleId,
    level: String,
    form: RuleForm,
    choices: RuleChoices,
    errors: FieldErrors,
}

async fn rule_page(
    state: &AppState,
    viewer: &Viewer,
    org_id: OrgId,
    rule_id: RuleId,
    notice: Option<Notice>,
) -> Result<RulePage, UiError> {
    // As `PATCH /api/organizations/{org_id}/guardrails/{rule_id}`: a member of the
    // organization, then `manage_guardrails` on the rule's scope.
    allow(&viewer.caller, Action::ViewOrg, Resource::Org(org_id))?;
    let rule = state.stores.guardrails.get_rule(org_id, rule_id).await?;
    allow(
        &viewer.caller,
        Action::ManageGuardrails,
        Resource::Org(org_id),
    )?;
    let org = org_of(state, org_id).await?;
    let choices = choices(state, org_id).await?;
    let value = scope_value(&rule.scope);
    Ok(RulePage {
        chrome: viewer.chrome(&format!("/org/{org_id}/guardrails"), notice),
        org,
        rule_id,
        level: choices
            .scopes
            .iter()
            .find(|c| c.value == value)
            .map_or(value, |c| c.label.clone()),
        form: RuleForm::of(&rule),
        choices,
        errors: FieldErrors::default(),
    })
}

/// `GET /org/{org_id}/guardrails/{rule_id}`: the edit form.
pub(crate) async fn edit(
    State(state): State<AppState>,
    viewer: Viewer,
    ApiPath((org_id, rule_id)): ApiPath<(OrgId, RuleId)>,
    Query(q): Query<ListQuery>,
) -> Result<Response, UiError> {
    let page = rule_page(&state, &viewer, org_id, rule_id, q.notice()).await?;
    render(StatusCode::OK, &page)
}

/// `POST /org/{org_id}/guardrails/{rule_id}`: saves the rule (type and scope are fixed)
/// (`PATCH /api/organizations/{org_id}/guardrails/{rule_id}`).
pub(crate) async fn update(
    State(state): State<AppState>,
    viewer: Viewer,
    ApiPath((org_id, rule_id)): ApiPath<(OrgId, RuleId)>,
    form: CheckedForm,
) -> Result<Response, UiError> {
    let mut page = rule_page(&state, &viewer, org_id, rule_id, None).await?;
    let mut typed = RuleForm::read(&form);
    // Type and scope cannot change: keep the stored ones whatever was posted.
    typed.rule_type.clone_from(&page.form.rule_type);
    typed.scope.clone_from(&page.form.scope);
    let mut errors = FieldErrors::default();
    if let (Some((config, action, priority)), true) = (typed.parse(&mut errors), errors.is_empty())
    {
        let result = guardrails::update_org(
            State(state.clone()),
            viewer.caller.clone(),
            ApiPath((org_id, rule_id)),
            ApiJson(UpdateRule {
                name: Some(typed.name.clone()),
                description: Some(Some(typed.description.clone())),
                config: Some(config),
                action: Some(action),
                priority: Some(priority),
                active: Some(typed.active),
            }),
        )
        .await;
        match result {
            Ok(_) => {
                return Ok(see_other(&format!(
                    "/org/{org_id}/guardrails/{rule_id}?done=rule_updated"
                )));
            }
            Err(ApiError::Validation(fields)) => errors = FieldErrors::from_fields(&fields),
            Err(e) => return Err(e.into()),
        }
    }
    page.chrome.notice = Some(Notice::error("The guardrail was not saved: see the form."));
    page.form = typed;
    page.errors = errors;
    render(StatusCode::UNPROCESSABLE_ENTITY, &page)
}

/// `POST /org/{org_id}/guardrails/{rule_id}/delete`
/// (`DELETE /api/organizations/{org_id}/guardrails/{rule_id}`).
pub(crate) async fn delete(
    State(state): State<AppState>,
    viewer: Viewer,
    ApiPath((org_id, rule_id)): ApiPath<(OrgId, RuleId)>,
    _form: CheckedForm,
) -> Result<Response, UiError> {
    guardrails::delete_org(
        State(state.clone()),
        viewer.caller.clone(),
        ApiPath((org_id, rule_id)),
    )
    .await?;
    Ok(see_other(&format!(
        "/org/{org_id}/guardrails?done=rule_deleted"
    )))
}

/// The explain form's query.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ExplainForm {
    #[serde(default)]
    user: String,
    #[serde(default)]
    model: String,
}

/// The decision, as `GET /api/explain` answered it.
struct Decision {
    outcome: String,
    code: Option<String>,
    message: Option<String>,
    tier: Option<String>,
    reasons: Vec<String>,
    hint: Option<String>,
}

#[derive(Template)]
#[template(path = "ui/org_explain.html")]
struct ExplainPage {
    chrome: Chrome,
    org: Organization,
    people: Vec<Choice>,
    models: Vec<Choice>,
    user: String,
    model: String,
    errors: FieldErrors,
    decision: Option<Decision>,
}

/// `GET /org/{org_id}/explain?user=&model=`: would this member be allowed this model now,
/// and why. The page is an administrator's (`manage_members`, as the member list it offers);
/// the decision is `GET /api/explain`'s, asked through the gateway's own route with the
/// browser's credentials, so it is the exact answer (and authorization) of the API. It has
/// no side effects, so it is a `GET` form without a token.
pub(crate) async fn explain(
    State(state): State<AppState>,
    headers: HeaderMap,
    viewer: Viewer,
    ApiPath(org_id): ApiPath<OrgId>,
    Query(q): Query<ExplainForm>,
) -> Result<Response, UiError> {
    allow(&viewer.caller, Action::ManageMembers, Resource::Org(org_id))?;
    let org = org_of(&state, org_id).await?;
    let people: Vec<Choice> = super::org::member_emails(&state, org_id)
        .await?
        .into_iter()
        .map(|(id, email)| Choice {
            value: id.to_string(),
            label: email,
        })
        .collect();
    let models = state
        .stores
        .tiers
        .list_tiers()
        .await?
        .into_iter()
        .flat_map(|t| {
            let tier = t.name;
            t.models.into_iter().map(move |m| Choice {
                value: m.to_string(),
                label: format!("{m} ({tier})"),
            })
        })
        .collect();
    let mut errors = FieldErrors::default();
    let mut decision = None;
    let asked = !q.user.is_empty() || !q.model.is_empty();
    if asked {
        if !people.iter().any(|p| p.value == q.user) {
            errors.add("user", "choose a member");
        }
        if q.model.is_empty() {
            errors.add("model", "choose a model");
        }
        if errors.is_empty() {
            decision = Some(ask(&state, &headers, org_id, &q.user, &q.model, &mut errors).await?);
        }
    }
    let status = if errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    let page = ExplainPage {
        chrome: viewer.chrome(&format!("/org/{org_id}/explain"), None),
        org,
        people,
        models,
        user: q.user,
        model: q.model,
        errors,
        decision,
    };
    render(status, &page)
}

async fn ask(
    state: &AppState,
    headers: &HeaderMap,
    org: OrgId,
    user: &str,
    model: &str,
    errors: &mut FieldErrors,
) -> Result<Decision, UiError> {
    let Some(gateway) = state.gateway.clone() else {
        return Ok(Decision {
            outcome: "unknown".to_owned(),
            code: None,
            message: Some("the gateway is not running on this server".to_owned()),
            tier: None,
            reasons: Vec::new(),
            hint: None,
        });
    };
    let query =
        serde_urlencoded::to_string([("user", user), ("model", model), ("org", &org.to_string())])
            .map_err(ApiError::internal)?;
    let mut request = Request::builder()
        .method(Method::GET)
        .uri(format!("/api/explain?{query}"));
    for name in [header::COOKIE, header::AUTHORIZATION] {
        for value in headers.get_all(&name) {
            request = request.header(name.clone(), value.clone());
        }
    }
    let request = request.body(Body::empty()).map_err(ApiError::internal)?;
    let response = crate::gateway::router::<()>(gateway)
        .oneshot(request)
        .await
        .map_err(ApiError::internal)?;
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .map_err(ApiError::internal)?;
    let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    if status.is_success() {
        let text = |k: &str| json[k].as_str().map(str::to_owned);
        return Ok(Decision {
            outcome: text("outcome").unwrap_or_default(),
            code: text("code"),
            message: text("message"),
            tier: text("tier"),
            reasons: json["reasons"]
                .as_array()
                .map(|r| {
                    r.iter()
                        .filter_map(|x| x.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default(),
            hint: text("hint"),
        });
    }
    // A refused question (a field the API rejected, or not allowed): the API's message on
    // its field, else the refusal as a page.
    let message = json["error"]["message"]
        .as_str()
        .unwrap_or("the question was refused")
        .to_owned();
    match (status, json["error"]["param"].as_str()) {
        (StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY, Some(p)) => {
            errors.add(p, message);
            Ok(Decision {
                outcome: "not asked".to_owned(),
                code: None,
                message: None,
                tier: None,
                reasons: Vec::new(),
                hint: None,
            })
        }
        (StatusCode::NOT_FOUND, _) => Err(ApiError::NotFound("member".to_owned()).into()),
        (StatusCode::FORBIDDEN | StatusCode::UNAUTHORIZED, _) => {
            Err(ApiError::Forbidden(message).into())
        }
        _ => Err(ApiError::internal(message).into()),
    }
}
