//! Billing over the stores: an organization's invoice of a month drafted from its usage and
//! saved, an invoice moved along its life cycle, every organization's invoices, the platform
//! overview of a month and the pricing-discovery report of a period. The arithmetic is pure,
//! in [`stratai_core::billing`] and its `reports`; the invoice's CSV is
//! [`stratai_core::billing::invoice_csv`].

use chrono::{DateTime, Utc};
use futures::TryStreamExt as _;
use rust_decimal::Decimal;
use stratai_core::billing::reports::{
    BillingOverview, PricingReport, PricingReportSpec, PricingReportTally, billing_overview,
};
use stratai_core::billing::{
    BillingMonth, InvoiceDraft, InvoiceState, MonthlyInvoice, draft_monthly_invoice,
};
use stratai_core::directory::Organization;
use stratai_core::ports::{DirectoryStore, InvoiceStore, TierStore, UsageStore};
use stratai_core::pricing::PriceTable;
use stratai_core::usage::{Dimension, UsageQuery};
use stratai_core::{InvoiceId, OpError, OrgId, StoreError, ValidationError};

use super::tiers::catalog;

/// What the operator asks of a draft: the month, the tax rate and the invoice it corrects.
#[derive(Debug, Clone, Copy)]
pub struct DraftRequest {
    /// The month to bill, in the organization's timezone. Not one that has not started.
    pub month: BillingMonth,
    /// Tax rate in [0, 1], applied to the subtotal (the operator's: StratAI decides no tax
    /// jurisdiction).
    pub tax_rate: Decimal,
    /// The issued or paid invoice of the month this draft corrects.
    pub corrects: Option<InvoiceId>,
}

/// The draft of `org`'s month at `now` from its usage by tier and model (not saved).
/// Refuses (`month`) a month that has not started.
pub async fn draft_for(
    tiers: &dyn TierStore,
    usage: &dyn UsageStore,
    org: &Organization,
    req: DraftRequest,
    now: DateTime<Utc>,
) -> Result<MonthlyInvoice, OpError> {
    let tz = org.tz();
    let (from, to) = req.month.window(tz);
    if from > now {
        return Err(
            ValidationError::new("month", format!("`{}` has not started yet", req.month)).into(),
        );
    }
    let rows = usage
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
    let catalog = catalog(tiers).await?;
    Ok(draft_monthly_invoice(&InvoiceDraft {
        org_id: org.id,
        month: req.month,
        tz,
        usage: &rows,
        catalog: &catalog,
        tax_rate: req.tax_rate,
        corrects: req.corrects,
        now,
    })?)
}

/// Drafts `org`'s invoice ([`draft_for`]) and saves it, replacing a draft of the month
/// drafted earlier (the store refuses a month already issued unless the draft corrects it).
pub async fn draft_invoice(
    tiers: &dyn TierStore,
    usage: &dyn UsageStore,
    invoices: &dyn InvoiceStore,
    org: &Organization,
    req: DraftRequest,
    now: DateTime<Utc>,
) -> Result<MonthlyInvoice, OpError> {
    let invoice = draft_for(tiers, usage, org, req, now).await?;
    invoices.put_draft_invoice(org.id, &invoice).await?;
    Ok(invoice)
}

/// Moves an invoice to `to` at `now`: never back to draft (`status`, a correction is drafted
/// instead); a conflict when its state cannot become `to`.
pub async fn set_status(
    invoices: &dyn InvoiceStore,
    org_id: OrgId,
    invoice_id: InvoiceId,
    to: InvoiceState,
    now: DateTime<Utc>,
) -> Result<MonthlyInvoice, OpError> {
    if to == InvoiceState::Draft {
        return Err(ValidationError::new(
            "status",
            "an invoice never goes back to draft; draft a correction instead",
        )
        .into());
    }
    Ok(invoices
        .set_invoice_status(org_id, invoice_id, to, now)
        .await?)
}

/// Every organization's invoices, of `status` and `month` when given: newest month first,
/// then by organization and id.
pub async fn all_invoices(
    directory: &dyn DirectoryStore,
    invoices: &dyn InvoiceStore,
    status: Option<InvoiceState>,
    month: Option<BillingMonth>,
) -> Result<Vec<MonthlyInvoice>, OpError> {
    let mut out = Vec::new();
    for org in directory.list_orgs().await? {
        out.extend(
            invoices
                .list_invoices(org.id)
                .await?
                .into_iter()
                .filter(|i| status.is_none_or(|s| i.status == s))
                .filter(|i| month.is_none_or(|m| i.month == m)),
        );
    }
    out.sort_by(|a, b| {
        b.month
            .cmp(&a.month)
            .then(a.org_id.cmp(&b.org_id))
            .then(a.id.cmp(&b.id))
    });
    Ok(out)
}

/// The platform overview of `month` (each organization's in its own timezone), the
/// organizations by name.
pub async fn overview(
    directory: &dyn DirectoryStore,
    tiers: &dyn TierStore,
    usage: &dyn UsageStore,
    month: BillingMonth,
) -> Result<BillingOverview, OpError> {
    let catalog = catalog(tiers).await?;
    let mut orgs = directory.list_orgs().await?;
    orgs.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
    let mut by_org = Vec::with_capacity(orgs.len());
    for org in orgs {
        let (from, to) = month.window(org.tz());
        let rows = usage
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
        by_org.push((org.id, org.name, rows));
    }
    // Rows grouped by tier above: a refusal here is this service's fault, not the caller's.
    billing_overview(month, &catalog, &by_org)
        .map_err(|e| StoreError::Backend(e.to_string()).into())
}

/// The pricing-discovery report of `spec` at `now`: of `spec.org_id` (hours in its timezone)
/// or of every organization (hours in UTC); `spec.tz` is set here. The period's usage is read
/// as a stream into the tally, so memory grows with users and models, not records. Refuses
/// the spec's invalid options by field, an unknown organization as not found.
pub async fn pricing_report(
    directory: &dyn DirectoryStore,
    tiers: &dyn TierStore,
    usage: &dyn UsageStore,
    prices: &PriceTable,
    mut spec: PricingReportSpec,
    now: DateTime<Utc>,
) -> Result<PricingReport, OpError> {
    spec.tz = chrono_tz::UTC;
    spec.options()?;
    let orgs = match spec.org_id {
        Some(id) => vec![directory.get_org(id).await?],
        None => directory.list_orgs().await?,
    };
    if let (Some(_), Some(org)) = (spec.org_id, orgs.first()) {
        spec.tz = org.tz();
    }
    let query = UsageQuery {
        from: Some(spec.from),
        to: Some(spec.to),
        ..UsageQuery::default()
    };
    let catalog = catalog(tiers).await?;
    let mut tally = PricingReportTally::new(&spec, &catalog)?;
    for org in &orgs {
        let mut stream = usage.stream(org.id, query.clone());
        while let Some(r) = stream.try_next().await? {
            tally.add(&r);
        }
    }
    Ok(tally.finish(prices, now))
}
