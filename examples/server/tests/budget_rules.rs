//! `budget_limit` guardrail rules over HTTP, on SQLite and PostgreSQL: each rule is enforced
//! through a ledger budget of its scope and period, reserved at admission like every budget,
//! so concurrent chats cannot pass it together; a group rule counts every member's requests
//! (whatever group a request is attributed to); the budget follows the rule through the
//! admin API, and members see it among their own budgets.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod harness;

use chrono::{DateTime, Utc};
use harness::*;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use stratai_core::budget::rule_budget_id;
use stratai_core::directory::{
    Email, Group, GroupMembership, GroupRole, Membership, OrgRole, PlatformRole, User,
};
use stratai_core::ids::{GroupId, OrgId, RuleId};
use stratai_core::money::Money;
use stratai_core::ports::{RuleAction, RuleScope};
use stratai_core::usage::UsageQuery;

on_both!(
    concurrent_chats_never_pass_a_user_budget_limit_rule,
    a_group_rule_counts_every_members_requests_under_concurrency,
    the_rules_budget_follows_the_rule_and_members_see_it,
);

/// Fires `per_user` chats for each token at once; answers (status, billed) per chat. A
/// refusal must be the rule's (403 `guardrail_blocked`) or the ledger's (429).
async fn storm(gw: &Gw, tokens: &[String], per_user: usize, body: &Value) -> (usize, Decimal) {
    let mut calls = Vec::new();
    for tok in tokens {
        for _ in 0..per_user {
            calls.push(chat(gw, tok, body.clone()));
        }
    }
    let answers = futures::future::join_all(calls).await;
    let (mut admitted, mut billed) = (0, Decimal::ZERO);
    for a in answers {
        match a.status {
            200 => {
                admitted += 1;
                billed += billed_header(&a.headers);
            }
            403 => assert_eq!(a.body["error"]["code"], "guardrail_blocked", "{}", a.body),
            429 => assert_eq!(a.body["error"]["code"], "insufficient_quota", "{}", a.body),
            other => panic!("unexpected {other}: {}", a.body),
        }
    }
    (admitted, billed)
}

fn body() -> Value {
    let mut body = ask(MODEL, "hello");
    body["max_tokens"] = json!(20);
    body
}

/// Sum of the billed amounts of the organization's usage records.
async fn recorded(gw: &Gw, org: OrgId, query: &UsageQuery) -> Decimal {
    let records = gw.stores.usage.query(org, query, 1000).await.unwrap();
    records.iter().map(|r| r.billed_amount.amount()).sum()
}

/// 24 chats at once against a member rule of $0.0003 a day (a handful fit): spend never
/// passes the cap, to the exact decimal, and the rule's budget holds exactly what was billed.
async fn concurrent_chats_never_pass_a_user_budget_limit_rule(db: Db) {
    let Some(gw) = spawn(db, stratai_server::demo_provider::DemoConfig::default()).await else {
        return;
    };
    let t = tenant(&gw, 1).await;
    let (user, tok) = &t.users[0];
    let limit = Decimal::new(3, 4);
    let scope = RuleScope::User {
        org_id: t.org,
        user_id: *user,
    };
    let cap = rule_at(
        &gw,
        t.org,
        scope,
        "member cap",
        "budget_limit",
        json!({"amount": "0.0003", "period": "day"}),
        RuleAction::Block,
    )
    .await;
    let (mut admitted, mut billed) = storm(&gw, std::slice::from_ref(tok), 24, &body()).await;
    assert!((1..24).contains(&admitted), "{admitted} of 24 admitted");
    assert!(billed <= limit, "billed {billed} against a cap of {limit}");
    // Then one at a time until refused (what the concurrent reservations held back, beyond
    // what was billed, is room again): explain answers that refusal.
    let refused = loop {
        let a = chat(&gw, tok, body()).await;
        if a.status != 200 {
            break a;
        }
        admitted += 1;
        billed += billed_header(&a.headers);
        assert!(admitted < 100, "never refused");
    };
    let e = explain(&gw, tok, body()).await;
    assert_eq!(e["outcome"], "deny", "{e}");
    assert_eq!(
        e["code"], refused.body["error"]["code"],
        "{e} / {}",
        refused.body
    );
    assert!(billed <= limit, "billed {billed} against a cap of {limit}");
    let state = budget_state(&gw, t.org, rule_budget_id(t.org, cap)).await;
    assert_eq!(state.budget.limit.amount(), limit);
    assert!(state.budget.hard_limit, "a blocking rule's budget is hard");
    assert_eq!(state.reserved, Money::ZERO, "{state:?}");
    assert_eq!(state.spent.amount(), billed, "{state:?}");
    assert!(
        eventually(std::time::Duration::from_secs(10), || async {
            recorded(&gw, t.org, &UsageQuery::default()).await == billed
        })
        .await
    );
}

/// A member joining `group` (stores directly).
async fn join(gw: &Gw, org: OrgId, group: GroupId, user: stratai_core::UserId) {
    let gm = GroupMembership::new(org, group, user, GroupRole::Member, Utc::now());
    gw.stores
        .directory
        .put_group_member(org, &gm)
        .await
        .unwrap();
}

async fn group(gw: &Gw, org: OrgId, name: &str) -> GroupId {
    let g = Group::new(org, name, Utc::now()).unwrap();
    gw.stores.directory.create_group(org, &g).await.unwrap();
    g.id
}

/// Three members of a group with a $0.0004 daily rule chat at once, eight chats each; one
/// of them is also in a second group, to which their usage is attributed (the smaller id):
/// the rule counts the three members' combined spend all the same, and never passes it.
async fn a_group_rule_counts_every_members_requests_under_concurrency(db: Db) {
    let Some(gw) = spawn(db, stratai_server::demo_provider::DemoConfig::default()).await else {
        return;
    };
    let t = tenant(&gw, 3).await;
    let mut ids = [
        group(&gw, t.org, "Alpha").await,
        group(&gw, t.org, "Beta").await,
    ];
    ids.sort();
    let [first, capped] = ids;
    for (user, _) in &t.users {
        join(&gw, t.org, capped, *user).await;
    }
    let (multi, _) = t.users[0];
    join(&gw, t.org, first, multi).await;
    let limit = Decimal::new(4, 4);
    let scope = RuleScope::Group {
        org_id: t.org,
        group_id: capped,
    };
    let cap = rule_at(
        &gw,
        t.org,
        scope,
        "team cap",
        "budget_limit",
        json!({"amount": "0.0004", "period": "day"}),
        RuleAction::Block,
    )
    .await;
    let tokens: Vec<String> = t.users.iter().map(|(_, tok)| tok.clone()).collect();
    let (admitted, billed) = storm(&gw, &tokens, 8, &body()).await;
    assert!((1..24).contains(&admitted), "{admitted} of 24 admitted");
    assert!(billed <= limit, "billed {billed} against a cap of {limit}");
    let state = budget_state(&gw, t.org, rule_budget_id(t.org, cap)).await;
    assert_eq!(state.reserved, Money::ZERO, "{state:?}");
    assert_eq!(
        state.spent.amount(),
        billed,
        "every member's spend, whatever group it is attributed to"
    );
    // The member of both groups: attributed to the smaller id, as their LiteLLM key's team.
    let theirs = UsageQuery {
        user_id: Some(multi),
        ..UsageQuery::default()
    };
    assert!(
        eventually(std::time::Duration::from_secs(10), || async {
            recorded(&gw, t.org, &UsageQuery::default()).await == billed
        })
        .await
    );
    let records = gw.stores.usage.query(t.org, &theirs, 100).await.unwrap();
    assert!(
        records.iter().all(|r| r.group_id == Some(first)),
        "{records:?}"
    );
}

/// A dev token of a new admin of `org`.
async fn admin(gw: &Gw, org: OrgId) -> String {
    let email = format!(
        "admin-{}@acme.test",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let now = Utc::now();
    let user = User::new(Email::new(&email).unwrap(), None, PlatformRole::User, now).unwrap();
    gw.stores.directory.create_user(&user).await.unwrap();
    gw.stores
        .directory
        .add_member(org, &Membership::new(org, user.id, OrgRole::Admin, now))
        .await
        .unwrap();
    token(gw, &email).await
}

async fn send(
    gw: &Gw,
    method: reqwest::Method,
    path: &str,
    tok: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut r = gw
        .http
        .request(method, format!("{}{path}", gw.base))
        .bearer_auth(tok);
    if let Some(b) = body {
        r = r.json(&b);
    }
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// The entry of `GET /api/budgets` enforcing `rule`, if listed.
async fn listed(gw: &Gw, org: OrgId, tok: &str, rule: RuleId) -> Option<Value> {
    let (status, list) = send(
        gw,
        reqwest::Method::GET,
        &format!("/api/budgets?org_id={org}"),
        tok,
        None,
    )
    .await;
    assert_eq!(status, 200, "{list}");
    list.as_array()
        .unwrap()
        .iter()
        .find(|b| b["guardrail_rule"]["id"] == json!(rule))
        .cloned()
}

fn money(v: &Value) -> Money {
    Money::parse(v.as_str().unwrap()).unwrap()
}

/// Created, changed, disabled and deleted through the admin API, the rule's budget follows
/// (and cannot be changed apart from it); the member sees it in `GET /api/me/budgets` with
/// what is spent and left, and when the period ends.
async fn the_rules_budget_follows_the_rule_and_members_see_it(db: Db) {
    let Some(gw) = spawn(db, stratai_server::demo_provider::DemoConfig::default()).await else {
        return;
    };
    let t = tenant(&gw, 1).await;
    let (user, tok) = &t.users[0];
    let adm = admin(&gw, t.org).await;
    let rules = format!("/api/organizations/{}/guardrails", t.org);
    let (status, created) = send(
        &gw,
        reqwest::Method::POST,
        &rules,
        &adm,
        Some(json!({
            "name": "weekly cap",
            "rule_type": "budget_limit",
            "config": {"amount": "0.5", "period": "week"},
            "scope": {"level": "user", "user_id": user},
            "action": "block",
        })),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let id: RuleId = serde_json::from_value(created["id"].clone()).unwrap();
    let b = listed(&gw, t.org, &adm, id)
        .await
        .expect("listed with the rule");
    assert_eq!(b["guardrail_rule"]["name"], "weekly cap");
    assert_eq!(b["budget"]["id"], json!(rule_budget_id(t.org, id)));
    assert_eq!(b["budget"]["scope"], json!({"type": "user", "id": user}));
    assert_eq!(b["budget"]["period"], "weekly");
    assert_eq!(b["budget"]["hard_limit"], true);
    assert_eq!(money(&b["budget"]["limit"]), Money::parse("0.5").unwrap());

    // It changes only through the rule.
    let (status, err) = send(
        &gw,
        reqwest::Method::PATCH,
        &format!("/api/budgets/{}", rule_budget_id(t.org, id)),
        &adm,
        Some(json!({"org_id": t.org, "limit": "9"})),
    )
    .await;
    assert_eq!(status, 409, "{err}");
    let (status, _) = send(
        &gw,
        reqwest::Method::PATCH,
        &format!("{rules}/{id}"),
        &adm,
        Some(json!({"config": {"amount": "0.25", "period": "day"}, "action": "warn"})),
    )
    .await;
    assert_eq!(status, 200);
    let b = listed(&gw, t.org, &adm, id).await.unwrap();
    assert_eq!(money(&b["budget"]["limit"]), Money::parse("0.25").unwrap());
    assert_eq!(b["budget"]["period"], "daily");
    assert_eq!(
        b["budget"]["hard_limit"], false,
        "a warning rule only counts"
    );

    // The member sees it, with what a chat spent.
    gw.gateway.pipeline.reload_guardrails().await.unwrap();
    let a = chat(&gw, tok, body()).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let billed = billed_header(&a.headers);
    let (status, mine) = send(&gw, reqwest::Method::GET, "/api/me/budgets", tok, None).await;
    assert_eq!(status, 200, "{mine}");
    let m = mine
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["guardrail_rule"]["id"] == json!(id))
        .unwrap_or_else(|| panic!("not among the member's budgets: {mine}"))
        .clone();
    assert_eq!(money(&m["spent"]).amount(), billed);
    assert_eq!(
        money(&m["left"]).amount(),
        Decimal::new(25, 2) - billed,
        "{m}"
    );
    let end: DateTime<Utc> = serde_json::from_value(m["period_end"].clone()).unwrap();
    assert!(
        end > Utc::now() && end <= Utc::now() + chrono::Duration::days(1),
        "{m}"
    );

    // Disabled, its budget leaves the ledger; enabled again, it is back; deleted, gone.
    let (status, _) = send(
        &gw,
        reqwest::Method::PATCH,
        &format!("{rules}/{id}"),
        &adm,
        Some(json!({"active": false})),
    )
    .await;
    assert_eq!(status, 200);
    assert!(listed(&gw, t.org, &adm, id).await.is_none());
    let (status, _) = send(
        &gw,
        reqwest::Method::PATCH,
        &format!("{rules}/{id}"),
        &adm,
        Some(json!({"active": true})),
    )
    .await;
    assert_eq!(status, 200);
    assert!(listed(&gw, t.org, &adm, id).await.is_some());
    let (status, _) = send(
        &gw,
        reqwest::Method::DELETE,
        &format!("{rules}/{id}"),
        &adm,
        None,
    )
    .await;
    assert_eq!(status, 204);
    assert!(listed(&gw, t.org, &adm, id).await.is_none());
    let all = gw.stores.budgets.list_budgets(t.org).await.unwrap();
    assert!(
        all.iter().all(|b| b.id != rule_budget_id(t.org, id)),
        "deleted from the ledger with the rule"
    );
}
