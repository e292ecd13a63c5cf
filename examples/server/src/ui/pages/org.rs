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
use stratai_core::usage::{AggregateRow, Dimension, DimensionValue, UsageQuery, UsageTotals};
use stratai_core::{GroupId, OrgId, TierId, TierSlug, UserId};

use crate::api::groups::CreateGroup;
use crate::api::invitations::InviteSpec;
use crate::api::members::MemberView;
use crate::api::{ApiPath, allow, groups, invitations, members};
use crate::app::AppState;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery};
use crate::ui::charts::BarChart;
use crate::ui::view::{
    CheckedForm, Chrome, FieldErrors, ListQuery, Notice, Pager, UiError, Viewer, local_time, money,
    money_field, paginate, render, see_other,
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
    pub(crate) label: String,
    pub(crate) requests: u64,
    pub(crate) tokens: u64,
    pub(crate) provider: String,
    pub(crate) billed: String,
}

/// A chart and its numbers.
pub(crate) struct Breakdown {
    pub(crate) heading: String,
    pub(crate) dimension: String,
    pub(crate) chart: BarChart,
    pub(crate) lines: Vec<SpendLine>,
}

/// Names for the ids in usage rows: people by email, groups and tiers by name.
#[derive(Debug, Default)]
pub(crate) struct Labels {
    users: HashMap<UserId, String>,
    groups: HashMap<GroupId, String>,
    tiers: HashMap<TierId, String>,
}

/// The organization's members with their emails, in email order: what every member select
/// and label of the pages is built from.
pub(crate) async fn member_emails(
    state: &AppState,
    org_id: OrgId,
) -> Result<Vec<(UserId, String)>, UiError> {
    let dir = &state.stores.directory;
    let ids: Vec<UserId> = dir
        .list_members(org_id)
        .await?
        .iter()
        .map(|m| m.user_id)
        .collect();
    // One lookup of every member's user, not one per member.
    let mut out: Vec<(UserId, String)> = dir
        .get_users(&ids)
        .await?
        .into_iter()
        .map(|u| (u.id, u.email.as_str().to_owned()))
        .collect();
    out.sort_by(|a, b| a.1.cmp(&b.1));
    Ok(out)
}

impl Labels {
    /// The organization's people, groups and the tier catalog.
    pub(crate) async fn of(state: &AppState, org_id: OrgId) -> Result<Self, UiError> {
        let dir = &state.stores.directory;
        let users: HashMap<_, _> = member_emails(state, org_id).await?.into_iter().collect();
        let groups = dir
            .list_groups(org_id)
            .await?
            .into_iter()
            .map(|g| (g.id, g.name))
            .collect();
        let tiers = state
            .stores
            .tiers
            .list_tiers()
            .await?
            .into_iter()
            .map(|t| (t.id, t.name))
            .collect();
        Ok(Self {
            users,
            groups,
            tiers,
        })
    }

    /// The label of a row's first dimension value.
    pub(crate) fn of_row(&self, row: &AggregateRow) -> String {
        match row.key.first() {
            Some(DimensionValue::User(u)) => {
                self.users.get(u).cloned().unwrap_or_else(|| u.to_string())
            }
            Some(DimensionValue::Group(Some(g))) => {
                self.groups.get(g).cloned().unwrap_or_else(|| g.to_string())
            }
            Some(DimensionValue::Tier(Some(t))) => {
                self.tiers.get(t).cloned().unwrap_or_else(|| t.to_string())
            }
            Some(v) => dimension_label(v),
            None => String::new(),
        }
    }
}

/// A chart of `rows` and the same numbers as a table.
pub(crate) fn breakdown(
    heading: &str,
    dimension: &str,
    rows: &[AggregateRow],
    labels: &Labels,
) -> Breakdown {
    let bars: Vec<(String, Decimal, String)> = rows
        .iter()
        .map(|r| {
            (
                labels.of_row(r),
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
                label: labels.of_row(r),
                requests: r.totals.requests,
                tokens: r.totals.input_tokens + r.totals.output_tokens,
                provider: money(r.totals.provider_cost.amount()),
                billed: money(r.totals.billed_amount.amount()),
            })
            .collect(),
    }
}

/// One budget's gauge: spent against the limit this period.
pub(crate) struct Gauge {
    pub(crate) scope: String,
    pub(crate) limit: String,
    pub(crate) spent: String,
    pub(crate) left: String,
    /// Spent as a percentage of the limit, 0..=100 (for the meter).
    pub(crate) percent: u32,
    /// `ok`, `alert` (past the alert threshold), `over` (at or past the limit).
    pub(crate) state: &'static str,
    pub(crate) hard: bool,
    pub(crate) period: String,
}

/// The gauges of an organization's budgets in the current period, as `GET /api/budgets`
/// lists them (`view_org` and `manage_budgets`).
pub(crate) async fn gauges(
    state: &AppState,
    viewer: &Viewer,
    org: &Organization,
    labels: &Labels,
) -> Result<Vec<Gauge>, UiError> {
    use rust_decimal::prelude::ToPrimitive as _;
    use stratai_core::budget::BudgetScope;
    let ApiJson(listed) = crate::api::budgets::list(
        State(state.clone()),
        viewer.caller.clone(),
        ApiQuery(crate::api::budgets::BudgetsQuery {
            org_id: Some(org.id),
            scope: None,
        }),
    )
    .await?;
    Ok(listed
        .into_iter()
        .map(|l| {
            let b = &l.state.budget;
            let spent = l.state.spent.amount() + l.state.reserved.amount();
            let limit = b.limit.amount();
            let ratio = if limit > Decimal::ZERO {
                spent / limit
            } else {
                Decimal::ONE
            };
            let scope = match b.scope {
                BudgetScope::Org => "organization".to_owned(),
                BudgetScope::Group(g) => format!(
                    "group {}",
                    labels
                        .groups
                        .get(&g)
                        .cloned()
                        .unwrap_or_else(|| g.to_string())
                ),
                BudgetScope::User(u) => format!(
                    "member {}",
                    labels
                        .users
                        .get(&u)
                        .cloned()
                        .unwrap_or_else(|| u.to_string())
                ),
                BudgetScope::Tier(t) => format!(
                    "tier {}",
                    labels
                        .tiers
                        .get(&t)
                        .cloned()
                        .unwrap_or_else(|| t.to_string())
                ),
            };
            Gauge {
                scope,
                limit: money(limit),
                spent: money(spent),
                left: money((limit - spent).max(Decimal::ZERO)),
                percent: (ratio * Decimal::from(100))
                    .round()
                    .to_u32()
                    .unwrap_or(100)
                    .min(100),
                state: if ratio >= Decimal::ONE {
                    "over"
                } else if ratio >= b.alert_threshold {
                    "alert"
                } else {
                    "ok"
                },
                hard: b.hard_limit,
                period: format!(
                    "{}, {} to {}",
                    format!("{:?}", b.period).to_lowercase(),
                    local_time(org, l.state.period_start),
                    local_time(org, l.state.period_end)
                ),
            }
        })
        .collect())
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
    gauges: Vec<Gauge>,
}

/// The slugs of the tier catalog, for tier checkboxes.
pub(crate) async fn tier_slugs(state: &AppState) -> Result<Vec<String>, UiError> {
    Ok(state
        .stores
        .tiers
        .list_tiers()
        .await?
        .into_iter()
        .map(|t| t.slug.as_str().to_owned())
        .collect())
}

/// Loads the organization after the page's own authorization passed.
pub(crate) async fn org_of(state: &AppState, org_id: OrgId) -> Result<Organization, UiError> {
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
    // The page asked `view_org_usage` above, exactly what `GET /api/usage` asks without a
    // group or person filter; the breakdowns then go to the store directly, so the month's
    // totals are aggregated once (in SQL, like every breakdown) rather than once per chart.
    let month = UsageQuery {
        from: Some(window.start),
        to: Some(window.end),
        ..UsageQuery::default()
    };
    let usage = &state.stores.usage;
    let by_day = stratai_store::admin::usage::grouped(
        usage.as_ref(),
        org_id,
        org.tz(),
        &month,
        &[Dimension::Day],
    )
    .await?;
    // The month's totals are its days' (every record of the month falls on one of them).
    let mut totals = UsageTotals::default();
    for day in &by_day {
        totals.merge(&day.totals);
    }
    // The three breakdowns in one read of the month's records (one `GROUPING SETS` query on
    // PostgreSQL); the totals and the days above come from its hourly rollup.
    let mut each = usage
        .aggregate_each(
            org_id,
            &month,
            &[
                vec![Dimension::User],
                vec![Dimension::Model],
                vec![Dimension::Group],
            ],
        )
        .await?
        .into_iter();
    let (by_user, by_model, by_group) = (
        each.next().unwrap_or_default(),
        each.next().unwrap_or_default(),
        each.next().unwrap_or_default(),
    );
    let labels = Labels::of(&state, org_id).await?;
    // Budget gauges need `manage_budgets` too (as `GET /api/budgets`); org admins have it.
    let gauges = gauges(&state, &viewer, &org, &labels).await?;
    let page = DashboardPage {
        chrome: viewer.chrome(&format!("/org/{org_id}"), None),
        period: format!(
            "{} to {}",
            local_time(&org, window.start),
            local_time(&org, window.end)
        ),
        requests: totals.requests,
        provider: money(totals.provider_cost.amount()),
        billed: money(totals.billed_amount.amount()),
        breakdowns: vec![
            breakdown("By day (the organization's days)", "Day", &by_day, &labels),
            breakdown("By person", "Person", &by_user, &labels),
            breakdown("By model", "Model", &by_model, &labels),
            breakdown("By group", "Group", &by_group, &labels),
        ],
        gauges,
        org,
    };
    render(StatusCode::OK, &page)
}

/// One row of the users table.
struct UserLine {
    id: String,
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
    pager: Pager,
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
    page: usize,
) -> Result<UsersPage, UiError> {
    // `GET /api/organizations/{id}/members` (`manage_members`).
    let ApiJson(list): ApiJson<Vec<MemberView>> =
        members::list(State(state.clone()), viewer.caller.clone(), ApiPath(org_id)).await?;
    let org = org_of(state, org_id).await?;
    let (list, pager) = paginate(list, page, &format!("/org/{org_id}/users"));
    let users = list
        .into_iter()
        .map(|m| UserLine {
            id: m.user_id.to_string(),
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
        pager,
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
    Query(q): Query<ListQuery>,
) -> Result<Response, UiError> {
    render(
        StatusCode::OK,
        &users_page(&state, &viewer, org_id, q.notice(), q.page()).await?,
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
                1,
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
                1,
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
                1,
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
    id: String,
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
    pager: Pager,
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
    page: usize,
) -> Result<GroupsPage, UiError> {
    // A management page: it asks `manage_groups` (`POST /api/organizations/{id}/groups`)
    // before listing (`GET .../groups`, which any member may read).
    allow(&viewer.caller, Action::ManageGroups, Resource::Org(org_id))?;
    let ApiJson(list): ApiJson<Vec<Group>> =
        groups::list(State(state.clone()), viewer.caller.clone(), ApiPath(org_id)).await?;
    let org = org_of(state, org_id).await?;
    let tier_choices = tier_slugs(state).await?;
    let (list, pager) = paginate(list, page, &format!("/org/{org_id}/groups"));
    let groups = list
        .into_iter()
        .map(|g| GroupLine {
            id: g.id.to_string(),
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
        pager,
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
    Query(q): Query<ListQuery>,
) -> Result<Response, UiError> {
    let page = groups_page(&state, &viewer, org_id, q.notice(), q.page()).await?;
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
    let monthly_budget = money_field(&budget_text, "monthly_budget", &mut errors);
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
                members: None,
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
    let mut page = groups_page(&state, &viewer, org_id, Some(notice), 1).await?;
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
