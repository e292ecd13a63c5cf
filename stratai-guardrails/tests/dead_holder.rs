//! Budget leases of a dead instance (issue 21, point 2): another instance on the same stores
//! settles them from the usage records written under them once the holder's heartbeat is
//! older than `dead_after`; the dead instance's usage log, replayed at its next start, then
//! charges what only the log held, so the ledger ends equal to the records. A live holder's
//! leases are never touched, and two instances settling at once charge each lease once.
//! Records charged after the fact past a hard limit are overage, alerted.
//! On the in-memory store and on SQLite.
#![cfg(feature = "runtime")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use stratai_core::Money;
use stratai_core::gateway::{ChatMessage, ChatRequest};
use stratai_core::ids::{BudgetId, OrgId, UserId};
use stratai_core::usage::{UsageQuery, UsageRecord};
use stratai_guardrails::runtime::alerts::{Alert, AlertDelivery, AlertSink};
use stratai_guardrails::runtime::liveness::Liveness;
use stratai_guardrails::runtime::{
    ChatError, Refusal, Runtime, RuntimeHandle, RuntimeSettings, RuntimeStores, UsageBatching,
    lease_config,
};
use stratai_store::Stores;
use stratai_testkit::{Backend, Scratch};

/// Runs a body on `$backend`.
macro_rules! on_backend {
    ($backend:ident, $body:path) => {
        $body(stratai_testkit::backend!($backend)).await
    };
}

struct World {
    stores: Stores,
    org: OrgId,
    user: UserId,
    budget: BudgetId,
    scratch: Scratch,
    _database: Option<stratai_testkit::pg::PgTestDb>,
}

/// A member with a budget of $1 on `backend`; `None` when PostgreSQL is wanted and none can
/// be had (printed; a failure under `CI=true`).
async fn world(backend: Backend) -> Option<World> {
    world_with_limit(backend, "1").await
}

async fn world_with_limit(backend: Backend, limit: &str) -> Option<World> {
    let scratch = Scratch::new();
    let mut database = None;
    let stores = match backend {
        Backend::Memory => Stores::memory(),
        Backend::Sqlite => {
            let url = format!("sqlite://{}?mode=rwc", scratch.join("ledger.db").display());
            Stores::open(&url, None).await.unwrap()
        }
        Backend::Postgres => {
            let db = stratai_testkit::pg::fresh_db().await?;
            let stores = Stores::open(&db.app_url, Some(&db.owner_url))
                .await
                .unwrap();
            database = Some(db);
            stores
        }
    };
    let tenant = stratai_testkit::tenant::member_with_budget(&stores, limit).await;
    Some(World {
        stores,
        org: tenant.org,
        user: tenant.user,
        budget: tenant.budget,
        scratch,
        _database: database,
    })
}

fn ask() -> ChatRequest {
    ChatRequest {
        model: "gpt-4o-mini".into(),
        messages: vec![ChatMessage {
            role: "user".into(),
            content: "Say hello".into(),
        }],
        max_tokens: Some(50),
        temperature: None,
        stream: false,
        user: None,
    }
}

/// A runtime on `w`'s stores with budget leases that stay open (they age out after ten
/// minutes), usage records batched with a linger no test waits for (they reach the store
/// when something reads usage through the runtime, or at shutdown), its usage log at
/// `log`, and the given `dead_after`.
async fn instance(w: &World, log: &str, dead_after: Duration) -> (Runtime, RuntimeHandle) {
    instance_alerting(w, log, dead_after, AlertSink::log()).await
}

async fn instance_alerting(
    w: &World,
    log: &str,
    dead_after: Duration,
    alerts: AlertSink,
) -> (Runtime, RuntimeHandle) {
    let settings = RuntimeSettings {
        liveness: Some(Liveness {
            dead_after,
            ..Liveness::default()
        }),
        ..RuntimeSettings::default()
    };
    Runtime::builder(RuntimeStores {
        directory: w.stores.directory.clone(),
        tiers: w.stores.tiers.clone(),
        budgets: w.stores.budgets.clone(),
        usage: w.stores.usage.clone(),
        rules: w.stores.guardrails.clone(),
    })
    .settings(settings)
    .cache(Duration::from_secs(60))
    .budget_leases(lease_config(Duration::from_secs(600), 4))
    .usage_batching(UsageBatching {
        capacity: 65_536,
        linger: Duration::from_secs(600),
    })
    .spool(w.scratch.join(log))
    .alerts(alerts)
    .build()
    .await
    .unwrap()
}

async fn chat(runtime: &Runtime, w: &World, n: usize) {
    for _ in 0..n {
        let answer = runtime.chat(w.user, Some("acme"), ask()).await.unwrap();
        assert!(answer.billed.amount > Money::ZERO);
    }
}

/// Writes the records `runtime` queued to the store (a read through it drains its queue).
async fn flush_records(runtime: &Runtime, w: &World) {
    runtime
        .deps()
        .usage
        .query(w.org, &UsageQuery::default(), 1)
        .await
        .unwrap();
}

async fn ledger(w: &World) -> (Money, Money) {
    let s = w
        .stores
        .budgets
        .states(w.org, &[w.budget], Utc::now())
        .await
        .unwrap();
    (s[0].spent, s[0].reserved)
}

async fn records(w: &World) -> Vec<UsageRecord> {
    w.stores
        .usage
        .query(w.org, &UsageQuery::default(), 10_000)
        .await
        .unwrap()
}

fn charged(records: &[UsageRecord]) -> Money {
    records.iter().fold(Money::ZERO, |sum, r| sum + r.charged())
}

/// Ten minutes: no heartbeat written during a test is that old.
const ALIVE: Duration = Duration::from_secs(600);

async fn a_dead_holders_leases_are_settled_by_another_instance_then_its_log_tops_up(
    backend: Backend,
) {
    let Some(w) = world(backend).await else {
        return;
    };
    let (a, a_handle) = instance(&w, "a.jsonl", ALIVE).await;
    chat(&a, &w, 4).await;
    flush_records(&a, &w).await;
    // Two more answered requests whose records are only in A's log when it dies.
    chat(&a, &w, 2).await;
    a_handle.abort();
    drop(a);
    let in_store = records(&w).await;
    assert_eq!(in_store.len(), 4, "{backend:?}");
    assert!(
        in_store.iter().all(|r| r.lease_id.is_some()),
        "every leased request's record names its lease"
    );
    let (_, reserved) = ledger(&w).await;
    assert!(reserved > Money::ZERO, "A died holding leases");

    // B, for which any heartbeat older than now is dead, settles A's leases from the records
    // in the store.
    let (_b, b_handle) = instance(&w, "b.jsonl", Duration::ZERO).await;
    let report = b_handle.settle_abandoned_leases().await.unwrap();
    assert!(report.settled >= 1, "{report:?}");
    assert_eq!(ledger(&w).await, (charged(&in_store), Money::ZERO));
    // Nothing is left to settle.
    let again = b_handle.settle_abandoned_leases().await.unwrap();
    assert_eq!((again.settled, again.released), (0, 0), "{again:?}");

    // A restarts over its log: the two records it alone held reach the store once, and what
    // B's settlement could not count is charged after the fact.
    let (_a2, a2_handle) = instance(&w, "a.jsonl", ALIVE).await;
    let all = records(&w).await;
    assert_eq!(all.len(), 6, "{backend:?}");
    let ids: HashSet<_> = all.iter().map(|r| r.request_id).collect();
    assert_eq!(ids.len(), 6, "no duplicates");
    assert_eq!(ledger(&w).await, (charged(&all), Money::ZERO));
    a2_handle.shutdown(Duration::from_secs(5)).await;
    b_handle.shutdown(Duration::from_secs(5)).await;
    assert_eq!(ledger(&w).await, (charged(&all), Money::ZERO));
}

async fn a_live_holders_leases_are_never_touched(backend: Backend) {
    let Some(w) = world(backend).await else {
        return;
    };
    let (a, a_handle) = instance(&w, "a.jsonl", ALIVE).await;
    chat(&a, &w, 3).await;
    let before = ledger(&w).await;
    assert!(before.1 > Money::ZERO, "A holds open leases");
    // B deems dead only heartbeats older than ten minutes: A's is fresh.
    let (_b, b_handle) = instance(&w, "b.jsonl", ALIVE).await;
    let report = b_handle.settle_abandoned_leases().await.unwrap();
    assert_eq!((report.settled, report.released), (0, 0), "{report:?}");
    assert_eq!(ledger(&w).await, before);
    // A settles its own leases at shutdown, exactly.
    a_handle.shutdown(Duration::from_secs(5)).await;
    let all = records(&w).await;
    assert_eq!(all.len(), 3);
    assert_eq!(ledger(&w).await, (charged(&all), Money::ZERO));
    // Its heartbeat is gone with it, and it left nothing to settle.
    let after = b_handle.settle_abandoned_leases().await.unwrap();
    assert_eq!((after.settled, after.released), (0, 0), "{after:?}");
    b_handle.shutdown(Duration::from_secs(5)).await;
}

async fn two_instances_settling_at_once_charge_each_lease_once(backend: Backend) {
    let Some(w) = world(backend).await else {
        return;
    };
    let (a, a_handle) = instance(&w, "a.jsonl", ALIVE).await;
    chat(&a, &w, 5).await;
    flush_records(&a, &w).await;
    a_handle.abort();
    drop(a);
    let in_store = records(&w).await;
    assert_eq!(in_store.len(), 5);
    let (_b, b_handle) = instance(&w, "b.jsonl", Duration::ZERO).await;
    let (_c, c_handle) = instance(&w, "c.jsonl", Duration::ZERO).await;
    let (b, c) = tokio::join!(
        b_handle.settle_abandoned_leases(),
        c_handle.settle_abandoned_leases()
    );
    let (b, c) = (b.unwrap(), c.unwrap());
    assert!(b.settled + c.settled >= 1, "{b:?} {c:?}");
    assert_eq!(ledger(&w).await, (charged(&in_store), Money::ZERO));
    // Settling again, by either, changes nothing.
    b_handle.settle_abandoned_leases().await.unwrap();
    c_handle.settle_abandoned_leases().await.unwrap();
    assert_eq!(ledger(&w).await, (charged(&in_store), Money::ZERO));
}

/// Requests of the instance that dies with their records only in its log.
const LATE: usize = 6;

/// Alerts delivered, in order.
#[derive(Clone, Default)]
struct Collect(Arc<Mutex<Vec<Alert>>>);

impl AlertDelivery for Collect {
    fn deliver(&self, alert: &Alert) {
        self.0.lock().unwrap().push(alert.clone());
    }
}

/// The records only A's log held are charged when A comes back, after B settled A's leases
/// without them (releasing their room) and the budget was then spent to its hard limit: the
/// budget ends past its limit by exactly those records (overage, alerted), and its spent
/// equals its records.
async fn records_charged_after_the_fact_past_a_hard_limit_are_overage(backend: Backend) {
    let Some(w) = world_with_limit(backend, "0.0005").await else {
        return;
    };
    // More records than the room a refusal leaves below the limit (less than one worst case).
    let (a, a_handle) = instance(&w, "a.jsonl", ALIVE).await;
    chat(&a, &w, LATE).await;
    a_handle.abort();
    drop(a);
    assert!(
        records(&w).await.is_empty(),
        "A's records are only in its log"
    );
    let (b, b_handle) = instance(&w, "b.jsonl", Duration::ZERO).await;
    let report = b_handle.settle_abandoned_leases().await.unwrap();
    assert!(report.released >= 1, "{report:?}");
    assert_eq!(ledger(&w).await, (Money::ZERO, Money::ZERO));
    // B spends the budget until it refuses.
    let mut served = 0;
    loop {
        match b.chat(w.user, Some("acme"), ask()).await {
            Ok(_) => served += 1,
            Err(ChatError::Refused(Refusal::Budget { .. })) => break,
            Err(e) => panic!("{e}"),
        }
        assert!(served < 1_000, "the budget never ran out");
    }
    b_handle.shutdown(Duration::from_secs(5)).await;
    let (spent, _) = ledger(&w).await;
    assert!(spent <= Money::parse("0.0005").unwrap());
    // A comes back: its records are charged, past the limit, and alerted.
    let got = Collect::default();
    let (_a2, a2_handle) =
        instance_alerting(&w, "a.jsonl", ALIVE, AlertSink::new(Arc::new(got.clone()))).await;
    let all = records(&w).await;
    assert_eq!(all.len(), served + LATE);
    let (spent, reserved) = ledger(&w).await;
    assert_eq!((spent, reserved), (charged(&all), Money::ZERO));
    assert!(spent > Money::parse("0.0005").unwrap(), "{spent}");
    let late: Vec<_> = got
        .0
        .lock()
        .unwrap()
        .iter()
        .filter_map(|a| match a {
            Alert::LateOverage(p) => Some(p.clone()),
            _ => None,
        })
        .collect();
    assert!(!late.is_empty(), "no late overage alert");
    assert!(
        late.iter()
            .all(|p| p.budget_id == w.budget && p.spent == spent)
    );
    a2_handle.shutdown(Duration::from_secs(5)).await;
}

stratai_testkit::backend_matrix!(on_backend, [memory, sqlite, postgres], threads = current:
    a_dead_holders_leases_are_settled_by_another_instance_then_its_log_tops_up,
    a_live_holders_leases_are_never_touched,
    two_instances_settling_at_once_charge_each_lease_once,
    records_charged_after_the_fact_past_a_hard_limit_are_overage,
);
