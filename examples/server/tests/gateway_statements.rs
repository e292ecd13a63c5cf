//! No database work where nothing needs it, with the shipped defaults (the fast path: budget
//! leases, batched usage writes, cached bearer tokens and caller views), on SQLite and
//! PostgreSQL: a steady caller to whom no budget applies makes no SQL statement at all per
//! request (no reservation, no zero-amount settlement, no read of the organization or of
//! anything the caller's view caches); a caller with a budget makes fewer than one per request
//! (the budget's leases, opened and settled in blocks); the usage records of both are written
//! afterwards in batches, every one of them. And the README session's budget step holds
//! with the defaults: a budget created over the API applies to the very next request.
//!
//! Statements are counted as sqlx reports them (tracing target `sqlx::query`, one event per
//! statement executed, on both backends) by a global tracing layer; the tests of this file
//! take turns (`SERIAL`), so each counts its own server's statements only. The view, token
//! and batch lifetimes are raised above the test's length, so what is measured is the steady
//! state (what a refresh every two seconds adds is not per request).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod harness;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, Once};
use std::time::Duration;

use axum::http::{Method, StatusCode};
use harness::*;
use serde_json::json;
use stratai_core::usage::UsageQuery;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt as _};

/// Statements executed since the process started.
static STATEMENTS: AtomicU64 = AtomicU64::new(0);
/// Their first words, for the failure message.
static SEEN: Mutex<Vec<String>> = Mutex::new(Vec::new());
/// One test at a time: the counter is global.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Counts sqlx's statement events.
struct Statements;

struct Summary(String);

impl Visit for Summary {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "summary" {
            value.clone_into(&mut self.0);
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "summary" && self.0.is_empty() {
            self.0 = format!("{value:?}");
        }
    }
}

impl<S: Subscriber> Layer<S> for Statements {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        if event.metadata().target() == "sqlx::query" {
            STATEMENTS.fetch_add(1, Ordering::SeqCst);
            let mut summary = Summary(String::new());
            event.record(&mut summary);
            SEEN.lock().unwrap().push(summary.0);
        }
    }
}

fn count() -> u64 {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        tracing::subscriber::set_global_default(tracing_subscriber::registry().with(Statements))
            .expect("the only tracing subscriber of this test binary");
    });
    STATEMENTS.load(Ordering::SeqCst)
}

/// Waits (at most 30 s) until the instance's heartbeat row has been written since `from`.
async fn heartbeat_written(from: u64) {
    for _ in 0..3000 {
        let seen = seen_since(from);
        // SQLite writes the row; PostgreSQL calls the serving role's function.
        if seen.contains("runtime_instances") || seen.contains("stratai_instance_beat") {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no heartbeat written within 30 s of the start");
}

/// The statements seen since `from` (the count at some earlier moment), as text.
fn seen_since(from: u64) -> String {
    let seen = SEEN.lock().unwrap();
    let from = usize::try_from(from).unwrap_or(usize::MAX).min(seen.len());
    seen[from..].join(" | ")
}

fn model() -> String {
    stratai_core::tiers::default_tiers()[0].models[0].to_string()
}

async fn chat(api: &Api, token: &str) {
    let r = api
        .send(
            Method::POST,
            "/v1/chat/completions",
            Some(token),
            Some(json!({
                "model": model(),
                "messages": [{"role": "user", "content": "hello there"}],
                "max_tokens": 16
            })),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
}

const WARM: usize = 10;
const STEADY: usize = 100;

async fn steady_callers_make_no_statement_without_a_budget(kind: Kind) {
    let _turn = SERIAL.lock().await;
    let started = count();
    let Some(api) = Api::start_defaults(
        kind,
        &[
            ("STRATAI_GATEWAY_CACHE_MS", "60000"),
            ("STRATAI_AUTH_CACHE_MS", "60000"),
            ("STRATAI_USAGE_BATCH_LINGER_MS", "60000"),
            // The heartbeat (written at start, then hourly) is no request's work.
            ("STRATAI_HEARTBEAT_MS", "3600000"),
            ("STRATAI_DEAD_AFTER_MS", "7200000"),
        ],
        Duration::from_secs(3600),
    )
    .await
    else {
        return;
    };
    // The heartbeat's first write is a background task's: on a loaded host it can land after
    // the warm-up, inside the measured requests, so the measurement waits for it.
    heartbeat_written(started).await;
    let f = org_fixture(&api.stores, "statements").await;
    // The group member: no budget of the organization applies to them (the fixture's one
    // budget is the member's own).
    let free = api.token(f.gmember.email.as_str()).await;
    let budgeted = api.token(f.member.email.as_str()).await;

    // Without a budget first, before any budget lease exists (their upkeep is background
    // work of the budgeted caller's, measured with it below).
    for _ in 0..WARM {
        chat(&api, &free).await;
    }
    let from = count();
    for _ in 0..STEADY {
        chat(&api, &free).await;
    }
    let without_budget = count() - from;
    let without_text = seen_since(from);

    for _ in 0..WARM {
        chat(&api, &budgeted).await;
    }
    let from = count();
    for _ in 0..STEADY {
        chat(&api, &budgeted).await;
    }
    let with_budget = count() - from;
    let with_text = seen_since(from);

    // Everything held in memory reaches the database: the leases settled, the records
    // written (in batches: the linger was raised above the test's length).
    let from = count();
    let gateway = api.state.gateway().unwrap();
    gateway.drainer.drain(Duration::from_secs(30)).await;
    let drained = count() - from;
    let records = api
        .stores
        .usage
        .query(f.org, &UsageQuery::default(), 10_000)
        .await
        .unwrap();
    let per_caller =
        |user: stratai_core::UserId| records.iter().filter(|r| r.user_id == user).count();
    println!(
        "{kind:?}: {STEADY} steady requests without a budget: {without_budget} statements; \
         with a budget: {with_budget} (in {STEADY} requests); the drain (leases settled, \
         {} records written): {drained}",
        records.len()
    );
    assert_eq!(
        without_budget, 0,
        "a caller without a budget made statements: {without_text}"
    );
    assert!(
        with_budget < STEADY as u64,
        "a caller with a budget made {with_budget} statements for {STEADY} requests: {with_text}"
    );
    assert_eq!(per_caller(f.gmember.id), WARM + STEADY);
    assert_eq!(per_caller(f.member.id), WARM + STEADY);
}

/// The README session's budget step with the defaults: a caller whose view is cached (no
/// budget in it) gets a tight hard budget over the API, and the very next request is held to
/// it: 200 200 200 429 429, as in strict mode (the change drops this instance's cached views).
async fn a_budget_created_over_the_api_applies_to_the_next_request(kind: Kind) {
    let _turn = SERIAL.lock().await;
    count();
    let Some(api) = Api::start_defaults::<&str>(kind, &[], Duration::from_secs(5)).await else {
        return;
    };
    let f = org_fixture(&api.stores, "readme").await;
    let boss = api.token(f.owner.email.as_str()).await;
    let ask = json!({
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "Hello again"}],
        "max_tokens": 50
    });
    let first = api
        .send(
            Method::POST,
            "/v1/chat/completions",
            Some(&boss),
            Some(ask.clone()),
        )
        .await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text);
    let created = api
        .post(
            "/api/budgets",
            &boss,
            json!({
                "org_id": f.org,
                "scope": {"type": "user", "id": f.owner.id},
                "limit": "0.00022",
                "period": "daily"
            }),
        )
        .await;
    assert!(created.status.is_success(), "{}", created.text);
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let r = api
            .send(
                Method::POST,
                "/v1/chat/completions",
                Some(&boss),
                Some(ask.clone()),
            )
            .await;
        statuses.push(r.status.as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429]);
}

#[tokio::test]
async fn sqlite() {
    steady_callers_make_no_statement_without_a_budget(Kind::Sqlite).await;
}

#[tokio::test]
async fn postgres() {
    steady_callers_make_no_statement_without_a_budget(Kind::Postgres).await;
}

#[tokio::test]
async fn readme_budget_sqlite() {
    a_budget_created_over_the_api_applies_to_the_next_request(Kind::Sqlite).await;
}

#[tokio::test]
async fn readme_budget_postgres() {
    a_budget_created_over_the_api_applies_to_the_next_request(Kind::Postgres).await;
}
