//! The price list through HTTP on memory, SQLite and PostgreSQL: operators change a tier's
//! models, active flag and rates (from a stated time on); the gateway bills each request at
//! the rates in force when it was made, also from a warm cache; a month's invoice spanning the
//! change sums each request at its own rate; the provider prices are visible beside the
//! tiers' rates, and the pricing report flags models priced below list.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod harness;

use std::time::Duration;

use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use harness::*;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use stratai_core::money::Money;
use stratai_core::tiers::{BASIC_TIER_ID, ModelTier, STANDARD_TIER_ID};
use stratai_core::usage::{UsageQuery, UsageRecord};

fn dec(v: &Value) -> Decimal {
    v.as_str()
        .unwrap_or_else(|| panic!("not a decimal string: {v}"))
        .parse()
        .unwrap()
}

fn basic_model() -> String {
    stratai_core::tiers::default_tiers()[0].models[0].to_string()
}

/// What `rates` bill for the record's tokens (the pricing module's one rounding rule).
fn billed_at(rates: (i64, i64), r: &UsageRecord) -> Money {
    let mut tier = stratai_core::tiers::default_tiers().remove(0);
    tier.input_rate_per_million = Decimal::new(rates.0, 2);
    tier.output_rate_per_million = Decimal::new(rates.1, 2);
    stratai_core::pricing::billed_amount(&tier, r.input_tokens, r.output_tokens)
}

async fn chat(api: &Api, token: &str) {
    let body = json!({"model": basic_model(), "messages": [{"role": "user", "content": "hello there, how are you"}], "max_tokens": 16});
    let r = api.post("/v1/chat/completions", token, body).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
}

/// The organization's records once `n` are written (the gateway may write them in batches).
async fn records(api: &Api, org: stratai_core::OrgId, n: usize) -> Vec<UsageRecord> {
    for _ in 0..100 {
        let mut all = api
            .stores
            .usage
            .query(org, &UsageQuery::default(), 100)
            .await
            .unwrap();
        if all.len() >= n {
            all.sort_by_key(|r| r.created_at);
            return all;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("fewer than {n} usage records");
}

/// A rate change takes effect from its time (at the earliest once every gateway's cached
/// catalog holds it): requests before keep the old price, later ones pay the new one, from a
/// cache warmed before the change too; the month's invoice sums each at its own rate.
async fn a_rate_change_bills_each_request_at_its_rate(api: Api) {
    let a = org_fixture(&api.stores, "acme").await;
    let org = a.org;
    let member = api.token(a.member.email.as_str()).await;
    let sup = api.token("admin@localhost").await;
    let rates = format!("/api/tiers/{BASIC_TIER_ID}/rates");

    // Warm the member's cached view (catalog included).
    chat(&api, &member).await;

    // Only operators change rates.
    let change = json!({"input_rate_per_million": "1.00", "output_rate_per_million": "5.00"});
    let admin = api.token(a.admin.email.as_str()).await;
    assert_eq!(
        api.post(&rates, &admin, change.clone()).await.status,
        StatusCode::FORBIDDEN
    );
    let asked_at = Utc::now();
    let r = api.post(&rates, &sup, change).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let effective: DateTime<Utc> = r.json["effective_from"].as_str().unwrap().parse().unwrap();
    // Now, moved to when every cached catalog (2 s here) holds the change.
    assert!(
        effective >= asked_at + chrono::TimeDelta::milliseconds(1900),
        "{effective} vs {asked_at}"
    );
    let tier: ModelTier = serde_json::from_value(r.json["tier"].clone()).unwrap();
    assert_eq!(tier.input_rate_per_million, Decimal::new(50, 2), "not yet");
    assert_eq!(tier.rate_schedule.len(), 2, "{:?}", tier.rate_schedule);
    assert_eq!(tier.rate_schedule[1].effective_from, effective);
    assert_eq!(
        tier.rates_at(effective),
        (Decimal::new(100, 2), Decimal::new(500, 2))
    );

    // Before its time, from the warm cache: the old rates.
    chat(&api, &member).await;
    let before = records(&api, org, 2).await;
    assert!(before[1].created_at < effective);

    // After its time: the new rates, though the request that warmed the cache came before.
    let wait = (effective - Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(wait + Duration::from_millis(100)).await;
    chat(&api, &member).await;
    chat(&api, &member).await;
    let all = records(&api, org, 4).await;
    assert_eq!(all.len(), 4);
    for (i, r) in all.iter().enumerate() {
        let expected = if r.created_at < effective {
            billed_at((50, 200), r)
        } else {
            billed_at((100, 500), r)
        };
        assert_eq!(r.billed_amount, expected, "record {i}: {r:?}");
        assert!(r.billed_amount > Money::ZERO);
    }
    assert_eq!(
        all.iter().filter(|r| r.created_at < effective).count(),
        2,
        "two requests before the change, two after"
    );
    // The catalog as read now: the new rates, the schedule kept.
    let listed = api.get("/api/tiers", &member).await;
    let basic = listed
        .json
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["slug"] == "basic")
        .unwrap();
    assert_eq!(dec(&basic["input_rate_per_million"]), Decimal::new(100, 2));
    assert_eq!(basic["rate_schedule"].as_array().unwrap().len(), 2);

    // The month's invoice: each request at its rate (the records' billed amounts, never
    // re-priced at the rates of the day the invoice is drafted).
    let month = Utc::now().format("%Y-%m").to_string();
    let r = api
        .post(
            &format!("/api/organizations/{org}/invoices"),
            &sup,
            json!({"month": month, "tax_rate": "0"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let sum = all.iter().fold(Money::ZERO, |s, r| s + r.billed_amount);
    assert_eq!(dec(&r.json["subtotal"]), sum.amount(), "{}", r.text);
    assert_eq!(r.json["requests"], 4);
    let repriced = all
        .iter()
        .fold(Money::ZERO, |s, r| s + billed_at((100, 500), r));
    assert_ne!(sum, repriced, "the old requests keep their price");
    let lines = r.json["lines"].as_array().unwrap();
    assert_eq!(lines.len(), 1, "{}", r.text);
}
on_every_backend!(a_rate_change_bills_each_request_at_its_rate);

/// Refusals name the field; a change in the past is refused, a future one is scheduled and
/// the rates of now stay; a change at a scheduled instant replaces it.
async fn rate_changes_are_validated(api: Api) {
    let sup = api.token("admin@localhost").await;
    let rates = format!("/api/tiers/{BASIC_TIER_ID}/rates");
    let past = (Utc::now() - chrono::TimeDelta::hours(1)).to_rfc3339();
    for (body, field) in [
        (
            json!({"input_rate_per_million": "1", "output_rate_per_million": "2", "effective_from": past}),
            "effective_from",
        ),
        (
            json!({"input_rate_per_million": "-1", "output_rate_per_million": "2"}),
            "input_rate_per_million",
        ),
        (
            json!({"input_rate_per_million": "1", "output_rate_per_million": "-0.5"}),
            "output_rate_per_million",
        ),
    ] {
        let r = api.post(&rates, &sup, body).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
        assert!(r.text.contains(field), "{field}: {}", r.text);
    }
    let r = api
        .post(
            &rates,
            &sup,
            json!({"input_rate_per_million": "1", "output_rate_per_million": "2", "effective": "now"}),
        )
        .await;
    assert!(r.status.is_client_error(), "{}", r.text);
    assert!(r.text.contains("effective"), "{}", r.text);
    let r = api
        .post(
            &format!("/api/tiers/{}/rates", stratai_core::TierId::new()),
            &sup,
            json!({"input_rate_per_million": "1", "output_rate_per_million": "2"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);

    // A change a day ahead: scheduled, the rates of now stay.
    let ahead = Utc::now() + chrono::TimeDelta::days(1);
    let body = |input: &str| json!({"input_rate_per_million": input, "output_rate_per_million": "9", "effective_from": ahead.to_rfc3339()});
    let r = api.post(&rates, &sup, body("3")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = api.post(&rates, &sup, body("4")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let tier: ModelTier = serde_json::from_value(r.json["tier"].clone()).unwrap();
    assert_eq!(tier.input_rate_per_million, Decimal::new(50, 2));
    assert_eq!(tier.rate_schedule.len(), 2, "the second replaced the first");
    assert_eq!(
        tier.rates_at(ahead),
        (Decimal::new(4, 0), Decimal::new(9, 0))
    );
    // Stored: a fresh read holds the same schedule.
    let stored = api.stores.tiers.get_tier(BASIC_TIER_ID).await.unwrap();
    assert_eq!(stored.rate_schedule, tier.rate_schedule);
    // The price list shows the rates of the time asked.
    let at = (ahead + chrono::TimeDelta::seconds(1)).to_rfc3339();
    let r = api
        .get(
            &format!("/api/billing/provider-prices?at={}", at.replace('+', "%2B")),
            &sup,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let haiku = model_row(&r.json["models"], &basic_model());
    assert_eq!(dec(&haiku["billed_input_per_million"]), Decimal::new(4, 0));
    assert_eq!(haiku["below_list_price"], false, "{haiku}");
}
on_every_backend!(rate_changes_are_validated);

fn model_row(models: &Value, model: &str) -> Value {
    models
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["model"] == model)
        .unwrap_or_else(|| panic!("{model} not in {models}"))
        .clone()
}

/// Operators change a tier's models and active flag; the catalog stays consistent (a model in
/// one tier only), refusals name the field, and members see the change.
async fn operators_edit_a_tiers_models_and_active_flag(api: Api) {
    let a = org_fixture(&api.stores, "acme").await;
    let sup = api.token("admin@localhost").await;
    let admin = api.token(a.admin.email.as_str()).await;
    let member = api.token(a.member.email.as_str()).await;
    let path = format!("/api/tiers/{BASIC_TIER_ID}");
    assert_eq!(
        api.patch(&path, &admin, json!({"active": false}))
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    for (body, field) in [
        (json!({"models": ["gpt-4o"]}), "models[0]"),
        (
            json!({"models": ["gpt-4o-mini", "gpt-4o-mini"]}),
            "models[1]",
        ),
        (json!({"models": []}), "models"),
        (json!({"models": ["gpt-4o-mini", ""]}), "models[1]"),
        (json!({"name": "  "}), "name"),
    ] {
        let r = api.patch(&path, &sup, body.clone()).await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {}",
            r.text
        );
        assert!(
            r.text.contains(&format!("\"{field}\"")),
            "{field}: {}",
            r.text
        );
    }
    let r = api.patch(&path, &sup, json!({"price": "1"})).await;
    assert!(r.status.is_client_error(), "{}", r.text);

    let r = api
        .patch(
            &path,
            &sup,
            json!({"models": ["gpt-4o-mini", "house-model"], "description": "Cheap"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["models"], json!(["gpt-4o-mini", "house-model"]));
    assert_eq!(r.json["description"], "Cheap");
    // The freed model may join another tier.
    let standard = api.stores.tiers.get_tier(STANDARD_TIER_ID).await.unwrap();
    let mut models: Vec<String> = standard.models.iter().map(ToString::to_string).collect();
    models.push(basic_model());
    let r = api
        .patch(
            &format!("/api/tiers/{STANDARD_TIER_ID}"),
            &sup,
            json!({"models": models}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let stored = api.stores.tiers.get_tier(BASIC_TIER_ID).await.unwrap();
    assert_eq!(stored.models.len(), 2);
    assert_eq!(stored.description, "Cheap");

    // Deactivated: the tier grants nothing.
    let r = api.patch(&path, &sup, json!({"active": false})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["active"], false);
    let org = a.org;
    let r = api
        .get(&format!("/api/tiers/accessible?org_id={org}"), &member)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(
        !r.json["accessible"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["slug"] == "basic"),
        "{}",
        r.text
    );
}
on_every_backend!(operators_edit_a_tiers_models_and_active_flag);

/// The provider prices (configured over the built-in list) beside the tiers' rates; the
/// pricing report flags the models whose rates are below list price.
async fn provider_prices_and_models_priced_below_list(api: Api) {
    let a = org_fixture(&api.stores, "acme").await;
    let sup = api.token("admin@localhost").await;
    let admin = api.token(a.admin.email.as_str()).await;
    assert_eq!(
        api.get("/api/billing/provider-prices", &admin).await.status,
        StatusCode::FORBIDDEN
    );
    let r = api.get("/api/billing/provider-prices", &sup).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let models = &r.json["models"];
    // The seed's Basic rates ($0.50/$2.00) bill Claude 3.5 Haiku ($0.80/$4.00) below list.
    let haiku = model_row(models, "claude-3-5-haiku-20241022");
    assert_eq!(haiku["source"], "built_in");
    assert_eq!(haiku["tier"], "basic");
    assert_eq!(
        dec(&haiku["provider_input_per_million"]),
        Decimal::new(80, 2)
    );
    assert_eq!(dec(&haiku["billed_input_per_million"]), Decimal::new(50, 2));
    assert_eq!(haiku["below_list_price"], true);
    // Configured here (see `start_with` below): a price of its own, above Basic's rates.
    let mini = model_row(models, "gpt-4o-mini");
    assert_eq!(mini["source"], "configured");
    assert_eq!(
        dec(&mini["provider_output_per_million"]),
        Decimal::new(3, 0)
    );
    assert_eq!(mini["below_list_price"], true);
    // A configured model of no tier, and a tier model of no price.
    let house = model_row(models, "house-gpt");
    assert!(house["tier"].is_null());
    assert_eq!(house["below_list_price"], false);
    assert_eq!(
        model_row(models, "gemini-2.0-flash")["below_list_price"],
        false
    );

    let org = a.org;
    let report = api
        .get(
            &format!("/api/billing/pricing-report?org_id={org}&from=2026-01-01T00:00:00Z&to=2026-02-01T00:00:00Z"),
            &admin,
        )
        .await;
    assert_eq!(report.status, StatusCode::OK, "{}", report.text);
    let flagged: Vec<&str> = report.json["priced_below_list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["model"].as_str().unwrap())
        .collect();
    assert_eq!(
        flagged,
        [
            "claude-3-5-haiku-20241022",
            "gpt-4.5-preview",
            "gpt-4o-mini"
        ],
        "{}",
        report.text
    );
}

const PRICES: &str = r#"{"gpt-4o-mini": {"input_per_million": "1", "output_per_million": "3"}, "house-gpt": {"input_per_million": "0.1", "output_per_million": "0.2"}}"#;

/// The backend matrix's runner: the server started with [`PRICES`].
macro_rules! with_prices {
    ($backend:ident, $body:path) => {
        if let Some(api) = crate::harness::Api::start_with(
            stratai_testkit::backend!($backend),
            &[("STRATAI_PROVIDER_PRICES", crate::PRICES)],
        )
        .await
        {
            $body(api).await;
        }
    };
}

stratai_testkit::backend_matrix!(
    with_prices,
    [memory, sqlite, postgres],
    threads = current: provider_prices_and_models_priced_below_list
);
