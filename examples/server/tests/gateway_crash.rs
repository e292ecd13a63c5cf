//! `kill -9` of the server binary under load (issue 21, points 1-3): 20 clients chat
//! (streamed and not) against the server process, which is killed (SIGKILL) mid-run and
//! restarted over the same database and usage log. After the restart:
//! - every answered request (2xx with a complete body) has exactly one usage record;
//! - no request id is recorded twice;
//! - for every budget, the ledger's spent equals the sum of what its records charged
//!   (`billed_amount - overage`), and nothing is left reserved.
//!
//! In the high-throughput mode (budget leases, batched usage writes, cached views) and in
//! strict mode, on SQLite and PostgreSQL. Each run prints the figures it sees.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod harness;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::{Value, json};
use stratai_core::budget::BudgetScope;
use stratai_core::ids::{BudgetId, RequestId, UserId};
use stratai_core::money::Money;
use stratai_core::usage::UsageRecord;

use harness::*;

on_both!(
    kill_nine_in_the_high_throughput_mode,
    kill_nine_in_strict_mode
);

async fn kill_nine_in_the_high_throughput_mode(db: Db) {
    kill_nine(db, true).await;
}

async fn kill_nine_in_strict_mode(db: Db) {
    kill_nine(db, false).await;
}

/// The server binary over `backing` and its usage log, in the given mode (both modes spelled
/// out, whatever the defaults are).
async fn start(backing: &Backing, fast: bool) -> ServerProcess {
    let mode: &[(&str, &str)] = if fast {
        &[
            ("STRATAI_BUDGET_LEASE_MS", "1000"),
            ("STRATAI_USAGE_BATCH", "true"),
            ("STRATAI_GATEWAY_CACHE_MS", "2000"),
        ]
    } else {
        &[
            ("STRATAI_BUDGET_LEASE_MS", "0"),
            ("STRATAI_USAGE_BATCH", "false"),
            ("STRATAI_GATEWAY_CACHE_MS", "0"),
        ]
    };
    start_process(backing, &backing.spool_path(), mode).await
}

/// One client's request: the request id and whether the whole answer arrived.
async fn one_request(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    stream: bool,
    n: usize,
) -> Option<(RequestId, bool)> {
    let mut body = ask(MODEL, &format!("crash test request {n}"));
    body["max_tokens"] = json!(30);
    if stream {
        body["stream"] = json!(true);
    }
    let r = http
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .ok()?;
    let ok = r.status().is_success();
    let status = r.status();
    let Some(rid) = r
        .headers()
        .get("x-stratai-request-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
    else {
        let body = r.text().await.unwrap_or_default();
        panic!("an answer without a request id: {status} {body}");
    };
    let text = r.text().await;
    let complete = ok
        && match text {
            Ok(t) if stream => t.contains("data: [DONE]"),
            Ok(t) => serde_json::from_str::<Value>(&t).is_ok_and(|v| v["choices"][0].is_object()),
            Err(_) => false,
        };
    Some((rid, complete))
}

async fn kill_nine(db: Db, fast: bool) {
    let mode = if fast { "high-throughput" } else { "strict" };
    let Some(backing) = Backing::new(db).await else {
        return;
    };
    let began = Instant::now();
    // Tenants and budgets, written by an in-process server over the same database.
    let (t, budgets) = {
        let gw = serve(backing.clone(), Setup::default()).await;
        let t = tenant(&gw, 20).await;
        let mut budgets: Vec<(BudgetId, Option<UserId>)> = Vec::new();
        for (user, _) in &t.users {
            let b = budget(&gw, t.org, BudgetScope::User(*user), "5", true).await;
            budgets.push((b.id, Some(*user)));
        }
        let b = budget(&gw, t.org, BudgetScope::Org, "100", true).await;
        budgets.push((b.id, None));
        (t, budgets)
    };

    let server = start(&backing, fast).await;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(32)
        .build()
        .unwrap();
    let mut tokens = Vec::new();
    for email in &t.emails {
        tokens.push(dev_token(&http, &server.base, email).await);
    }
    // Warm-up: one request per client (the server's connection pool fills; in a debug build
    // a PostgreSQL login alone takes a while), counted like the others.
    let warm: Vec<_> = tokens
        .iter()
        .enumerate()
        .map(|(i, token)| {
            let (http, base, token) = (http.clone(), server.base.clone(), token.clone());
            tokio::spawn(async move { one_request(&http, &base, &token, false, i).await })
        })
        .collect();
    let mut warmed = Vec::new();
    for w in warm {
        warmed.extend(w.await.unwrap());
    }
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for (i, token) in tokens.into_iter().enumerate() {
        let (http, base, stop) = (http.clone(), server.base.clone(), stop.clone());
        clients.push(tokio::spawn(async move {
            let mut seen: Vec<(RequestId, bool)> = Vec::new();
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let got = one_request(&http, &base, &token, i % 2 == 0, i * 100_000 + n).await;
                match got {
                    Some(r) => seen.push(r),
                    None => {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        // The server is gone: this client stops.
                        break;
                    }
                }
            }
            seen
        }));
    }
    // Load, then SIGKILL in the middle of it.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let mut server = server;
    server.kill_nine();
    let killed_at = Instant::now();
    stop.store(true, Ordering::Relaxed);
    let mut answered: HashSet<RequestId> = HashSet::new();
    let mut unanswered: HashSet<RequestId> = HashSet::new();
    let mut seen = warmed;
    for c in clients {
        seen.extend(c.await.unwrap());
    }
    {
        for (rid, complete) in seen {
            if complete {
                answered.insert(rid);
            } else {
                unanswered.insert(rid);
            }
        }
    }
    drop(server);
    assert!(
        answered.len() > 20,
        "too little load before the kill: {} answered",
        answered.len()
    );

    // A restart over the same database and usage log: it replays the log and settles what
    // the killed process held before it serves.
    let restarted = start(&backing, fast).await;
    let restart_took = killed_at.elapsed();
    let stores = backing.open().await;
    let rows = stores
        .usage
        .query(t.org, &stratai_core::usage::UsageQuery::default(), 100_000)
        .await
        .unwrap();
    let total_rows = rows.len();
    let records: HashMap<RequestId, UsageRecord> =
        rows.into_iter().map(|r| (r.request_id, r)).collect();
    let duplicates = total_rows - records.len();
    let missing: Vec<&RequestId> = answered
        .iter()
        .filter(|r| !records.contains_key(*r))
        .collect();
    let recorded_unanswered = unanswered
        .iter()
        .filter(|r| records.contains_key(*r))
        .count();
    let charged = |r: &UsageRecord| r.billed_amount.saturating_sub(r.overage);
    let ids: Vec<BudgetId> = budgets.iter().map(|(b, _)| *b).collect();
    let states = stores
        .budgets
        .states(t.org, &ids, Utc::now())
        .await
        .unwrap();
    let mut mismatched = Vec::new();
    let mut reserved = Money::ZERO;
    let mut ledger_total = Money::ZERO;
    let mut records_total = Money::ZERO;
    for (id, user) in &budgets {
        let state = states.iter().find(|s| s.budget.id == *id).unwrap();
        let sum: Money = records
            .values()
            .filter(|r| user.is_none_or(|u| r.user_id == u))
            .map(charged)
            .sum();
        if user.is_none() {
            ledger_total = state.spent;
            records_total = sum;
        }
        reserved = reserved + state.reserved;
        if state.spent != sum || state.reserved != Money::ZERO {
            mismatched.push(format!(
                "{:?}: spent {} vs records {}, reserved {}",
                user, state.spent, sum, state.reserved
            ));
        }
    }
    println!(
        "kill -9, {mode} mode, {db:?}: {} answered, {} cut off by the kill ({} of them recorded), \
         {} records, {} answered without a record, {} duplicates; org ledger spent {} vs records {}, \
         {} left reserved, {} budgets differing; restart and recovery {:?}, whole test {:?}",
        answered.len(),
        unanswered.len(),
        recorded_unanswered,
        records.len(),
        missing.len(),
        duplicates,
        ledger_total,
        records_total,
        reserved,
        mismatched.len(),
        restart_took,
        began.elapsed(),
    );
    assert!(missing.is_empty(), "answered without a record: {missing:?}");
    assert_eq!(duplicates, 0, "a request was recorded twice");
    assert!(
        mismatched.is_empty(),
        "ledger differs from records: {mismatched:#?}"
    );
    // The restarted server serves, and its log holds nothing waiting.
    assert!(spooled(&backing.spool_path()).is_empty());
    drop(restarted);
}
