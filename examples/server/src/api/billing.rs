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
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use stratai_core::access::{Action, Resource};
use stratai_core::billing::{
    BillingMonth, InvoiceDraft, InvoiceState, MonthlyInvoice, draft_monthly_invoice, invoice_csv,
};
use stratai_core::directory::Organization;
use stratai_core::tiers::TierCatalog;
use stratai_core::usage::{Dimension, UsageQuery};
use stratai_core::{InvoiceId, OrgId};

pub use stratai_core::billing::reports::{
    BelowCost, BillingOverview, ModelPrice, OverviewRow, OverviewTotals, PriceSource,
    PricingReport, price_list,
};
use stratai_core::billing::reports::{PricingReportSpec, PricingReportTally, billing_overview};

use super::{ApiPath, Caller, allow};
use crate::app::AppState;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery};

async fn catalog(state: &AppState) -> Result<TierCatalog, ApiError> {
    TierCatalog::new(state.stores.tiers.list_tiers().await?).map_err(ApiError::internal)
}

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
    let org = state.stores.directory.get_org(org_id).await?;
    let invoice = draft_for(&state, &org, req.month, req.tax_rate, req.corrects).await?;
    state
        .stores
        .invoices
        .put_draft_invoice(org_id, &invoice)
        .await?;
    Ok((StatusCode::CREATED, ApiJson(invoice)))
}

/// The draft of `org`'s `month` (not saved).
pub async fn draft_for(
    state: &AppState,
    org: &Organization,
    month: BillingMonth,
    tax_rate: Decimal,
    corrects: Option<InvoiceId>,
) -> Result<MonthlyInvoice, ApiError> {
    let tz = org.tz();
    let (from, to) = month.window(tz);
    let now = Utc::now();
    if from > now {
        return Err(ApiError::invalid(
            "month",
            format!("`{month}` has not started yet"),
        ));
    }
    let usage = state
        .stores
        .usage
        .aggregate(
            org.id,
            &UsageQuery {
                from: Some(from),
                to: Some(to),
                ..UsageQuery::default()
            },
            &[Dimension::Tier, Dimension::Model],
        )
        .await?;
    let catalog = catalog(state).await?;
    Ok(draft_monthly_invoice(&InvoiceDraft {
        org_id: org.id,
        month,
        tz,
        usage: &usage,
        catalog: &catalog,
        tax_rate,
        corrects,
        now,
    })?)
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
    if req.status == InvoiceState::Draft {
        return Err(ApiError::invalid(
            "status",
            "an invoice never goes back to draft; draft a correction instead",
        ));
    }
    Ok(ApiJson(
        state
            .stores
            .invoices
            .set_invoice_status(org_id, invoice_id, req.status, Utc::now())
            .await?,
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
    let mut response = bytes.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    let name = format!("attachment; filename=\"invoice-{}.csv\"", invoice.month);
    if let Ok(v) = HeaderValue::from_str(&name) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(response)
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
    let mut out = Vec::new();
    for org in state.stores.directory.list_orgs().await? {
        out.extend(
            state
                .stores
                .invoices
                .list_invoices(org.id)
                .await?
                .into_iter()
                .filter(|i| q.status.is_none_or(|s| i.status == s))
                .filter(|i| q.month.is_none_or(|m| i.month == m)),
        );
    }
    out.sort_by(|a, b| {
        b.month
            .cmp(&a.month)
            .then(a.org_id.cmp(&b.org_id))
            .then(a.id.cmp(&b.id))
    });
    Ok(ApiJson(out))
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
    let catalog = catalog(&state).await?;
    let mut orgs = state.stores.directory.list_orgs().await?;
    orgs.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
    let mut usage = Vec::with_capacity(orgs.len());
    for org in orgs {
        let (from, to) = q.month.window(org.tz());
        let rows = state
            .stores
            .usage
            .aggregate(
                org.id,
                &UsageQuery {
                    from: Some(from),
                    to: Some(to),
                    ..UsageQuery::default()
                },
                &[Dimension::Tier],
            )
            .await?;
        usage.push((org.id, org.name, rows));
    }
    Ok(ApiJson(
        billing_overview(q.month, &catalog, &usage).map_err(ApiError::internal)?,
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
) -> Result<PricingReport, ApiError> {
    let mut spec = PricingReportSpec {
        org_id: q.org_id,
        from: q.from,
        to: q.to,
        tz: chrono_tz::UTC,
        margin: q.margin,
        peak_hours: q.peak_hours,
    };
    spec.options()?;
    let orgs = match q.org_id {
        Some(id) => vec![state.stores.directory.get_org(id).await?],
        None => state.stores.directory.list_orgs().await?,
    };
    if let (Some(_), Some(org)) = (q.org_id, orgs.first()) {
        spec.tz = org.tz();
    }
    let query = UsageQuery {
        from: Some(q.from),
        to: Some(q.to),
        ..UsageQuery::default()
    };
    let catalog = catalog(state).await?;
    // Read as a stream into the tally: memory grows with users and models, not records.
    let mut tally = PricingReportTally::new(&spec, &catalog)?;
    for org in &orgs {
        use futures::TryStreamExt as _;
        let mut stream = state.stores.usage.stream(org.id, query.clone());
        while let Some(r) = stream.try_next().await? {
            tally.add(&r);
        }
    }
    Ok(tally.finish(&state.prices, Utc::now()))
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
    let catalog = catalog(&state).await?;
    Ok(ApiJson(ProviderPrices {
        at,
        models: price_list(&catalog, &state.prices, at),
    }))
}
