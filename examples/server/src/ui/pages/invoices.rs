//! Invoices in the UI: an organization's invoice history (on its billing page), one invoice
//! with its lines and totals (`/org/{org_id}/invoices/{invoice_id}`), the operators' list
//! across organizations (on `/admin/billing`) and their life-cycle buttons (issue, mark paid,
//! void). Every page calls the `/api/.../invoices` handlers, so it asks what they ask
//! (`view_billing`; the status change `manage_orgs` too) and answers another organization's
//! invoice ids with the not-found page, like the API.

use std::collections::HashMap;

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use stratai_core::access::{Action, Resource};
use stratai_core::billing::{InvoiceState, MonthlyInvoice};
use stratai_core::directory::Organization;
use stratai_core::{InvoiceId, OrgId};

use super::org::org_of;
use crate::api::billing::{self, AllInvoicesQuery, InvoiceStatusChange};
use crate::api::{ApiPath, Caller, allow};
use crate::app::AppState;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery};
use crate::ui::view::{
    CheckedForm, Chrome, ListQuery, Notice, UiError, Viewer, local_time, money, render, see_other,
};

/// One invoice in a list.
pub(crate) struct InvoiceLine {
    pub(crate) href: String,
    pub(crate) org: String,
    pub(crate) month: String,
    pub(crate) status: &'static str,
    pub(crate) requests: u64,
    pub(crate) total: String,
}

fn line(invoice: &MonthlyInvoice, org: String) -> InvoiceLine {
    InvoiceLine {
        href: format!("/org/{}/invoices/{}", invoice.org_id, invoice.id),
        org,
        month: invoice.month.to_string(),
        status: invoice.status.as_str(),
        requests: invoice.requests,
        total: money(invoice.total.amount()),
    }
}

/// The organization's invoices, newest month first (`GET /api/organizations/{id}/invoices`,
/// `view_billing`); `None` when the viewer may read usage but not invoices.
pub(crate) async fn history(
    state: &AppState,
    caller: &Caller,
    org: &Organization,
) -> Result<Option<Vec<InvoiceLine>>, UiError> {
    match billing::list(State(state.clone()), caller.clone(), ApiPath(org.id)).await {
        Ok(ApiJson(list)) => Ok(Some(
            list.iter().map(|i| line(i, org.name.clone())).collect(),
        )),
        Err(ApiError::Forbidden(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Every organization's invoices for the operators' billing page
/// (`GET /api/billing/invoices`), newest month first.
pub(crate) async fn all(state: &AppState, caller: &Caller) -> Result<Vec<InvoiceLine>, UiError> {
    let ApiJson(list) = billing::list_all(
        State(state.clone()),
        caller.clone(),
        ApiQuery(AllInvoicesQuery::default()),
    )
    .await?;
    let names: HashMap<OrgId, String> = state
        .stores
        .directory
        .list_orgs()
        .await?
        .into_iter()
        .map(|o| (o.id, o.name))
        .collect();
    Ok(list
        .iter()
        .map(|i| {
            line(
                i,
                names
                    .get(&i.org_id)
                    .cloned()
                    .unwrap_or_else(|| i.org_id.to_string()),
            )
        })
        .collect())
}

/// One line of an invoice.
struct ItemLine {
    tier: String,
    model: String,
    requests: u64,
    input_tokens: u64,
    output_tokens: u64,
    amount: String,
}

#[derive(Template)]
#[template(path = "ui/org_invoice.html")]
struct InvoicePage {
    chrome: Chrome,
    org: Organization,
    invoice_id: String,
    month: String,
    status: &'static str,
    period: String,
    timezone: String,
    items: Vec<ItemLine>,
    requests: u64,
    subtotal: String,
    tax_rate: String,
    tax: String,
    total: String,
    corrects: Option<String>,
    events: Vec<(&'static str, String)>,
    csv: String,
    /// The life-cycle buttons an operator may press now (`issued`, `paid`, `void`).
    moves: Vec<(&'static str, &'static str)>,
}

fn invoice_notice(done: Option<&str>) -> Option<Notice> {
    Some(Notice::ok(match done? {
        "issued" => "The invoice was issued.",
        "paid" => "The invoice was marked paid.",
        "void" => "The invoice was voided.",
        _ => return None,
    }))
}

async fn invoice_page(
    state: &AppState,
    viewer: &Viewer,
    org_id: OrgId,
    invoice_id: InvoiceId,
    notice: Option<Notice>,
) -> Result<InvoicePage, UiError> {
    let ApiJson(invoice) = billing::get(
        State(state.clone()),
        viewer.caller.clone(),
        ApiPath((org_id, invoice_id)),
    )
    .await?;
    let org = org_of(state, org_id).await?;
    let operator = allow(&viewer.caller, Action::ManageOrgs, Resource::Org(org_id)).is_ok();
    let moves = if operator {
        [
            (InvoiceState::Issued, "Issue"),
            (InvoiceState::Paid, "Mark paid"),
            (InvoiceState::Void, "Void"),
        ]
        .into_iter()
        .filter(|(to, _)| invoice.status.can_become(*to))
        .map(|(to, label)| (to.as_str(), label))
        .collect()
    } else {
        Vec::new()
    };
    let mut events = vec![("Drafted", local_time(&org, invoice.created_at))];
    for (label, at) in [
        ("Issued", invoice.issued_at),
        ("Paid", invoice.paid_at),
        ("Voided", invoice.voided_at),
    ] {
        if let Some(at) = at {
            events.push((label, local_time(&org, at)));
        }
    }
    Ok(InvoicePage {
        chrome: viewer.chrome(&format!("/org/{org_id}/billing"), notice),
        invoice_id: invoice.id.to_string(),
        month: invoice.month.to_string(),
        status: invoice.status.as_str(),
        period: format!("{} to {}", invoice.period_start, invoice.period_end),
        timezone: invoice.timezone.clone(),
        items: invoice
            .lines
            .iter()
            .map(|l| ItemLine {
                tier: l.tier.clone(),
                model: l.model.to_string(),
                requests: l.requests,
                input_tokens: l.input_tokens,
                output_tokens: l.output_tokens,
                amount: money(l.amount.amount()),
            })
            .collect(),
        requests: invoice.requests,
        subtotal: money(invoice.subtotal.amount()),
        tax_rate: format!(
            "{}%",
            (invoice.tax_rate * rust_decimal::Decimal::from(100)).normalize()
        ),
        tax: money(invoice.tax.amount()),
        total: money(invoice.total.amount()),
        corrects: invoice
            .corrects
            .map(|c| format!("/org/{org_id}/invoices/{c}")),
        events,
        csv: format!("/api/organizations/{org_id}/invoices/{invoice_id}/csv"),
        moves,
        org,
    })
}

/// `GET /org/{org_id}/invoices/{invoice_id}`: one invoice, its lines and totals
/// (`GET /api/organizations/{org_id}/invoices/{invoice_id}`, `view_billing`).
pub(crate) async fn invoice(
    State(state): State<AppState>,
    viewer: Viewer,
    ApiPath((org_id, invoice_id)): ApiPath<(OrgId, InvoiceId)>,
    Query(q): Query<ListQuery>,
) -> Result<Response, UiError> {
    let notice = invoice_notice(q.done.as_deref());
    let page = invoice_page(&state, &viewer, org_id, invoice_id, notice).await?;
    render(StatusCode::OK, &page)
}

/// `POST /org/{org_id}/invoices/{invoice_id}/status`: moves the invoice along its life cycle
/// (`PATCH /api/organizations/{org_id}/invoices/{invoice_id}`, operators). A move its state
/// does not allow is shown on the page (409).
pub(crate) async fn set_status(
    State(state): State<AppState>,
    viewer: Viewer,
    ApiPath((org_id, invoice_id)): ApiPath<(OrgId, InvoiceId)>,
    form: CheckedForm,
) -> Result<Response, UiError> {
    let status = match form.text("status").as_str() {
        "issued" => InvoiceState::Issued,
        "paid" => InvoiceState::Paid,
        "void" => InvoiceState::Void,
        _ => {
            // Authorization first: whoever may not move invoices learns nothing of the form.
            allow(&viewer.caller, Action::ViewBilling, Resource::Org(org_id))?;
            allow(&viewer.caller, Action::ManageOrgs, Resource::Org(org_id))?;
            return Err(ApiError::invalid("status", "must be `issued`, `paid` or `void`").into());
        }
    };
    match billing::set_status(
        State(state.clone()),
        viewer.caller.clone(),
        ApiPath((org_id, invoice_id)),
        ApiJson(InvoiceStatusChange { status }),
    )
    .await
    {
        Ok(_) => Ok(see_other(&format!(
            "/org/{org_id}/invoices/{invoice_id}?done={}",
            status.as_str()
        ))),
        Err(ApiError::Conflict(reason)) => {
            let page = invoice_page(
                &state,
                &viewer,
                org_id,
                invoice_id,
                Some(Notice::error(format!("Not changed: {reason}."))),
            )
            .await?;
            render(StatusCode::CONFLICT, &page)
        }
        Err(e) => Err(e.into()),
    }
}
