//! The `monthly_budget` fields of members, groups and tier subscriptions are budgets of the
//! ledger: set over the admin API, enforced by the gateway exactly like `/api/budgets`
//! budgets (429 `insufficient_quota`), listed by `/api/budgets` with the field they follow,
//! refused for direct changes, kept in step when the field changes or is cleared, and shown to
//! the member by `GET /api/me/budgets`. The server on port 0, on SQLite and PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod harness;

use chrono::{Datelike, Utc};
use harness::*;
use serde_json::{Value, json};
use stratai_core::budget::{BudgetScope, implied_budget_id};
use stratai_core::tiers::default_tiers;
use stratai_core::{GroupId, OrgId, TierId};
use stratai_server::demo_provider::DemoConfig;

on_both!(
    member_monthly_budget_is_a_ledger_budget,
    group_monthly_budget_is_a_ledger_budget,
    tier_subscription_monthly_budget_is_a_ledger_budget,
);

/// An HTTP answer's status and JSON body.
async fn call(
    gw: &Gw,
    method: reqwest::Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = gw
        .http
        .request(method, format!("{}{path}", gw.base))
        .bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// A small chat of the test model.
fn small() -> Value {
    let mut body = ask(MODEL, "hi");
    body["max_tokens"] = json!(5);
    body
}

/// Chats until one is refused (at most 30); the refusal.
async fn chat_until_refused(gw: &Gw, token: &str) -> Answer {
    for _ in 0..30 {
        let a = chat(gw, token, small()).await;
        if a.status != 200 {
            return a;
        }
    }
    panic!("the budget never ran out");
}

/// The budgets `/api/budgets` lists for `org`.
async fn listed(gw: &Gw, admin: &str, org: OrgId) -> Vec<Value> {
    let (status, body) = call(
        gw,
        reqwest::Method::GET,
        &format!("/api/budgets?org_id={org}"),
        admin,
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body.as_array().unwrap().clone()
}

fn find<'a>(budgets: &'a [Value], id: &str) -> Option<&'a Value> {
    budgets.iter().find(|b| b["budget"]["id"] == id)
}

/// A refusal by the implied budget of `scope`, and the budget's state within its limit.
async fn assert_refused_by(gw: &Gw, org: OrgId, scope: BudgetScope, refusal: &Answer) {
    assert_eq!(refusal.status, 429, "{}", refusal.body);
    let e = &refusal.body["error"];
    assert_eq!(e["type"], "insufficient_quota", "{e}");
    assert_eq!(e["scope"], scope.kind(), "{e}");
    let id = implied_budget_id(org, scope);
    assert_eq!(e["budget_id"], id.to_string(), "{e}");
    let state = budget_state(gw, org, id).await;
    assert!(state.spent <= state.budget.limit, "{state:?}");
}

async fn member_monthly_budget_is_a_ledger_budget(db: Db) {
    let Some(gw) = spawn(db, DemoConfig::default()).await else {
        return;
    };
    let admin = token(&gw, "admin@localhost").await;
    let t = tenant(&gw, 2).await;
    let (user, tok) = &t.users[0];
    let member_path = format!("/api/organizations/{}/members/{user}", t.org);
    let (gw_ref, path_ref, admin_ref) = (&gw, &member_path, &admin);
    let patch = move |budget: Value| {
        call(
            gw_ref,
            reqwest::Method::PATCH,
            path_ref,
            admin_ref,
            Some(json!({"monthly_budget": budget})),
        )
    };
    let (status, body) = patch(json!("0.0001")).await;
    assert_eq!(status, 200, "{body}");
    let scope = BudgetScope::User(*user);
    let id = implied_budget_id(t.org, scope).to_string();

    // Listed with the field it follows: monthly, hard, in the org's zone (UTC here).
    let budgets = listed(&gw, &admin, t.org).await;
    let b = find(&budgets, &id).expect("the member's budget is listed");
    assert_eq!(b["implied_by"], "member.monthly_budget", "{b}");
    assert_eq!(b["budget"]["limit"], "0.0001");
    assert_eq!(b["budget"]["period"], "monthly");
    assert_eq!(b["budget"]["hard_limit"], true);

    // Enforced: refused once exhausted; the other member is not limited by it.
    let refusal = chat_until_refused(&gw, tok).await;
    assert_refused_by(&gw, t.org, scope, &refusal).await;
    assert_eq!(chat(&gw, &t.users[1].1, small()).await.status, 200);

    // The member sees it: spent, left, period end (the 1st of next month, UTC).
    let (status, mine) = call(&gw, reqwest::Method::GET, "/api/me/budgets", tok, None).await;
    assert_eq!(status, 200, "{mine}");
    let own = mine
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["budget_id"] == id.as_str())
        .expect("own budget shown");
    assert_eq!(own["implied_by"], "member.monthly_budget");
    assert_eq!(own["limit"], "0.0001");
    let spent: rust_decimal::Decimal = own["spent"].as_str().unwrap().parse().unwrap();
    let left: rust_decimal::Decimal = own["left"].as_str().unwrap().parse().unwrap();
    assert!(spent > rust_decimal::Decimal::ZERO, "{own}");
    assert_eq!(left, rust_decimal::Decimal::new(1, 4) - spent, "{own}");
    let end: chrono::DateTime<Utc> = own["period_end"].as_str().unwrap().parse().unwrap();
    let now = Utc::now();
    assert_eq!((end.day(), end.month()), (1, now.month() % 12 + 1), "{own}");
    // The other member does not see it.
    let (_, theirs) = call(
        &gw,
        reqwest::Method::GET,
        "/api/me/budgets",
        &t.users[1].1,
        None,
    )
    .await;
    assert!(
        theirs
            .as_array()
            .unwrap()
            .iter()
            .all(|b| b["budget_id"] != id.as_str()),
        "{theirs}"
    );

    // Changed only through the field.
    let (status, body) = call(
        &gw,
        reqwest::Method::PATCH,
        &format!("/api/budgets/{id}"),
        &admin,
        Some(json!({"limit": "100"})),
    )
    .await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("member.monthly_budget"),
        "{body}"
    );

    // Raised through the field: the same budget (its spend kept), and chats pass again.
    let spent_before = budget_state(&gw, t.org, implied_budget_id(t.org, scope))
        .await
        .spent;
    assert_eq!(patch(json!("5")).await.0, 200);
    let state = budget_state(&gw, t.org, implied_budget_id(t.org, scope)).await;
    assert_eq!(state.budget.limit.to_string(), "$5");
    assert_eq!(state.spent, spent_before);
    assert_eq!(chat(&gw, tok, small()).await.status, 200);

    // Cleared: the budget is gone from the ledger and from the list.
    assert_eq!(patch(Value::Null).await.0, 200);
    assert!(find(&listed(&gw, &admin, t.org).await, &id).is_none());
    assert_eq!(chat(&gw, tok, small()).await.status, 200);
    // Set back down: enforced again.
    assert_eq!(patch(json!("0.0001")).await.0, 200);
    let refusal = chat_until_refused(&gw, tok).await;
    assert_refused_by(&gw, t.org, scope, &refusal).await;
}

async fn group_monthly_budget_is_a_ledger_budget(db: Db) {
    let Some(gw) = spawn(db, DemoConfig::default()).await else {
        return;
    };
    let admin = token(&gw, "admin@localhost").await;
    let t = tenant(&gw, 2).await;
    let (user, tok) = &t.users[0];
    let (status, group) = call(
        &gw,
        reqwest::Method::POST,
        &format!("/api/organizations/{}/groups", t.org),
        &admin,
        Some(json!({"name": "Marketing", "monthly_budget": "0.0001"})),
    )
    .await;
    assert_eq!(status, 201, "{group}");
    let gid: GroupId = group["id"].as_str().unwrap().parse().unwrap();
    let (status, body) = call(
        &gw,
        reqwest::Method::POST,
        &format!("/api/groups/{gid}/members"),
        &admin,
        Some(json!({"user_id": user})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let scope = BudgetScope::Group(gid);
    let id = implied_budget_id(t.org, scope).to_string();
    let b = listed(&gw, &admin, t.org).await;
    assert_eq!(
        find(&b, &id).expect("listed")["implied_by"],
        "group.monthly_budget"
    );

    // The group's member is refused once it is spent; a member outside the group is not.
    let refusal = chat_until_refused(&gw, tok).await;
    assert_refused_by(&gw, t.org, scope, &refusal).await;
    assert_eq!(chat(&gw, &t.users[1].1, small()).await.status, 200);
    let (_, mine) = call(&gw, reqwest::Method::GET, "/api/me/budgets", tok, None).await;
    assert!(
        mine.as_array()
            .unwrap()
            .iter()
            .any(|b| b["budget_id"] == id.as_str()),
        "{mine}"
    );

    // Raised, then cleared through the group.
    let group_path = format!("/api/groups/{gid}");
    let (status, body) = call(
        &gw,
        reqwest::Method::PATCH,
        &group_path,
        &admin,
        Some(json!({"monthly_budget": "5"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        budget_state(&gw, t.org, implied_budget_id(t.org, scope))
            .await
            .budget
            .limit
            .to_string(),
        "$5"
    );
    assert_eq!(chat(&gw, tok, small()).await.status, 200);
    let (status, _) = call(
        &gw,
        reqwest::Method::PATCH,
        &group_path,
        &admin,
        Some(json!({"monthly_budget": null})),
    )
    .await;
    assert_eq!(status, 200);
    assert!(find(&listed(&gw, &admin, t.org).await, &id).is_none());

    // Set again, then the group deleted: its budget goes with it.
    let (status, _) = call(
        &gw,
        reqwest::Method::PATCH,
        &group_path,
        &admin,
        Some(json!({"monthly_budget": "1"})),
    )
    .await;
    assert_eq!(status, 200);
    assert!(find(&listed(&gw, &admin, t.org).await, &id).is_some());
    let (status, _) = call(&gw, reqwest::Method::DELETE, &group_path, &admin, None).await;
    assert_eq!(status, 204);
    assert!(find(&listed(&gw, &admin, t.org).await, &id).is_none());
}

async fn tier_subscription_monthly_budget_is_a_ledger_budget(db: Db) {
    let Some(gw) = spawn(db, DemoConfig::default()).await else {
        return;
    };
    let admin = token(&gw, "admin@localhost").await;
    let t = tenant(&gw, 1).await;
    let tok = &t.users[0].1;
    let tier: TierId = default_tiers()
        .into_iter()
        .find(|t| t.models.iter().any(|m| m.as_str() == MODEL))
        .unwrap()
        .id;
    let tier_path = format!("/api/organizations/{}/tiers/{tier}", t.org);
    let (gw_ref, path_ref, admin_ref) = (&gw, &tier_path, &admin);
    let put = move |body: Value| {
        call(
            gw_ref,
            reqwest::Method::PUT,
            path_ref,
            admin_ref,
            Some(body),
        )
    };
    let (status, body) = put(json!({"enabled": true, "monthly_budget": "0.0001"})).await;
    assert_eq!(status, 200, "{body}");
    let scope = BudgetScope::Tier(tier);
    let id = implied_budget_id(t.org, scope).to_string();
    let b = listed(&gw, &admin, t.org).await;
    assert_eq!(
        find(&b, &id).expect("listed")["implied_by"],
        "tier_subscription.monthly_budget"
    );

    let refusal = chat_until_refused(&gw, tok).await;
    assert_refused_by(&gw, t.org, scope, &refusal).await;
    // Members see the tier's budget among theirs.
    let (_, mine) = call(&gw, reqwest::Method::GET, "/api/me/budgets", tok, None).await;
    assert!(
        mine.as_array()
            .unwrap()
            .iter()
            .any(|b| b["budget_id"] == id.as_str()),
        "{mine}"
    );

    let (status, _) = put(json!({"enabled": true, "monthly_budget": "5"})).await;
    assert_eq!(status, 200);
    assert_eq!(chat(&gw, tok, small()).await.status, 200);
    let (status, _) = put(json!({"enabled": true})).await;
    assert_eq!(status, 200);
    assert!(find(&listed(&gw, &admin, t.org).await, &id).is_none());
    assert_eq!(chat(&gw, tok, small()).await.status, 200);
}
