//! Usage is never lost when the usage write fails: end to end through HTTP on SQLite and
//! PostgreSQL. The server writes usage through a fault injector over the real store
//! ([`harness::FaultyUsage`]); while it fails, chat requests (JSON and streamed) still
//! succeed for the client and their records wait in the durable spool file; once the store
//! recovers the spool drains into it, each record exactly once (idempotent by request id),
//! billed as the responses said. A server restarted over the same spool replays what the
//! previous one left there.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod harness;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use harness::*;
use rust_decimal::Decimal;
use serde_json::json;
use stratai_core::StoreError;
use stratai_core::budget::BudgetScope;
use stratai_core::ids::{OrgId, RequestId};
use stratai_core::money::Money;
use stratai_core::usage::UsageStatus;

on_both!(
    failed_usage_writes_are_spooled_then_drained_exactly_once,
    a_write_whose_acknowledgement_was_lost_is_counted_once,
    a_restarted_server_replays_what_the_previous_one_spooled,
);

/// What the client was told about one admitted request.
#[derive(Debug)]
struct Told {
    billed: Decimal,
    prompt_tokens: Option<u32>,
    completion_tokens: Option<u32>,
}

/// Sends `n` JSON chats and `n` streamed chats as `token`; every one must succeed. Returns
/// what each response said, by request id.
async fn traffic(gw: &Gw, token: &str, n: usize, tag: &str) -> HashMap<RequestId, Told> {
    let mut told = HashMap::new();
    for i in 0..n {
        let mut body = ask(MODEL, &format!("{tag}: json request {i}"));
        body["max_tokens"] = json!(50);
        let a = chat(gw, token, body).await;
        assert_eq!(a.status, 200, "{}", a.body);
        assert!(
            a.body["choices"][0]["message"]["content"]
                .as_str()
                .is_some_and(|c| !c.is_empty()),
            "{}",
            a.body
        );
        let usage = &a.body["usage"];
        told.insert(
            request_id(&a.headers),
            Told {
                billed: billed_header(&a.headers),
                prompt_tokens: Some(usage["prompt_tokens"].as_u64().unwrap() as u32),
                completion_tokens: Some(usage["completion_tokens"].as_u64().unwrap() as u32),
            },
        );
    }
    for i in 0..n {
        let mut body = ask(MODEL, &format!("{tag}: streamed request {i}"));
        body["max_tokens"] = json!(50);
        body["stream"] = json!(true);
        let (status, headers, events) = sse(gw, token, body).await;
        assert_eq!(status, 200, "{events:?}");
        assert_eq!(events.last().map(String::as_str), Some("data: [DONE]"));
        assert!(!streamed_text(&events).is_empty());
        let rid = request_id(&headers);
        told.insert(
            rid,
            Told {
                billed: streamed_billed(&events, rid),
                prompt_tokens: None,
                completion_tokens: None,
            },
        );
    }
    told
}

/// The drained store holds exactly the told requests, billed as told, and the budget counted
/// each once.
async fn assert_recorded_once(
    gw: &Gw,
    org: OrgId,
    told: &HashMap<RequestId, Told>,
    budget: stratai_core::ids::BudgetId,
) {
    let stored = records_once(gw, org).await;
    let told_ids: HashSet<RequestId> = told.keys().copied().collect();
    let stored_ids: HashSet<RequestId> = stored.keys().copied().collect();
    assert_eq!(stored_ids, told_ids, "stored and answered requests differ");
    for (rid, t) in told {
        let rec = &stored[rid];
        assert_eq!(rec.status, UsageStatus::Success, "{rec:?}");
        assert_eq!(rec.billed_amount.amount(), t.billed, "{rec:?}");
        assert!(rec.billed_amount > Money::ZERO);
        assert!(rec.provider_cost > Money::ZERO, "{rec:?}");
        if let Some(p) = t.prompt_tokens {
            assert_eq!(rec.input_tokens, p);
        }
        if let Some(c) = t.completion_tokens {
            assert_eq!(rec.output_tokens, c);
        }
    }
    let state = &gw
        .stores
        .budgets
        .states(org, &[budget], Utc::now())
        .await
        .unwrap()[0];
    let total: Decimal = told.values().map(|t| t.billed).sum();
    assert_eq!(
        state.spent.amount(),
        total,
        "the budget counted a request twice or missed one"
    );
    assert_eq!(state.reserved, Money::ZERO);
}

/// A server replaying its spool every 150 ms, writing usage through a fault switch set to
/// `fault`, and a tenant of one member with a $5 hard budget.
async fn faulty_gateway(
    db: Db,
    fault: Fault,
) -> Option<(Gw, Arc<FaultSwitch>, Tenant, stratai_core::budget::Budget)> {
    let switch = FaultSwitch::new(fault);
    let gw = spawn_with(
        db,
        Setup {
            spool_replay: Duration::from_millis(150),
            usage_fault: Some(switch.clone()),
            ..Setup::default()
        },
    )
    .await?;
    let t = tenant(&gw, 1).await;
    let user = t.users[0].0;
    let b = budget(&gw, t.org, BudgetScope::User(user), "5", true).await;
    Some((gw, switch, t, b))
}

async fn failed_usage_writes_are_spooled_then_drained_exactly_once(db: Db) {
    let Some((gw, switch, t, b)) = faulty_gateway(db, Fault::Down).await else {
        return;
    };
    let (user, tok) = &t.users[0];

    let told = traffic(&gw, tok, 3, "while the database is down").await;
    assert_eq!(told.len(), 6);
    // Nothing reached the store; every record is in the spool file, billed as answered.
    for rid in told.keys() {
        assert!(
            matches!(
                gw.stores.usage.get(t.org, *rid).await,
                Err(StoreError::NotFound { .. })
            ),
            "{rid} reached the store although it was down"
        );
    }
    let path = gw.backing.spool_path();
    let entries = spooled(&path);
    let spooled_ids: HashSet<RequestId> = entries.iter().map(|e| e.record.request_id).collect();
    assert_eq!(spooled_ids, told.keys().copied().collect::<HashSet<_>>());
    assert_eq!(entries.len(), told.len());
    for e in &entries {
        assert_eq!(
            e.record.billed_amount.amount(),
            told[&e.record.request_id].billed
        );
        assert_eq!(e.record.org_id, t.org);
        assert_eq!(e.record.user_id, *user);
    }
    // Replays while the store is still down keep every entry.
    let refused = switch.refused();
    assert!(
        eventually(Duration::from_secs(5), || async {
            switch.refused() >= refused + 2
        })
        .await,
        "the spool was not replayed while the store was down"
    );
    assert_eq!(spooled(&path).len(), told.len());
    let m = metrics_text(&gw).await;
    assert!(m.contains("stratai_usage_spooled_total"), "{m}");
    assert!(m.contains("stratai_usage_spool_pending"), "{m}");

    // The database is back: the spool drains into it, each record once.
    switch.set(Fault::Healthy);
    assert!(
        eventually(Duration::from_secs(10), || async {
            spooled(&path).is_empty()
        })
        .await,
        "the spool never drained: {:?}",
        spooled(&path)
    );
    assert!(
        std::fs::metadata(&path).unwrap().len() == 0,
        "the spool file is not empty"
    );
    assert_recorded_once(&gw, t.org, &told, b.id).await;
    // New requests go straight to the store again.
    let more = traffic(&gw, tok, 1, "after recovery").await;
    for rid in more.keys() {
        gw.stores.usage.get(t.org, *rid).await.unwrap();
    }
    assert!(spooled(&path).is_empty());
}

async fn a_write_whose_acknowledgement_was_lost_is_counted_once(db: Db) {
    // The write lands but the store answers an error: the record is both in the store and in
    // the spool. Replaying it must find the duplicate, not record or bill it twice.
    let Some((gw, switch, t, b)) = faulty_gateway(db, Fault::LostAck).await else {
        return;
    };
    let (_, tok) = &t.users[0];
    let told = traffic(&gw, tok, 2, "lost acknowledgements").await;
    let path = gw.backing.spool_path();
    // In the store already, and spooled (each replay attempt loses its answer too).
    for rid in told.keys() {
        gw.stores.usage.get(t.org, *rid).await.unwrap();
    }
    assert!(!spooled(&path).is_empty());
    switch.set(Fault::Healthy);
    assert!(
        eventually(Duration::from_secs(10), || async {
            spooled(&path).is_empty()
        })
        .await,
        "the spool never drained"
    );
    assert_recorded_once(&gw, t.org, &told, b.id).await;
}

async fn a_restarted_server_replays_what_the_previous_one_spooled(db: Db) {
    // The first server never replays on its own (its replay interval is an hour; the first
    // tick, at start, found the spool empty): the records are left for the next server.
    let switch = FaultSwitch::new(Fault::Down);
    let Some(first) = spawn_with(
        db,
        Setup {
            spool_replay: Duration::from_secs(3600),
            usage_fault: Some(switch.clone()),
            ..Setup::default()
        },
    )
    .await
    else {
        return;
    };
    let t = tenant(&first, 2).await;
    let (user, tok) = &t.users[0];
    let b = budget(&first, t.org, BudgetScope::User(*user), "5", true).await;
    let mut told = traffic(&first, tok, 2, "before the restart").await;
    // One more whose write landed although the store reported a failure.
    switch.set(Fault::LostAck);
    told.extend(traffic(&first, tok, 1, "lost acknowledgement").await);
    let path = first.backing.spool_path();
    assert_eq!(spooled(&path).len(), told.len());
    let backing = first.backing.clone();
    drop(first);

    // A new server over the same database and spool directory, with a healthy store.
    let second = serve(
        backing,
        Setup {
            spool_replay: Duration::from_millis(150),
            ..Setup::default()
        },
    )
    .await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            spooled(&path).is_empty()
        })
        .await,
        "the restarted server never replayed the spool: {:?}",
        spooled(&path)
    );
    assert_recorded_once(&second, t.org, &told, b.id).await;
    // The restarted server serves as usual (new tokens: dev tokens are per process).
    let tok = token(&second, &t.emails[1]).await;
    let a = chat(&second, &tok, ask(MODEL, "after the restart")).await;
    assert_eq!(a.status, 200, "{}", a.body);
    second
        .stores
        .usage
        .get(t.org, request_id(&a.headers))
        .await
        .unwrap();
}
