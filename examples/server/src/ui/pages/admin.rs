//! `/admin`: the platform operators' pages: the overview (organizations, people, requests,
//! provider cost against billed) and the organizations (list, create with an owner). Every
//! page asks `manage_orgs` on the platform, as `POST /api/organizations` does.

use std::collections::HashSet;

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::Utc;
use stratai_core::access::{Action, Resource};
use stratai_core::budget::BudgetPeriod;
use stratai_core::directory::Organization;
use stratai_core::money::Money;
use stratai_core::usage::UsageQuery;

use crate::api::orgs::{self, CreateOrg};
use crate::api::{Caller, allow};
use crate::app::AppState;
use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::ui::view::{
    CheckedForm, Chrome, Done, FieldErrors, Notice, UiError, Viewer, done_notice, money, render,
    see_other,
};

fn platform(caller: &Caller) -> Result<(), ApiError> {
    allow(caller, Action::ManageOrgs, Resource::Platform)
}

/// How many organizations the overview reads spend and people of.
const OVERVIEW_ORGS: usize = 25;

/// One organization's line on the overview.
struct OrgSpend {
    name: String,
    requests: u64,
    provider: String,
    billed: String,
    margin: String,
}

#[derive(Template)]
#[template(path = "ui/admin_overview.html")]
struct OverviewPage {
    chrome: Chrome,
    period: String,
    organizations: usize,
    active_organizations: usize,
    people: usize,
    shown: usize,
    requests: u64,
    provider: String,
    billed: String,
    margin: String,
    lines: Vec<OrgSpend>,
}

/// `billed - provider`, exact; negative when the platform sold below cost.
fn margin(billed: Money, provider: Money) -> String {
    money(billed.amount() - provider.amount())
}

/// `GET /admin`: this UTC month across every organization.
pub(crate) async fn overview(
    State(state): State<AppState>,
    viewer: Viewer,
) -> Result<Response, UiError> {
    platform(&viewer.caller)?;
    let dir = &state.stores.directory;
    let orgs = dir.list_orgs().await?;
    let window = BudgetPeriod::Monthly.window(Utc::now(), chrono_tz::UTC);
    let query = UsageQuery {
        from: Some(window.start),
        to: Some(window.end),
        ..UsageQuery::default()
    };
    let mut people = HashSet::new();
    let mut lines = Vec::new();
    let (mut requests, mut provider, mut billed) = (0u64, Money::ZERO, Money::ZERO);
    // Spend is read per organization (tenant-scoped queries): bounded to the first
    // `OVERVIEW_ORGS` so the page stays fast with many organizations; the page says so.
    for org in orgs.iter().take(OVERVIEW_ORGS) {
        for m in dir.list_members(org.id).await? {
            people.insert(m.user_id);
        }
        let totals = state
            .stores
            .usage
            .aggregate(org.id, &query, &[])
            .await?
            .into_iter()
            .next()
            .map(|r| r.totals)
            .unwrap_or_default();
        requests += totals.requests;
        provider = provider + totals.provider_cost;
        billed = billed + totals.billed_amount;
        lines.push(OrgSpend {
            name: org.name.clone(),
            requests: totals.requests,
            provider: money(totals.provider_cost.amount()),
            billed: money(totals.billed_amount.amount()),
            margin: margin(totals.billed_amount, totals.provider_cost),
        });
    }
    let page = OverviewPage {
        chrome: viewer.chrome("/admin", None),
        period: format!(
            "{} to {} (UTC)",
            window.start.format("%Y-%m-%d"),
            window.end.format("%Y-%m-%d")
        ),
        organizations: orgs.len(),
        active_organizations: orgs.iter().filter(|o| o.active).count(),
        people: people.len(),
        shown: orgs.len().min(OVERVIEW_ORGS),
        requests,
        provider: money(provider.amount()),
        billed: money(billed.amount()),
        margin: margin(billed, provider),
        lines,
    };
    render(StatusCode::OK, &page)
}

/// One row of the organizations table.
struct OrgLine {
    name: String,
    slug: String,
    plan: &'static str,
    active: bool,
    created: String,
}

#[derive(Template)]
#[template(path = "ui/admin_orgs.html")]
struct OrgsPage {
    chrome: Chrome,
    orgs: Vec<OrgLine>,
    name: String,
    slug: String,
    owner_email: String,
    errors: FieldErrors,
}

async fn orgs_page(
    state: &AppState,
    viewer: &Viewer,
    notice: Option<Notice>,
) -> Result<OrgsPage, UiError> {
    platform(&viewer.caller)?;
    let ApiJson(list): ApiJson<Vec<Organization>> =
        orgs::list(State(state.clone()), viewer.caller.clone()).await?;
    Ok(OrgsPage {
        chrome: viewer.chrome("/admin/organizations", notice),
        orgs: list
            .into_iter()
            .map(|o| OrgLine {
                created: crate::ui::view::local_time(&o, o.created_at),
                plan: o.billing_plan.as_str(),
                active: o.active,
                slug: o.slug.as_str().to_owned(),
                name: o.name,
            })
            .collect(),
        name: String::new(),
        slug: String::new(),
        owner_email: String::new(),
        errors: FieldErrors::default(),
    })
}

/// `GET /admin/organizations`.
pub(crate) async fn organizations(
    State(state): State<AppState>,
    viewer: Viewer,
    Query(done): Query<Done>,
) -> Result<Response, UiError> {
    let page = orgs_page(&state, &viewer, done_notice(done.done.as_deref())).await?;
    render(StatusCode::OK, &page)
}

/// `POST /admin/organizations`: creates an organization with its first owner
/// (`POST /api/organizations`).
pub(crate) async fn create_organization(
    State(state): State<AppState>,
    viewer: Viewer,
    form: CheckedForm,
) -> Result<Response, UiError> {
    let name = form.text("name");
    let slug = form.text("slug");
    let owner_email = form.text("owner_email");
    let mut errors = FieldErrors::default();
    if name.is_empty() {
        errors.add("name", "give the organization a name");
    }
    if owner_email.is_empty() {
        errors.add("owner_email", "name the first owner by email");
    }
    let result = if errors.is_empty() {
        orgs::create(
            State(state.clone()),
            viewer.caller.clone(),
            ApiJson(CreateOrg {
                name: name.clone(),
                slug: slug.clone(),
                settings: None,
                billing_plan: None,
                billing_email: None,
                tiers: None,
                owner_email: Some(owner_email.clone()),
            }),
        )
        .await
        .map(|_| ())
    } else {
        platform(&viewer.caller)?;
        Ok(())
    };
    let mut refused = None;
    match result {
        Ok(()) if errors.is_empty() => {
            return Ok(see_other("/admin/organizations?done=org_created"));
        }
        Ok(()) => {}
        Err(ApiError::Validation(fields)) => errors = FieldErrors::from_fields(&fields),
        Err(ApiError::Conflict(reason)) => {
            errors.add("slug", "this slug is taken");
            refused = Some(reason);
        }
        Err(e) => return Err(e.into()),
    }
    let notice = Notice::error(match refused {
        Some(reason) => format!("The organization was not created: {reason}."),
        None => "The organization was not created: see the form.".to_owned(),
    });
    let mut page = orgs_page(&state, &viewer, Some(notice)).await?;
    page.errors = errors;
    page.name = name;
    page.slug = slug;
    page.owner_email = owner_email;
    render(StatusCode::UNPROCESSABLE_ENTITY, &page)
}
