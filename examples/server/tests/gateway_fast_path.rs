//! The high-throughput mode end to end through HTTP, on SQLite and PostgreSQL: budget leases
//! (`LeasedLedger`) and batched usage writes (`BatchedUsage`). The same guarantees as the
//! strict mode, checked after the server drains (as it does at graceful shutdown): no hard
//! budget overspent under 200 concurrent requests of 20 members, every admitted request
//! recorded exactly once, the ledger's spend equal to the billed total; and a failing usage
//! store sends the batched records to the spool, from which they reach the store once.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod harness;

use std::collections::HashSet;
use std::time::Duration;

use harness::*;
use stratai_core::budget::BudgetScope;
use stratai_core::ids::RequestId;
use stratai_core::money::Money;
use stratai_core::usage::UsageQuery;

on_both!(
    leased_budgets_are_never_overspent_and_each_request_is_recorded_once,
    batched_records_survive_a_failing_store_through_the_spool,
);

fn fast() -> Setup {
    Setup {
        fast_path: Some(Duration::from_millis(200)),
        ..Setup::default()
    }
}

async fn leased_budgets_are_never_overspent_and_each_request_is_recorded_once(db: Db) {
    let Some(gw) = spawn_with(db, fast()).await else {
        return;
    };
    // Checked after the drain graceful shutdown does: leases settled, queued records written.
    two_hundred_requests_against_tight_budgets(gw, true).await;
}

async fn batched_records_survive_a_failing_store_through_the_spool(db: Db) {
    let switch = FaultSwitch::new(Fault::Down);
    let Some(gw) = spawn_with(
        db,
        Setup {
            usage_fault: Some(switch.clone()),
            spool_replay: Duration::from_millis(200),
            ..fast()
        },
    )
    .await
    else {
        return;
    };
    let t = tenant(&gw, 2).await;
    let org_budget = budget(&gw, t.org, BudgetScope::Org, "100", true).await;
    let mut admitted = HashSet::new();
    let mut billed = Money::ZERO;
    for i in 0..20 {
        let a = chat(
            &gw,
            &t.users[i % 2].1,
            ask(MODEL, &format!("while down {i}")),
        )
        .await;
        assert_eq!(a.status, 200, "{}", a.body);
        admitted.insert(request_id(&a.headers));
        billed = billed + Money::new(billed_header(&a.headers)).unwrap();
    }
    gw.gateway.drainer.drain(Duration::from_secs(10)).await;
    assert!(switch.refused() > 0, "the store never failed");
    let waiting: HashSet<RequestId> = spooled(&gw.backing.spool_path())
        .iter()
        .map(|e| e.record.request_id)
        .collect();
    assert_eq!(waiting, admitted, "the failed batch is not in the spool");
    switch.set(Fault::Healthy);
    let drained = eventually(Duration::from_secs(20), || async {
        gw.stores
            .usage
            .query(t.org, &UsageQuery::default(), 10_000)
            .await
            .unwrap()
            .len()
            >= admitted.len()
    })
    .await;
    assert!(drained, "the spool did not drain");
    let rows = records_once(&gw, t.org).await;
    let unique: HashSet<RequestId> = rows.keys().copied().collect();
    assert_eq!(unique, admitted);
    // The budget counted each request once: through its lease, not again from the spool.
    let state = budget_state(&gw, t.org, org_budget.id).await;
    assert_eq!(state.spent, billed);
    assert_eq!(state.reserved, Money::ZERO);
}
