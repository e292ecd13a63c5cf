//! `/org/{org_id}/access`: model access within the subscription: the organization's tier
//! subscriptions (changed here by platform operators, as `PUT
//! /api/organizations/{org_id}/tiers/{tier_id}`), each group's and member's tier restriction
//! and what each member may use now, and the budgets with their state this period.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use stratai_core::access::{Action, Resource};
use stratai_core::directory::Organization;
use stratai_core::{OrgId, TierId, TierSlug};

use super::org::{Gauge, Labels, gauges, org_of};
use crate::api::tiers::{self, AccessibleQuery, PutSubscription};
use crate::api::{ApiPath, allow, members};
use crate::app::AppState;
use crate::extract::{ApiJson, ApiQuery};
use crate::ui::view::{
    CheckedForm, Chrome, FieldErrors, ListQuery, Notice, Pager, UiError, Viewer, money,
    money_field, paginate, render, see_other,
};

/// One tier of the catalog as the organization has it.
pub(crate) struct TierLine {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) models: String,
    pub(crate) subscribed: bool,
    pub(crate) state: String,
    pub(crate) budget: String,
    pub(crate) budget_input: String,
}

/// A group's restriction.
struct GroupLine {
    id: String,
    name: String,
    tiers: String,
}

/// A member's restriction and what they may use now.
struct MemberLine {
    id: String,
    email: String,
    own: String,
    usable: String,
}

#[derive(Template)]
#[template(path = "ui/org_access.html")]
struct AccessPage {
    chrome: Chrome,
    org: Organization,
    operator: bool,
    tiers: Vec<TierLine>,
    groups: Vec<GroupLine>,
    members: Vec<MemberLine>,
    pager: Pager,
    gauges: Vec<Gauge>,
    errors: FieldErrors,
}

fn slugs(list: Option<&Vec<TierSlug>>, none: &str) -> String {
    list.map_or_else(
        || none.to_owned(),
        |t| {
            t.iter()
                .map(TierSlug::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        },
    )
}

/// The organization's tiers: subscription, state for the organization, tier budget
/// (`GET /api/organizations/{org_id}/tiers`).
pub(crate) async fn tier_lines(
    state: &AppState,
    viewer: &Viewer,
    org_id: OrgId,
) -> Result<Vec<TierLine>, UiError> {
    let ApiJson(org_tiers) =
        tiers::org_tiers(State(state.clone()), viewer.caller.clone(), ApiPath(org_id)).await?;
    Ok(org_tiers
        .access
        .tiers
        .iter()
        .map(|t| {
            let sub = org_tiers
                .subscriptions
                .iter()
                .find(|s| s.tier_id == t.tier_id);
            TierLine {
                id: t.tier_id.to_string(),
                name: t.name.clone(),
                models: t
                    .models
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
                subscribed: sub.is_some_and(|s| s.enabled),
                state: if t.is_accessible() {
                    "available to the organization".to_owned()
                } else {
                    t.primary_reason()
                        .map_or_else(|| "locked".to_owned(), |r| r.explain(&t.name))
                },
                budget: sub
                    .and_then(|s| s.monthly_budget)
                    .map_or_else(|| "none".to_owned(), |b| money(b.amount())),
                budget_input: sub
                    .and_then(|s| s.monthly_budget)
                    .map(|b| b.amount().to_string())
                    .unwrap_or_default(),
            }
        })
        .collect())
}

async fn access_page(
    state: &AppState,
    viewer: &Viewer,
    org_id: OrgId,
    notice: Option<Notice>,
    page: usize,
) -> Result<AccessPage, UiError> {
    // As `GET /api/budgets` (`view_org`, `manage_budgets`) and the member list
    // (`manage_members`).
    allow(&viewer.caller, Action::ViewOrg, Resource::Org(org_id))?;
    allow(&viewer.caller, Action::ManageBudgets, Resource::Org(org_id))?;
    let org = org_of(state, org_id).await?;
    let labels = Labels::of(state, org_id).await?;
    let tiers = tier_lines(state, viewer, org_id).await?;
    let groups = state
        .stores
        .directory
        .list_groups(org_id)
        .await?
        .into_iter()
        .map(|g| GroupLine {
            id: g.id.to_string(),
            tiers: slugs(g.allowed_tiers.as_ref(), "all of the organization's"),
            name: g.name,
        })
        .collect();
    let ApiJson(list) =
        members::list(State(state.clone()), viewer.caller.clone(), ApiPath(org_id)).await?;
    let (list, pager) = paginate(list, page, &format!("/org/{org_id}/access"));
    let mut members = Vec::new();
    // What each member of this page may use now (`GET /api/tiers/accessible?user_id=`).
    for m in list {
        let ApiJson(access) = tiers::accessible(
            State(state.clone()),
            viewer.caller.clone(),
            ApiQuery(AccessibleQuery {
                org_id: Some(org_id),
                user_id: Some(m.user_id),
            }),
        )
        .await?;
        members.push(MemberLine {
            id: m.user_id.to_string(),
            own: slugs(m.allowed_tiers.as_ref(), "no restriction of their own"),
            usable: if access.accessible.is_empty() {
                "nothing".to_owned()
            } else {
                access
                    .accessible
                    .iter()
                    .map(|t| t.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            },
            email: m.email,
        });
    }
    let gauges = gauges(state, viewer, &org, &labels).await?;
    Ok(AccessPage {
        chrome: viewer.chrome(&format!("/org/{org_id}/access"), notice),
        operator: allow(&viewer.caller, Action::ManageTiers, Resource::Org(org_id)).is_ok(),
        org,
        tiers,
        groups,
        members,
        pager,
        gauges,
        errors: FieldErrors::default(),
    })
}

/// `GET /org/{org_id}/access`.
pub(crate) async fn access(
    State(state): State<AppState>,
    viewer: Viewer,
    ApiPath(org_id): ApiPath<OrgId>,
    Query(q): Query<ListQuery>,
) -> Result<Response, UiError> {
    let page = access_page(&state, &viewer, org_id, q.notice(), q.page()).await?;
    render(StatusCode::OK, &page)
}

/// `POST /org/{org_id}/access/tiers/{tier_id}`: subscribes the organization to a tier (or
/// not) with an optional tier budget (`PUT /api/organizations/{org_id}/tiers/{tier_id}`,
/// platform operators). `back` names the page to return to.
pub(crate) async fn put_subscription(
    State(state): State<AppState>,
    viewer: Viewer,
    ApiPath((org_id, tier_id)): ApiPath<(OrgId, TierId)>,
    form: CheckedForm,
) -> Result<Response, UiError> {
    let mut errors = FieldErrors::default();
    let budget = money_field(&form.text("monthly_budget"), "monthly_budget", &mut errors);
    let back = if form.text("back") == "admin" {
        format!("/admin/organizations/{org_id}")
    } else {
        format!("/org/{org_id}/access")
    };
    if errors.is_empty() {
        tiers::put_subscription(
            State(state.clone()),
            viewer.caller.clone(),
            ApiPath((org_id, tier_id)),
            ApiJson(PutSubscription {
                enabled: form.text("enabled") == "on",
                monthly_budget: budget,
            }),
        )
        .await?;
        return Ok(see_other(&format!("{back}?done=subscription_saved")));
    }
    // Authorization first, so a refused form shows nothing more.
    allow(&viewer.caller, Action::ViewOrg, Resource::Org(org_id))?;
    allow(&viewer.caller, Action::ManageTiers, Resource::Org(org_id))?;
    let mut page = access_page(
        &state,
        &viewer,
        org_id,
        Some(Notice::error(
            "The subscription was not saved: the tier budget must be an amount in dollars.",
        )),
        1,
    )
    .await?;
    page.errors = errors;
    render(StatusCode::UNPROCESSABLE_ENTITY, &page)
}
