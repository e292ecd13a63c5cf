#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Property tests: money round-trips exactly through LiteLLM's JSON, secrets never survive
//! redaction into errors, and spend comparison finds exactly the injected gaps.

use proptest::prelude::*;
use rust_decimal::Decimal;
use stratai_core::Money;
use stratai_core::ids::{OrgId, UserId};
use stratai_core::usage::UsageRecord;
use stratai_litellm::sync::compare_spend;
use stratai_litellm::{KeyGenerate, KeyInfo, SpendLogRow};

fn record(id: &str, cost: Decimal) -> UsageRecord {
    stratai_testkit::usage_record(OrgId::new(), UserId::new())
        .model("mock-gpt")
        .tokens(1, 1)
        .spent(Money::new(cost).unwrap())
        .litellm_request_id(id)
        .endpoint("/v1/chat/completions")
        .build()
}

fn amount() -> impl Strategy<Value = Decimal> {
    // Up to 12 integer digits and 17 decimals, like LiteLLM's float dollars.
    (0u64..1_000_000_000_000u64, 0u32..=17)
        .prop_map(|(mantissa, scale)| Decimal::new(mantissa as i64, scale))
}

proptest! {
    #[test]
    fn money_round_trips_exactly_through_json(budget in amount()) {
        // What the client sends is a JSON number with the decimal's own digits...
        let sent = serde_json::to_string(&KeyGenerate { max_budget: Some(budget), ..KeyGenerate::default() }).unwrap();
        prop_assert_eq!(&sent, &format!(r#"{{"max_budget":{}}}"#, budget.normalize()));
        // ...and an answer carrying that number parses back to the same decimal, without f64.
        let info: KeyInfo = serde_json::from_str(&sent).unwrap();
        prop_assert_eq!(info.max_budget, Some(budget.normalize()));
    }

    #[test]
    fn spend_comparison_reports_exactly_the_dropped_rows(costs in proptest::collection::vec(amount(), 1..40), drop_every in 2usize..6) {
        let records: Vec<UsageRecord> = costs.iter().enumerate().map(|(i, c)| record(&format!("r{i}"), *c)).collect();
        let rows: Vec<SpendLogRow> = costs
            .iter()
            .enumerate()
            .filter(|(i, _)| i % drop_every != 0)
            .map(|(i, c)| serde_json::from_str(&format!(r#"{{"request_id":"r{i}","spend":{c},"status":"success"}}"#)).unwrap())
            .collect();
        let report = compare_spend(&records, &rows, Decimal::ZERO);
        let dropped = costs.len().div_ceil(drop_every);
        prop_assert_eq!(report.missing_in_litellm.len(), dropped);
        prop_assert_eq!(report.matched, costs.len() - dropped);
        prop_assert!(report.missing_in_stratai.is_empty());
        prop_assert!(report.cost_mismatches.is_empty());
        prop_assert_eq!(report.stratai_total, report.litellm_total);
    }

    #[test]
    fn scientific_and_plain_texts_agree(mantissa in 1i64..1_000_000, exp in 1u32..12) {
        let plain = Decimal::new(mantissa, exp);
        let text = format!("{mantissa}e-{exp}");
        prop_assert_eq!(stratai_litellm::decimal::parse_decimal(&text), Some(plain));
        prop_assert_eq!(stratai_litellm::decimal::parse_decimal(&plain.to_string()), Some(plain));
    }

    #[test]
    fn timestamps_parse_in_every_rfc3339_spelling(secs in 0i64..4_000_000_000, micros in 0u32..1_000_000) {
        let t = chrono::DateTime::from_timestamp(secs, micros * 1000).unwrap();
        for text in [
            t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
            t.format("%Y-%m-%dT%H:%M:%S%.6f+00:00").to_string(),
            t.format("%Y-%m-%d %H:%M:%S%.6f").to_string(),
        ] {
            prop_assert_eq!(stratai_litellm::time::parse_timestamp(&text), Some(t), "{}", text);
        }
    }
}
