#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Parsing never panics, whatever the stored JSON says.

use chrono::{DateTime, Utc};
use proptest::prelude::*;
use serde_json::{Map, Value};
use stratai_core::RuleId;
use stratai_core::ports::{RuleAction, RuleRecord, RuleScope};
use stratai_guardrails::{Rule, RuleType};

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        // strings that look like the things configs hold, and arbitrary ones
        prop_oneof![
            "[a-z_]{0,12}",
            "(\\\\d|\\.|\\*|\\+|\\(|\\)|\\[|\\]|\\{|\\}|[a-z0-9,]){0,20}",
            "[0-9]{1,2}:[0-9]{1,2}",
            any::<String>(),
        ]
        .prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        let keys = prop_oneof![
            Just("models".to_owned()),
            Just("max_input".to_owned()),
            Just("max_output".to_owned()),
            Just("requests".to_owned()),
            Just("period".to_owned()),
            Just("bucket".to_owned()),
            Just("blocked_topics".to_owned()),
            Just("blocked_patterns".to_owned()),
            Just("prepend".to_owned()),
            Just("append".to_owned()),
            Just("format_note".to_owned()),
            Just("amount".to_owned()),
            Just("timezone".to_owned()),
            Just("allowed_days".to_owned()),
            Just("allowed_hours".to_owned()),
            Just("start".to_owned()),
            Just("end".to_owned()),
            "[a-z]{1,6}",
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((keys, inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn arb_action() -> impl Strategy<Value = RuleAction> {
    prop_oneof![
        Just(RuleAction::Log),
        Just(RuleAction::Warn),
        Just(RuleAction::Modify),
        Just(RuleAction::Block),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn parsing_arbitrary_configs_never_panics(
        type_index in 0usize..9,
        config in arb_json(),
        action in arb_action(),
        name in any::<String>(),
    ) {
        let rule_type = RuleType::ALL
            .get(type_index)
            .map_or("not_a_type", |t| t.as_str());
        let record = RuleRecord {
            id: RuleId::new(),
            name,
            description: None,
            rule_type: rule_type.to_owned(),
            config,
            scope: RuleScope::Global,
            action,
            priority: 0,
            active: true,
            created_at: DateTime::<Utc>::UNIX_EPOCH,
        };
        match Rule::from_record(&record) {
            Ok(rule) => prop_assert_eq!(rule.rule_type().as_str(), rule_type),
            Err(err) => {
                prop_assert!(!err.field.is_empty());
                prop_assert!(!err.reason.is_empty());
            }
        }
    }
}
