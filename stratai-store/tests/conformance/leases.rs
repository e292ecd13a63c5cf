//! Budget leases of dead instances: heartbeats, abandoned leases, settlement from records
//! (`settle_total`) and the records' lease ids.

use chrono::{DateTime, Duration, Utc};
use stratai_core::budget::BudgetScope;
use stratai_core::ports::{ReserveOutcome, ReserveRequest};
use stratai_core::{BudgetId, InstanceId, Money, OrgId, RequestId};

use super::fixtures::*;

fn lease(
    budgets: &[BudgetId],
    amount: &str,
    at: DateTime<Utc>,
    holder: Option<InstanceId>,
) -> ReserveRequest {
    ReserveRequest {
        request_id: RequestId::new(),
        budgets: budgets.to_vec(),
        amount: money(amount),
        now: at,
        expires_at: at + Duration::minutes(10),
        holder,
    }
}

async fn totals<S: Store>(store: &S, org: OrgId, budget: BudgetId) -> (Money, Money) {
    let s = store.states(org, &[budget], now()).await.unwrap().remove(0);
    (s.spent, s.reserved)
}

async fn reserve<S: Store>(store: &S, org: OrgId, request: &ReserveRequest) {
    let outcome = store.reserve(org, request).await.unwrap();
    assert!(
        matches!(outcome, ReserveOutcome::Reserved(_)),
        "{outcome:?}"
    );
}

pub async fn settle_total_charges_what_an_earlier_settlement_missed<S: Store>(store: S) {
    let o = org(&store).await;
    let b = budget(&store, o.id, BudgetScope::Org, "10", true).await;
    let l = lease(&[b.id], "5", now(), None);
    reserve(&store, o.id, &l).await;
    // Active: settled with the total, the rest released.
    let first = store
        .settle_total(o.id, l.request_id, &[b.id], money("3"), now())
        .await
        .unwrap();
    assert!(first.applied);
    assert_eq!(totals(&store, o.id, b.id).await, (money("3"), Money::ZERO));
    // The same total, or less: nothing changes.
    for same in ["3", "2"] {
        let again = store
            .settle_total(o.id, l.request_id, &[b.id], money(same), now())
            .await
            .unwrap();
        assert!(!again.applied, "{same}");
    }
    assert_eq!(totals(&store, o.id, b.id).await, (money("3"), Money::ZERO));
    // More: the difference is charged, once.
    for _ in 0..2 {
        store
            .settle_total(o.id, l.request_id, &[b.id], money("4.5"), now())
            .await
            .unwrap();
    }
    assert_eq!(
        totals(&store, o.id, b.id).await,
        (money("4.5"), Money::ZERO)
    );
    // `settle` stays idempotent whatever the amount.
    let plain = store
        .settle(o.id, l.request_id, &[b.id], money("9"), now())
        .await
        .unwrap();
    assert!(!plain.applied);
    // A released reservation is charged its total; an unknown one is settled without one.
    let released = lease(&[b.id], "1", now(), None);
    reserve(&store, o.id, &released).await;
    store.release(o.id, released.request_id).await.unwrap();
    store
        .settle_total(o.id, released.request_id, &[b.id], money("0.5"), now())
        .await
        .unwrap();
    store
        .settle_total(o.id, RequestId::new(), &[b.id], money("0.25"), now())
        .await
        .unwrap();
    assert_eq!(
        totals(&store, o.id, b.id).await,
        (money("5.25"), Money::ZERO)
    );
    // Records exist past a hard limit: charged anyway (overage), with the threshold alert.
    let over = store
        .settle_total(o.id, l.request_id, &[b.id], money("12"), now())
        .await
        .unwrap();
    assert!(over.applied);
    assert_eq!(over.alerts.len(), 1, "{:?}", over.alerts);
    assert_eq!(
        totals(&store, o.id, b.id).await,
        (money("12.75"), Money::ZERO)
    );
}

pub async fn abandoned_leases_follow_heartbeats<S: Store>(store: S) {
    let o = org(&store).await;
    let b1 = budget(&store, o.id, BudgetScope::Org, "100", true).await;
    let u = member(&store, o.id).await;
    let b2 = budget(&store, o.id, BudgetScope::User(u.id), "100", true).await;
    let (alive, silent) = (InstanceId::new(), InstanceId::new());
    let t0 = now();
    store.beat(alive, t0).await.unwrap();
    let held = lease(&[b2.id, b1.id], "2", t0, Some(alive));
    let orphan = lease(&[b1.id], "3", t0, Some(silent));
    let own = lease(&[b1.id], "1", t0, None);
    for r in [&held, &orphan, &own] {
        reserve(&store, o.id, r).await;
    }
    let ours = [held.request_id, orphan.request_id, own.request_id];
    let abandoned = |dead_before: DateTime<Utc>| {
        let store = &store;
        async move {
            let mut found: Vec<_> = store
                .abandoned_leases(dead_before, 10_000)
                .await
                .unwrap()
                .into_iter()
                .filter(|h| ours.contains(&h.request_id))
                .collect();
            found.sort_by_key(|h| h.request_id);
            found
        }
    };
    // A heartbeat at t0 is alive for a cutoff at or before t0; no heartbeat never is.
    let found = abandoned(t0 - Duration::seconds(1)).await;
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].request_id, orphan.request_id);
    assert_eq!(found[0].holder, silent);
    assert_eq!(found[0].org, o.id);
    assert_eq!(found[0].budgets, vec![b1.id]);
    let found = abandoned(t0 + Duration::seconds(1)).await;
    let ids: Vec<RequestId> = found.iter().map(|h| h.request_id).collect();
    let mut want = vec![held.request_id, orphan.request_id];
    want.sort();
    assert_eq!(ids, want);
    let mut budgets = vec![b1.id, b2.id];
    budgets.sort();
    let held_row = found
        .iter()
        .find(|h| h.request_id == held.request_id)
        .unwrap();
    assert_eq!(held_row.budgets, budgets);
    assert_eq!(held_row.holder, alive);
    // A later heartbeat keeps it alive; retiring makes it dead at once.
    store.beat(alive, t0 + Duration::seconds(5)).await.unwrap();
    assert_eq!(abandoned(t0 + Duration::seconds(1)).await.len(), 1);
    store.retire_instance(alive).await.unwrap();
    assert_eq!(abandoned(t0 - Duration::seconds(1)).await.len(), 2);
    // Settled or released leases are no longer abandoned.
    store
        .settle_total(o.id, held.request_id, &held.budgets, money("1"), t0)
        .await
        .unwrap();
    store.release(o.id, orphan.request_id).await.unwrap();
    assert!(abandoned(t0 + Duration::days(1)).await.is_empty());
}

pub async fn usage_records_carry_their_lease<S: Store>(store: S) {
    let a = org(&store).await;
    let b = org(&store).await;
    let ua = member(&store, a.id).await;
    let ub = member(&store, b.id).await;
    let l = RequestId::new();
    let mut first = record(a.id, ua.id, now(), "0.5");
    first.lease_id = Some(l);
    let mut second = record(a.id, ua.id, now() + Duration::seconds(1), "0.25");
    second.lease_id = Some(l);
    second.overage = money("0.05");
    let outside = record(a.id, ua.id, now(), "7");
    store
        .append(a.id, &[first.clone(), second.clone(), outside])
        .await
        .unwrap();
    let mut other = record(b.id, ub.id, now(), "3");
    other.lease_id = Some(l);
    store.append(b.id, &[other]).await.unwrap();
    assert_eq!(store.get(a.id, first.request_id).await.unwrap(), first);
    assert_eq!(
        store.charged_under_lease(a.id, l).await.unwrap(),
        (money("0.70"), 2)
    );
    assert_eq!(
        store.charged_under_lease(b.id, l).await.unwrap(),
        (money("3"), 1)
    );
    assert_eq!(
        store
            .charged_under_lease(a.id, RequestId::new())
            .await
            .unwrap(),
        (Money::ZERO, 0)
    );
}
