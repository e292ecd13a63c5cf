//! The governed gateway end to end through HTTP: the server on port 0, dev-mode tokens, the
//! offline demo provider, on SQLite and on PostgreSQL (the store's harness: `DATABASE_URL`,
//! else 127.0.0.1:5432, else a throwaway cluster; skipped with a message locally when none is
//! available, a failure under `CI=true`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod harness;

use std::collections::HashSet;
use std::time::Duration;

use chrono::Utc;
use futures::StreamExt;
use harness::*;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use stratai_core::budget::BudgetScope;
use stratai_core::money::Money;
use stratai_core::ports::RuleAction;
use stratai_core::tiers::{BASIC_TIER_ID, default_tiers};
use stratai_core::usage::{UsageQuery, UsageStatus};
use stratai_server::demo_provider::DemoConfig;

on_both!(
    allowed_chat_is_billed_and_recorded_once,
    premium_model_is_denied_with_upgrade_hint,
    guardrail_block_names_the_rule,
    token_limit_modify_clamps_max_tokens,
    rate_limit_answers_429_with_retry_after,
    exhausted_budget_answers_insufficient_quota_naming_the_scope,
    a_budget_created_between_requests_applies_to_the_next_one,
    streamed_answer_matches_and_is_settled,
    post_filter_match_split_across_chunks_blocks_the_stream,
    post_filter_redacts_across_chunks,
    client_disconnect_mid_stream_bills_what_was_delivered,
    client_leaving_before_a_json_answer_still_settles_and_records_it,
    upstream_failure_releases_the_reservation_and_bills_nothing,
    models_and_explain_show_the_callers_access,
    concurrent_requests_never_overspend_and_record_once,
    chat_answers_carry_server_timing,
);

async fn allowed_chat_is_billed_and_recorded_once(db: Db) {
    let Some(gw) = spawn(db, DemoConfig::default()).await else {
        return;
    };
    let t = tenant(&gw, 1).await;
    let (user, tok) = &t.users[0];
    let a = chat(&gw, tok, ask(MODEL, "hello there")).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["object"], "chat.completion");
    let content = a.body["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(content.contains("hello there"), "{content}");
    let rid = request_id(&a.headers);
    let billed: Decimal = a.headers["x-stratai-billed-cost"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(billed > Decimal::ZERO);
    let rec = gw.stores.usage.get(t.org, rid).await.unwrap();
    assert_eq!(rec.user_id, *user);
    assert_eq!(rec.status, UsageStatus::Success);
    assert_eq!(rec.billed_amount.amount(), billed);
    assert_eq!(
        rec.input_tokens,
        a.body["usage"]["prompt_tokens"].as_u64().unwrap() as u32
    );
    assert_eq!(
        rec.output_tokens,
        a.body["usage"]["completion_tokens"].as_u64().unwrap() as u32
    );
    assert_eq!(rec.tier_id, Some(BASIC_TIER_ID));
    // Unauthenticated calls get an OpenAI-shaped 401.
    let r = gw
        .http
        .post(format!("{}/v1/chat/completions", gw.base))
        .json(&ask(MODEL, "x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["type"], "authentication_error");
    assert!(v["error"].get("param").is_some());
    // Metrics saw the request and the decision.
    let m = metrics_text(&gw).await;
    assert!(
        m.contains("stratai_http_requests_total{route=\"/v1/chat/completions\""),
        "{m}"
    );
    assert!(m.contains("stratai_gateway_decisions_total{outcome=\"allow\",reason=\"none\"}"));
    assert!(m.contains("stratai_usage_write_lag_seconds_count"));
    // Readiness reports the database and the LLM upstream (here the offline demo provider).
    let ready: Value = gw
        .http
        .get(format!("{}/health/ready", gw.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["database"], "ok");
    assert_eq!(ready["llm_upstream"], "demo");
}

async fn premium_model_is_denied_with_upgrade_hint(db: Db) {
    let Some(gw) = spawn(db, DemoConfig::default()).await else {
        return;
    };
    let t = tenant(&gw, 1).await;
    let a = chat(&gw, &t.users[0].1, ask(PREMIUM, "plan our strategy")).await;
    assert_eq!(a.status, 403, "{}", a.body);
    let e = &a.body["error"];
    assert_eq!(e["code"], "model_access_denied");
    assert_eq!(e["type"], "permission_error");
    assert_eq!(e["param"], "model");
    assert_eq!(e["upgrade_hint"], "Upgrade to Premium");
    assert!(e["message"].as_str().unwrap().contains("Premium"), "{e}");
    assert!(a.headers.contains_key("x-stratai-request-id"));
    let unknown = chat(&gw, &t.users[0].1, ask("no-such-model", "hi")).await;
    assert_eq!(unknown.status, 404, "{}", unknown.body);
    assert_eq!(unknown.body["error"]["code"], "model_not_found");
}

async fn guardrail_block_names_the_rule(db: Db) {
    let Some(gw) = spawn(db, DemoConfig::default()).await else {
        return;
    };
    let t = tenant(&gw, 1).await;
    rule(
        &gw,
        t.org,
        "no competitor talk",
        "content_filter",
        json!({"blocked_topics": ["globex"]}),
        RuleAction::Block,
    )
    .await;
    let a = chat(
        &gw,
        &t.users[0].1,
        ask(MODEL, "compare us with Globex please"),
    )
    .await;
    assert_eq!(a.status, 403, "{}", a.body);
    assert_eq!(a.body["error"]["code"], "guardrail_blocked");
    assert_eq!(a.body["error"]["rule"], "no competitor talk");
    assert!(
        a.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no competitor talk")
    );
    // Nothing was recorded for a refused request.
    let rows = gw
        .stores
        .usage
        .query(t.org, &UsageQuery::default(), 100)
        .await
        .unwrap();
    assert!(rows.is_empty());
    let ok = chat(&gw, &t.users[0].1, ask(MODEL, "tell me about our roadmap")).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
}

async fn token_limit_modify_clamps_max_tokens(db: Db) {
    let Some(gw) = spawn(db, DemoConfig::default()).await else {
        return;
    };
    let t = tenant(&gw, 1).await;
    rule(
        &gw,
        t.org,
        "short answers",
        "token_limit",
        json!({"max_output": 5}),
        RuleAction::Modify,
    )
    .await;
    let mut body = ask(MODEL, "write me an essay");
    body["max_tokens"] = json!(500);
    let a = chat(&gw, &t.users[0].1, body).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["usage"]["completion_tokens"], 5);
    assert_eq!(a.body["choices"][0]["finish_reason"], "length");
    let warnings = a.headers["x-stratai-warnings"].to_str().unwrap();
    assert!(warnings.contains("short answers"), "{warnings}");
    let rec = gw
        .stores
        .usage
        .get(t.org, request_id(&a.headers))
        .await
        .unwrap();
    assert_eq!(rec.output_tokens, 5);
}

async fn rate_limit_answers_429_with_retry_after(db: Db) {
    let Some(gw) = spawn(db, DemoConfig::default()).await else {
        return;
    };
    let t = tenant(&gw, 2).await;
    rule(
        &gw,
        t.org,
        "one per minute",
        "rate_limit",
        json!({"requests": 1, "period": "minute", "bucket": "per_user"}),
        RuleAction::Block,
    )
    .await;
    let first = chat(&gw, &t.users[0].1, ask(MODEL, "one")).await;
    assert_eq!(first.status, 200, "{}", first.body);
    let second = chat(&gw, &t.users[0].1, ask(MODEL, "two")).await;
    assert_eq!(second.status, 429, "{}", second.body);
    assert_eq!(second.body["error"]["type"], "rate_limit_error");
    let retry: u64 = second.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    // Another user has their own bucket.
    let other = chat(&gw, &t.users[1].1, ask(MODEL, "three")).await;
    assert_eq!(other.status, 200, "{}", other.body);
}

async fn exhausted_budget_answers_insufficient_quota_naming_the_scope(db: Db) {
    let Some(gw) = spawn(db, DemoConfig::default()).await else {
        return;
    };
    let t = tenant(&gw, 1).await;
    let (user, tok) = &t.users[0];
    budget(&gw, t.org, BudgetScope::User(*user), "0.0003", true).await;
    let mut body = ask(MODEL, "hi");
    body["max_tokens"] = json!(50);
    // Each call reserves about $0.00012 and costs about $0.00005: a few fit, then refusal.
    let mut refused = None;
    for _ in 0..20 {
        let a = chat(&gw, tok, body.clone()).await;
        if a.status != 200 {
            refused = Some(a);
            break;
        }
    }
    let a = refused.expect("the budget never ran out");
    assert_eq!(a.status, 429, "{}", a.body);
    let e = &a.body["error"];
    assert_eq!(e["type"], "insufficient_quota");
    assert_eq!(e["code"], "insufficient_quota");
    assert_eq!(e["scope"], "user");
    assert!(
        e["message"].as_str().unwrap().contains("user budget"),
        "{e}"
    );
    let states = gw
        .stores
        .budgets
        .states(
            t.org,
            &[e["budget_id"].as_str().unwrap().parse().unwrap()],
            Utc::now(),
        )
        .await
        .unwrap();
    assert!(states[0].spent <= states[0].budget.limit);
    assert_eq!(states[0].reserved, Money::ZERO);
}

/// The gateway caches the caller's view (organization, membership, tiers) between requests;
/// the budget list is still read at every admission, so a hard budget created after the view
/// was cached applies to the very next request (strict mode).
async fn a_budget_created_between_requests_applies_to_the_next_one(db: Db) {
    let Some(gw) = spawn(db, DemoConfig::default()).await else {
        return;
    };
    let t = tenant(&gw, 1).await;
    let (user, tok) = &t.users[0];
    let mut body = ask(MODEL, "hi");
    body["max_tokens"] = json!(50);
    assert_eq!(chat(&gw, tok, body.clone()).await.status, 200);
    // Smaller than one request's worst case: the next request must be refused.
    budget(&gw, t.org, BudgetScope::User(*user), "0.00001", true).await;
    let a = chat(&gw, tok, body).await;
    assert_eq!(a.status, 429, "{}", a.body);
    assert_eq!(a.body["error"]["type"], "insufficient_quota");
}

async fn streamed_answer_matches_and_is_settled(db: Db) {
    let Some(gw) = spawn(db, DemoConfig::default()).await else {
        return;
    };
    let t = tenant(&gw, 1).await;
    let tok = &t.users[0].1;
    let whole = chat(&gw, tok, ask(MODEL, "stream this please")).await;
    let mut body = ask(MODEL, "stream this please");
    body["stream"] = json!(true);
    let (status, headers, events) = sse(&gw, tok, body).await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "text/event-stream");
    assert_eq!(
        streamed_text(&events),
        whole.body["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
    );
    assert_eq!(events.last().unwrap(), "data: [DONE]");
    let comment = events
        .iter()
        .find(|e| e.starts_with(": stratai billed_cost="))
        .expect("billed cost comment");
    let rid = request_id(&headers);
    assert!(comment.contains(&rid.to_string()));
    let rec = gw.stores.usage.get(t.org, rid).await.unwrap();
    assert_eq!(rec.status, UsageStatus::Success);
    assert_eq!(
        rec.output_tokens,
        whole.body["usage"]["completion_tokens"].as_u64().unwrap() as u32
    );
    let billed = comment
        .trim_start_matches(": stratai billed_cost=")
        .split_whitespace()
        .next()
        .unwrap();
    assert_eq!(
        rec.billed_amount.amount(),
        billed.parse::<Decimal>().unwrap()
    );
}

async fn post_filter_match_split_across_chunks_blocks_the_stream(db: Db) {
    // Three characters per chunk: "built-in offline" arrives in six pieces. The prompt does
    // not contain it (so the pre-request filter lets it through); the demo answer does.
    let demo = DemoConfig {
        chunk_chars: 3,
        ..DemoConfig::default()
    };
    let Some(gw) = spawn(db, demo).await else {
        return;
    };
    let t = tenant(&gw, 1).await;
    rule(
        &gw,
        t.org,
        "no provider talk",
        "content_filter",
        json!({"blocked_topics": ["built-in offline"]}),
        RuleAction::Block,
    )
    .await;
    let mut body = ask(MODEL, "tell me a story");
    body["stream"] = json!(true);
    let (status, headers, events) = sse(&gw, &t.users[0].1, body).await;
    assert_eq!(status, 200);
    let text = streamed_text(&events);
    assert!(!text.contains("built-in"), "leaked: {text}");
    assert!(text.starts_with("Demo answer"), "{text}");
    let error = events
        .iter()
        .filter_map(|e| e.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .find(|v| v.get("error").is_some())
        .expect("an error event");
    assert_eq!(error["error"]["code"], "guardrail_blocked");
    assert_eq!(error["error"]["rule"], "no provider talk");
    // The tokens the upstream produced are billed (the answer was generated), once.
    let rec = gw
        .stores
        .usage
        .get(t.org, request_id(&headers))
        .await
        .unwrap();
    assert_eq!(rec.status, UsageStatus::Partial);
}

async fn post_filter_redacts_across_chunks(db: Db) {
    let demo = DemoConfig {
        chunk_chars: 2,
        ..DemoConfig::default()
    };
    let Some(gw) = spawn(db, demo).await else {
        return;
    };
    let t = tenant(&gw, 1).await;
    rule(
        &gw,
        t.org,
        "hide card numbers",
        "content_filter",
        json!({"blocked_patterns": ["\\d{4}-\\d{4}"]}),
        RuleAction::Modify,
    )
    .await;
    let mut body = ask(MODEL, "echo: the card is 1234-5678 ok");
    body["stream"] = json!(true);
    let (status, _, events) = sse(&gw, &t.users[0].1, body.clone()).await;
    assert_eq!(status, 200);
    assert_eq!(streamed_text(&events), "the card is [redacted] ok");
    body["stream"] = json!(false);
    let a = chat(&gw, &t.users[0].1, body).await;
    assert_eq!(
        a.body["choices"][0]["message"]["content"],
        "the card is [redacted] ok"
    );
}

async fn client_disconnect_mid_stream_bills_what_was_delivered(db: Db) {
    let demo = DemoConfig {
        chunk_chars: 0,
        chunk_delay: Duration::from_millis(40),
        ..DemoConfig::default()
    };
    let Some(gw) = spawn(db, demo).await else {
        return;
    };
    let t = tenant(&gw, 1).await;
    let (user, tok) = &t.users[0];
    let b = budget(&gw, t.org, BudgetScope::User(*user), "5", true).await;
    let text = "echo: one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen twenty";
    let mut body = ask(MODEL, text);
    body["stream"] = json!(true);
    let r = gw
        .http
        .post(format!("{}/v1/chat/completions", gw.base))
        .bearer_auth(tok)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let rid = request_id(r.headers());
    let mut stream = r.bytes_stream();
    let mut received = String::new();
    while received.matches("\"content\"").count() < 4 {
        let chunk = stream.next().await.unwrap().unwrap();
        received.push_str(&String::from_utf8_lossy(&chunk));
    }
    drop(stream);
    let mut rec = None;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if let Ok(r) = gw.stores.usage.get(t.org, rid).await {
            rec = Some(r);
            break;
        }
    }
    let rec = rec.expect("the abandoned stream was never settled");
    assert_eq!(rec.status, UsageStatus::Partial);
    assert!(
        rec.output_tokens >= 3 && rec.output_tokens < 20,
        "billed {} of 20 tokens",
        rec.output_tokens
    );
    assert!(rec.billed_amount > Money::ZERO);
    let state = &budget_state(&gw, t.org, b.id).await;
    assert_eq!(state.spent, rec.billed_amount);
    assert_eq!(state.reserved, Money::ZERO);
}

async fn client_leaving_before_a_json_answer_still_settles_and_records_it(db: Db) {
    // The demo provider answers after 1.5 s; the client gives up after 500 ms (after its
    // admission, even on a loaded host: the first PostgreSQL logins of a debug build are slow).
    let demo = DemoConfig {
        answer_delay: Duration::from_millis(1500),
        ..DemoConfig::default()
    };
    let Some(gw) = spawn(db, demo).await else {
        return;
    };
    let t = tenant(&gw, 1).await;
    let (user, tok) = &t.users[0];
    let b = budget(&gw, t.org, BudgetScope::User(*user), "5", true).await;
    let gone = gw
        .http
        .post(format!("{}/v1/chat/completions", gw.base))
        .bearer_auth(tok)
        .json(&ask(MODEL, "hello, I will not wait"))
        .timeout(Duration::from_millis(500))
        .send()
        .await;
    assert!(
        gone.is_err_and(|e| e.is_timeout()),
        "the client should time out"
    );
    // The gateway finishes the call anyway: one success record, the reservation settled.
    let recorded = || async {
        gw.stores
            .usage
            .query(t.org, &UsageQuery::default(), 10)
            .await
            .unwrap()
    };
    assert!(
        eventually(Duration::from_secs(10), || async {
            !recorded().await.is_empty()
        })
        .await,
        "the abandoned request was never recorded"
    );
    let records = recorded().await;
    assert_eq!(records.len(), 1, "{records:?}");
    let rec = &records[0];
    assert_eq!(rec.user_id, *user);
    assert_eq!(rec.status, UsageStatus::Success);
    assert!(rec.billed_amount > Money::ZERO);
    // The record is written before the reservation is settled (no settlement without a
    // record), so the settlement is awaited after it, not assumed at the same instant.
    let settled = eventually(Duration::from_secs(10), || async {
        budget_state(&gw, t.org, b.id).await.reserved == Money::ZERO
    })
    .await;
    let state = &budget_state(&gw, t.org, b.id).await;
    assert!(settled, "the reservation was never settled: {state:?}");
    assert_eq!(state.spent, rec.billed_amount);
    assert_eq!(state.reserved, Money::ZERO);
}

async fn upstream_failure_releases_the_reservation_and_bills_nothing(db: Db) {
    let Some(gw) = spawn(db, DemoConfig::default()).await else {
        return;
    };
    let t = tenant(&gw, 1).await;
    let (user, tok) = &t.users[0];
    let b = budget(&gw, t.org, BudgetScope::User(*user), "5", true).await;
    for stream in [false, true] {
        let mut body = ask(MODEL, "fail: upstream 500");
        body["stream"] = json!(stream);
        let a = chat(&gw, tok, body).await;
        assert_eq!(a.status, 502, "{}", a.body);
        assert_eq!(a.body["error"]["code"], "upstream_unavailable");
        let rec = gw
            .stores
            .usage
            .get(t.org, request_id(&a.headers))
            .await
            .unwrap();
        assert_eq!(rec.status, UsageStatus::Failed);
        assert_eq!(rec.billed_amount, Money::ZERO);
    }
    let state = &budget_state(&gw, t.org, b.id).await;
    assert_eq!(state.spent, Money::ZERO);
    assert_eq!(state.reserved, Money::ZERO);
}

async fn models_and_explain_show_the_callers_access(db: Db) {
    let Some(gw) = spawn(db, DemoConfig::default()).await else {
        return;
    };
    let t = tenant(&gw, 1).await;
    let tok = &t.users[0].1;
    let v: Value = gw
        .http
        .get(format!("{}/v1/models", gw.base))
        .bearer_auth(tok)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: HashSet<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    let catalog = default_tiers();
    for tier in &catalog {
        for m in &tier.models {
            let expected = tier.slug.as_str() != "premium";
            assert_eq!(ids.contains(m.as_str()), expected, "{m}");
        }
    }
    let r: Value = gw
        .http
        .get(
            url::Url::parse_with_params(
                &format!("{}/api/explain", gw.base),
                &[("model", PREMIUM), ("at", "2026-11-27T20:00:00Z")],
            )
            .unwrap(),
        )
        .bearer_auth(tok)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["outcome"], "deny", "{r}");
    assert_eq!(r["hint"], "Upgrade to Premium");
    assert_eq!(r["at"], "2026-11-27T20:00:00Z");
    let r = explain(&gw, tok, json!({"model": MODEL})).await;
    assert_eq!(r["outcome"], "allow", "{r}");
    assert_eq!(r["tier"], "basic");
    // Office hours only: the what-if at 20:00 on a Friday is refused, naming the rule.
    rule(
        &gw,
        t.org,
        "office hours",
        "time_restriction",
        json!({"timezone": "UTC", "allowed_days": ["mon", "tue", "wed", "thu", "fri"], "allowed_hours": [{"start": "09:00", "end": "17:00"}]}),
        RuleAction::Block,
    )
    .await;
    let r = explain(
        &gw,
        tok,
        json!({"model": MODEL, "at": "2026-11-27T20:00:00Z"}),
    )
    .await;
    assert_eq!(r["outcome"], "deny", "{r}");
    assert!(r["reasons"].to_string().contains("office hours"), "{r}");
    let r = explain(
        &gw,
        tok,
        json!({"model": MODEL, "at": "2026-11-27T10:00:00Z"}),
    )
    .await;
    assert_eq!(r["outcome"], "allow", "{r}");
    // A member may not explain for the super admin (or anyone else).
    let r = gw
        .http
        .get(
            url::Url::parse_with_params(
                &format!("{}/api/explain", gw.base),
                &[("model", MODEL), ("user", "admin@localhost")],
            )
            .unwrap(),
        )
        .bearer_auth(tok)
        .send()
        .await
        .unwrap();
    assert!(r.status() == 403 || r.status() == 404, "{}", r.status());
}

async fn concurrent_requests_never_overspend_and_record_once(db: Db) {
    let Some(gw) = spawn(db, DemoConfig::default()).await else {
        return;
    };
    // Strict mode: everything is in the database when the answers are in.
    two_hundred_requests_against_tight_budgets(gw, false).await;
}

/// The `gateway` and `upstream` durations (ms) of a `Server-Timing` header.
fn server_timing(headers: &reqwest::header::HeaderMap) -> (f64, Option<f64>) {
    let value = headers
        .get("server-timing")
        .expect("a Server-Timing header")
        .to_str()
        .unwrap();
    let dur = |name: &str| {
        value.split(',').find_map(|m| {
            let (metric, params) = m.trim().split_once(';')?;
            (metric == name)
                .then(|| params.strip_prefix("dur=")?.parse::<f64>().ok())
                .flatten()
        })
    };
    (dur("gateway").expect(value), dur("upstream"))
}

async fn chat_answers_carry_server_timing(db: Db) {
    let delay = Duration::from_millis(150);
    let Some(gw) = spawn(
        db,
        DemoConfig {
            answer_delay: delay,
            ..DemoConfig::default()
        },
    )
    .await
    else {
        return;
    };
    let t = tenant(&gw, 1).await;
    let tok = &t.users[0].1;
    // An answer: the upstream's part holds the provider's pause, StratAI's part the rest,
    // and both together fit in what the client waited.
    let started = std::time::Instant::now();
    let a = chat(&gw, tok, ask(MODEL, "time me")).await;
    let waited = started.elapsed().as_secs_f64() * 1000.0;
    assert_eq!(a.status, 200, "{}", a.body);
    let (own, upstream) = server_timing(&a.headers);
    let upstream = upstream.expect("the upstream's part");
    assert!(upstream >= 150.0, "upstream {upstream} ms");
    // StratAI's part excludes the provider's pause: the two add up to no more than the
    // client waited. (No bound on `own` itself: a cold first request on a loaded host can
    // take longer than the pause.)
    assert!(own >= 0.0, "gateway {own} ms");
    assert!(own + upstream <= waited, "{own} + {upstream} > {waited} ms");
    // A refusal never reached the upstream: StratAI's part only.
    let denied = chat(&gw, tok, ask(PREMIUM, "plan our strategy")).await;
    assert_eq!(denied.status, 403, "{}", denied.body);
    let (own, upstream) = server_timing(&denied.headers);
    assert!(own >= 0.0 && upstream.is_none(), "{:?}", denied.headers);
    // A stream: the upstream's part ends at its response head.
    let mut body = ask(MODEL, "stream me");
    body["stream"] = json!(true);
    let (status, headers, _) = sse(&gw, tok, body).await;
    assert_eq!(status, 200);
    assert!(server_timing(&headers).1.is_some(), "{headers:?}");
    // Other routes carry none; the metric saw the chats.
    let models = gw
        .http
        .get(format!("{}/v1/models", gw.base))
        .bearer_auth(tok)
        .send()
        .await
        .unwrap();
    assert_eq!(models.status(), 200);
    assert!(models.headers().get("server-timing").is_none());
    let m = metrics_text(&gw).await;
    assert!(m.contains("stratai_gateway_overhead_seconds_count"), "{m}");
}
