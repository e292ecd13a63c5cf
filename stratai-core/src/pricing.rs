//! Pricing: what a request costs us (provider price table) and what we bill (tier rates).
//!
//! # Rounding rule
//!
//! Both amounts of a usage record are computed exactly in [`Decimal`] as
//! `input_tokens × input_rate / 1 000 000 + output_tokens × output_rate / 1 000 000` and rounded
//! **once per record, to 6 decimal places, half away from zero** (the `DECIMAL(10,6)` of the
//! seed's `usage_records`). Sums (aggregates, budgets) add the rounded record amounts and are
//! never rounded again; invoices round each line to cents (see [`crate::usage`]).
//!
//! Reservations are worst-case: [`reservation_estimate`] rounds **up** to 6 places so a
//! reservation is never smaller than the billed amount of the tokens it covers.
//!
//! Budgets count billed amounts (what the customer pays), not provider cost.

use std::collections::BTreeMap;

use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};

use crate::error::ValidationError;
use crate::gateway::{ChatMessage, TokenUsage};
use crate::ids::ModelId;
use crate::money::Money;
use crate::tiers::ModelTier;

/// Decimal places of a record's amounts.
pub const RECORD_DP: u32 = 6;

/// Output cap assumed for a model the price table does not know.
pub const FALLBACK_OUTPUT_CAP: u32 = 4_096;

/// A provider's list price for a model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderPrice {
    /// $ per 1M input tokens.
    pub input_per_million: Decimal,
    /// $ per 1M output tokens.
    pub output_per_million: Decimal,
    /// The model's maximum output tokens, used when a request sets no `max_tokens`.
    pub max_output_tokens: u32,
}

impl ProviderPrice {
    /// A validated price (non-negative rates, a positive output cap).
    pub fn new(
        input_per_million: Decimal,
        output_per_million: Decimal,
        max_output_tokens: u32,
    ) -> Result<Self, ValidationError> {
        let price = Self {
            input_per_million,
            output_per_million,
            max_output_tokens,
        };
        price.validate()?;
        Ok(price)
    }

    /// Checks the rules of [`ProviderPrice::new`].
    pub fn validate(&self) -> Result<(), ValidationError> {
        for (field, rate) in [
            ("input_per_million", self.input_per_million),
            ("output_per_million", self.output_per_million),
        ] {
            if rate.is_sign_negative() && !rate.is_zero() {
                return Err(ValidationError::new(field, format!("`{rate}` is negative")));
            }
        }
        if self.max_output_tokens == 0 {
            return Err(ValidationError::new(
                "max_output_tokens",
                "`0` must be positive",
            ));
        }
        Ok(())
    }
}

/// What a pricing computation can fail with.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PricingError {
    /// The price table has no entry for the model.
    #[error("no provider price for model `{0}`")]
    UnknownModel(ModelId),
    /// A product overflowed (absurd token counts or rates).
    #[error("amount overflow pricing model `{0}`")]
    Overflow(ModelId),
}

/// Provider prices by model. [`PriceTable::seed_defaults`] holds list prices for every model
/// of the seed's catalog; deployments replace or extend it (e.g. from configuration or LiteLLM's
/// model info) with [`PriceTable::set`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PriceTable {
    prices: BTreeMap<ModelId, ProviderPrice>,
}

impl PriceTable {
    /// An empty table.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Providers' published list prices (USD per 1M tokens, standard tier, no caching or
    /// batch discounts) and output caps for the seed's 13 models, as known when this table was
    /// written. `gemini-2.0-pro` was only offered as an experimental model; its entry uses
    /// Gemini 1.5 Pro's price as a stand-in. Check current prices before billing on them.
    #[must_use]
    pub fn seed_defaults() -> Self {
        let d = |cents: i64| Decimal::new(cents, 2);
        let rows: [(&'static str, Decimal, Decimal, u32); 13] = [
            ("claude-3-5-haiku-20241022", d(80), d(400), 8_192),
            ("gpt-4o-mini", d(15), d(60), 16_384),
            ("gemini-2.0-flash", d(10), d(40), 8_192),
            ("claude-sonnet-4-20250514", d(300), d(1_500), 64_000),
            ("claude-3-7-sonnet-20250219", d(300), d(1_500), 64_000),
            ("gpt-4o", d(250), d(1_000), 16_384),
            ("gpt-4.5-preview", d(7_500), d(15_000), 16_384),
            ("gemini-2.0-pro", d(125), d(500), 8_192),
            ("claude-opus-4-5-20251101", d(500), d(2_500), 64_000),
            ("gpt-5.1", d(125), d(1_000), 128_000),
            ("gpt-5.2", d(175), d(1_400), 128_000),
            ("o1", d(1_500), d(6_000), 100_000),
            ("o3", d(200), d(800), 100_000),
        ];
        let prices = rows
            .into_iter()
            .map(|(model, input, output, cap)| {
                (
                    ModelId::from_static(model),
                    ProviderPrice {
                        input_per_million: input,
                        output_per_million: output,
                        max_output_tokens: cap,
                    },
                )
            })
            .collect();
        Self { prices }
    }

    /// Sets (or replaces) a model's price.
    pub fn set(&mut self, model: ModelId, price: ProviderPrice) -> Result<(), ValidationError> {
        price.validate().map_err(|e| e.within(model.as_str()))?;
        self.prices.insert(model, price);
        Ok(())
    }

    /// A model's price.
    #[must_use]
    pub fn get(&self, model: &ModelId) -> Option<&ProviderPrice> {
        self.prices.get(model)
    }

    /// Every entry, by model.
    pub fn iter(&self) -> impl Iterator<Item = (&ModelId, &ProviderPrice)> {
        self.prices.iter()
    }

    /// The output cap assumed for a request without `max_tokens`.
    #[must_use]
    pub fn output_cap(&self, model: &ModelId) -> u32 {
        self.get(model)
            .map_or(FALLBACK_OUTPUT_CAP, |p| p.max_output_tokens)
    }

    /// What the provider charges for `input`/`output` tokens of `model`, rounded once to
    /// 6 places.
    pub fn provider_cost(
        &self,
        model: &ModelId,
        input_tokens: u32,
        output_tokens: u32,
    ) -> Result<Money, PricingError> {
        let price = self
            .get(model)
            .ok_or_else(|| PricingError::UnknownModel(model.clone()))?;
        token_amount(
            input_tokens,
            price.input_per_million,
            output_tokens,
            price.output_per_million,
            RoundingStrategy::MidpointAwayFromZero,
        )
        .ok_or_else(|| PricingError::Overflow(model.clone()))
    }
}

/// `in × in_rate / 1M + out × out_rate / 1M`, rounded to [`RECORD_DP`] with `strategy`; `None`
/// on overflow. Negative rates (impossible after validation) price at zero rather than
/// producing negative money.
fn token_amount(
    input_tokens: u32,
    input_rate: Decimal,
    output_tokens: u32,
    output_rate: Decimal,
    strategy: RoundingStrategy,
) -> Option<Money> {
    let million = Decimal::from(1_000_000u32);
    let input = Decimal::from(input_tokens).checked_mul(input_rate.max(Decimal::ZERO))?;
    let output = Decimal::from(output_tokens).checked_mul(output_rate.max(Decimal::ZERO))?;
    let total = input.checked_add(output)?.checked_div(million)?;
    Money::new(
        total
            .round_dp_with_strategy(RECORD_DP, strategy)
            .normalize(),
    )
    .ok()
}

/// What StratAI bills for `input`/`output` tokens at `tier`'s rates, rounded once to 6 places.
/// Saturates at the largest amount on absurd inputs rather than failing.
#[must_use]
pub fn billed_amount(tier: &ModelTier, input_tokens: u32, output_tokens: u32) -> Money {
    token_amount(
        input_tokens,
        tier.input_rate_per_million,
        output_tokens,
        tier.output_rate_per_million,
        RoundingStrategy::MidpointAwayFromZero,
    )
    .unwrap_or(Money::new(Decimal::MAX).unwrap_or(Money::ZERO))
}

/// Both amounts of one record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CostBreakdown {
    /// What the provider charges.
    pub provider_cost: Money,
    /// What we bill.
    pub billed_amount: Money,
}

impl CostBreakdown {
    /// Billed minus provider cost; negative when the tier's rate is below the provider's price.
    #[must_use]
    pub fn margin(&self) -> Decimal {
        self.billed_amount.amount() - self.provider_cost.amount()
    }
}

/// Prices a completed request: provider cost from the table, billed amount from the tier.
pub fn price_usage(
    table: &PriceTable,
    tier: &ModelTier,
    model: &ModelId,
    usage: &TokenUsage,
) -> Result<CostBreakdown, PricingError> {
    Ok(CostBreakdown {
        provider_cost: table.provider_cost(model, usage.prompt_tokens, usage.completion_tokens)?,
        billed_amount: billed_amount(tier, usage.prompt_tokens, usage.completion_tokens),
    })
}

/// The worst-case billed cost of a request, to reserve against budgets: the prompt tokens
/// (give it [`prompt_token_bound`] for a bound) at the tier's input rate plus `max_tokens` (or, without it, the model's output cap from the
/// table, [`FALLBACK_OUTPUT_CAP`] for unknown models) at the tier's output rate. Rounded up to
/// 6 places. A `max_tokens` above the model's cap is clamped to the cap, since the model cannot
/// produce more.
#[must_use]
pub fn reservation_estimate(
    table: &PriceTable,
    tier: &ModelTier,
    model: &ModelId,
    prompt_tokens: u32,
    max_tokens: Option<u32>,
) -> Money {
    let output = output_token_bound(table, model, max_tokens);
    token_amount(
        prompt_tokens,
        tier.input_rate_per_million,
        output,
        tier.output_rate_per_million,
        RoundingStrategy::AwayFromZero,
    )
    .unwrap_or(Money::new(Decimal::MAX).unwrap_or(Money::ZERO))
}

/// A rough token count for text: one token per 4 characters (Unicode scalar values), rounded
/// up. English prose averages about 4 characters per token with OpenAI's and Anthropic's
/// tokenizers; code and non-Latin scripts use more tokens per character, so treat this as an
/// estimate for reservations and guardrail pre-checks, never for billing (billing uses the
/// provider's reported usage).
#[must_use]
pub fn estimate_tokens(text: &str) -> u32 {
    let chars = text.chars().count();
    u32::try_from(chars.div_ceil(4)).unwrap_or(u32::MAX)
}

/// Per-message framing overhead of chat formats (role markers and separators).
pub const MESSAGE_OVERHEAD_TOKENS: u32 = 4;

/// Tokens priming the assistant's reply.
pub const REPLY_PRIMING_TOKENS: u32 = 3;

/// A rough prompt size for chat messages: [`estimate_tokens`] of each role and content, plus
/// [`MESSAGE_OVERHEAD_TOKENS`] per message and [`REPLY_PRIMING_TOKENS`] once.
#[must_use]
pub fn estimate_prompt_tokens(messages: &[ChatMessage]) -> u32 {
    messages
        .iter()
        .map(|m| {
            estimate_tokens(&m.role)
                .saturating_add(estimate_tokens(&m.content))
                .saturating_add(MESSAGE_OVERHEAD_TOKENS)
        })
        .fold(REPLY_PRIMING_TOKENS, u32::saturating_add)
}

/// An upper bound on the tokens of `text` under any byte-level BPE tokenizer (OpenAI's
/// `cl100k`/`o200k`, Anthropic's, Llama 3's, Mistral's Tekken): its UTF-8 length in bytes.
///
/// Why it is a bound: a byte-level BPE tokenizer starts from one token per byte and only ever
/// merges adjacent tokens, so no text encodes to more tokens than it has bytes (special tokens
/// are not produced from user text; they are the chat format's framing, counted apart by
/// [`prompt_token_bound`]). Real prose is about 4 bytes per token, so the bound reserves about
/// four times the typical prompt cost; outputs (bounded by `max_tokens`) usually dominate.
#[must_use]
pub fn text_token_bound(text: &str) -> u32 {
    u32::try_from(text.len()).unwrap_or(u32::MAX)
}

/// An upper bound on the prompt tokens a provider can bill for `messages`: the
/// [`text_token_bound`] of each role and content, plus [`MESSAGE_OVERHEAD_TOKENS`] per message
/// for the chat format's framing (OpenAI's ChatML uses 3 special tokens per message plus the
/// role, Anthropic's and Llama's templates at most 4) and [`REPLY_PRIMING_TOKENS`] once. This is
/// what budget reservations count, so a settlement is never above its reservation unless the
/// provider bills beyond its own tokenizer (the gatekeeper records that as overage).
#[must_use]
pub fn prompt_token_bound(messages: &[ChatMessage]) -> u32 {
    messages
        .iter()
        .map(|m| {
            text_token_bound(&m.role)
                .saturating_add(text_token_bound(&m.content))
                .saturating_add(MESSAGE_OVERHEAD_TOKENS)
        })
        .fold(REPLY_PRIMING_TOKENS, u32::saturating_add)
}

/// The most output tokens a request can produce: `max_tokens` clamped to the model's output
/// cap, or the cap when it is absent (see [`PriceTable::output_cap`]). The gatekeeper sends
/// this value upstream as the request's `max_tokens`, so the provider cannot produce more.
#[must_use]
pub fn output_token_bound(table: &PriceTable, model: &ModelId, max_tokens: Option<u32>) -> u32 {
    let cap = table.output_cap(model);
    max_tokens.map_or(cap, |m| m.min(cap))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tiers::{TierCatalog, default_tiers};
    use proptest::prelude::*;

    fn model(m: &str) -> ModelId {
        ModelId::new(m).unwrap()
    }

    fn money(s: &str) -> Money {
        Money::parse(s).unwrap()
    }

    #[test]
    fn every_catalog_model_has_a_default_price() {
        let table = PriceTable::seed_defaults();
        for tier in default_tiers() {
            for m in &tier.models {
                let p = table.get(m).unwrap_or_else(|| panic!("no price for {m}"));
                p.validate().unwrap();
            }
        }
        assert_eq!(table.iter().count(), 13);
        for (m, _) in table.iter() {
            ModelId::new(m.as_str()).unwrap();
        }
    }

    #[test]
    fn billed_and_provider_amounts() {
        let catalog = TierCatalog::seed_default();
        let opus = model("claude-opus-4-5-20251101");
        let premium = catalog.tier_of_model(&opus).unwrap();
        // 1 200 in × $20/M + 350 out × $80/M = 0.024 + 0.028
        assert_eq!(billed_amount(premium, 1_200, 350), money("0.052"));
        // Provider: 1 200 × $5/M + 350 × $25/M = 0.006 + 0.00875
        let table = PriceTable::seed_defaults();
        assert_eq!(
            table.provider_cost(&opus, 1_200, 350).unwrap(),
            money("0.01475")
        );
        let usage = TokenUsage {
            prompt_tokens: 1_200,
            completion_tokens: 350,
            total_tokens: 1_550,
        };
        let c = price_usage(&table, premium, &opus, &usage).unwrap();
        assert_eq!(c.margin().to_string(), "0.03725");
        assert!(matches!(
            table.provider_cost(&model("gpt-7"), 1, 1),
            Err(PricingError::UnknownModel(_))
        ));
    }

    #[test]
    fn rounding_is_once_per_record_half_away_from_zero() {
        let catalog = TierCatalog::seed_default();
        let basic = catalog
            .by_slug(&crate::ids::TierSlug::new("basic").unwrap())
            .unwrap();
        // 1 input token at $0.50/M = 0.0000005 -> 0.000001 (half away from zero)
        assert_eq!(billed_amount(basic, 1, 0), money("0.000001"));
        // 3 tokens = 0.0000015 -> 0.000002
        assert_eq!(billed_amount(basic, 3, 0), money("0.000002"));
        // Zero tokens cost nothing.
        assert_eq!(billed_amount(basic, 0, 0), Money::ZERO);
    }

    #[test]
    fn reservation_is_worst_case_and_rounds_up() {
        let catalog = TierCatalog::seed_default();
        let table = PriceTable::seed_defaults();
        let opus = model("claude-opus-4-5-20251101");
        let premium = catalog.tier_of_model(&opus).unwrap();
        // 100 prompt + 1000 max at $20/$80 per M = 0.002 + 0.08
        assert_eq!(
            reservation_estimate(&table, premium, &opus, 100, Some(1_000)),
            money("0.082")
        );
        // No max_tokens: the model's cap (64 000) at $80/M = 5.12 (+ prompt)
        assert_eq!(
            reservation_estimate(&table, premium, &opus, 100, None),
            money("5.122")
        );
        // A max_tokens above the cap is clamped.
        assert_eq!(
            reservation_estimate(&table, premium, &opus, 100, Some(1_000_000)),
            money("5.122")
        );
        // Rounds up: 1 token at $0.50/M reserves 0.000001.
        let basic = catalog.tier_of_model(&model("gpt-4o-mini")).unwrap();
        assert_eq!(
            reservation_estimate(&table, basic, &model("gpt-4o-mini"), 1, Some(0)),
            money("0.000001")
        );
        // Unknown models fall back to the default cap.
        assert_eq!(table.output_cap(&model("mystery")), FALLBACK_OUTPUT_CAP);
    }

    #[test]
    fn price_table_is_replaceable_and_validated() {
        let mut table = PriceTable::new();
        let m = model("gpt-4o");
        assert!(
            table
                .set(
                    m.clone(),
                    ProviderPrice {
                        input_per_million: Decimal::new(-1, 0),
                        output_per_million: Decimal::ONE,
                        max_output_tokens: 1
                    }
                )
                .is_err()
        );
        table
            .set(
                m.clone(),
                ProviderPrice::new(Decimal::ONE, Decimal::TWO, 10).unwrap(),
            )
            .unwrap();
        assert_eq!(
            table.provider_cost(&m, 1_000_000, 1_000_000).unwrap(),
            money("3")
        );
        let json = serde_json::to_string(&table).unwrap();
        assert_eq!(serde_json::from_str::<PriceTable>(&json).unwrap(), table);
    }

    #[test]
    fn token_estimates() {
        assert_eq!(estimate_tokens(""), 0);
        assert_eq!(estimate_tokens("abcd"), 1);
        assert_eq!(estimate_tokens("abcde"), 2);
        assert_eq!(estimate_tokens("日本語"), 1);
        let msgs = [ChatMessage {
            role: "user".into(),
            content: "Hello there, world!".into(),
        }];
        // 1 (role) + 5 (19 chars) + 4 overhead + 3 priming
        assert_eq!(estimate_prompt_tokens(&msgs), 13);
        assert_eq!(estimate_prompt_tokens(&[]), REPLY_PRIMING_TOKENS);
        // The bound counts bytes: 4 (role) + 19 + 4 overhead + 3 priming.
        assert_eq!(prompt_token_bound(&msgs), 30);
        assert_eq!(text_token_bound("日本語"), 9);
        assert_eq!(prompt_token_bound(&[]), REPLY_PRIMING_TOKENS);
    }

    #[test]
    fn output_bound_is_max_tokens_clamped_to_the_cap() {
        let table = PriceTable::seed_defaults();
        let opus = model("claude-opus-4-5-20251101");
        assert_eq!(output_token_bound(&table, &opus, Some(10)), 10);
        assert_eq!(output_token_bound(&table, &opus, None), 64_000);
        assert_eq!(output_token_bound(&table, &opus, Some(1_000_000)), 64_000);
        assert_eq!(
            output_token_bound(&table, &model("mystery"), None),
            FALLBACK_OUTPUT_CAP
        );
    }

    proptest! {
        #[test]
        fn costs_are_never_negative_and_reservations_cover_actuals(
            tier_idx in 0usize..3,
            model_idx in 0usize..5,
            prompt in 0u32..2_000_000,
            out in 0u32..200_000,
            extra in 0u32..1000,
        ) {
            let tiers = default_tiers();
            let tier = &tiers[tier_idx];
            let m = &tier.models[model_idx % tier.models.len()];
            let table = PriceTable::seed_defaults();
            let billed = billed_amount(tier, prompt, out);
            let cost = table.provider_cost(m, prompt, out).unwrap();
            prop_assert!(billed >= Money::ZERO && cost >= Money::ZERO);
            prop_assert!(billed.amount().scale() <= RECORD_DP && cost.amount().scale() <= RECORD_DP);
            // Reserving for at least the produced output covers the billed amount.
            let reserved = reservation_estimate(&table, tier, m, prompt, Some(out.saturating_add(extra)));
            let produced = out.min(table.output_cap(m));
            prop_assert!(reserved >= billed_amount(tier, prompt, produced));
        }

        /// The bound is above every cheaper count of the same text: the characters / 4
        /// estimate, characters, and whitespace-separated words (the demo provider's tokens).
        #[test]
        fn prompt_bound_is_above_every_other_count(
            texts in proptest::collection::vec(".{0,80}", 0..5),
        ) {
            let messages: Vec<ChatMessage> = texts
                .iter()
                .map(|t| ChatMessage { role: "user".into(), content: t.clone() })
                .collect();
            let bound = prompt_token_bound(&messages);
            prop_assert!(bound >= estimate_prompt_tokens(&messages));
            for t in &texts {
                prop_assert!(text_token_bound(t) as usize >= t.chars().count());
                prop_assert!(text_token_bound(t) as usize >= t.split_whitespace().count());
            }
        }
    }
}
