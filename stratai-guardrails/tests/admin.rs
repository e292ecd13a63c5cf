#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The rule administration (`stratai_guardrails::admin`) on the memory store over the
//! first-start seed: rules refused before they are stored, and the budgets of `budget_limit`
//! rules kept in step with the rules and listed with the rule they enforce.

mod common;

use chrono::Utc;
use serde_json::json;
use stratai_core::ports::{RuleAction, RuleScope};
use stratai_core::{GroupId, OpError};
use stratai_guardrails::admin;
use stratai_store::Stores;
use stratai_store::seed::seed;

#[tokio::test]
async fn a_budget_limit_rule_is_listed_with_its_budget_until_it_goes() {
    let stores = Stores::memory();
    let report = seed(&stores, "admin@localhost").await.unwrap();
    let org = report.internal_org.id;
    let me = report.super_admin.id;
    let rule = common::record(
        1,
        "daily cap",
        "budget_limit",
        json!({"amount": "3.00", "period": "day"}),
        RuleScope::Org { org_id: org },
        RuleAction::Block,
    );
    admin::check_rule(&rule).unwrap();
    stores.guardrails.put_rule(org, &rule).await.unwrap();
    admin::sync_org_rule_budgets(stores.guardrails.as_ref(), stores.budgets.as_ref(), org)
        .await
        .unwrap();

    let listed = admin::list_budgets(
        stores.guardrails.as_ref(),
        stores.budgets.as_ref(),
        org,
        Some("org"),
        Utc::now(),
    )
    .await
    .unwrap();
    let enforcing: Vec<_> = listed
        .iter()
        .filter_map(|b| b.guardrail_rule.as_ref())
        .collect();
    assert_eq!(enforcing.len(), 1);
    assert_eq!(enforcing[0].id, rule.id);
    assert_eq!(listed.len(), 2, "the seed's org budget and the rule's");

    let mine = admin::member_budgets(
        stores.guardrails.as_ref(),
        stores.budgets.as_ref(),
        org,
        me,
        &[],
        Utc::now(),
    )
    .await
    .unwrap();
    assert!(mine.iter().any(|b| b.guardrail_rule.is_some()));

    stores.guardrails.delete_rule(org, rule.id).await.unwrap();
    admin::sync_org_rule_budgets(stores.guardrails.as_ref(), stores.budgets.as_ref(), org)
        .await
        .unwrap();
    let listed = admin::list_budgets(
        stores.guardrails.as_ref(),
        stores.budgets.as_ref(),
        org,
        None,
        Utc::now(),
    )
    .await
    .unwrap();
    assert!(listed.iter().all(|b| b.guardrail_rule.is_none()));

    let refused = admin::list_budgets(
        stores.guardrails.as_ref(),
        stores.budgets.as_ref(),
        org,
        Some("team"),
        Utc::now(),
    )
    .await
    .unwrap_err();
    assert!(matches!(refused, OpError::Invalid(f) if f[0].field == "scope"));
}

#[tokio::test]
async fn rules_are_refused_with_the_field_at_fault() {
    let stores = Stores::memory();
    let report = seed(&stores, "admin@localhost").await.unwrap();
    let org = report.internal_org.id;
    let bad = common::record(
        2,
        "filter",
        "content_filter",
        json!({"blocked_patterns": ["("]}),
        RuleScope::Org { org_id: org },
        RuleAction::Block,
    );
    let Err(OpError::Invalid(fields)) = admin::check_rule(&bad) else {
        panic!("accepted")
    };
    assert!(fields[0].field.starts_with("config."), "{fields:?}");

    let scope = RuleScope::Group {
        org_id: org,
        group_id: GroupId::new(),
    };
    let refused = admin::check_org_scope(
        stores.directory.as_ref(),
        stores.tiers.as_ref(),
        org,
        &scope,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(refused, OpError::Invalid(f) if f[0].field == "scope.group_id" && f[0].reason == "unknown group in this organization")
    );
    assert!(matches!(
        admin::platform_rule(stores.guardrails.as_ref(), bad.id).await,
        Err(OpError::NotFound(_))
    ));
}
