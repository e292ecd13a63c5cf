//! Budget alerts end to end through HTTP on SQLite and PostgreSQL: a real webhook receiver
//! (an axum server on port 0 in this test, recording every POST) is the server's alert sink.
//! Chat requests, concurrent ones included, push budgets over their alert threshold; exactly
//! one alert per budget scope and period arrives, with the right fields, and the log has it
//! too. A webhook that answers 500, or is down, never fails the chat request: delivery is
//! retried as `alerts.rs` defines (3 attempts, then an error in the log).
//!
//! The log is captured by a process-wide subscriber installed before anything logs (a test
//! binary of its own, so no other test's callsites are cached without it).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod harness;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use chrono::{DateTime, Utc};
use harness::*;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use stratai_core::budget::{Budget, BudgetScope};
use stratai_core::ids::OrgId;

on_both!(
    alerts_fire_once_per_scope_and_period_even_under_concurrency,
    a_webhook_answering_500_is_retried_and_never_fails_the_chat,
    a_webhook_that_is_down_never_fails_the_chat_and_is_logged,
    a_webhook_that_recovers_gets_the_alert_once,
    an_alert_crossed_while_usage_is_spooled_still_arrives_once,
);

// ----------------------------------------------------------------------------- the log

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The process-wide log (warnings and errors), installed on first use.
fn log() -> &'static Captured {
    static LOG: OnceLock<Captured> = OnceLock::new();
    LOG.get_or_init(|| {
        let captured = Captured::default();
        let sink = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::WARN)
            .with_writer(move || sink.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::set_global_default(subscriber).unwrap();
        captured
    })
}

/// Log lines mentioning `needle`.
fn log_lines(needle: &str) -> Vec<String> {
    let bytes = log().0.lock().unwrap().clone();
    String::from_utf8_lossy(&bytes)
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_owned)
        .collect()
}

// ------------------------------------------------------------------ the webhook receiver

/// How the receiver answers.
#[derive(Clone, Copy, Debug)]
enum Reply {
    Ok,
    Status(u16),
    /// 500 for the first `n` posts, then 200.
    FailFirst(usize),
}

struct HookState {
    reply: Reply,
    got: Mutex<Vec<Value>>,
}

/// A webhook receiver on 127.0.0.1:0 recording every POST body.
struct Hook {
    url: url::Url,
    state: Arc<HookState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Hook {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn receive(State(s): State<Arc<HookState>>, Json(body): Json<Value>) -> StatusCode {
    let n = {
        let mut got = s.got.lock().unwrap();
        got.push(body);
        got.len()
    };
    match s.reply {
        Reply::Ok => StatusCode::OK,
        Reply::Status(code) => StatusCode::from_u16(code).unwrap(),
        Reply::FailFirst(k) if n <= k => StatusCode::INTERNAL_SERVER_ERROR,
        Reply::FailFirst(_) => StatusCode::NO_CONTENT,
    }
}

impl Hook {
    async fn start(reply: Reply) -> Self {
        let state = Arc::new(HookState {
            reply,
            got: Mutex::new(Vec::new()),
        });
        let app = axum::Router::new()
            .route("/hooks/budget", post(receive))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            url: url::Url::parse(&format!("http://{addr}/hooks/budget")).unwrap(),
            state,
            task,
        }
    }

    fn received(&self) -> Vec<Value> {
        self.state.got.lock().unwrap().clone()
    }

    /// Posts about `budget`.
    fn about(&self, budget: &Budget) -> Vec<Value> {
        self.received()
            .into_iter()
            .filter(|v| v["budget_id"] == budget.id.to_string())
            .collect()
    }
}

/// A URL where nothing listens (a port just released).
async fn dead_url() -> url::Url {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    url::Url::parse(&format!("http://{addr}/hooks/budget")).unwrap()
}

// ------------------------------------------------------------------------------ helpers

async fn gateway_with_hook(db: Db, webhook: url::Url) -> Option<Gw> {
    log();
    spawn_with(
        db,
        Setup {
            alert_webhook: Some(webhook),
            ..Setup::default()
        },
    )
    .await
}

/// One chat (streamed or not) that must succeed; returns how long it took.
async fn chat_ok(gw: &Gw, token: &str, text: &str, stream: bool) -> Duration {
    let mut body = ask(MODEL, text);
    body["max_tokens"] = json!(50);
    body["stream"] = json!(stream);
    let started = Instant::now();
    if stream {
        let (status, _, events) = sse(gw, token, body).await;
        assert_eq!(status, 200, "{events:?}");
        assert_eq!(events.last().map(String::as_str), Some("data: [DONE]"));
    } else {
        let a = chat(gw, token, body).await;
        assert_eq!(a.status, 200, "{}", a.body);
    }
    started.elapsed()
}

/// Checks one alert payload against its budget and the ledger's view of the period.
async fn check_payload(gw: &Gw, org: OrgId, budget: &Budget, v: &Value) {
    let state = &gw
        .stores
        .budgets
        .states(org, &[budget.id], Utc::now())
        .await
        .unwrap()[0];
    assert!(state.alert_sent, "the ledger did not mark the alert sent");
    assert_eq!(v["event"], "budget.threshold_reached", "{v}");
    assert_eq!(v["budget_id"], budget.id.to_string(), "{v}");
    assert_eq!(v["org_id"], org.to_string(), "{v}");
    assert_eq!(
        v["scope"],
        serde_json::to_value(budget.scope).unwrap(),
        "{v}"
    );
    let threshold: Decimal = v["threshold"].as_str().unwrap().parse().unwrap();
    assert_eq!(threshold, budget.alert_threshold, "{v}");
    let limit: Decimal = v["limit"].as_str().unwrap().parse().unwrap();
    assert_eq!(limit, budget.limit.amount(), "{v}");
    let period: DateTime<Utc> = v["period_start"].as_str().unwrap().parse().unwrap();
    assert_eq!(period, state.period_start, "{v}");
    let spent: Decimal = v["spent"].as_str().unwrap().parse().unwrap();
    assert!(
        spent >= threshold * limit,
        "alerted below the threshold: {v}"
    );
    assert!(spent <= state.spent.amount(), "{v}");
    let pct = (threshold * Decimal::from(100)).normalize();
    let scope = match budget.scope {
        BudgetScope::Org => "org",
        BudgetScope::User(_) => "user",
        BudgetScope::Group(_) => "group",
        BudgetScope::Tier(_) => "tier",
    };
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{scope} budget reached {pct}% of its limit")),
        "{v}"
    );
}

// -------------------------------------------------------------------------------- tests

async fn alerts_fire_once_per_scope_and_period_even_under_concurrency(db: Db) {
    let hook = Hook::start(Reply::Ok).await;
    let Some(gw) = gateway_with_hook(db, hook.url.clone()).await else {
        return;
    };
    let t = tenant(&gw, 3).await;
    let half = Decimal::new(5, 1);
    // Soft budgets, so every request is admitted and the spend keeps growing past the
    // threshold. Each request bills about $0.00005.
    let user_budget = budget_alerting(
        &gw,
        t.org,
        BudgetScope::User(t.users[0].0),
        "0.0004",
        false,
        half,
    )
    .await;
    let org_budget = budget_alerting(&gw, t.org, BudgetScope::Org, "0.001", false, half).await;
    let quiet = budget_alerting(
        &gw,
        t.org,
        BudgetScope::User(t.users[1].0),
        "5",
        false,
        half,
    )
    .await;

    // 45 concurrent requests (a third of them streamed) from three members: both budgets
    // cross their threshold while requests settle concurrently.
    let gw = Arc::new(gw);
    let mut tasks = Vec::new();
    for i in 0..45 {
        let gw = gw.clone();
        let token = t.users[i % 3].1.clone();
        tasks.push(tokio::spawn(async move {
            chat_ok(&gw, &token, &format!("concurrent request {i}"), i % 3 == 0).await
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert!(
        eventually(Duration::from_secs(10), || async {
            hook.received().len() >= 2
        })
        .await,
        "alerts never arrived: {:?}",
        hook.received()
    );
    // More traffic after the crossing, then time for any duplicate to arrive.
    for i in 0..5 {
        chat_ok(
            &gw,
            &t.users[0].1,
            &format!("after the alert {i}"),
            i % 2 == 0,
        )
        .await;
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    let got = hook.received();
    assert_eq!(got.len(), 2, "one alert per budget and period: {got:#?}");
    let user_alerts = hook.about(&user_budget);
    let org_alerts = hook.about(&org_budget);
    assert_eq!(user_alerts.len(), 1, "{got:#?}");
    assert_eq!(org_alerts.len(), 1, "{got:#?}");
    assert!(hook.about(&quiet).is_empty(), "{got:#?}");
    check_payload(&gw, t.org, &user_budget, &user_alerts[0]).await;
    check_payload(&gw, t.org, &org_budget, &org_alerts[0]).await;
    let quiet_state = &budget_state(&gw, t.org, quiet.id).await;
    assert!(!quiet_state.alert_sent);
    // The log has each alert once too.
    for b in [&user_budget, &org_budget] {
        let lines: Vec<String> = log_lines(&b.id.to_string())
            .into_iter()
            .filter(|l| l.contains("budget alert:"))
            .collect();
        assert_eq!(lines.len(), 1, "{lines:#?}");
    }
    let m = metrics_text(&gw).await;
    assert!(
        m.contains("stratai_budget_alerts_total{scope=\"user\"}"),
        "{m}"
    );
    assert!(
        m.contains("stratai_budget_alerts_total{scope=\"org\"}"),
        "{m}"
    );
}

/// A budget whose threshold the first request crosses.
async fn tripwire(gw: &Gw, org: OrgId, user: stratai_core::ids::UserId) -> Budget {
    budget_alerting(
        gw,
        org,
        BudgetScope::User(user),
        "0.00002",
        false,
        Decimal::new(5, 1),
    )
    .await
}

async fn a_webhook_answering_500_is_retried_and_never_fails_the_chat(db: Db) {
    let hook = Hook::start(Reply::Status(500)).await;
    let Some(gw) = gateway_with_hook(db, hook.url.clone()).await else {
        return;
    };
    let t = tenant(&gw, 1).await;
    let b = tripwire(&gw, t.org, t.users[0].0).await;
    chats_never_wait_for_the_webhook(&gw, &t.users[0].1, &[false, true, false]).await;
    let budget = b.id.to_string();
    the_sink_gives_up(&budget).await;
    // Three attempts, the same alert each time, then no more.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let posts = hook.about(&b);
    assert_eq!(posts.len(), 3, "{posts:#?}");
    assert!(posts.iter().all(|p| *p == posts[0]));
    check_payload(&gw, t.org, &b, &posts[0]).await;
    assert_eq!(
        log_lines(&budget)
            .iter()
            .filter(|l| l.contains("budget alert:"))
            .count(),
        1
    );
}

async fn a_webhook_that_is_down_never_fails_the_chat_and_is_logged(db: Db) {
    let url = dead_url().await;
    let Some(gw) = gateway_with_hook(db, url).await else {
        return;
    };
    let t = tenant(&gw, 1).await;
    let b = tripwire(&gw, t.org, t.users[0].0).await;
    chats_never_wait_for_the_webhook(&gw, &t.users[0].1, &[true, false]).await;
    let budget = b.id.to_string();
    the_sink_gives_up(&budget).await;
    assert!(!log_lines("budget alert webhook unreachable").is_empty());
    // The alert is still in the log, once, and the ledger will not raise it again.
    assert_eq!(
        log_lines(&budget)
            .iter()
            .filter(|l| l.contains("budget alert:"))
            .count(),
        1
    );
    let state = &budget_state(&gw, t.org, b.id).await;
    assert!(state.alert_sent);
}

async fn a_webhook_that_recovers_gets_the_alert_once(db: Db) {
    let hook = Hook::start(Reply::FailFirst(1)).await;
    let Some(gw) = gateway_with_hook(db, hook.url.clone()).await else {
        return;
    };
    let t = tenant(&gw, 1).await;
    let b = tripwire(&gw, t.org, t.users[0].0).await;
    chat_ok(&gw, &t.users[0].1, "cross the threshold", false).await;
    chat_ok(&gw, &t.users[0].1, "and again", true).await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            hook.about(&b).len() >= 2
        })
        .await,
        "the alert was not retried: {:?}",
        hook.received()
    );
    // Refused once, accepted on the retry, then never again.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let posts = hook.about(&b);
    assert_eq!(posts.len(), 2, "{posts:#?}");
    assert_eq!(posts[0], posts[1]);
    check_payload(&gw, t.org, &b, &posts[1]).await;
    assert!(
        !log_lines(&b.id.to_string())
            .iter()
            .any(|l| l.contains("gave up")),
        "delivery succeeded on the retry"
    );
}

/// The usage write fails exactly when a request crosses the threshold: the record goes to the
/// spool and is replayed later, and the alert must still reach the webhook once.
async fn an_alert_crossed_while_usage_is_spooled_still_arrives_once(db: Db) {
    log();
    let hook = Hook::start(Reply::Ok).await;
    let switch = FaultSwitch::new(Fault::Down);
    let Some(gw) = spawn_with(
        db,
        Setup {
            alert_webhook: Some(hook.url.clone()),
            spool_replay: Duration::from_millis(150),
            usage_fault: Some(switch.clone()),
            ..Setup::default()
        },
    )
    .await
    else {
        return;
    };
    let t = tenant(&gw, 1).await;
    let b = tripwire(&gw, t.org, t.users[0].0).await;
    chat_ok(
        &gw,
        &t.users[0].1,
        "crossing while the database is down",
        false,
    )
    .await;
    assert!(!spooled(&gw.backing.spool_path()).is_empty());
    switch.set(Fault::Healthy);
    let path = gw.backing.spool_path();
    assert!(
        eventually(Duration::from_secs(10), || async {
            spooled(&path).is_empty()
        })
        .await,
        "the spool never drained"
    );
    chat_ok(&gw, &t.users[0].1, "after recovery", false).await;
    assert!(
        eventually(Duration::from_secs(5), || async {
            !hook.about(&b).is_empty()
        })
        .await,
        "the alert of a spooled settlement never reached the webhook"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(hook.about(&b).len(), 1);
    check_payload(&gw, t.org, &b, &hook.about(&b)[0]).await;
}

/// Chats (streamed or not, in this order) that all succeed well before the webhook's
/// retries end: no chat waits for the alert sink.
async fn chats_never_wait_for_the_webhook(gw: &Gw, token: &str, streams: &[bool]) {
    for (i, stream) in streams.iter().enumerate() {
        let took = chat_ok(gw, token, &format!("request {i}"), *stream).await;
        assert!(
            took < Duration::from_secs(3),
            "a chat waited for the webhook: {took:?}"
        );
    }
}

/// The sink's final error about `budget` reaches the log.
async fn the_sink_gives_up(budget: &str) {
    assert!(
        eventually(Duration::from_secs(10), || async {
            log_lines(budget)
                .iter()
                .any(|l| l.contains("gave up after 3 attempts"))
        })
        .await,
        "no final error in the log"
    );
}
