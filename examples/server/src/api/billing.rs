//! Billing: invoices per organization and month (core's `billing`), the platform billing
//! overview (provider cost against billed amount, the margin per organization and tier), the
//! seed's pricing-discovery report, and the provider price list beside the tiers' rates.
//!
//! Who may do what: an organization's owners and admins read its invoices and its pricing
//! report (`view_billing`); platform operators (super admins) draft invoices, move them
//! along their life cycle, and read every organization's invoices, the overview and the
//! platform-wide report. The tax rate of an invoice is the operator's, given when drafting
//! (StratAI does not decide tax jurisdictions).

use std::collections::BTreeMap;

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
use stratai_core::money::Money;
use stratai_core::tiers::TierCatalog;
use stratai_core::usage::{
    Dimension, DimensionValue, DiscoveryOptions, PricingDiscoveryReport, UNTIERED, UsageQuery,
    UsageRecord, pricing_discovery,
};
use stratai_core::{InvoiceId, ModelId, OrgId, TierId};

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

/// Provider cost against billed amount of one organization's tier in the month.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OverviewRow {
    /// The organization.
    pub org_id: OrgId,
    /// Its name.
    pub org_name: String,
    /// The tier (none: records without a tier).
    pub tier_id: Option<TierId>,
    /// The tier's slug (`untiered` without a tier).
    pub tier: String,
    /// Requests.
    pub requests: u64,
    /// What the providers charged.
    pub provider_cost: Money,
    /// What the organization was billed.
    pub billed_amount: Money,
    /// Billed minus provider cost (negative: billed below cost).
    #[schema(value_type = String)]
    pub margin: Decimal,
}

/// Totals of the overview.
#[derive(Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OverviewTotals {
    /// Requests.
    pub requests: u64,
    /// Provider cost.
    pub provider_cost: Money,
    /// Billed amount.
    pub billed_amount: Money,
    /// Billed minus provider cost.
    #[schema(value_type = String)]
    pub margin: Decimal,
}

/// Answer of `GET /api/billing/overview`.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BillingOverview {
    /// The month.
    pub month: BillingMonth,
    /// One row per organization and tier with usage, by organization name then tier.
    pub rows: Vec<OverviewRow>,
    /// Per organization.
    pub by_org: BTreeMap<OrgId, OverviewTotals>,
    /// The whole platform.
    pub totals: OverviewTotals,
}

fn add(t: &mut OverviewTotals, row: &OverviewRow) {
    t.requests += row.requests;
    t.provider_cost = t.provider_cost + row.provider_cost;
    t.billed_amount = t.billed_amount + row.billed_amount;
    t.margin += row.margin;
}

/// The platform billing overview of a month (operators).
pub async fn overview(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<OverviewQuery>,
) -> Result<ApiJson<BillingOverview>, ApiError> {
    operator(&caller)?;
    let catalog = catalog(&state).await?;
    let mut rows = Vec::new();
    let mut orgs = state.stores.directory.list_orgs().await?;
    orgs.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
    for org in &orgs {
        let (from, to) = q.month.window(org.tz());
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
                &[Dimension::Tier],
            )
            .await?;
        for r in usage {
            let tier_id = match r.key.as_slice() {
                [DimensionValue::Tier(t)] => *t,
                _ => return Err(ApiError::internal("aggregate key is not a tier")),
            };
            rows.push(OverviewRow {
                org_id: org.id,
                org_name: org.name.clone(),
                tier_id,
                tier: tier_name(&catalog, tier_id),
                requests: r.totals.requests,
                provider_cost: r.totals.provider_cost,
                billed_amount: r.totals.billed_amount,
                margin: r.totals.billed_amount.amount() - r.totals.provider_cost.amount(),
            });
        }
    }
    let mut by_org: BTreeMap<OrgId, OverviewTotals> = BTreeMap::new();
    let mut totals = OverviewTotals::default();
    for row in &rows {
        add(by_org.entry(row.org_id).or_default(), row);
        add(&mut totals, row);
    }
    Ok(ApiJson(BillingOverview {
        month: q.month,
        rows,
        by_org,
        totals,
    }))
}

fn tier_name(catalog: &TierCatalog, tier: Option<TierId>) -> String {
    match tier {
        None => UNTIERED.to_owned(),
        Some(id) => catalog
            .get(id)
            .map_or_else(|| id.to_string(), |t| t.slug.to_string()),
    }
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

/// A model whose billed amount was below what the providers charged for it.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BelowCost {
    /// The model.
    pub model: ModelId,
    /// The tier it was billed under (`untiered` without one).
    pub tier: String,
    /// Requests.
    pub requests: u64,
    /// What the providers charged.
    pub provider_cost: Money,
    /// What was billed.
    pub billed_amount: Money,
}

/// Answer of `GET /api/billing/pricing-report`: the seed's `PricingDiscoveryReport` of the
/// period, and the models billed below provider cost in it.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PricingReport {
    /// The organization, or none for the whole platform.
    pub org_id: Option<OrgId>,
    /// Inclusive start.
    pub from: DateTime<Utc>,
    /// Exclusive end.
    pub to: DateTime<Utc>,
    /// The timezone of `peak_usage_hours` (the organization's; UTC platform-wide).
    pub timezone: String,
    /// The report (every field of the seed's, plus `active_users`, `total_billed_amount`,
    /// `margin`).
    pub report: PricingDiscoveryReport,
    /// Models whose billed amount in the period is below their provider cost.
    pub billed_below_cost: Vec<BelowCost>,
    /// Models whose tier's rates in force at the end of the period (`to`, or now if earlier)
    /// are below the provider's list price, input or output: every request bills below cost
    /// for that part, whatever the usage of the period.
    pub priced_below_list: Vec<ModelPrice>,
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
    if q.from >= q.to {
        return Err(ApiError::invalid("to", "must be after `from`"));
    }
    let margin = q.margin.unwrap_or(Decimal::new(30, 2));
    if margin < Decimal::ZERO || margin > Decimal::TEN {
        return Err(ApiError::invalid(
            "margin",
            format!("`{margin}` must be between 0 and 10"),
        ));
    }
    let peak_hours = q.peak_hours.unwrap_or(3);
    if !(1..=24).contains(&peak_hours) {
        return Err(ApiError::invalid(
            "peak_hours",
            format!("`{peak_hours}` must be between 1 and 24"),
        ));
    }
    let orgs = match q.org_id {
        Some(id) => vec![state.stores.directory.get_org(id).await?],
        None => state.stores.directory.list_orgs().await?,
    };
    let tz = match (q.org_id, orgs.first()) {
        (Some(_), Some(org)) => org.tz(),
        _ => chrono_tz::UTC,
    };
    let query = UsageQuery {
        from: Some(q.from),
        to: Some(q.to),
        ..UsageQuery::default()
    };
    let mut records: Vec<UsageRecord> = Vec::new();
    for org in &orgs {
        use futures::TryStreamExt as _;
        let mut stream = state.stores.usage.stream(org.id, query.clone());
        while let Some(r) = stream.try_next().await? {
            records.push(r);
        }
    }
    let catalog = catalog(state).await?;
    let report = pricing_discovery(
        &records,
        &catalog,
        &DiscoveryOptions {
            margin,
            tz,
            peak_hours: usize::from(peak_hours),
        },
    );
    let mut per_model: BTreeMap<(String, ModelId), (u64, Money, Money)> = BTreeMap::new();
    for r in &records {
        let e = per_model
            .entry((tier_name(&catalog, r.tier_id), r.model.clone()))
            .or_insert((0, Money::ZERO, Money::ZERO));
        e.0 += 1;
        e.1 = e.1 + r.provider_cost;
        e.2 = e.2 + r.billed_amount;
    }
    let billed_below_cost = per_model
        .into_iter()
        .filter(|(_, (_, cost, billed))| billed < cost)
        .map(
            |((tier, model), (requests, provider_cost, billed_amount))| BelowCost {
                model,
                tier,
                requests,
                provider_cost,
                billed_amount,
            },
        )
        .collect();
    let priced_at = q.to.min(Utc::now());
    let priced_below_list = price_list(&catalog, &state.prices, priced_at)
        .into_iter()
        .filter(|p| p.below_list_price)
        .collect();
    Ok(PricingReport {
        org_id: q.org_id,
        from: q.from,
        to: q.to,
        timezone: tz.name().to_owned(),
        report,
        billed_below_cost,
        priced_below_list,
    })
}

/// Where a provider price comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PriceSource {
    /// The built-in list price (`PriceTable::seed_defaults`).
    BuiltIn,
    /// Configured (`STRATAI_PROVIDER_PRICES` or the file's `provider_prices`).
    Configured,
}

/// A model's provider list price beside what its tier bills.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ModelPrice {
    /// The model.
    pub model: ModelId,
    /// Where its provider price comes from; none when the provider price is unknown (its
    /// requests are recorded at provider cost zero).
    pub source: Option<PriceSource>,
    /// Provider $ per 1M input tokens.
    #[schema(value_type = Option<String>)]
    pub provider_input_per_million: Option<Decimal>,
    /// Provider $ per 1M output tokens.
    #[schema(value_type = Option<String>)]
    pub provider_output_per_million: Option<Decimal>,
    /// The output cap assumed for a request without `max_tokens`.
    pub max_output_tokens: Option<u32>,
    /// The tier billing it (slug), none for a model of no tier.
    pub tier: Option<String>,
    /// The tier's billed $ per 1M input tokens at the time asked.
    #[schema(value_type = Option<String>)]
    pub billed_input_per_million: Option<Decimal>,
    /// The tier's billed $ per 1M output tokens at the time asked.
    #[schema(value_type = Option<String>)]
    pub billed_output_per_million: Option<Decimal>,
    /// The tier bills the input or the output below the provider's list price.
    pub below_list_price: bool,
}

/// Every model of the price table or of a tier, by model: provider price, source, the tier's
/// rates in force at `at`, and whether they are below the list price.
pub fn price_list(
    catalog: &TierCatalog,
    prices: &stratai_core::pricing::PriceTable,
    at: DateTime<Utc>,
) -> Vec<ModelPrice> {
    let built_in = stratai_core::pricing::PriceTable::seed_defaults();
    let mut models: std::collections::BTreeSet<ModelId> =
        prices.iter().map(|(m, _)| m.clone()).collect();
    for tier in catalog.tiers() {
        models.extend(tier.models.iter().cloned());
    }
    models
        .into_iter()
        .map(|model| {
            let price = prices.get(&model);
            let rates = catalog
                .tier_of_model(&model)
                .map(|t| (t.slug.to_string(), t.rates_at(at)));
            let below_list_price = match (price, &rates) {
                (Some(p), Some((_, (input, output)))) => {
                    *input < p.input_per_million || *output < p.output_per_million
                }
                _ => false,
            };
            ModelPrice {
                source: price.map(|p| {
                    if built_in.get(&model) == Some(p) {
                        PriceSource::BuiltIn
                    } else {
                        PriceSource::Configured
                    }
                }),
                provider_input_per_million: price.map(|p| p.input_per_million),
                provider_output_per_million: price.map(|p| p.output_per_million),
                max_output_tokens: price.map(|p| p.max_output_tokens),
                billed_input_per_million: rates.as_ref().map(|(_, (i, _))| *i),
                billed_output_per_million: rates.as_ref().map(|(_, (_, o))| *o),
                tier: rates.map(|(slug, _)| slug),
                below_list_price,
                model,
            }
        })
        .collect()
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
