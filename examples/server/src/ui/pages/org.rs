//! `/org/{org_id}`: an organization's admin pages: the spend dashboard, users (list and
//! invite), groups (list and create) and guardrails. Each page asks what the admin API route it
//! mirrors asks, by calling that route's handler.

use std::collections::HashMap;

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::Utc;
use rust_decimal::Decimal;
use stratai_core::access::{Action, Resource};
use stratai_core::budget::BudgetPeriod;
use stratai_core::directory::{Group, OrgRole, Organization};
use stratai_core::money::Money;
use stratai_core::ports::{RuleRecord, RuleScope};
use stratai_core::usage::{AggregateRow, DimensionValue};
use stratai_core::{OrgId, TierSlug, UserId};

use crate::api::groups::CreateGroup;
use crate::api::invitations::InviteSpec;
use crate::api::members::MemberView;
use crate::api::usage::UsageParams;
use crate::api::{ApiPath, allow, groups, guardrails, invitations, members, usage};
use crate::app::AppState;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery};
use crate::ui::charts::BarChart;
use crate::ui::view::{
    CheckedForm, Chrome, Done, FieldErrors, Notice, UiError, Viewer, done_notice, local_time,
    money, render, see_other,
};

/// `GET /org`: the dashboard of the first organization the person administers; 403 for
/// people who administer none.
pub(crate) async fn pick(viewer: Viewer) -> Result<Response, UiError> {
    match viewer.admin_orgs().first() {
        Some(org) => Ok(see_other(&format!("/org/{org}"))),
        None => Err(ApiError::Forbidden("you administer no organization".to_owned()).into()),
    }
}

/// The label of one dimension value of a usage row.
pub(crate) fn dimension_label(value: &DimensionValue) -> String {
    match value {
        DimensionValue::Org(o) => o.to_string(),
        DimensionValue::Group(g) => g.map_or_else(|| "no group".to_owned(), |g| g.to_string()),
        DimensionValue::User(u) => u.to_string(),
        DimensionValue::Tier(t) => t.map_or_else(|| "no tier".to_owned(), |t| t.to_string()),
        DimensionValue::Model(m) => m.to_string(),
        DimensionValue::Endpoint(e) => e.clone(),
        DimensionValue::Day(d) => d.to_string(),
    }
}

/// One row of a spend table.
pub(crate) struct SpendLine {
    label: String,
    requests: u64,
    tokens: u64,
    provider: String,
    billed: String,
}

/// A chart and its numbers.
pub(crate) struct Breakdown {
    heading: String,
    dimension: String,
    chart: BarChart,
    lines: Vec<SpendLine>,
}

fn breakdown(
    heading: &str,
    dimension: &str,
    rows: &[AggregateRow],
    names: &HashMap<UserId, String>,
) -> Breakdown {
    let label = |row: &AggregateRow| match row.key.first() {
        Some(DimensionValue::User(u)) => names.get(u).cloned().unwrap_or_else(|| u.to_string()),
        Some(v) => dimension_label(v),
        None => String::new(),
    };
    let bars: Vec<(String, Decimal, String)> = rows
        .iter()
        .map(|r| {
            (
                label(r),
                r.totals.billed_amount.amount(),
                money(r.totals.billed_amount.amount()),
            )
        })
        .collect();
    Breakdown {
        heading: heading.to_owned(),
        dimension: dimension.to_owned(),
        chart: BarChart::new(format!("{heading}: billed spend"), &bars),
        lines: rows
            .iter()
            .map(|r| SpendLine {
                label: label(r),
                requests: r.totals.requests,
                tokens: r.totals.input_tokens + r.totals.output_tokens,
                provider: money(r.totals.provider_cost.amount()),
                billed: money(r.totals.billed_amount.amount()),
            })
            .collect(),
    }
}

#[derive(Template)]
#[template(path = "ui/org_dashboard.html")]
struct DashboardPage {
    chrome: Chrome,
    org: Organization,
    period: String,
    requests: u64,
    provider: String,
    billed: String,
    breakdowns: Vec<Breakdown>,
}

/// Loads the organization after the page's own authorization passed.
async fn org_of(state: &AppState, org_id: OrgId) -> Result<Organization, UiError> {
    Ok(state.stores.directory.get_org(org_id).await?)
}

/// `GET /org/{org_id}`: spend this period (the organization's month, in its timezone) by
/// day, by person and by model: bar charts and the same numbers as tables. Mirrors
/// `GET /api/usage` (`view_org_usage`).
pub(crate) async fn dashboard(
    State(state): State<AppState>,
    viewer: Viewer,
    ApiPath(org_id): ApiPath<OrgId>,
) -> Result<Response, UiError> {
    allow(&viewer.caller, Action::ViewOrgUsage, Resource::Org(org_id))?;
    let org = org_of(&state, org_id).await?;
    let window = BudgetPeriod::Monthly.window(Utc::now(), org.tz());
    let summary = |group_by: &str| {
        usage::summary(
            State(state.clone()),
            viewer.caller.clone(),
            ApiQuery(UsageParams {
                org_id: Some(org_id),
                from: Some(window.start),
                to: Some(window.end),
                group_by: Some(group_by.to_owned()),
                ..UsageParams::default()
            }),
        )
    };
    let ApiJson(by_day) = summary("day").await?;
    let ApiJson(by_user) = summary("user").await?;
    let ApiJson(by_model) = summary("model").await?;
    let mut labels = HashMap::new();
    for m in state.stores.directory.list_members(org_id).await? {
        let user = state.stores.directory.get_user(m.user_id).await?;
        labels.insert(m.user_id, user.email.as_str().to_owned());
    }
    let page = DashboardPage {
        chrome: viewer.chrome(&format!("/org/{org_id}"), None),
        period: format!(
            "{} to {}",
            local_time(&org, window.start),
            local_time(&org, window.end)
        ),
        requests: by_day.totals.requests,
        provider: money(by_day.totals.provider_cost.amount()),
        billed: money(by_day.totals.billed_amount.amount()),
        breakdowns: vec![
            breakdown(
                "By day (the organization's days)",
                "Day",
                &by_day.rows,
                &labels,
            ),
            breakdown("By person", "Person", &by_user.rows, &labels),
            breakdown("By model", "Model", &by_model.rows, &labels),
        ],
        org,
    };
    render(StatusCode::OK, &page)
}

/// One row of the users table.
struct UserLine {
    email: String,
    name: String,
    role: &'static str,
    budget: String,
    joined: String,
}

#[derive(Template)]
#[template(path = "ui/org_users.html")]
struct UsersPage {
    chrome: Chrome,
    org: Organization,
    users: Vec<UserLine>,
    email: String,
    role: String,
    errors: FieldErrors,
    invite_token: Option<String>,
}

async fn users_page(
    state: &AppState,
    viewer: &Viewer,
    org_id: OrgId,
    notice: Option<Notice>,
) -> Result<UsersPage, UiError> {
    // `GET /api/organizations/{id}/members` (`manage_members`).
    let ApiJson(list): ApiJson<Vec<MemberView>> =
        members::list(State(state.clone()), viewer.caller.clone(), ApiPath(org_id)).await?;
    let org = org_of(state, org_id).await?;
    let users = list
        .into_iter()
        .map(|m| UserLine {
            email: m.email,
            name: m.name.unwrap_or_default(),
            role: m.role.as_str(),
            budget: m
                .monthly_budget
                .map_or_else(|| "none".to_owned(), |b| money(b.amount())),
            joined: local_time(&org, m.joined_at),
        })
        .collect();
    Ok(UsersPage {
        chrome: viewer.chrome(&format!("/org/{org_id}/users"), notice),
        org,
        users,
        email: String::new(),
        role: "member".to_owned(),
        errors: FieldErrors::default(),
        invite_token: None,
    })
}

/// `GET /org/{org_id}/users`: the members with their roles, and the invite form.
pub(crate) async fn users(
    State(state): State<AppState>,
    viewer: Viewer,
    ApiPath(org_id): ApiPath<OrgId>,
) -> Result<Response, UiError> {
    render(
        StatusCode::OK,
        &users_page(&state, &viewer, org_id, None).await?,
    )
}

/// `POST /org/{org_id}/users`: invites one person (`POST /api/invitations`). The invitation's
/// secret is shown once, on this answer, never put in a URL.
pub(crate) async fn invite(
    State(state): State<AppState>,
    viewer: Viewer,
    ApiPath(org_id): ApiPath<OrgId>,
    form: CheckedForm,
) -> Result<Response, UiError> {
    let email = form.text("email");
    let role_text = form.text("role");
    let role = match role_text.as_str() {
        "member" | "" => Ok(OrgRole::Member),
        "admin" => Ok(OrgRole::Admin),
        "owner" => Ok(OrgRole::Owner),
        _ => Err(()),
    };
    let result = match role {
        Ok(role) => {
            invitations::invite(
                &state,
                &viewer.caller,
                org_id,
                InviteSpec {
                    email: email.clone(),
                    role: Some(role),
                    group_ids: Vec::new(),
                    profile_id: None,
                    valid_for_days: None,
                },
            )
            .await
        }
        Err(()) => Err(ApiError::invalid("role", "choose member, admin or owner")),
    };
    match result {
        Ok(created) => {
            let mut page = users_page(
                &state,
                &viewer,
                org_id,
                Some(Notice::ok(format!(
                    "Invitation created for {}.",
                    created.invitation.email
                ))),
            )
            .await?;
            page.invite_token = Some(created.token);
            render(StatusCode::CREATED, &page)
        }
        Err(ApiError::Validation(fields)) => {
            let mut page = users_page(
                &state,
                &viewer,
                org_id,
                Some(Notice::error(
                    "The invitation was not created: see the form.",
                )),
            )
            .await?;
            page.errors = FieldErrors::from_fields(&fields);
            page.email = email;
            page.role = role_text;
            render(StatusCode::UNPROCESSABLE_ENTITY, &page)
        }
        Err(ApiError::Conflict(reason)) => {
            let mut page = users_page(
                &state,
                &viewer,
                org_id,
                Some(Notice::error(format!(
                    "The invitation was not created: {reason}."
                ))),
            )
            .await?;
            page.email = email;
            render(StatusCode::CONFLICT, &page)
        }
        Err(e) => Err(e.into()),
    }
}

/// One row of the groups table.
struct GroupLine {
    name: String,
    description: String,
    tiers: String,
    budget: String,
    created: String,
}

#[derive(Template)]
#[template(path = "ui/org_groups.html")]
struct GroupsPage {
    chrome: Chrome,
    org: Organization,
    groups: Vec<GroupLine>,
    tier_choices: Vec<String>,
    name: String,
    description: String,
    budget: String,
    chosen: Vec<String>,
    errors: FieldErrors,
}

async fn groups_page(
    state: &AppState,
    viewer: &Viewer,
    org_id: OrgId,
    notice: Option<Notice>,
) -> Result<GroupsPage, UiError> {
    // A management page: it asks `manage_groups` (`POST /api/organizations/{id}/groups`)
    // before listing (`GET .../groups`, which any member may read).
    allow(&viewer.caller, Action::ManageGroups, Resource::Org(org_id))?;
    let ApiJson(list): ApiJson<Vec<Group>> =
        groups::list(State(state.clone()), viewer.caller.clone(), ApiPath(org_id)).await?;
    let org = org_of(state, org_id).await?;
    let tier_choices = state
        .stores
        .tiers
        .list_tiers()
        .await?
        .into_iter()
        .map(|t| t.slug.as_str().to_owned())
        .collect();
    let groups = list
        .into_iter()
        .map(|g| GroupLine {
            tiers: g.allowed_tiers.as_ref().map_or_else(
                || "all of the organization's".to_owned(),
                |t| {
                    t.iter()
                        .map(TierSlug::as_str)
                        .collect::<Vec<_>>()
                        .join(", ")
                },
            ),
            budget: g
                .monthly_budget
                .map_or_else(|| "none".to_owned(), |b| money(b.amount())),
            created: local_time(&org, g.created_at),
            description: g.description.unwrap_or_default(),
            name: g.name,
        })
        .collect();
    Ok(GroupsPage {
        chrome: viewer.chrome(&format!("/org/{org_id}/groups"), notice),
        org,
        groups,
        tier_choices,
        name: String::new(),
        description: String::new(),
        budget: String::new(),
        chosen: Vec::new(),
        errors: FieldErrors::default(),
    })
}

/// `GET /org/{org_id}/groups`: the groups and the create form.
pub(crate) async fn groups(
    State(state): State<AppState>,
    viewer: Viewer,
    ApiPath(org_id): ApiPath<OrgId>,
    Query(done): Query<Done>,
) -> Result<Response, UiError> {
    let page = groups_page(&state, &viewer, org_id, done_notice(done.done.as_deref())).await?;
    render(StatusCode::OK, &page)
}

/// `POST /org/{org_id}/groups`: creates a group (`POST /api/organizations/{id}/groups`).
pub(crate) async fn create_group(
    State(state): State<AppState>,
    viewer: Viewer,
    ApiPath(org_id): ApiPath<OrgId>,
    form: CheckedForm,
) -> Result<Response, UiError> {
    let name = form.text("name");
    let description = form.optional("description");
    let budget_text = form.text("monthly_budget");
    let chosen = form.all("tiers");
    let mut errors = FieldErrors::default();
    let monthly_budget = if budget_text.is_empty() {
        None
    } else {
        match Money::parse(&budget_text) {
            Ok(m) => Some(m),
            Err(e) => {
                errors.add("monthly_budget", e.reason);
                None
            }
        }
    };
    let mut allowed = Vec::new();
    for t in &chosen {
        match TierSlug::new(t) {
            Ok(s) => allowed.push(s),
            Err(e) => errors.add("tiers", e.reason),
        }
    }
    let result = if errors.is_empty() {
        groups::create(
            State(state.clone()),
            viewer.caller.clone(),
            ApiPath(org_id),
            ApiJson(CreateGroup {
                name: name.clone(),
                description: description.clone(),
                allowed_tiers: (!allowed.is_empty()).then_some(allowed),
                monthly_budget,
            }),
        )
        .await
        .map(|_| ())
    } else {
        // The page's authorization is still the API's, even for a form with field errors.
        allow(&viewer.caller, Action::ManageGroups, Resource::Org(org_id))?;
        Ok(())
    };
    let refused = match result {
        Ok(()) if errors.is_empty() => {
            return Ok(see_other(&format!(
                "/org/{org_id}/groups?done=group_created"
            )));
        }
        Ok(()) => None,
        Err(ApiError::Validation(fields)) => {
            errors = FieldErrors::from_fields(&fields);
            None
        }
        Err(ApiError::Conflict(reason)) => Some(reason),
        Err(e) => return Err(e.into()),
    };
    let notice = Notice::error(match &refused {
        Some(reason) => format!("The group was not created: {reason}."),
        None => "The group was not created: see the form.".to_owned(),
    });
    let mut page = groups_page(&state, &viewer, org_id, Some(notice)).await?;
    if refused.is_some() {
        errors.add("name", "a group with this name exists");
    }
    page.errors = errors;
    page.name = name;
    page.description = description.unwrap_or_default();
    page.budget = budget_text;
    page.chosen = chosen;
    render(StatusCode::UNPROCESSABLE_ENTITY, &page)
}

/// One row of the guardrails table.
struct RuleLine {
    name: String,
    rule_type: String,
    level: &'static str,
    action: &'static str,
    priority: i32,
    active: bool,
}

#[derive(Template)]
#[template(path = "ui/org_guardrails.html")]
struct GuardrailsPage {
    chrome: Chrome,
    org: Organization,
    rules: Vec<RuleLine>,
}

/// `GET /org/{org_id}/guardrails`: the organization's rules
/// (`GET /api/organizations/{id}/guardrails`, `manage_guardrails`).
pub(crate) async fn guardrails(
    State(state): State<AppState>,
    viewer: Viewer,
    ApiPath(org_id): ApiPath<OrgId>,
) -> Result<Response, UiError> {
    let ApiJson(rules): ApiJson<Vec<RuleRecord>> =
        guardrails::list_org(State(state.clone()), viewer.caller.clone(), ApiPath(org_id)).await?;
    let org = org_of(&state, org_id).await?;
    let rules = rules
        .into_iter()
        .map(|r| RuleLine {
            level: match r.scope {
                RuleScope::Global => "global",
                RuleScope::Org { .. } => "organization",
                RuleScope::Tier { .. } => "tier",
                RuleScope::Group { .. } => "group",
                RuleScope::User { .. } => "member",
            },
            action: stratai_guardrails::rule::action_str(r.action),
            name: r.name,
            rule_type: r.rule_type,
            priority: r.priority,
            active: r.active,
        })
        .collect();
    let page = GuardrailsPage {
        chrome: viewer.chrome(&format!("/org/{org_id}/guardrails"), None),
        org,
        rules,
    };
    render(StatusCode::OK, &page)
}
