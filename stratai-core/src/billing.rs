//! Invoices as documents: one organization's month, drafted from its usage records, then
//! issued, and paid or voided.
//!
//! What an invoice charges is what the usage records billed: every record stores the amount
//! billed at the tier rates in force when the request was made (`UsageRecord::billed_amount`),
//! so an invoice sums records and never re-prices them. A rate change therefore affects only
//! requests made after it, and an invoice of a month spanning the change bills each request at
//! its own rate. Lines are per tier and model; the subtotal is their exact sum (six decimal
//! places, as the records), tax is the subtotal times the rate the operator gave when drafting,
//! rounded to cents, and the total is the subtotal rounded to cents plus the tax.
//!
//! Life cycle: `draft -> issued -> paid`, `draft | issued -> void`. A draft may be replaced by
//! a new draft of the same month; an issued invoice never changes again but for its status (a
//! correction is a new document naming the one it corrects).
//!
//! (`usage::draft_invoice` is the catalog-rate estimate of the embedding example: it prices
//! the period's token totals at the current rates and is not what the platform bills.)

pub mod reports;

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};

use crate::error::ValidationError;
use crate::ids::{InvoiceId, ModelId, OrgId, TierId};
use crate::money::Money;
use crate::tiers::TierCatalog;
use crate::usage::{AggregateRow, DimensionValue, UNTIERED, UsageTotals};

/// A calendar month, `YYYY-MM` on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BillingMonth {
    year: i32,
    month: u32,
}

impl BillingMonth {
    /// The month of `year` and `month` (1-12).
    pub fn new(year: i32, month: u32) -> Result<Self, ValidationError> {
        if !(1..=12).contains(&month) || !(2000..=9999).contains(&year) {
            return Err(ValidationError::new(
                "month",
                format!("`{year:04}-{month:02}` is not a month (YYYY-MM, 2000 or later)"),
            ));
        }
        Ok(Self { year, month })
    }

    /// The month containing `date`.
    #[must_use]
    pub fn of(date: NaiveDate) -> Self {
        Self {
            year: date.year(),
            month: date.month(),
        }
    }

    /// Its first day.
    #[must_use]
    pub fn first_day(self) -> NaiveDate {
        NaiveDate::from_ymd_opt(self.year, self.month, 1).unwrap_or(NaiveDate::MIN)
    }

    /// The month after.
    #[must_use]
    pub fn next(self) -> Self {
        if self.month == 12 {
            Self {
                year: self.year + 1,
                month: 1,
            }
        } else {
            Self {
                year: self.year,
                month: self.month + 1,
            }
        }
    }

    /// Its last day.
    #[must_use]
    pub fn last_day(self) -> NaiveDate {
        self.next().first_day().pred_opt().unwrap_or(NaiveDate::MIN)
    }

    /// The month as instants: from its first local midnight in `tz` (inclusive) to the next
    /// month's (exclusive), DST-safe.
    #[must_use]
    pub fn window(self, tz: Tz) -> (DateTime<Utc>, DateTime<Utc>) {
        (
            local_midnight(self.first_day(), tz),
            local_midnight(self.next().first_day(), tz),
        )
    }
}

fn local_midnight(date: NaiveDate, tz: Tz) -> DateTime<Utc> {
    let noon = date.and_hms_opt(12, 0, 0).unwrap_or_default();
    let at = tz
        .from_local_datetime(&noon)
        .earliest()
        .map_or_else(|| Utc.from_utc_datetime(&noon), |t| t.with_timezone(&Utc));
    crate::budget::BudgetPeriod::Daily.window(at, tz).start
}

impl fmt::Display for BillingMonth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

impl FromStr for BillingMonth {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            ValidationError::new(
                "month",
                format!("`{}` is not a month (YYYY-MM)", s.escape_debug()),
            )
        };
        let (y, m) = s.split_once('-').ok_or_else(bad)?;
        if y.len() != 4 || m.len() != 2 {
            return Err(bad());
        }
        let year = y.parse().map_err(|_| bad())?;
        let month = m.parse().map_err(|_| bad())?;
        Self::new(year, month)
    }
}

impl Serialize for BillingMonth {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for BillingMonth {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for BillingMonth {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .description(Some("A calendar month, YYYY-MM"))
            .pattern(Some(r"^[0-9]{4}-[0-9]{2}$"))
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for BillingMonth {
    fn name() -> std::borrow::Cow<'static, str> {
        std::borrow::Cow::Borrowed("BillingMonth")
    }
}

/// Where an invoice is in its life cycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum InvoiceState {
    /// Being prepared: may be replaced by a new draft of the same month.
    Draft,
    /// Sent to the customer: its numbers never change again.
    Issued,
    /// Paid.
    Paid,
    /// Withdrawn (a draft discarded or an issued invoice cancelled, e.g. before a correction).
    Void,
}

impl InvoiceState {
    /// The state's name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            InvoiceState::Draft => "draft",
            InvoiceState::Issued => "issued",
            InvoiceState::Paid => "paid",
            InvoiceState::Void => "void",
        }
    }

    /// Whether an invoice in this state may move to `to`: `draft -> issued -> paid`, and
    /// `draft | issued -> void`. Paid and void are final.
    #[must_use]
    pub fn can_become(self, to: InvoiceState) -> bool {
        matches!(
            (self, to),
            (InvoiceState::Draft, InvoiceState::Issued)
                | (InvoiceState::Issued, InvoiceState::Paid)
                | (
                    InvoiceState::Draft | InvoiceState::Issued,
                    InvoiceState::Void
                )
        )
    }

    /// Whether the invoice stands for the month (issued or paid): a new draft of that month
    /// must then say which invoice it corrects.
    #[must_use]
    pub fn is_live(self) -> bool {
        matches!(self, InvoiceState::Issued | InvoiceState::Paid)
    }
}

/// One line: the usage of one model of one tier in the month.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct InvoiceLineItem {
    /// The tier (none: records without a tier).
    pub tier_id: Option<TierId>,
    /// The tier's slug at drafting time ([`UNTIERED`] without a tier, the id for a tier
    /// missing from the catalog).
    pub tier: String,
    /// The model.
    pub model: ModelId,
    /// Requests (every record, failed ones included: they bill nothing).
    pub requests: u64,
    /// Input tokens.
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// The exact sum of the records' billed amounts.
    pub amount: Money,
}

/// An organization's invoice for one month.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MonthlyInvoice {
    /// Id.
    pub id: InvoiceId,
    /// The organization.
    pub org_id: OrgId,
    /// The month billed.
    pub month: BillingMonth,
    /// The organization's timezone when drafted: the month's days are its local days.
    pub timezone: String,
    /// First day (inclusive, local).
    pub period_start: NaiveDate,
    /// Last day (inclusive, local).
    pub period_end: NaiveDate,
    /// Lines by tier (catalog order, untiered last) and model.
    pub lines: Vec<InvoiceLineItem>,
    /// Requests of the month.
    pub requests: u64,
    /// Exact sum of the lines.
    pub subtotal: Money,
    /// The tax rate applied (0 to 1), given by the operator when drafting.
    pub tax_rate: Decimal,
    /// `subtotal × tax_rate`, rounded to cents (half away from zero).
    pub tax: Money,
    /// The subtotal rounded to cents, plus the tax.
    pub total: Money,
    /// Life-cycle state.
    pub status: InvoiceState,
    /// The invoice this one corrects, if any.
    pub corrects: Option<InvoiceId>,
    /// When drafted.
    pub created_at: DateTime<Utc>,
    /// When issued.
    pub issued_at: Option<DateTime<Utc>>,
    /// When marked paid.
    pub paid_at: Option<DateTime<Utc>>,
    /// When voided.
    pub voided_at: Option<DateTime<Utc>>,
}

/// What an invoice is drafted from.
#[derive(Clone, Copy, Debug)]
pub struct InvoiceDraft<'a> {
    /// The organization.
    pub org_id: OrgId,
    /// The month.
    pub month: BillingMonth,
    /// The organization's timezone.
    pub tz: Tz,
    /// The month's usage (the records of [`BillingMonth::window`]) aggregated by
    /// `[Dimension::Tier, Dimension::Model]`, in that order.
    pub usage: &'a [AggregateRow],
    /// The catalog, for tier slugs and line order.
    pub catalog: &'a TierCatalog,
    /// Tax rate in [0, 1].
    pub tax_rate: Decimal,
    /// The invoice corrected, if any.
    pub corrects: Option<InvoiceId>,
    /// Drafting time.
    pub now: DateTime<Utc>,
}

/// Rounds to cents, half away from zero.
#[must_use]
pub fn to_cents(amount: Money) -> Money {
    Money::new(
        amount
            .amount()
            .round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero)
            .normalize(),
    )
    .unwrap_or(Money::ZERO)
}

/// The amount without trailing zeros (sums of normalized amounts may carry some), so every
/// backend stores and shows the same text.
fn normalized(amount: Money) -> Money {
    Money::new(amount.amount()).unwrap_or(amount)
}

/// Checks a tax rate (0 to 1 inclusive).
pub fn check_tax_rate(rate: Decimal) -> Result<Decimal, ValidationError> {
    if rate < Decimal::ZERO || rate > Decimal::ONE {
        return Err(ValidationError::new(
            "tax_rate",
            format!("`{rate}` must be between 0 and 1"),
        ));
    }
    Ok(rate.normalize())
}

/// Drafts the month's invoice from its aggregated usage (see the module docs for the rules).
pub fn draft_monthly_invoice(input: &InvoiceDraft<'_>) -> Result<MonthlyInvoice, ValidationError> {
    let tax_rate = check_tax_rate(input.tax_rate)?;
    // Catalog position of each tier: lines in catalog order, unknown tiers and untiered last.
    let order: BTreeMap<TierId, usize> = input
        .catalog
        .tiers()
        .iter()
        .enumerate()
        .map(|(i, t)| (t.id, i))
        .collect();
    let mut lines: Vec<(usize, InvoiceLineItem)> = Vec::new();
    let mut all = UsageTotals::default();
    for row in input.usage {
        let (tier_id, model) = match row.key.as_slice() {
            [DimensionValue::Tier(t), DimensionValue::Model(m)] => (*t, m.clone()),
            _ => {
                return Err(ValidationError::new(
                    "usage",
                    "rows must be grouped by tier, then model",
                ));
            }
        };
        all.merge(&row.totals);
        let tier = match tier_id {
            None => UNTIERED.to_owned(),
            Some(id) => input
                .catalog
                .get(id)
                .map_or_else(|| id.to_string(), |t| t.slug.to_string()),
        };
        let rank = match tier_id {
            None => usize::MAX,
            Some(t) => order.get(&t).copied().unwrap_or(usize::MAX - 1),
        };
        lines.push((
            rank,
            InvoiceLineItem {
                tier_id,
                tier,
                model,
                requests: row.totals.requests,
                input_tokens: row.totals.input_tokens,
                output_tokens: row.totals.output_tokens,
                amount: normalized(row.totals.billed_amount),
            },
        ));
    }
    lines.sort_by(|a, b| {
        a.0.cmp(&b.0)
            .then_with(|| a.1.tier.cmp(&b.1.tier))
            .then_with(|| a.1.model.cmp(&b.1.model))
    });
    let lines: Vec<InvoiceLineItem> = lines.into_iter().map(|(_, l)| l).collect();
    let subtotal = normalized(lines.iter().map(|l| l.amount).sum());
    let tax = to_cents(Money::new(subtotal.amount() * tax_rate).unwrap_or(Money::ZERO));
    Ok(MonthlyInvoice {
        id: InvoiceId::new(),
        org_id: input.org_id,
        month: input.month,
        timezone: input.tz.name().to_owned(),
        period_start: input.month.first_day(),
        period_end: input.month.last_day(),
        lines,
        requests: all.requests,
        subtotal,
        tax_rate,
        tax,
        total: to_cents(subtotal) + tax,
        status: InvoiceState::Draft,
        corrects: input.corrects,
        created_at: input.now,
        issued_at: None,
        paid_at: None,
        voided_at: None,
    })
}

/// Why a new draft may not be saved next to the organization's invoices of the month.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DraftConflict {
    /// An issued or paid invoice stands for the month and the draft corrects none.
    #[error("invoice `{0}` is issued for this month; a new one must name it in `corrects`")]
    MonthIsInvoiced(InvoiceId),
    /// `corrects` names no issued or paid invoice of this organization and month.
    #[error("`corrects` names no issued or paid invoice of this month")]
    NothingToCorrect,
}

/// The rule every store applies, in the transaction that saves `draft`, to the organization's
/// `existing` invoices: a draft of a month with a live (issued or paid) invoice must correct
/// one of them, and a draft corrects only a live invoice of its month. Returns the ids of the
/// month's earlier drafts, which the new draft replaces.
pub fn check_new_draft(
    existing: &[MonthlyInvoice],
    draft: &MonthlyInvoice,
) -> Result<Vec<InvoiceId>, DraftConflict> {
    let same_month = existing
        .iter()
        .filter(|i| i.org_id == draft.org_id && i.month == draft.month && i.id != draft.id);
    let mut replaced = Vec::new();
    let mut live = None;
    for i in same_month {
        match i.status {
            InvoiceState::Draft => replaced.push(i.id),
            s if s.is_live() => live = live.or(Some(i.id)),
            _ => {}
        }
    }
    match draft.corrects {
        Some(c) => {
            let ok = existing.iter().any(|i| {
                i.id == c
                    && i.org_id == draft.org_id
                    && i.month == draft.month
                    && i.status.is_live()
            });
            if !ok {
                return Err(DraftConflict::NothingToCorrect);
            }
        }
        None => {
            if let Some(id) = live {
                return Err(DraftConflict::MonthIsInvoiced(id));
            }
        }
    }
    Ok(replaced)
}

/// The invoice after a status change at `at`, or the reason it cannot change.
pub fn transition(
    invoice: &MonthlyInvoice,
    to: InvoiceState,
    at: DateTime<Utc>,
) -> Result<MonthlyInvoice, ValidationError> {
    if !invoice.status.can_become(to) {
        return Err(ValidationError::new(
            "status",
            format!(
                "an invoice that is {} cannot become {}",
                invoice.status.as_str(),
                to.as_str()
            ),
        ));
    }
    let mut next = invoice.clone();
    next.status = to;
    match to {
        InvoiceState::Issued => next.issued_at = Some(at),
        InvoiceState::Paid => next.paid_at = Some(at),
        InvoiceState::Void => next.voided_at = Some(at),
        InvoiceState::Draft => {}
    }
    Ok(next)
}

/// The invoice's lines as CSV: a header, one row per line, then `subtotal`, `tax` and `total`
/// rows (amounts as plain decimals).
pub fn invoice_csv(invoice: &MonthlyInvoice) -> Result<Vec<u8>, crate::usage::ExportError> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record([
        "invoice_id",
        "month",
        "tier",
        "model",
        "requests",
        "input_tokens",
        "output_tokens",
        "amount",
    ])?;
    let id = invoice.id.to_string();
    let month = invoice.month.to_string();
    for l in &invoice.lines {
        w.write_record([
            id.as_str(),
            month.as_str(),
            l.tier.as_str(),
            l.model.as_str(),
            &l.requests.to_string(),
            &l.input_tokens.to_string(),
            &l.output_tokens.to_string(),
            &l.amount.amount().to_string(),
        ])?;
    }
    for (label, amount) in [
        ("subtotal", invoice.subtotal),
        ("tax", invoice.tax),
        ("total", invoice.total),
    ] {
        w.write_record([
            id.as_str(),
            month.as_str(),
            label,
            "",
            "",
            "",
            "",
            &amount.amount().to_string(),
        ])?;
    }
    w.into_inner()
        .map_err(|e| crate::usage::ExportError::Io(std::io::Error::other(e.to_string())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{RequestId, UserId};
    use crate::tiers::{BASIC_TIER_ID, PREMIUM_TIER_ID, STANDARD_TIER_ID};
    use crate::usage::{Dimension, UsageRecord, UsageStatus, aggregate, totals};
    use proptest::prelude::*;

    const BY: [Dimension; 2] = [Dimension::Tier, Dimension::Model];

    fn draft<'a>(usage: &'a [AggregateRow], catalog: &'a TierCatalog) -> InvoiceDraft<'a> {
        InvoiceDraft {
            org_id: OrgId::from_uuid(uuid::Uuid::from_u128(1)),
            month: "2026-01".parse().unwrap(),
            tz: chrono_tz::UTC,
            usage,
            catalog,
            tax_rate: Decimal::new(21, 2),
            corrects: None,
            now: Utc::now(),
        }
    }

    #[test]
    fn months_parse_and_span_local_days() {
        let m: BillingMonth = "2026-02".parse().unwrap();
        assert_eq!(m.to_string(), "2026-02");
        assert_eq!(m.last_day(), NaiveDate::from_ymd_opt(2026, 2, 28).unwrap());
        assert_eq!(
            "2026-12"
                .parse::<BillingMonth>()
                .unwrap()
                .next()
                .to_string(),
            "2027-01"
        );
        for bad in ["2026-13", "2026-1", "26-01", "2026/01", "", "1999-12"] {
            assert!(bad.parse::<BillingMonth>().is_err(), "{bad}");
        }
        let (from, to) = m.window(chrono_tz::Europe::Berlin);
        assert_eq!(from.to_rfc3339(), "2026-01-31T23:00:00+00:00");
        assert_eq!(to.to_rfc3339(), "2026-02-28T23:00:00+00:00");
    }

    #[test]
    fn life_cycle() {
        use InvoiceState::*;
        let allowed: Vec<(InvoiceState, InvoiceState)> = [Draft, Issued, Paid, Void]
            .iter()
            .flat_map(|a| [Draft, Issued, Paid, Void].map(|b| (*a, b)))
            .filter(|(a, b)| a.can_become(*b))
            .collect();
        assert_eq!(
            allowed,
            vec![
                (Draft, Issued),
                (Draft, Void),
                (Issued, Paid),
                (Issued, Void)
            ]
        );
    }

    #[test]
    fn lines_tax_total_and_the_correction_rule() {
        let catalog = TierCatalog::seed_default();
        let rec = |tier: Option<TierId>, model: &str, billed: &str| UsageRecord {
            request_id: RequestId::new(),
            org_id: OrgId::from_uuid(uuid::Uuid::from_u128(1)),
            group_id: None,
            user_id: UserId::new(),
            tier_id: tier,
            model: ModelId::new(model).unwrap(),
            input_tokens: 10,
            output_tokens: 5,
            provider_cost: Money::ZERO,
            billed_amount: Money::parse(billed).unwrap(),
            overage: Money::ZERO,
            litellm_request_id: None,
            conversation_id: None,
            endpoint: "chat".into(),
            status: UsageStatus::Success,
            created_at: Utc::now(),
            lease_id: None,
        };
        let records = vec![
            rec(Some(PREMIUM_TIER_ID), "o1", "1.000005"),
            rec(Some(BASIC_TIER_ID), "gpt-4o-mini", "2.5"),
            rec(Some(BASIC_TIER_ID), "gpt-4o-mini", "0.000001"),
            rec(None, "custom", "0.1"),
            rec(Some(STANDARD_TIER_ID), "gpt-4o", "3"),
        ];
        let rows = aggregate(&records, &BY);
        let inv = draft_monthly_invoice(&draft(&rows, &catalog)).unwrap();
        let lines: Vec<(&str, &str, String)> = inv
            .lines
            .iter()
            .map(|l| {
                (
                    l.tier.as_str(),
                    l.model.as_str(),
                    l.amount.amount().to_string(),
                )
            })
            .collect();
        assert_eq!(
            lines,
            vec![
                ("basic", "gpt-4o-mini", "2.500001".to_owned()),
                ("standard", "gpt-4o", "3".to_owned()),
                ("premium", "o1", "1.000005".to_owned()),
                ("untiered", "custom", "0.1".to_owned()),
            ]
        );
        assert_eq!(inv.subtotal, Money::parse("6.600006").unwrap());
        // 6.600006 × 0.21 = 1.38600126 -> 1.39; total 6.60 + 1.39
        assert_eq!(inv.tax, Money::parse("1.39").unwrap());
        assert_eq!(inv.total, Money::parse("7.99").unwrap());
        assert_eq!(inv.requests, 5);

        let bad = InvoiceDraft {
            tax_rate: Decimal::new(101, 2),
            ..draft(&rows, &catalog)
        };
        assert_eq!(draft_monthly_invoice(&bad).unwrap_err().field, "tax_rate");

        // The correction rule.
        let mut issued = inv.clone();
        issued.status = InvoiceState::Issued;
        let again = draft_monthly_invoice(&draft(&rows, &catalog)).unwrap();
        assert_eq!(
            check_new_draft(std::slice::from_ref(&issued), &again),
            Err(DraftConflict::MonthIsInvoiced(issued.id))
        );
        let correction = MonthlyInvoice {
            corrects: Some(issued.id),
            ..again.clone()
        };
        assert_eq!(
            check_new_draft(std::slice::from_ref(&issued), &correction),
            Ok(vec![])
        );
        let stale = draft_monthly_invoice(&draft(&rows, &catalog)).unwrap();
        assert_eq!(
            check_new_draft(std::slice::from_ref(&stale), &again),
            Ok(vec![stale.id])
        );
        let wrong = MonthlyInvoice {
            corrects: Some(stale.id),
            ..again
        };
        assert_eq!(
            check_new_draft(&[stale], &wrong),
            Err(DraftConflict::NothingToCorrect)
        );

        let issued_at = Utc::now();
        let t = transition(&inv, InvoiceState::Issued, issued_at).unwrap();
        assert_eq!(t.issued_at, Some(issued_at));
        assert!(transition(&t, InvoiceState::Draft, issued_at).is_err());
        let csv = String::from_utf8(invoice_csv(&inv).unwrap()).unwrap();
        assert!(
            csv.contains(",basic,gpt-4o-mini,2,20,10,2.500001\n"),
            "{csv}"
        );
        assert!(csv.ends_with(",total,,,,,7.99\n"), "{csv}");
    }

    prop_compose! {
        fn arb_record()(
            tier in prop::option::of(0usize..4), model in 0usize..3, user in 0u128..3,
            input_tokens in any::<u32>(), output_tokens in any::<u32>(),
            billed in 0i64..10_000_000_000, failed in any::<bool>(),
        ) -> UsageRecord {
            let unknown = TierId::from_uuid(uuid::Uuid::from_u128(99));
            UsageRecord {
                request_id: RequestId::new(),
                org_id: OrgId::from_uuid(uuid::Uuid::from_u128(1)),
                group_id: None,
                user_id: UserId::from_uuid(uuid::Uuid::from_u128(user + 20)),
                tier_id: tier.map(|t| [BASIC_TIER_ID, STANDARD_TIER_ID, PREMIUM_TIER_ID, unknown][t]),
                model: ModelId::new(["gpt-4o-mini", "o1", "claude-x"][model]).unwrap(),
                input_tokens, output_tokens,
                provider_cost: Money::ZERO,
                billed_amount: Money::new(Decimal::new(billed, 6)).unwrap(),
                overage: Money::ZERO,
                litellm_request_id: None,
                conversation_id: None,
                endpoint: "chat".into(),
                status: if failed { UsageStatus::Failed } else { UsageStatus::Success },
                created_at: Utc::now(),
                lease_id: None,
            }
        }
    }

    proptest! {
        /// The numbers of an invoice are the sums of its usage records: each line exactly the
        /// records of its tier and model, the subtotal exactly every record's billed amount,
        /// and the total the subtotal in cents plus the tax.
        #[test]
        fn an_invoice_is_the_sum_of_its_records(
            records in prop::collection::vec(arb_record(), 0..40),
            tax in 0i64..=100,
        ) {
            let catalog = TierCatalog::seed_default();
            let rows = aggregate(&records, &BY);
            let inv = draft_monthly_invoice(&InvoiceDraft {
                tax_rate: Decimal::new(tax, 2),
                ..draft(&rows, &catalog)
            }).unwrap();
            let all = totals(&records);
            prop_assert_eq!(inv.subtotal, all.billed_amount);
            prop_assert_eq!(inv.requests, all.requests);
            for line in &inv.lines {
                let mine: Vec<&UsageRecord> = records
                    .iter()
                    .filter(|r| r.tier_id == line.tier_id && r.model == line.model)
                    .collect();
                let t = totals(mine);
                prop_assert_eq!(line.amount, t.billed_amount);
                prop_assert_eq!(line.requests, t.requests);
                prop_assert_eq!(line.input_tokens, t.input_tokens);
                prop_assert_eq!(line.output_tokens, t.output_tokens);
            }
            prop_assert_eq!(inv.lines.iter().map(|l| l.requests).sum::<u64>(), all.requests);
            prop_assert_eq!(inv.total, to_cents(inv.subtotal) + inv.tax);
            prop_assert!(inv.tax <= to_cents(inv.subtotal));
            prop_assert!(inv.tax.amount().scale() <= 2 && inv.total.amount().scale() <= 2);
        }
    }
}
