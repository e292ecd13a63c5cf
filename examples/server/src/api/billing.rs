//! Billing: invoices per organization and month (core's `billing`), the platform billing
//! overview (provider cost against billed amount, the margin per organization and tier), the
//! seed's pricing-discovery report, and the provider price list beside the tiers' rates.
//!
//! Who may do what: an organization's owners and admins read its invoices and its pricing
//! report (`view_billing`); platform operators (super admins) draft invoices, move them
//! along their life cycle, and read every organization's invoices, the overview and the
//! platform-wide report. The tax rate of an invoice is the operator's, given when drafting
//! (StratAI does not decide tax jurisdictions).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use stratai_core::access::{Action, Resource};
use stratai_core::billing::{BillingMonth, InvoiceState, MonthlyInvoice, invoice_csv};
use stratai_core::{InvoiceId, OpError, OrgId};
use stratai_store::admin::billing::{self, DraftRequest};
use stratai_store::admin::tiers::catalog;

use stratai_core::billing::reports::PricingReportSpec;
pub use stratai_core::billing::reports::{
    BelowCost, BillingOverview, ModelPrice, OverviewRow, OverviewTotals, PriceSource,
    PricingReport, price_list,
};

use super::{ApiPath, Caller, allow, attachment};
use crate::app::AppState;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery};

/// Platform operators only (a super admin); 403 for everyone else.
fn operator(caller: &Caller) -> Result<(), ApiError> {
    allow(caller, Action::ManageOrgs, Resource::Platform)
}

/// Body of `POST /api/organizations/{org_id}/invoices`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DraftInvoice {
    /// The month to bill, `YYYY-MM`, in the organization's timezone. Not a future month.
    pub month: BillingMonth,
    /// Tax rate in [0, 1], e.g. `"0.21"`: applied to the subtotal, rounded to cents.
    #[schema(value_type = String, example = "0.21")]
    pub tax_rate: Decimal,
    /// The issued or paid invoice of the month this draft corrects (required when there is
    /// one; the corrected invoice itself never changes).
    #[serde(default)]
    pub corrects: Option<InvoiceId>,
}

/// Drafts an organization's invoice of a month from its usage records (operators). A draft
/// of the month drafted earlier is replaced.
pub async fn draft(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(org_id): ApiPath<OrgId>,
    ApiJson(req): ApiJson<DraftInvoice>,
) -> Result<(StatusCode, ApiJson<MonthlyInvoice>), ApiError> {
    allow(&caller, Action::ViewBilling, Resource::Org(org_id))?;
    allow(&caller, Action::ManageOrgs, Resource::Org(org_id))?;
    let s = &state.stores;
    let org = s.directory.get_org(org_id).await?;
    let req = DraftRequest {
        month: req.month,
        tax_rate: req.tax_rate,
        corrects: req.corrects,
    };
    let invoice =
        billing::draft_invoice(&*s.tiers, &*s.usage, &*s.invoices, &org, req, Utc::now()).await?;
    Ok((StatusCode::CREATED, ApiJson(invoice)))
}

/// An organization's invoices, newest month first (`view_billing`).
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(org_id): ApiPath<OrgId>,
) -> Result<ApiJson<Vec<MonthlyInvoice>>, ApiError> {
    allow(&caller, Action::ViewBilling, Resource::Org(org_id))?;
    state.stores.directory.get_org(org_id).await?;
    Ok(ApiJson(state.stores.invoices.list_invoices(org_id).await?))
}

/// One invoice (`view_billing`).
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((org_id, invoice_id)): ApiPath<(OrgId, InvoiceId)>,
) -> Result<ApiJson<MonthlyInvoice>, ApiError> {
    allow(&caller, Action::ViewBilling, Resource::Org(org_id))?;
    Ok(ApiJson(
        state
            .stores
            .invoices
            .get_invoice(org_id, invoice_id)
            .await?,
    ))
}

/// Body of `PATCH /api/organizations/{org_id}/invoices/{invoice_id}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InvoiceStatusChange {
    /// The new state: `issued` (from draft), `paid` (from issued) or `void` (from draft or
    /// issued). Nothing else of an invoice changes through the API.
    pub status: InvoiceState,
}

/// Moves an invoice along its life cycle (operators): 409 when its state cannot become the
/// one asked for.
pub async fn set_status(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((org_id, invoice_id)): ApiPath<(OrgId, InvoiceId)>,
    ApiJson(req): ApiJson<InvoiceStatusChange>,
) -> Result<ApiJson<MonthlyInvoice>, ApiError> {
    allow(&caller, Action::ViewBilling, Resource::Org(org_id))?;
    allow(&caller, Action::ManageOrgs, Resource::Org(org_id))?;
    let invoices = &*state.stores.invoices;
    Ok(ApiJson(
        billing::set_status(invoices, org_id, invoice_id, req.status, Utc::now()).await?,
    ))
}

/// One invoice as CSV: a row per line, then subtotal, tax and total (`view_billing`).
pub async fn export_csv(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((org_id, invoice_id)): ApiPath<(OrgId, InvoiceId)>,
) -> Result<Response, ApiError> {
    allow(&caller, Action::ViewBilling, Resource::Org(org_id))?;
    let invoice = state
        .stores
        .invoices
        .get_invoice(org_id, invoice_id)
        .await?;
    let bytes = invoice_csv(&invoice).map_err(ApiError::internal)?;
    Ok(attachment(
        bytes.into(),
        "text/csv; charset=utf-8",
        &format!("invoice-{}.csv", invoice.month),
    ))
}

/// Query of `GET /api/billing/invoices`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AllInvoicesQuery {
    /// Only invoices in this state.
    #[serde(default)]
    pub status: Option<InvoiceState>,
    /// Only invoices of this month (`YYYY-MM`).
    #[serde(default)]
    pub month: Option<BillingMonth>,
}

/// Every organization's invoices (operators), newest month first, then by organization.
pub async fn list_all(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<AllInvoicesQuery>,
) -> Result<ApiJson<Vec<MonthlyInvoice>>, ApiError> {
    operator(&caller)?;
    let s = &state.stores;
    Ok(ApiJson(
        billing::all_invoices(&*s.directory, &*s.invoices, q.status, q.month).await?,
    ))
}

/// Query of `GET /api/billing/overview`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OverviewQuery {
    /// The month (`YYYY-MM`), each organization's in its own timezone.
    pub month: BillingMonth,
}

/// The platform billing overview of a month (operators).
pub async fn overview(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<OverviewQuery>,
) -> Result<ApiJson<BillingOverview>, ApiError> {
    operator(&caller)?;
    let s = &state.stores;
    Ok(ApiJson(
        billing::overview(&*s.directory, &*s.tiers, &*s.usage, q.month).await?,
    ))
}

/// Query of `GET /api/billing/pricing-report`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PricingReportQuery {
    /// The organization (org admins: theirs); without it, every organization (operators).
    #[serde(default)]
    pub org_id: Option<OrgId>,
    /// Inclusive start (RFC 3339).
    pub from: DateTime<Utc>,
    /// Exclusive end (RFC 3339).
    pub to: DateTime<Utc>,
    /// Margin of the suggested prices over provider cost, in [0, 10] (default `0.30`).
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub margin: Option<Decimal>,
    /// How many peak hours to list, 1 to 24 (default 3).
    #[serde(default)]
    pub peak_hours: Option<u8>,
}

/// The seed's pricing-discovery report over a period: of one organization (`view_billing`)
/// or of every organization (operators).
pub async fn pricing_report(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<PricingReportQuery>,
) -> Result<ApiJson<PricingReport>, ApiError> {
    match q.org_id {
        Some(org_id) => allow(&caller, Action::ViewBilling, Resource::Org(org_id))?,
        None => operator(&caller)?,
    }
    Ok(ApiJson(pricing_report_for(&state, &q).await?))
}

/// The report of `q` (authorization is the caller's; the CLI acts as the platform).
pub async fn pricing_report_for(
    state: &AppState,
    q: &PricingReportQuery,
) -> Result<PricingReport, OpError> {
    let spec = PricingReportSpec {
        org_id: q.org_id,
        from: q.from,
        to: q.to,
        tz: chrono_tz::UTC,
        margin: q.margin,
        peak_hours: q.peak_hours,
    };
    let s = &state.stores;
    billing::pricing_report(
        &*s.directory,
        &*s.tiers,
        &*s.usage,
        &state.prices,
        spec,
        Utc::now(),
    )
    .await
}

/// Query of `GET /api/billing/provider-prices`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProviderPricesQuery {
    /// The time whose tier rates to show (RFC 3339; default now): a scheduled change shows
    /// from its `effective_from` on.
    #[serde(default)]
    pub at: Option<DateTime<Utc>>,
}

/// Answer of `GET /api/billing/provider-prices`.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ProviderPrices {
    /// The time of the tier rates shown.
    pub at: DateTime<Utc>,
    /// Every model of the price table or of a tier, by model.
    pub models: Vec<ModelPrice>,
}

/// The provider prices the server prices usage with (`STRATAI_PROVIDER_PRICES` over the
/// built-in list) beside the tiers' billed rates, flagging rates below list price (platform
/// operators).
pub async fn provider_prices(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ProviderPricesQuery>,
) -> Result<ApiJson<ProviderPrices>, ApiError> {
    operator(&caller)?;
    let at = q.at.unwrap_or_else(Utc::now);
    let catalog = catalog(&*state.stores.tiers).await?;
    Ok(ApiJson(ProviderPrices {
        at,
        models: price_list(&catalog, &state.prices, at),
    }))
}
