//! Billing through HTTP on memory, SQLite and PostgreSQL: invoices of a month drafted from
//! the usage records (in the organization's timezone), their life cycle and corrections, the
//! CSV export, the platform overview and the pricing-discovery report.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod harness;

use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use harness::*;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use stratai_core::tiers::{BASIC_TIER_ID, STANDARD_TIER_ID};
use stratai_core::usage::{UsageRecord, UsageStatus};
use stratai_core::{TierId, UserId};
use stratai_testkit::usage_record;

fn at(text: &str) -> DateTime<Utc> {
    text.parse().unwrap()
}

#[allow(clippy::too_many_arguments)]
fn record(
    org: stratai_core::OrgId,
    user: UserId,
    tier: Option<TierId>,
    model: &str,
    cost: &str,
    billed: &str,
    when: &str,
    status: UsageStatus,
) -> UsageRecord {
    let record = usage_record(org, user)
        .model(model)
        .cost(cost)
        .billed(billed)
        .status(status)
        .at(at(when));
    match tier {
        Some(tier) => record.tier(tier),
        None => record,
    }
    .build()
}

fn dec(v: &Value) -> Decimal {
    v.as_str()
        .unwrap_or_else(|| panic!("not a decimal string: {v}"))
        .parse()
        .unwrap()
}

async fn invoices_of_a_month(api: Api) {
    let a = org_fixture(&api.stores, "acme").await;
    let org = a.org;
    let admin = api.token(a.admin.email.as_str()).await;
    let member = api.token(a.member.email.as_str()).await;
    let sup = api.token("admin@localhost").await;
    let base = format!("/api/organizations/{org}/invoices");

    // The organization's month is Berlin's.
    let r = api.patch(&format!("/api/organizations/{org}"), &admin, json!({"settings": {"allowed_tiers": ["basic", "standard"], "default_tier": "standard", "max_users_per_group": 5, "require_mfa": false, "timezone": "Europe/Berlin"}})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);

    let ok = UsageStatus::Success;
    // The same model at two rates (a rate change mid-month): each request keeps its price.
    let records = vec![
        // 2025-12-31 23:30 UTC is January 1st in Berlin: in.
        record(
            org,
            a.member.id,
            Some(BASIC_TIER_ID),
            "gpt-4o-mini",
            "0.0001",
            "0.000450",
            "2025-12-31T23:30:00Z",
            ok,
        ),
        record(
            org,
            a.member.id,
            Some(BASIC_TIER_ID),
            "gpt-4o-mini",
            "0.0001",
            "0.000450",
            "2026-01-10T09:00:00Z",
            ok,
        ),
        record(
            org,
            a.admin.id,
            Some(BASIC_TIER_ID),
            "gpt-4o-mini",
            "0.0001",
            "0.000600",
            "2026-01-20T09:00:00Z",
            ok,
        ),
        // Billed below its provider cost.
        record(
            org,
            a.admin.id,
            Some(STANDARD_TIER_ID),
            "gpt-4o",
            "0.02",
            "0.0125",
            "2026-01-15T14:00:00Z",
            ok,
        ),
        record(
            org,
            a.admin.id,
            Some(STANDARD_TIER_ID),
            "gpt-4o",
            "0",
            "0",
            "2026-01-16T14:00:00Z",
            UsageStatus::Failed,
        ),
        record(
            org,
            a.member.id,
            None,
            "custom",
            "0.1",
            "1.234567",
            "2026-01-05T08:00:00Z",
            ok,
        ),
        // 2026-01-31 23:30 UTC is February in Berlin: out.
        record(
            org,
            a.member.id,
            Some(BASIC_TIER_ID),
            "gpt-4o-mini",
            "5",
            "9",
            "2026-01-31T23:30:00Z",
            ok,
        ),
    ];
    api.stores.usage.append(org, &records).await.unwrap();

    // The fixture's draft is listed; org admins read, members do not.
    let r = api.get(&base, &admin).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json.as_array().unwrap().len(), 1);
    assert_eq!(api.get(&base, &member).await.status, StatusCode::FORBIDDEN);
    // Only operators draft.
    let body = json!({"month": "2026-01", "tax_rate": "0.21"});
    assert_eq!(
        api.post(&base, &admin, body.clone()).await.status,
        StatusCode::FORBIDDEN
    );
    let r = api.post(&base, &sup, body.clone()).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let inv = r.json.clone();
    let id = inv["id"].as_str().unwrap().to_owned();
    assert_eq!(inv["status"], "draft");
    assert_eq!(inv["timezone"], "Europe/Berlin");
    // The earlier draft of the month is replaced.
    let listed = api.get(&base, &admin).await.json;
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["id"], id.as_str());

    // The numbers are the records' (those of Berlin's January): lines by tier and model.
    let lines: Vec<(String, String, u64, Decimal)> = inv["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["tier"].as_str().unwrap().to_owned(),
                l["model"].as_str().unwrap().to_owned(),
                l["requests"].as_u64().unwrap(),
                dec(&l["amount"]),
            )
        })
        .collect();
    assert_eq!(
        lines,
        vec![
            (
                "basic".into(),
                "gpt-4o-mini".into(),
                3,
                "0.0015".parse().unwrap()
            ),
            (
                "standard".into(),
                "gpt-4o".into(),
                2,
                "0.0125".parse().unwrap()
            ),
            (
                "untiered".into(),
                "custom".into(),
                1,
                "1.234567".parse().unwrap()
            ),
        ]
    );
    let (from, to) = (at("2025-12-31T23:00:00Z"), at("2026-01-31T23:00:00Z"));
    let expected: Decimal = records
        .iter()
        .filter(|r| r.created_at >= from && r.created_at < to)
        .map(|r| r.billed_amount.amount())
        .sum();
    assert_eq!(dec(&inv["subtotal"]), expected);
    assert_eq!(
        dec(&inv["subtotal"]),
        "1.248567".parse::<Decimal>().unwrap()
    );
    // 1.248567 × 0.21 = 0.26219907 -> 0.26; total 1.25 + 0.26
    assert_eq!(dec(&inv["tax"]), "0.26".parse::<Decimal>().unwrap());
    assert_eq!(dec(&inv["total"]), "1.51".parse::<Decimal>().unwrap());
    assert_eq!(inv["requests"], 6);

    // Refusals name the field.
    for (bad, field) in [
        (json!({"month": "2026-01", "tax_rate": "1.5"}), "tax_rate"),
        (json!({"month": "2026-13", "tax_rate": "0"}), "month"),
        (json!({"month": "2999-01", "tax_rate": "0"}), "month"),
        (
            json!({"month": "2026-01", "tax_rate": "0", "discount": "1"}),
            "discount",
        ),
    ] {
        let r = api.post(&base, &sup, bad.clone()).await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{bad}: {}",
            r.text
        );
        assert_eq!(
            r.json["error"]["fields"][0]["path"], field,
            "{bad}: {}",
            r.text
        );
    }

    // The CSV: a row per line, then subtotal, tax, total.
    let r = api.get(&format!("{base}/{id}/csv"), &admin).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let rows: Vec<&str> = r.text.lines().collect();
    assert_eq!(rows.len(), 1 + 3 + 3, "{}", r.text);
    assert!(
        rows[1].ends_with(",basic,gpt-4o-mini,3,3000,1500,0.0015"),
        "{}",
        rows[1]
    );
    assert!(rows[6].ends_with(",total,,,,,1.51"), "{}", rows[6]);

    // Issue it: from then on only its status changes.
    let item = format!("{base}/{id}");
    assert_eq!(
        api.patch(&item, &admin, json!({"status": "issued"}))
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    let r = api.patch(&item, &sup, json!({"status": "issued"})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(r.json["issued_at"].is_string());
    let issued = r.json.clone();
    // More usage arrives in the month; a new draft must say what it corrects.
    api.stores
        .usage
        .append(
            org,
            &[record(
                org,
                a.member.id,
                Some(BASIC_TIER_ID),
                "gpt-4o-mini",
                "0.1",
                "0.5",
                "2026-01-25T10:00:00Z",
                ok,
            )],
        )
        .await
        .unwrap();
    let r = api.post(&base, &sup, body.clone()).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    let r = api
        .post(
            &base,
            &sup,
            json!({"month": "2026-01", "tax_rate": "0.21", "corrects": id}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.json["corrects"], id.as_str());
    assert_eq!(
        dec(&r.json["subtotal"]),
        "1.748567".parse::<Decimal>().unwrap()
    );
    // The issued invoice did not change.
    let r = api.get(&item, &admin).await;
    assert_eq!(r.json, issued);
    // Its life cycle: never back to draft, paid once, then final.
    let r = api.patch(&item, &sup, json!({"status": "draft"})).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.json["error"]["fields"][0]["path"], "status");
    let r = api.patch(&item, &sup, json!({"status": "paid"})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = api.patch(&item, &sup, json!({"status": "void"})).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);

    // The platform's view: every organization's invoices, the overview of the month.
    let r = api
        .get("/api/billing/invoices?month=2026-01&status=paid", &sup)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(
        r.json
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["id"] == id.as_str())
    );
    assert!(
        r.json
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["status"] == "paid")
    );
    assert_eq!(
        api.get("/api/billing/invoices", &admin).await.status,
        StatusCode::FORBIDDEN
    );
    let r = api.get("/api/billing/overview?month=2026-01", &sup).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let mine: Vec<&Value> = r.json["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|row| row["org_id"] == org.to_string().as_str())
        .collect();
    let standard = mine.iter().find(|row| row["tier"] == "standard").unwrap();
    assert_eq!(
        dec(&standard["provider_cost"]),
        "0.02".parse::<Decimal>().unwrap()
    );
    assert_eq!(
        dec(&standard["billed_amount"]),
        "0.0125".parse::<Decimal>().unwrap()
    );
    assert_eq!(
        dec(&standard["margin"]),
        "-0.0075".parse::<Decimal>().unwrap()
    );
    let org_totals = &r.json["by_org"][org.to_string()];
    // Billed: 0.0015 + 0.5 (the late record) + 0.0125 + 1.234567; cost 0.0003 + 0.1 + 0.02 + 0.1
    assert_eq!(
        dec(&org_totals["billed_amount"]),
        "1.748567".parse::<Decimal>().unwrap()
    );
    assert_eq!(
        dec(&org_totals["provider_cost"]),
        "0.2203".parse::<Decimal>().unwrap()
    );
    assert_eq!(
        dec(&org_totals["margin"]),
        "1.528267".parse::<Decimal>().unwrap()
    );
    assert_eq!(
        api.get("/api/billing/overview?month=2026-01", &admin)
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    let r = api.get("/api/billing/overview?month=January", &sup).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);

    // Another organization's invoice is not found through this one.
    let b = org_fixture(&api.stores, "globex").await;
    let r = api
        .get(
            &format!("/api/organizations/{org}/invoices/{}", b.invoice),
            &sup,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}
on_every_backend!(invoices_of_a_month);

async fn pricing_discovery_report(api: Api) {
    let a = org_fixture(&api.stores, "acme").await;
    let org = a.org;
    let admin = api.token(a.admin.email.as_str()).await;
    let member = api.token(a.member.email.as_str()).await;
    let sup = api.token("admin@localhost").await;
    let ok = UsageStatus::Success;
    let records = vec![
        record(
            org,
            a.member.id,
            Some(BASIC_TIER_ID),
            "gpt-4o-mini",
            "1",
            "2",
            "2026-01-10T09:00:00Z",
            ok,
        ),
        record(
            org,
            a.member.id,
            Some(BASIC_TIER_ID),
            "gpt-4o-mini",
            "1",
            "2",
            "2026-01-11T09:00:00Z",
            ok,
        ),
        record(
            org,
            a.admin.id,
            Some(STANDARD_TIER_ID),
            "gpt-4o",
            "4",
            "3",
            "2026-01-12T14:00:00Z",
            ok,
        ),
        record(
            org,
            a.admin.id,
            Some(STANDARD_TIER_ID),
            "gpt-4o",
            "4",
            "3",
            "2026-03-12T14:00:00Z",
            ok,
        ),
    ];
    api.stores.usage.append(org, &records).await.unwrap();
    let q = format!(
        "/api/billing/pricing-report?org_id={org}&from=2026-01-01T00:00:00Z&to=2026-02-01T00:00:00Z&margin=0.5"
    );
    let r = api.get(&q, &admin).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let rep = &r.json["report"];
    assert_eq!(rep["total_requests"], 3);
    assert_eq!(rep["requests_by_tier"]["basic"], 2);
    assert_eq!(rep["requests_by_tier"]["standard"], 1);
    assert_eq!(rep["requests_by_user"][a.member.id.to_string()], 2);
    assert_eq!(rep["peak_usage_hours"], json!([9, 14]));
    assert_eq!(dec(&rep["total_provider_cost"]), Decimal::from(6));
    assert_eq!(dec(&rep["cost_by_tier"]["standard"]), Decimal::from(4));
    assert_eq!(
        dec(&rep["cost_by_user"][a.admin.id.to_string()]),
        Decimal::from(4)
    );
    assert_eq!(dec(&rep["average_cost_per_user"]), Decimal::from(3));
    assert_eq!(dec(&rep["average_cost_per_request"]), Decimal::from(2));
    assert_eq!(rep["power_users_count"], 1);
    assert_eq!(rep["light_users_count"], 1);
    // 3 × 1.5
    assert_eq!(
        dec(&rep["suggested_per_seat_price"]),
        "4.5".parse::<Decimal>().unwrap()
    );
    assert_eq!(
        dec(&rep["suggested_tier_pricing"]["standard"]),
        Decimal::from(6)
    );
    assert_eq!(
        dec(&rep["suggested_tier_pricing"]["basic"]),
        Decimal::from(3)
    );
    // gpt-4o was billed 3 against a cost of 4.
    let below = r.json["billed_below_cost"].as_array().unwrap();
    assert_eq!(below.len(), 1, "{}", r.text);
    assert_eq!(below[0]["model"], "gpt-4o");
    assert_eq!(below[0]["tier"], "standard");

    assert_eq!(api.get(&q, &member).await.status, StatusCode::FORBIDDEN);
    // Platform-wide: operators only.
    let all = "/api/billing/pricing-report?from=2026-01-01T00:00:00Z&to=2026-02-01T00:00:00Z";
    assert_eq!(api.get(all, &admin).await.status, StatusCode::FORBIDDEN);
    let r = api.get(all, &sup).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(r.json["report"]["total_requests"].as_u64().unwrap() >= 3);
    for (bad, field) in [
        ("&margin=-1", "margin"),
        ("&peak_hours=0", "peak_hours"),
        ("&bogus=1", "bogus"),
    ] {
        let base = q.replace("&margin=0.5", "");
        let r = api.get(&format!("{base}{bad}"), &admin).await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{bad}: {}",
            r.text
        );
        assert_eq!(
            r.json["error"]["fields"][0]["path"], field,
            "{bad}: {}",
            r.text
        );
    }
    let r = api
        .get(
            &format!("/api/billing/pricing-report?org_id={org}&from=2026-02-01T00:00:00Z&to=2026-01-01T00:00:00Z"),
            &admin,
        )
        .await;
    assert_eq!(r.json["error"]["fields"][0]["path"], "to");
}
on_every_backend!(pricing_discovery_report);

/// The CLI subcommand prints the same report as the API, for one organization (by slug) or
/// the platform, and names a bad flag.
async fn cli_pricing_report(api: Api) {
    let a = org_fixture(&api.stores, "acme").await;
    let org = api.stores.directory.get_org(a.org).await.unwrap();
    let ok = UsageStatus::Success;
    api.stores
        .usage
        .append(
            a.org,
            &[
                record(
                    a.org,
                    a.member.id,
                    Some(BASIC_TIER_ID),
                    "gpt-4o-mini",
                    "1",
                    "2",
                    "2026-01-10T09:00:00Z",
                    ok,
                ),
                record(
                    a.org,
                    a.admin.id,
                    Some(STANDARD_TIER_ID),
                    "gpt-4o",
                    "4",
                    "3",
                    "2026-01-12T14:00:00Z",
                    ok,
                ),
            ],
        )
        .await
        .unwrap();
    let config = stratai_server::config::Config::from_parts(
        stratai_server::config::FileConfig::default(),
        &std::collections::HashMap::<String, String>::new(),
    )
    .unwrap();
    let backends = || async {
        stratai_server::server::Backends::seeded(api.stores.clone(), &config)
            .await
            .unwrap()
    };
    let args = stratai_server::cli::PricingArgs {
        org: Some(org.slug.as_str().to_owned()),
        from: "2026-01-01".to_owned(),
        to: "2026-02-01T00:00:00Z".to_owned(),
        margin: Some("0.5".to_owned()),
        peak_hours: None,
    };
    let text = stratai_server::cli::pricing_report(&config, backends().await, &args)
        .await
        .unwrap();
    let cli: Value = serde_json::from_str(&text).unwrap();
    let sup = api.token("admin@localhost").await;
    let http = api
        .get(
            &format!(
                "/api/billing/pricing-report?org_id={}&from=2026-01-01T00:00:00Z&to=2026-02-01T00:00:00Z&margin=0.5",
                a.org
            ),
            &sup,
        )
        .await;
    assert_eq!(cli, http.json);
    assert_eq!(cli["report"]["total_requests"], 2);
    assert_eq!(cli["billed_below_cost"][0]["model"], "gpt-4o");

    let platform = stratai_server::cli::PricingArgs {
        org: None,
        ..args.clone()
    };
    let text = stratai_server::cli::pricing_report(&config, backends().await, &platform)
        .await
        .unwrap();
    let all: Value = serde_json::from_str(&text).unwrap();
    assert!(all["org_id"].is_null());
    assert!(all["report"]["total_requests"].as_u64().unwrap() >= 2);

    for (bad, needle) in [
        (
            stratai_server::cli::PricingArgs {
                from: "yesterday".to_owned(),
                ..args.clone()
            },
            "--from",
        ),
        (
            stratai_server::cli::PricingArgs {
                margin: Some("-1".to_owned()),
                ..args.clone()
            },
            "--margin",
        ),
        (
            stratai_server::cli::PricingArgs {
                org: Some("no-such-org".to_owned()),
                ..args.clone()
            },
            "no-such-org",
        ),
    ] {
        let err = stratai_server::cli::pricing_report(&config, backends().await, &bad)
            .await
            .unwrap_err();
        assert!(err.to_string().contains(needle), "{err}");
    }
}
on_every_backend!(cli_pricing_report);

/// Usage: days are the organization's, the JSON export streams the records, and a chat's
/// client states its endpoint and conversation (validated).
async fn usage_days_json_export_and_attribution(api: Api) {
    let a = org_fixture(&api.stores, "acme").await;
    let org = a.org;
    let admin = api.token(a.admin.email.as_str()).await;
    let member = api.token(a.member.email.as_str()).await;
    // UTC+14: 09:00 UTC is 23:00 local, 11:00 UTC is the next local day.
    let r = api.patch(&format!("/api/organizations/{org}"), &admin, json!({"settings": {"allowed_tiers": ["basic", "standard"], "default_tier": "standard", "max_users_per_group": 5, "require_mfa": false, "timezone": "Pacific/Kiritimati"}})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let ok = UsageStatus::Success;
    let records = vec![
        record(
            org,
            a.member.id,
            Some(BASIC_TIER_ID),
            "gpt-4o-mini",
            "1",
            "2",
            "2026-01-10T09:00:00Z",
            ok,
        ),
        record(
            org,
            a.member.id,
            Some(BASIC_TIER_ID),
            "gpt-4o-mini",
            "1",
            "2.5",
            "2026-01-10T11:00:00Z",
            ok,
        ),
    ];
    api.stores.usage.append(org, &records).await.unwrap();
    let r = api
        .get(&format!("/api/usage?org_id={org}&group_by=day"), &admin)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["timezone"], "Pacific/Kiritimati");
    let days: Vec<(String, u64)> = r.json["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            (
                row["key"][0]["value"].as_str().unwrap().to_owned(),
                row["totals"]["requests"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        days,
        vec![("2026-01-10".into(), 1), ("2026-01-11".into(), 1)]
    );
    let r = api
        .get(&format!("/api/usage?org_id={org}&format=json"), &admin)
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.json["error"]["fields"][0]["path"], "format");

    // The JSON export: the records, exactly.
    let r = api
        .get(
            &format!("/api/usage/export?org_id={org}&format=json"),
            &admin,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.headers["content-type"], "application/json");
    let back: Vec<UsageRecord> = serde_json::from_str(&r.text).unwrap();
    assert_eq!(back, records);
    let r = api
        .get(
            &format!(
                "/api/usage/export?org_id={org}&format=json&user_id={}",
                a.lead.id
            ),
            &admin,
        )
        .await;
    assert_eq!(r.text, "[]");
    let r = api
        .get(
            &format!("/api/usage/export?org_id={org}&format=xml"),
            &admin,
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.json["error"]["fields"][0]["path"], "format");

    // Attribution stated by the client.
    let model = stratai_core::tiers::default_tiers()[0].models[0].to_string();
    let chat = json!({"model": model, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 16});
    let conversation = uuid::Uuid::now_v7().to_string();
    let r = api
        .send_with(
            axum::http::Method::POST,
            "/v1/chat/completions",
            Some(&member),
            Some(chat.clone()),
            &[
                ("x-stratai-endpoint", "task_planning".to_owned()),
                ("x-stratai-conversation-id", conversation.clone()),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let mut found = None;
    for _ in 0..100 {
        let all = api
            .stores
            .usage
            .query(org, &stratai_core::usage::UsageQuery::default(), 100)
            .await
            .unwrap();
        found = all.into_iter().find(|r| r.endpoint == "task_planning");
        if found.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let found = found.expect("the chat's usage record");
    assert_eq!(found.conversation_id.unwrap().to_string(), conversation);
    for (header, value) in [
        ("x-stratai-endpoint", "Task Planning".to_owned()),
        ("x-stratai-conversation-id", "42".to_owned()),
    ] {
        let r = api
            .send_with(
                axum::http::Method::POST,
                "/v1/chat/completions",
                Some(&member),
                Some(chat.clone()),
                &[(header, value)],
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
        assert_eq!(r.json["error"]["param"], header, "{}", r.text);
    }
}
on_every_backend!(usage_days_json_export_and_attribution);
