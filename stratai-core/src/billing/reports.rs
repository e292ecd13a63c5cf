//! The platform's billing reports, pure: the overview of a month (provider cost against billed
//! amount, the margin per organization and tier), the seed's pricing-discovery report with the
//! models billed below cost, and the provider price list beside the tiers' rates. The server
//! reads the usage and calls these; so can any service that embeds StratAI.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::BillingMonth;
use crate::error::ValidationError;
use crate::ids::{ModelId, OrgId, TierId};
use crate::money::Money;
use crate::pricing::PriceTable;
use crate::tiers::TierCatalog;
use crate::usage::{
    AggregateRow, DimensionValue, DiscoveryOptions, DiscoveryTally, PricingDiscoveryReport,
    UNTIERED, UsageRecord,
};

/// A tier's slug for a report ([`UNTIERED`] for records without a tier; the id when the tier
/// is no longer in the catalog).
#[must_use]
pub fn tier_name(catalog: &TierCatalog, tier: Option<TierId>) -> String {
    match tier {
        None => UNTIERED.to_owned(),
        Some(id) => catalog
            .get(id)
            .map_or_else(|| id.to_string(), |t| t.slug.to_string()),
    }
}

/// Provider cost against billed amount of one organization's tier in the month.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub margin: Decimal,
}

/// Totals of the overview.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OverviewTotals {
    /// Requests.
    pub requests: u64,
    /// Provider cost.
    pub provider_cost: Money,
    /// Billed amount.
    pub billed_amount: Money,
    /// Billed minus provider cost.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub margin: Decimal,
}

impl OverviewTotals {
    fn add(&mut self, row: &OverviewRow) {
        self.requests += row.requests;
        self.provider_cost = self.provider_cost + row.provider_cost;
        self.billed_amount = self.billed_amount + row.billed_amount;
        self.margin += row.margin;
    }
}

/// The platform billing overview of a month.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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

/// The overview of `month` from each organization's usage aggregated by tier (`(org id, org
/// name, rows)`, in the order to show); a row keyed by anything but a tier is refused.
pub fn billing_overview(
    month: BillingMonth,
    catalog: &TierCatalog,
    orgs: &[(OrgId, String, Vec<AggregateRow>)],
) -> Result<BillingOverview, ValidationError> {
    let mut rows = Vec::new();
    for (org_id, org_name, usage) in orgs {
        for r in usage {
            let tier_id = match r.key.as_slice() {
                [DimensionValue::Tier(t)] => *t,
                _ => return Err(ValidationError::new("group_by", "not grouped by tier")),
            };
            rows.push(OverviewRow {
                org_id: *org_id,
                org_name: org_name.clone(),
                tier_id,
                tier: tier_name(catalog, tier_id),
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
        by_org.entry(row.org_id).or_default().add(row);
        totals.add(row);
    }
    Ok(BillingOverview {
        month,
        rows,
        by_org,
        totals,
    })
}

/// Where a provider price comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum PriceSource {
    /// The built-in list price (`PriceTable::seed_defaults`).
    BuiltIn,
    /// Configured (`STRATAI_PROVIDER_PRICES` or the file's `provider_prices`).
    Configured,
}

/// A model's provider list price beside what its tier bills.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ModelPrice {
    /// The model.
    pub model: ModelId,
    /// Where its provider price comes from; none when the provider price is unknown (its
    /// requests are recorded at provider cost zero).
    pub source: Option<PriceSource>,
    /// Provider $ per 1M input tokens.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub provider_input_per_million: Option<Decimal>,
    /// Provider $ per 1M output tokens.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub provider_output_per_million: Option<Decimal>,
    /// The output cap assumed for a request without `max_tokens`.
    pub max_output_tokens: Option<u32>,
    /// The tier billing it (slug), none for a model of no tier.
    pub tier: Option<String>,
    /// The tier's billed $ per 1M input tokens at the time asked.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub billed_input_per_million: Option<Decimal>,
    /// The tier's billed $ per 1M output tokens at the time asked.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub billed_output_per_million: Option<Decimal>,
    /// The tier bills the input or the output below the provider's list price.
    pub below_list_price: bool,
}

/// Every model of the price table or of a tier, by model: provider price, source, the tier's
/// rates in force at `at`, and whether they are below the list price.
#[must_use]
pub fn price_list(
    catalog: &TierCatalog,
    prices: &PriceTable,
    at: DateTime<Utc>,
) -> Vec<ModelPrice> {
    let built_in = PriceTable::seed_defaults();
    let mut models: BTreeSet<ModelId> = prices.iter().map(|(m, _)| m.clone()).collect();
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

/// A model whose billed amount was below what the providers charged for it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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

/// The seed's pricing-discovery report of a period with the models billed below cost in it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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

/// What a pricing report covers and how it suggests prices.
#[derive(Clone, Debug)]
pub struct PricingReportSpec {
    /// The organization, or none for the whole platform.
    pub org_id: Option<OrgId>,
    /// Inclusive start.
    pub from: DateTime<Utc>,
    /// Exclusive end.
    pub to: DateTime<Utc>,
    /// Timezone of the peak hours.
    pub tz: Tz,
    /// Margin of the suggested prices over provider cost, in [0, 10] (default `0.30`).
    pub margin: Option<Decimal>,
    /// How many peak hours to list, 1 to 24 (default 3).
    pub peak_hours: Option<u8>,
}

impl PricingReportSpec {
    /// The spec checked: a period that ends after it starts, a margin in [0, 10], 1 to 24
    /// peak hours (the error names the field).
    pub fn options(&self) -> Result<DiscoveryOptions, ValidationError> {
        if self.from >= self.to {
            return Err(ValidationError::new("to", "must be after `from`"));
        }
        let margin = self.margin.unwrap_or(Decimal::new(30, 2));
        if margin < Decimal::ZERO || margin > Decimal::TEN {
            return Err(ValidationError::new(
                "margin",
                format!("`{margin}` must be between 0 and 10"),
            ));
        }
        let peak_hours = self.peak_hours.unwrap_or(3);
        if !(1..=24).contains(&peak_hours) {
            return Err(ValidationError::new(
                "peak_hours",
                format!("`{peak_hours}` must be between 1 and 24"),
            ));
        }
        Ok(DiscoveryOptions {
            margin,
            tz: self.tz,
            peak_hours: usize::from(peak_hours),
        })
    }
}

/// The pricing report built one record at a time (the records of the spec's period and
/// organizations, in any order), so a period of any length is read as a stream: what it keeps
/// grows with users, tiers and models, not with records.
#[derive(Clone, Debug)]
pub struct PricingReportTally<'a> {
    spec: PricingReportSpec,
    catalog: &'a TierCatalog,
    discovery: DiscoveryTally<'a>,
    per_model: BTreeMap<(String, ModelId), (u64, Money, Money)>,
}

impl<'a> PricingReportTally<'a> {
    /// An empty tally for `spec` (checked first: the error names the field).
    pub fn new(
        spec: &PricingReportSpec,
        catalog: &'a TierCatalog,
    ) -> Result<Self, ValidationError> {
        let options = spec.options()?;
        Ok(Self {
            spec: spec.clone(),
            catalog,
            discovery: DiscoveryTally::new(catalog, &options),
            per_model: BTreeMap::new(),
        })
    }

    /// Counts one record.
    pub fn add(&mut self, r: &UsageRecord) {
        self.discovery.add(r);
        let e = self
            .per_model
            .entry((tier_name(self.catalog, r.tier_id), r.model.clone()))
            .or_insert((0, Money::ZERO, Money::ZERO));
        e.0 += 1;
        e.1 = e.1 + r.provider_cost;
        e.2 = e.2 + r.billed_amount;
    }

    /// The report of the records counted, priced with the catalog and `prices` at the
    /// period's end (or `now`, if earlier).
    #[must_use]
    pub fn finish(self, prices: &PriceTable, now: DateTime<Utc>) -> PricingReport {
        let billed_below_cost = self
            .per_model
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
        let priced_below_list = price_list(self.catalog, prices, self.spec.to.min(now))
            .into_iter()
            .filter(|p| p.below_list_price)
            .collect();
        PricingReport {
            org_id: self.spec.org_id,
            from: self.spec.from,
            to: self.spec.to,
            timezone: self.spec.tz.name().to_owned(),
            report: self.discovery.finish(),
            billed_below_cost,
            priced_below_list,
        }
    }
}

/// The pricing report of `records` (those of the spec's period and organizations), priced
/// with `catalog` and `prices` at the period's end (or `now`, if earlier); see
/// [`PricingReportTally`] to read them one at a time.
pub fn pricing_report(
    spec: &PricingReportSpec,
    records: &[UsageRecord],
    catalog: &TierCatalog,
    prices: &PriceTable,
    now: DateTime<Utc>,
) -> Result<PricingReport, ValidationError> {
    let mut tally = PricingReportTally::new(spec, catalog)?;
    for r in records {
        tally.add(r);
    }
    Ok(tally.finish(prices, now))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::tiers::default_tiers;
    use crate::usage::UsageTotals;

    fn totals(requests: u64, cost: &str, billed: &str) -> UsageTotals {
        UsageTotals {
            requests,
            provider_cost: Money::new(cost.parse().unwrap()).unwrap(),
            billed_amount: Money::new(billed.parse().unwrap()).unwrap(),
            ..UsageTotals::default()
        }
    }

    #[test]
    fn the_overview_sums_rows_per_organization_and_platform() {
        let catalog = TierCatalog::new(default_tiers()).unwrap();
        let basic = catalog.tiers()[0].id;
        let (a, b) = (OrgId::new(), OrgId::new());
        let row = |tier, t| AggregateRow {
            key: vec![DimensionValue::Tier(tier)],
            totals: t,
        };
        let overview = billing_overview(
            "2026-11".parse().unwrap(),
            &catalog,
            &[
                (
                    a,
                    "A".to_owned(),
                    vec![
                        row(Some(basic), totals(2, "0.50", "0.40")),
                        row(None, totals(1, "0.10", "0.30")),
                    ],
                ),
                (
                    b,
                    "B".to_owned(),
                    vec![row(Some(basic), totals(3, "1", "2"))],
                ),
            ],
        )
        .unwrap();
        assert_eq!(overview.rows.len(), 3);
        assert_eq!(overview.rows[1].tier, UNTIERED);
        assert_eq!(overview.rows[0].margin, "-0.10".parse::<Decimal>().unwrap());
        assert_eq!(overview.by_org[&a].requests, 3);
        assert_eq!(
            overview.by_org[&a].margin,
            "0.10".parse::<Decimal>().unwrap()
        );
        assert_eq!(overview.totals.requests, 6);
        assert_eq!(overview.totals.margin, "1.10".parse::<Decimal>().unwrap());
        let keyed_by_model = [(
            a,
            "A".to_owned(),
            vec![AggregateRow {
                key: vec![DimensionValue::Model(ModelId::new("gpt-4o").unwrap())],
                totals: totals(1, "1", "1"),
            }],
        )];
        assert!(billing_overview("2026-11".parse().unwrap(), &catalog, &keyed_by_model).is_err());
    }

    #[test]
    fn a_report_spec_out_of_range_names_its_field() {
        let from = Utc::now();
        let spec = |to, margin, peak_hours| PricingReportSpec {
            org_id: None,
            from,
            to,
            tz: chrono_tz::UTC,
            margin,
            peak_hours,
        };
        let hour = chrono::Duration::hours(1);
        assert_eq!(spec(from, None, None).options().unwrap_err().field, "to");
        let over = Some(Decimal::new(11, 0));
        assert_eq!(
            spec(from + hour, over, None).options().unwrap_err().field,
            "margin"
        );
        assert_eq!(
            spec(from + hour, None, Some(25))
                .options()
                .unwrap_err()
                .field,
            "peak_hours"
        );
        let ok = spec(from + hour, None, None).options().unwrap();
        assert_eq!((ok.margin, ok.peak_hours), (Decimal::new(30, 2), 3));
    }
}
