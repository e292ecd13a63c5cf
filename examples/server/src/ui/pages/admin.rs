//! `/admin`: the platform operators' pages: the overview (organizations, people, requests,
//! provider cost against billed), the organizations (list, create with an owner, detail with
//! users, settings, tier subscriptions and usage), the modules (tier catalog), the people,
//! billing across organizations and the global guardrails. Every page asks `manage_orgs` on
//! the platform, as `POST /api/organizations` does (the guardrail pages
//! `manage_platform_guardrails`, as `/api/guardrails`).

use std::collections::HashMap;

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::Utc;
use stratai_core::OrgId;
use stratai_core::access::{Action, Resource};
use stratai_core::budget::BudgetPeriod;
use stratai_core::directory::Organization;
use stratai_core::money::Money;
use stratai_core::ports::RuleScope;
use stratai_core::usage::{UsageQuery, UsageTotals};

use super::rules::{Choice, RuleChoices, RuleForm};
use crate::api::guardrails::{self, PlatformScope};
use crate::api::orgs::{self, CreateOrg, UpdateOrg};
use crate::api::{ApiPath, Caller, allow, members};
use crate::app::AppState;
use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::ui::view::{
    CheckedForm, Chrome, Done, FieldErrors, ListQuery, Notice, Pager, UiError, Viewer, done_notice,
    local_time, money, paginate, paginate_by, render, see_other,
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
    people: u64,
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
    // Two platform-wide reads, whatever the number of organizations: every organization's
    // totals this month and the people who are members anywhere.
    let spend: HashMap<OrgId, UsageTotals> = state
        .stores
        .usage
        .totals_by_org(window.start, window.end)
        .await?
        .into_iter()
        .collect();
    let people = dir.count_people_in_orgs().await?;
    let (mut requests, mut provider, mut billed) = (0u64, Money::ZERO, Money::ZERO);
    for totals in spend.values() {
        requests += totals.requests;
        provider = provider + totals.provider_cost;
        billed = billed + totals.billed_amount;
    }
    // The table lists the first `OVERVIEW_ORGS` organizations; the totals above are of all.
    let mut lines = Vec::new();
    for org in orgs.iter().take(OVERVIEW_ORGS) {
        let totals = spend.get(&org.id).cloned().unwrap_or_default();
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
        people,
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
    id: String,
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
                id: o.id.to_string(),
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

/// One member on an organization's detail page.
struct MemberLine {
    email: String,
    role: &'static str,
    budget: String,
    joined: String,
}

#[derive(Template)]
#[template(path = "ui/admin_org.html")]
struct OrgPage {
    chrome: Chrome,
    org: Organization,
    operator: bool,
    members: Vec<MemberLine>,
    pager: Pager,
    tiers: Vec<super::access::TierLine>,
    period: String,
    requests: u64,
    provider: String,
    billed: String,
    margin: String,
    settings: Vec<(String, String)>,
}

/// `GET /admin/organizations/{org_id}`: one organization for the operator: its settings,
/// users, tier subscriptions (changeable) and this month's usage and margin
/// (`GET /api/organizations/{org_id}`, `manage_orgs`).
pub(crate) async fn organization(
    State(state): State<AppState>,
    viewer: Viewer,
    ApiPath(org_id): ApiPath<OrgId>,
    Query(q): Query<ListQuery>,
) -> Result<Response, UiError> {
    platform(&viewer.caller)?;
    let ApiJson(org) =
        orgs::get(State(state.clone()), viewer.caller.clone(), ApiPath(org_id)).await?;
    let ApiJson(list) =
        members::list(State(state.clone()), viewer.caller.clone(), ApiPath(org_id)).await?;
    let (list, pager) = paginate(list, q.page(), &format!("/admin/organizations/{org_id}"));
    let members = list
        .into_iter()
        .map(|m| MemberLine {
            email: m.email,
            role: m.role.as_str(),
            budget: m
                .monthly_budget
                .map_or_else(|| "none".to_owned(), |b| money(b.amount())),
            joined: local_time(&org, m.joined_at),
        })
        .collect();
    let tiers = super::access::tier_lines(&state, &viewer, org_id).await?;
    let window = BudgetPeriod::Monthly.window(Utc::now(), org.tz());
    let totals = state
        .stores
        .usage
        .aggregate(
            org_id,
            &UsageQuery {
                from: Some(window.start),
                to: Some(window.end),
                ..UsageQuery::default()
            },
            &[],
        )
        .await?
        .into_iter()
        .next()
        .map(|r| r.totals)
        .unwrap_or_default();
    let s = &org.settings;
    let settings = vec![
        ("Slug".to_owned(), org.slug.as_str().to_owned()),
        ("Plan".to_owned(), org.billing_plan.as_str().to_owned()),
        (
            "Billing email".to_owned(),
            org.billing_email
                .as_ref()
                .map_or_else(|| "not set".to_owned(), |e| e.as_str().to_owned()),
        ),
        (
            "Active".to_owned(),
            if org.active { "yes" } else { "no" }.to_owned(),
        ),
        ("Timezone".to_owned(), org.tz().to_string()),
        (
            "Allowed tiers".to_owned(),
            s.allowed_tiers
                .iter()
                .map(|t| t.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        ),
        (
            "Default tier".to_owned(),
            s.default_tier.as_str().to_owned(),
        ),
        (
            "Most members per group".to_owned(),
            s.max_users_per_group.to_string(),
        ),
        (
            "MFA required".to_owned(),
            if s.require_mfa { "yes" } else { "no" }.to_owned(),
        ),
        ("Created".to_owned(), local_time(&org, org.created_at)),
    ];
    let page = OrgPage {
        chrome: viewer.chrome("/admin/organizations", q.notice()),
        operator: true,
        members,
        pager,
        tiers,
        period: format!(
            "{} to {}",
            local_time(&org, window.start),
            local_time(&org, window.end)
        ),
        requests: totals.requests,
        provider: money(totals.provider_cost.amount()),
        billed: money(totals.billed_amount.amount()),
        margin: margin(totals.billed_amount, totals.provider_cost),
        settings,
        org,
    };
    render(StatusCode::OK, &page)
}

/// `POST /admin/organizations/{org_id}/active`: deactivates or reactivates an organization
/// (`PATCH /api/organizations/{org_id}` with `active`, `manage_orgs`).
pub(crate) async fn set_active(
    State(state): State<AppState>,
    viewer: Viewer,
    ApiPath(org_id): ApiPath<OrgId>,
    form: CheckedForm,
) -> Result<Response, UiError> {
    platform(&viewer.caller)?;
    orgs::update(
        State(state.clone()),
        viewer.caller.clone(),
        ApiPath(org_id),
        ApiJson(UpdateOrg {
            name: None,
            settings: None,
            billing_email: None,
            billing_plan: None,
            active: Some(form.text("active") == "true"),
        }),
    )
    .await?;
    Ok(see_other(&format!(
        "/admin/organizations/{org_id}?done=org_updated"
    )))
}

/// One tier of the catalog.
struct ModuleLine {
    name: String,
    slug: String,
    description: String,
    models: Vec<String>,
    base_price: String,
    input_rate: String,
    output_rate: String,
    active: bool,
}

#[derive(Template)]
#[template(path = "ui/admin_modules.html")]
struct ModulesPage {
    chrome: Chrome,
    tiers: Vec<ModuleLine>,
}

/// `GET /admin/modules`: the tier catalog with its prices (`GET /api/tiers`; the page is the
/// platform's, `manage_orgs`).
pub(crate) async fn modules(
    State(state): State<AppState>,
    viewer: Viewer,
) -> Result<Response, UiError> {
    platform(&viewer.caller)?;
    let tiers = state
        .stores
        .tiers
        .list_tiers()
        .await?
        .into_iter()
        .map(|t| ModuleLine {
            slug: t.slug.as_str().to_owned(),
            description: t.description,
            models: t.models.iter().map(ToString::to_string).collect(),
            base_price: money(t.base_price.amount()),
            input_rate: money(t.input_rate_per_million),
            output_rate: money(t.output_rate_per_million),
            active: t.active,
            name: t.name,
        })
        .collect();
    let page = ModulesPage {
        chrome: viewer.chrome("/admin/modules", None),
        tiers,
    };
    render(StatusCode::OK, &page)
}

#[derive(Template)]
#[template(path = "ui/admin_billing.html")]
struct BillingPage {
    chrome: Chrome,
    period: String,
    lines: Vec<OrgSpend>,
    pager: Pager,
    requests: u64,
    provider: String,
    billed: String,
    margin: String,
    invoices: Vec<super::invoices::InvoiceLine>,
    invoice_pager: Pager,
}

/// `GET /admin/billing`: this UTC month's provider cost against billed, and the margin, of
/// each organization (one page of organizations at a time) and of the page; and every
/// organization's invoices (`GET /api/billing/invoices`), newest month first, each linking to
/// the invoice.
pub(crate) async fn billing(
    State(state): State<AppState>,
    viewer: Viewer,
    Query(q): Query<ListQuery>,
) -> Result<Response, UiError> {
    platform(&viewer.caller)?;
    let orgs = state.stores.directory.list_orgs().await?;
    let (orgs, pager) = paginate(orgs, q.page(), "/admin/billing");
    let window = BudgetPeriod::Monthly.window(Utc::now(), chrono_tz::UTC);
    // Every organization's month in one platform-wide read, not one per organization.
    let spend: HashMap<OrgId, UsageTotals> = state
        .stores
        .usage
        .totals_by_org(window.start, window.end)
        .await?
        .into_iter()
        .collect();
    let (mut requests, mut provider, mut billed) = (0u64, Money::ZERO, Money::ZERO);
    let mut lines = Vec::new();
    for org in &orgs {
        let totals = spend.get(&org.id).cloned().unwrap_or_default();
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
    let invoices = super::invoices::all(&state, &viewer.caller).await?;
    let (invoices, invoice_pager) = paginate_by(
        invoices,
        q.invoice_page
            .as_deref()
            .and_then(|p| p.parse().ok())
            .unwrap_or(1),
        "/admin/billing",
        "invoice_page",
    );
    let page = BillingPage {
        invoices,
        invoice_pager,
        chrome: viewer.chrome("/admin/billing", None),
        period: format!(
            "{} to {} (UTC)",
            window.start.format("%Y-%m-%d"),
            window.end.format("%Y-%m-%d")
        ),
        lines,
        pager,
        requests,
        provider: money(provider.amount()),
        billed: money(billed.amount()),
        margin: margin(billed, provider),
    };
    render(StatusCode::OK, &page)
}

/// One platform rule.
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
#[template(path = "ui/admin_guardrails.html")]
struct RulesPage {
    chrome: Chrome,
    rules: Vec<RuleLine>,
    form: RuleForm,
    choices: RuleChoices,
    errors: FieldErrors,
}

async fn rules_page(
    state: &AppState,
    viewer: &Viewer,
    notice: Option<Notice>,
) -> Result<RulesPage, UiError> {
    // `GET /api/guardrails` (`manage_platform_guardrails`).
    let ApiJson(rules) =
        guardrails::list_platform(State(state.clone()), viewer.caller.clone()).await?;
    let catalog = state.stores.tiers.list_tiers().await?;
    let mut scopes = vec![Choice {
        value: "global".to_owned(),
        label: "Every request on the platform".to_owned(),
    }];
    for t in &catalog {
        scopes.push(Choice {
            value: format!("tier:{}", t.id),
            label: format!("Tier {} in every organization", t.name),
        });
    }
    let rules = rules
        .into_iter()
        .map(|r| RuleLine {
            id: r.id.to_string(),
            level: match r.scope {
                RuleScope::Tier { tier_id, .. } => catalog
                    .iter()
                    .find(|t| t.id == tier_id)
                    .map_or_else(|| tier_id.to_string(), |t| format!("tier {}", t.name)),
                _ => "global".to_owned(),
            },
            action: stratai_guardrails::rule::action_str(r.action),
            name: r.name,
            rule_type: r.rule_type,
            priority: r.priority,
            active: r.active,
        })
        .collect();
    Ok(RulesPage {
        chrome: viewer.chrome("/admin/guardrails", notice),
        rules,
        form: RuleForm {
            scope: "global".to_owned(),
            ..RuleForm::default()
        },
        choices: RuleChoices {
            types: stratai_guardrails::rule::RuleType::ALL
                .iter()
                .map(|t| t.as_str().to_owned())
                .collect(),
            actions: ["log", "warn", "modify", "block"]
                .iter()
                .map(|a| (*a).to_owned())
                .collect(),
            scopes,
        },
        errors: FieldErrors::default(),
    })
}

/// `GET /admin/guardrails`: the platform's rules (global, or a tier everywhere) and the
/// create form.
pub(crate) async fn guardrails_list(
    State(state): State<AppState>,
    viewer: Viewer,
    Query(q): Query<ListQuery>,
) -> Result<Response, UiError> {
    let page = rules_page(&state, &viewer, q.notice()).await?;
    render(StatusCode::OK, &page)
}

/// `POST /admin/guardrails`: creates a platform rule (`POST /api/guardrails`).
pub(crate) async fn guardrails_create(
    State(state): State<AppState>,
    viewer: Viewer,
    form: CheckedForm,
) -> Result<Response, UiError> {
    allow(
        &viewer.caller,
        Action::ManagePlatformGuardrails,
        Resource::Platform,
    )?;
    let typed = RuleForm::read(&form);
    let mut errors = FieldErrors::default();
    let scope = match typed.scope.split_once(':') {
        None if typed.scope == "global" => Some(PlatformScope::Global {}),
        Some(("tier", id)) => id
            .parse::<stratai_core::TierId>()
            .ok()
            .map(|tier_id| PlatformScope::Tier { tier_id }),
        _ => None,
    };
    if scope.is_none() {
        errors.add("scope", "choose where the rule applies");
    }
    let parsed = typed.parse(&mut errors);
    if let (Some(checked), Some(scope), true) = (parsed, scope, errors.is_empty()) {
        let result = guardrails::create_platform(
            State(state.clone()),
            viewer.caller.clone(),
            ApiJson(typed.create_body(scope, checked)),
        )
        .await;
        match result {
            Ok(_) => return Ok(see_other("/admin/guardrails?done=rule_created")),
            Err(ApiError::Validation(fields)) => errors = FieldErrors::from_fields(&fields),
            Err(e) => return Err(e.into()),
        }
    }
    let mut page = rules_page(
        &state,
        &viewer,
        Some(Notice::error(
            "The guardrail was not created: see the form.",
        )),
    )
    .await?;
    page.form = typed;
    page.errors = errors;
    render(StatusCode::UNPROCESSABLE_ENTITY, &page)
}

/// `POST /admin/guardrails/{rule_id}/delete` (`DELETE /api/guardrails/{rule_id}`).
pub(crate) async fn guardrails_delete(
    State(state): State<AppState>,
    viewer: Viewer,
    ApiPath(rule_id): ApiPath<stratai_core::RuleId>,
    _form: CheckedForm,
) -> Result<Response, UiError> {
    guardrails::delete_platform(
        State(state.clone()),
        viewer.caller.clone(),
        ApiPath(rule_id),
    )
    .await?;
    Ok(see_other("/admin/guardrails?done=rule_deleted"))
}
