//! The one decision over HTTP, on SQLite and PostgreSQL: `/api/explain` answers what the chat
//! route does (the same load and `decide`), and the reserved worst case is a bound, so a hard
//! budget is never billed beyond its limit, even by prompts dense in tokens.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod harness;

use chrono::Utc;
use harness::*;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use stratai_core::UserId;
use stratai_core::budget::{BudgetScope, rule_budget_id};
use stratai_core::ids::RequestId;
use stratai_core::money::Money;
use stratai_core::ports::RuleAction;
use stratai_core::tiers::BASIC_TIER_ID;
use stratai_core::usage::{UsageQuery, UsageRecord};
use stratai_server::demo_provider::DemoConfig;
use stratai_testkit::usage_record;

on_both!(
    explain_answers_the_chat_refusal_of_a_budget_limit_rule_with_spend,
    dense_prompts_never_bill_a_hard_budget_beyond_its_limit,
    the_readme_sessions_budget_admits_three_then_refuses,
);

fn spent(org: stratai_core::OrgId, user: UserId, billed: &str) -> UsageRecord {
    usage_record(org, user)
        .tier(BASIC_TIER_ID)
        .model(MODEL)
        .tokens(100, 100)
        .spent(billed)
        .build()
}

/// The reproduction: an organization `budget_limit` rule of $0.0002 a day after
/// $0.000225 of spend blocks every chat, and explain for the same member, model and request
/// answers the same refusal with the same reasons (it used to count the spend as $0).
async fn explain_answers_the_chat_refusal_of_a_budget_limit_rule_with_spend(db: Db) {
    let Some(gw) = spawn(db, DemoConfig::default()).await else {
        return;
    };
    let t = tenant(&gw, 1).await;
    let (user, tok) = &t.users[0];
    let cap = rule(
        &gw,
        t.org,
        "daily cap",
        "budget_limit",
        json!({"amount": "0.0002", "period": "day"}),
        RuleAction::Block,
    )
    .await;
    let mut body = ask(MODEL, "hello");
    body["max_tokens"] = json!(20);
    // Below the cap, the same request is allowed by both.
    let before = explain(&gw, tok, body.clone()).await;
    assert_eq!(before["outcome"], "allow", "{before}");
    // The rule counts what its ledger budget counts (put there by the decision above): an
    // earlier $0.000225 of the member's, settled on it.
    gw.stores
        .budgets
        .settle(
            t.org,
            RequestId::new(),
            &[rule_budget_id(t.org, cap)],
            Money::parse("0.000225").unwrap(),
            Utc::now(),
        )
        .await
        .unwrap();
    gw.stores
        .usage
        .append(t.org, &[spent(t.org, *user, "0.000225")])
        .await
        .unwrap();
    for _ in 0..3 {
        let a = chat(&gw, tok, body.clone()).await;
        assert_eq!(a.status, 403, "{}", a.body);
        assert_eq!(a.body["error"]["code"], "guardrail_blocked");
        assert_eq!(a.body["error"]["rule"], "daily cap");
        let e = explain(&gw, tok, body.clone()).await;
        assert_eq!(e["outcome"], "deny", "{e}");
        assert_eq!(e["code"], a.body["error"]["code"], "{e}");
        assert_eq!(e["message"], a.body["error"]["message"], "{e}");
        // The chat error's reasons are explain's, after the model access line.
        let chat_reasons: Vec<&Value> = a.body["error"]["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| &r["message"])
            .collect();
        let explain_reasons: Vec<&Value> = e["reasons"].as_array().unwrap().iter().collect();
        assert_eq!(
            explain_reasons[0],
            &json!(format!("model `{MODEL}` is in the accessible basic tier"))
        );
        assert_eq!(explain_reasons[1..], chat_reasons[..], "{e}");
        assert!(
            chat_reasons[0]
                .as_str()
                .unwrap()
                .contains("spend of $0.000225"),
            "{chat_reasons:?}"
        );
    }
}

/// The second reproduction: a user budget of $0.00028 and chats of 200 x "a " with
/// `max_tokens` 1. The reservation used to count 4 characters a token while the provider
/// counts a token a word, so three or more were admitted and billed past the limit. The bound
/// (bytes plus framing) admits only what can be paid for.
async fn dense_prompts_never_bill_a_hard_budget_beyond_its_limit(db: Db) {
    let Some(gw) = spawn(db, DemoConfig::default()).await else {
        return;
    };
    let t = tenant(&gw, 1).await;
    let (user, tok) = &t.users[0];
    let limit = Decimal::new(28, 5);
    let b = budget(&gw, t.org, BudgetScope::User(*user), "0.00028", true).await;
    let mut body = ask(MODEL, &"a ".repeat(200));
    body["max_tokens"] = json!(1);
    let (mut admitted, mut refused, mut billed) = (0, 0, Decimal::ZERO);
    for _ in 0..8 {
        let a = chat(&gw, tok, body.clone()).await;
        match a.status {
            200 => {
                admitted += 1;
                billed += billed_header(&a.headers);
            }
            429 => {
                refused += 1;
                assert_eq!(a.body["error"]["code"], "insufficient_quota", "{}", a.body);
            }
            other => panic!("unexpected {other}: {}", a.body),
        }
    }
    assert!(
        admitted >= 1 && refused >= 1,
        "{admitted} admitted, {refused} refused"
    );
    assert!(
        billed <= limit,
        "billed {billed} against a limit of {limit}"
    );
    let state = budget_state(&gw, t.org, b.id).await;
    assert!(state.spent.amount() <= limit, "{state:?}");
    assert_eq!(state.reserved, Money::ZERO);
    let records = gw
        .stores
        .usage
        .query(t.org, &UsageQuery::default(), 100)
        .await
        .unwrap();
    let recorded: Decimal = records.iter().map(|r| r.billed_amount.amount()).sum();
    assert_eq!(recorded, billed);
    assert_eq!(state.spent.amount(), billed, "nothing beyond a reservation");
    assert!(records.iter().all(|r| r.overage == Money::ZERO));
}

/// The README's session, step 5: a user budget of $0.00022 and "Hello again" with
/// `max_tokens` 50 (worst case $0.000111, billed $0.000045 each): 200 200 200 429 429.
async fn the_readme_sessions_budget_admits_three_then_refuses(db: Db) {
    let Some(gw) = spawn(db, DemoConfig::default()).await else {
        return;
    };
    let t = tenant(&gw, 1).await;
    let (user, tok) = &t.users[0];
    budget(&gw, t.org, BudgetScope::User(*user), "0.00022", true).await;
    let mut body = ask(MODEL, "Hello again");
    body["max_tokens"] = json!(50);
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(chat(&gw, tok, body.clone()).await.status);
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429]);
}
