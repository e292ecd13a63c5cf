//! BudgetLedger: budgets, reservations, settlement, periods, alerts.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use chrono::{DateTime, Duration, Utc};
use rust_decimal::Decimal;
use stratai_core::budget::{BudgetPeriod, BudgetScope, BudgetState};
use stratai_core::ports::{ReserveOutcome, ReserveRequest};
use stratai_core::{BudgetId, GroupId, Money, OrgId, RequestId, TierId, UserId};

use super::fixtures::*;

fn request(budgets: &[BudgetId], amount: &str, at: DateTime<Utc>) -> ReserveRequest {
    ReserveRequest {
        request_id: RequestId::new(),
        budgets: budgets.to_vec(),
        amount: money(amount),
        now: at,
        expires_at: at + Duration::minutes(10),
        holder: None,
    }
}

fn reserved(outcome: ReserveOutcome) -> Vec<BudgetState> {
    match outcome {
        ReserveOutcome::Reserved(states) => states,
        ReserveOutcome::Refused(refusal) => panic!("refused: {refusal:?}"),
    }
}

async fn state<S: Store>(
    store: &S,
    org: OrgId,
    budget: BudgetId,
    at: DateTime<Utc>,
) -> BudgetState {
    store.states(org, &[budget], at).await.unwrap().remove(0)
}

/// `(spent, reserved)` of a budget at `at`.
async fn totals<S: Store>(
    store: &S,
    org: OrgId,
    budget: BudgetId,
    at: DateTime<Utc>,
) -> (Money, Money) {
    let s = state(store, org, budget, at).await;
    (s.spent, s.reserved)
}

pub async fn budget_crud<S: Store>(store: S) {
    let o = org(&store).await;
    let g = group(&store, o.id, "Team").await;
    let u = member(&store, o.id).await;
    let t = tier(&store).await;
    let b_org = budget(&store, o.id, BudgetScope::Org, "1000", true).await;
    let b_group = budget(&store, o.id, BudgetScope::Group(g.id), "300", true).await;
    let b_user = budget(&store, o.id, BudgetScope::User(u.id), "50", false).await;
    let b_tier = budget(&store, o.id, BudgetScope::Tier(t.id), "200", true).await;
    assert_eq!(store.get_budget(o.id, b_group.id).await.unwrap(), b_group);
    let mut expected = vec![b_org.clone(), b_group.clone(), b_user.clone(), b_tier];
    expected.sort_by_key(|b| b.id);
    assert_eq!(store.list_budgets(o.id).await.unwrap(), expected);

    let mut changed = b_user.clone();
    changed.limit = money("75.25");
    changed.period = BudgetPeriod::Weekly;
    changed.hard_limit = true;
    changed.alert_threshold = Decimal::new(5, 1);
    changed.updated_at = now() + Duration::hours(2);
    changed.scope = BudgetScope::Org; // the scope is fixed: ignored
    store.update_budget(o.id, &changed).await.unwrap();
    changed.scope = b_user.scope;
    assert_eq!(store.get_budget(o.id, b_user.id).await.unwrap(), changed);

    store.delete_budget(o.id, b_org.id).await.unwrap();
    assert_not_found(store.get_budget(o.id, b_org.id).await);
    assert_not_found(store.delete_budget(o.id, b_org.id).await);
    assert_not_found(store.update_budget(o.id, &b_org).await);

    assert_conflict(store.create_budget(o.id, &b_group).await);
    let mut zero_threshold = new_budget(o.id, BudgetScope::Org, "10", true);
    zero_threshold.alert_threshold = Decimal::ZERO;
    assert_invalid(store.create_budget(o.id, &zero_threshold).await);
    let mut big_threshold = new_budget(o.id, BudgetScope::Org, "10", true);
    big_threshold.alert_threshold = Decimal::new(15, 1);
    assert_invalid(store.create_budget(o.id, &big_threshold).await);
    assert_not_found(
        store
            .create_budget(
                o.id,
                &new_budget(o.id, BudgetScope::User(UserId::new()), "1", true),
            )
            .await,
    );
    assert_not_found(
        store
            .create_budget(
                o.id,
                &new_budget(o.id, BudgetScope::Tier(TierId::new()), "1", true),
            )
            .await,
    );
    assert_not_found(
        store
            .create_budget(
                o.id,
                &new_budget(o.id, BudgetScope::Group(GroupId::new()), "1", true),
            )
            .await,
    );
    let ghost = OrgId::new();
    assert_not_found(
        store
            .create_budget(ghost, &new_budget(ghost, BudgetScope::Org, "1", true))
            .await,
    );
    assert_not_found(store.states(o.id, &[BudgetId::new()], now()).await);
}

pub async fn budget_cross_tenant<S: Store>(store: S) {
    let a = org(&store).await;
    let b = org(&store).await;
    let ga = group(&store, a.id, "A group").await;
    let ba = budget(&store, a.id, BudgetScope::Org, "10", true).await;
    let held = request(&[ba.id], "4", now());
    reserved(store.reserve(a.id, &held).await.unwrap());

    assert_not_found(store.get_budget(b.id, ba.id).await);
    assert!(store.list_budgets(b.id).await.unwrap().is_empty());
    assert_tenant_mismatch(store.update_budget(b.id, &ba).await);
    let mut as_b = ba.clone();
    as_b.org_id = b.id;
    as_b.limit = money("1000000");
    assert_not_found(store.update_budget(b.id, &as_b).await);
    assert_not_found(store.delete_budget(b.id, ba.id).await);
    assert_not_found(store.states(b.id, &[ba.id], now()).await);
    assert_not_found(store.reserve(b.id, &request(&[ba.id], "1", now())).await);
    assert_not_found(
        store
            .settle(b.id, RequestId::new(), &[ba.id], money("1"), now())
            .await,
    );
    // B's context releasing or settling A's request id touches nothing of A.
    store.release(b.id, held.request_id).await.unwrap();
    assert_not_found(
        store
            .settle(b.id, held.request_id, &[ba.id], money("1"), now())
            .await,
    );
    assert_tenant_mismatch(
        store
            .create_budget(b.id, &new_budget(a.id, BudgetScope::Org, "1", true))
            .await,
    );
    assert_not_found(
        store
            .create_budget(
                b.id,
                &new_budget(b.id, BudgetScope::Group(ga.id), "1", true),
            )
            .await,
    );

    assert_eq!(store.get_budget(a.id, ba.id).await.unwrap(), ba);
    assert_eq!(
        totals(&store, a.id, ba.id, now()).await,
        (Money::ZERO, money("4"))
    );
}

pub async fn reserve_settle_release<S: Store>(store: S) {
    let o = org(&store).await;
    let b = budget(&store, o.id, BudgetScope::Org, "10", true).await;
    let first = request(&[b.id], "3", now());
    let states = reserved(store.reserve(o.id, &first).await.unwrap());
    assert_eq!(states.len(), 1);
    assert_eq!(states[0].budget, b);
    assert_eq!(states[0].reserved, money("3"));
    assert_eq!(states[0].spent, Money::ZERO);
    assert_eq!(states[0].period_start, at("2026-01-01T00:00:00Z"));
    assert_eq!(states[0].period_end, at("2026-02-01T00:00:00Z"));
    assert_eq!(state(&store, o.id, b.id, now()).await, states[0]);

    let outcome = store
        .settle(o.id, first.request_id, &[b.id], money("2.25"), now())
        .await
        .unwrap();
    assert!(outcome.applied);
    assert_eq!(
        totals(&store, o.id, b.id, now()).await,
        (money("2.25"), Money::ZERO)
    );

    let second = request(&[b.id], "4", now());
    reserved(store.reserve(o.id, &second).await.unwrap());
    assert_eq!(
        totals(&store, o.id, b.id, now()).await,
        (money("2.25"), money("4"))
    );
    store.release(o.id, second.request_id).await.unwrap();
    assert_eq!(
        totals(&store, o.id, b.id, now()).await,
        (money("2.25"), Money::ZERO)
    );

    // A reservation with no budgets is recorded and settles like any other.
    let unbudgeted = request(&[], "1", now());
    assert!(reserved(store.reserve(o.id, &unbudgeted).await.unwrap()).is_empty());
    assert!(
        store
            .settle(o.id, unbudgeted.request_id, &[], money("1"), now())
            .await
            .unwrap()
            .applied
    );
    assert_not_found(
        store
            .reserve(o.id, &request(&[BudgetId::new()], "1", now()))
            .await,
    );
}

pub async fn reserve_all_or_nothing<S: Store>(store: S) {
    let o = org(&store).await;
    let g = group(&store, o.id, "Team").await;
    let u = member(&store, o.id).await;
    let b_org = budget(&store, o.id, BudgetScope::Org, "100", true).await;
    let b_group = budget(&store, o.id, BudgetScope::Group(g.id), "30", true).await;
    let b_user = budget(&store, o.id, BudgetScope::User(u.id), "15", true).await;
    let all = [b_org.id, b_group.id, b_user.id];

    let states = reserved(
        store
            .reserve(o.id, &request(&all, "10", now()))
            .await
            .unwrap(),
    );
    let ids: Vec<BudgetId> = states.iter().map(|s| s.budget.id).collect();
    let mut sorted = all.to_vec();
    sorted.sort();
    assert_eq!(ids, sorted, "states come in lock order (budget id)");

    match store
        .reserve(o.id, &request(&all, "6", now()))
        .await
        .unwrap()
    {
        ReserveOutcome::Refused(refusal) => {
            assert_eq!(refusal.budget_id, b_user.id);
            assert_eq!(refusal.scope, BudgetScope::User(u.id));
            assert_eq!(refusal.limit, money("15"));
            assert_eq!(refusal.remaining, money("5"));
            assert_eq!(refusal.requested, money("6"));
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    // Nothing was reserved anywhere.
    for id in all {
        assert_eq!(
            totals(&store, o.id, id, now()).await,
            (Money::ZERO, money("10"))
        );
    }
    // Exactly up to the limit is allowed; one cent more is not.
    reserved(
        store
            .reserve(o.id, &request(&all, "5", now()))
            .await
            .unwrap(),
    );
    assert!(matches!(
        store.reserve(o.id, &request(&[b_org.id, b_user.id], "0.01", now())).await.unwrap(),
        ReserveOutcome::Refused(r) if r.budget_id == b_user.id && r.remaining == Money::ZERO
    ));
    assert_eq!(
        totals(&store, o.id, b_org.id, now()).await,
        (Money::ZERO, money("15"))
    );
}

pub async fn reserve_idempotent<S: Store>(store: S) {
    let o = org(&store).await;
    let b = budget(&store, o.id, BudgetScope::Org, "10", true).await;
    let req = request(&[b.id], "4", now());
    let first = reserved(store.reserve(o.id, &req).await.unwrap());
    let mut again = req.clone();
    again.amount = money("9");
    let second = reserved(store.reserve(o.id, &again).await.unwrap());
    assert_eq!(first, second, "the first reservation is returned");
    assert_eq!(
        totals(&store, o.id, b.id, now()).await,
        (Money::ZERO, money("4"))
    );
    // The same request id in another organization is another request.
    let other = org(&store).await;
    let ob = budget(&store, other.id, BudgetScope::Org, "10", true).await;
    let mut elsewhere = req.clone();
    elsewhere.budgets = vec![ob.id];
    reserved(store.reserve(other.id, &elsewhere).await.unwrap());
    assert_eq!(
        totals(&store, other.id, ob.id, now()).await,
        (Money::ZERO, money("4"))
    );
    assert_eq!(
        totals(&store, o.id, b.id, now()).await,
        (Money::ZERO, money("4"))
    );
}

pub async fn settle_idempotent_and_without_reservation<S: Store>(store: S) {
    let o = org(&store).await;
    let b = budget(&store, o.id, BudgetScope::Org, "10", true).await;
    let req = request(&[b.id], "4", now());
    reserved(store.reserve(o.id, &req).await.unwrap());
    assert!(
        store
            .settle(o.id, req.request_id, &[b.id], money("3"), now())
            .await
            .unwrap()
            .applied
    );
    let again = store
        .settle(o.id, req.request_id, &[b.id], money("3"), now())
        .await
        .unwrap();
    assert!(!again.applied);
    assert!(again.alerts.is_empty());
    assert_eq!(
        totals(&store, o.id, b.id, now()).await,
        (money("3"), Money::ZERO)
    );

    // Without a reservation the spend is still recorded (the request happened), even past
    // the hard limit, and only once.
    let unreserved = RequestId::new();
    assert!(
        store
            .settle(o.id, unreserved, &[b.id], money("8"), now())
            .await
            .unwrap()
            .applied
    );
    assert!(
        !store
            .settle(o.id, unreserved, &[b.id], money("8"), now())
            .await
            .unwrap()
            .applied
    );
    assert_eq!(
        totals(&store, o.id, b.id, now()).await,
        (money("11"), Money::ZERO)
    );
    // Reserving for a settled request changes nothing either.
    let mut late = request(&[b.id], "1", now());
    late.request_id = unreserved;
    reserved(store.reserve(o.id, &late).await.unwrap());
    assert_eq!(
        totals(&store, o.id, b.id, now()).await,
        (money("11"), Money::ZERO)
    );
    // A hard budget at its limit refuses new reservations.
    assert!(matches!(
        store
            .reserve(o.id, &request(&[b.id], "0.01", now()))
            .await
            .unwrap(),
        ReserveOutcome::Refused(_)
    ));
}

pub async fn settle_after_release_records_spend<S: Store>(store: S) {
    let o = org(&store).await;
    let b = budget(&store, o.id, BudgetScope::Org, "10", true).await;
    let req = request(&[b.id], "5", now());
    reserved(store.reserve(o.id, &req).await.unwrap());
    store.release(o.id, req.request_id).await.unwrap();
    assert!(
        store
            .settle(o.id, req.request_id, &[], money("3"), now())
            .await
            .unwrap()
            .applied
    );
    assert_eq!(
        totals(&store, o.id, b.id, now()).await,
        (money("3"), Money::ZERO)
    );
}

pub async fn release_idempotent<S: Store>(store: S) {
    let o = org(&store).await;
    let b = budget(&store, o.id, BudgetScope::Org, "10", true).await;
    store.release(o.id, RequestId::new()).await.unwrap();
    let req = request(&[b.id], "5", now());
    reserved(store.reserve(o.id, &req).await.unwrap());
    let other = request(&[b.id], "2", now());
    reserved(store.reserve(o.id, &other).await.unwrap());
    store.release(o.id, req.request_id).await.unwrap();
    store.release(o.id, req.request_id).await.unwrap();
    assert_eq!(
        totals(&store, o.id, b.id, now()).await,
        (Money::ZERO, money("2"))
    );
    store
        .settle(o.id, other.request_id, &[b.id], money("2"), now())
        .await
        .unwrap();
    store.release(o.id, other.request_id).await.unwrap();
    assert_eq!(
        totals(&store, o.id, b.id, now()).await,
        (money("2"), Money::ZERO)
    );
}

pub async fn periods_start_at_zero<S: Store>(store: S) {
    let o = org(&store).await;
    let monthly = budget(&store, o.id, BudgetScope::Org, "10", true).await;
    let mut daily = new_budget(o.id, BudgetScope::Org, "5", true);
    daily.period = BudgetPeriod::Daily;
    store.create_budget(o.id, &daily).await.unwrap();

    let jan31 = at("2026-01-31T23:30:00Z");
    let feb1 = at("2026-02-01T00:30:00Z");
    let req = request(&[monthly.id, daily.id], "4", jan31);
    reserved(store.reserve(o.id, &req).await.unwrap());
    // Settled after midnight: the spend lands in the period current at reservation.
    store
        .settle(o.id, req.request_id, &[], money("4"), feb1)
        .await
        .unwrap();
    assert_eq!(
        totals(&store, o.id, monthly.id, jan31).await,
        (money("4"), Money::ZERO)
    );
    assert_eq!(
        totals(&store, o.id, daily.id, jan31).await,
        (money("4"), Money::ZERO)
    );
    let feb = state(&store, o.id, monthly.id, feb1).await;
    assert_eq!((feb.spent, feb.reserved), (Money::ZERO, Money::ZERO));
    assert_eq!(feb.period_start, at("2026-02-01T00:00:00Z"));
    assert_eq!(feb.period_end, at("2026-03-01T00:00:00Z"));
    let day = state(&store, o.id, daily.id, feb1).await;
    assert_eq!(day.period_start, at("2026-02-01T00:00:00Z"));
    assert_eq!(day.period_end, at("2026-02-02T00:00:00Z"));
    // The whole limit is available again.
    reserved(
        store
            .reserve(o.id, &request(&[daily.id], "5", feb1))
            .await
            .unwrap(),
    );
    // A settlement without reservation lands in the period current at settlement.
    store
        .settle(o.id, RequestId::new(), &[monthly.id], money("1"), feb1)
        .await
        .unwrap();
    assert_eq!(
        totals(&store, o.id, monthly.id, feb1).await,
        (money("1"), Money::ZERO)
    );
    assert_eq!(
        totals(&store, o.id, monthly.id, jan31).await,
        (money("4"), Money::ZERO)
    );
}

pub async fn soft_budget_never_refuses<S: Store>(store: S) {
    let o = org(&store).await;
    let soft = budget(&store, o.id, BudgetScope::Org, "1", false).await;
    let states = reserved(
        store
            .reserve(o.id, &request(&[soft.id], "5", now()))
            .await
            .unwrap(),
    );
    assert_eq!(states[0].reserved, money("5"));
}

pub async fn alerts_fire_once_per_period<S: Store>(store: S) {
    let o = org(&store).await;
    let b = budget(&store, o.id, BudgetScope::Org, "10", true).await;
    let settle = |amount: &'static str, at: DateTime<Utc>| {
        let store = store.clone();
        async move {
            store
                .settle(o.id, RequestId::new(), &[b.id], money(amount), at)
                .await
                .unwrap()
        }
    };
    assert!(settle("5", now()).await.alerts.is_empty());
    let crossing = settle("3.5", now()).await;
    assert_eq!(crossing.alerts.len(), 1);
    let alert = &crossing.alerts[0];
    assert_eq!(alert.budget_id, b.id);
    assert_eq!(alert.org_id, o.id);
    assert_eq!(alert.spent, money("8.5"));
    assert_eq!(alert.limit, money("10"));
    assert_eq!(alert.threshold, Decimal::new(80, 2));
    assert_eq!(alert.period_start, at("2026-01-01T00:00:00Z"));
    assert!(state(&store, o.id, b.id, now()).await.alert_sent);
    assert!(settle("1", now()).await.alerts.is_empty());
    // A new period alerts again.
    let march = at("2026-03-10T00:00:00Z");
    assert!(!state(&store, o.id, b.id, march).await.alert_sent);
    assert_eq!(settle("9", march).await.alerts.len(), 1);
}

pub async fn ledger_reclaim_expired<S: Store>(store: S) {
    // This test lives in 2001 so that reclaiming never touches other tests' reservations.
    let o = org(&store).await;
    let b = budget(&store, o.id, BudgetScope::Org, "10", true).await;
    let start = at("2001-01-01T00:00:00Z");
    let short = ReserveRequest {
        expires_at: start + Duration::minutes(5),
        ..request(&[b.id], "3", start)
    };
    let long = ReserveRequest {
        expires_at: start + Duration::hours(1),
        ..request(&[b.id], "2", start)
    };
    reserved(store.reserve(o.id, &short).await.unwrap());
    reserved(store.reserve(o.id, &long).await.unwrap());
    assert!(
        store
            .reclaim_expired(start + Duration::minutes(10))
            .await
            .unwrap()
            >= 1
    );
    assert_eq!(
        totals(&store, o.id, b.id, start).await,
        (Money::ZERO, money("2"))
    );
    // A reclaimed request that completes after all is still recorded.
    store
        .settle(
            o.id,
            short.request_id,
            &[],
            money("1"),
            start + Duration::minutes(20),
        )
        .await
        .unwrap();
    assert_eq!(
        totals(&store, o.id, b.id, start).await,
        (money("1"), money("2"))
    );
    // Settled reservations are never reclaimed.
    store
        .settle(o.id, long.request_id, &[], money("2"), start)
        .await
        .unwrap();
    store
        .reclaim_expired(start + Duration::hours(2))
        .await
        .unwrap();
    assert_eq!(
        totals(&store, o.id, b.id, start).await,
        (money("3"), Money::ZERO)
    );
}

pub async fn concurrent_reservations_never_overspend<S: Store>(store: S) {
    let o = org(&store).await;
    let b = budget(&store, o.id, BudgetScope::Org, "10", true).await;
    let running = Arc::new(AtomicBool::new(true));
    let sampler = {
        let store = store.clone();
        let running = Arc::clone(&running);
        tokio::spawn(async move {
            let mut samples = 0u32;
            while running.load(Ordering::Relaxed) {
                let (spent, reserved) = totals(&store, o.id, b.id, now()).await;
                assert!(
                    spent + reserved <= money("10"),
                    "overspent: {spent} + {reserved}"
                );
                samples += 1;
                tokio::task::yield_now().await;
            }
            samples
        })
    };
    let mut tasks = Vec::new();
    for i in 0..40u32 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            // Worst case 0.26-0.99, actual cost 60% of it, rounded to the cent.
            let worst = Money::new(Decimal::new(i64::from(26 + (i * 37) % 74), 2)).unwrap();
            let req = ReserveRequest {
                request_id: RequestId::new(),
                budgets: vec![b.id],
                amount: worst,
                now: now(),
                expires_at: now() + Duration::hours(1),
                holder: None,
            };
            match store.reserve(o.id, &req).await.unwrap() {
                ReserveOutcome::Reserved(_) => {
                    let actual = Money::new(worst.amount() * Decimal::new(6, 1))
                        .unwrap()
                        .round_dp(2);
                    store
                        .settle(o.id, req.request_id, &[b.id], actual, now())
                        .await
                        .unwrap();
                    actual
                }
                ReserveOutcome::Refused(_) => Money::ZERO,
            }
        }));
    }
    let mut settled = Money::ZERO;
    for task in tasks {
        settled = settled + task.await.unwrap();
    }
    running.store(false, Ordering::Relaxed);
    assert!(sampler.await.unwrap() > 0);
    let (spent, reserved) = totals(&store, o.id, b.id, now()).await;
    assert_eq!(
        spent, settled,
        "spent is exactly the sum of settled amounts"
    );
    assert_eq!(reserved, Money::ZERO);
    assert!(spent <= money("10"));
}

pub async fn periods_follow_org_timezone<S: Store>(store: S) {
    let mut o = new_org();
    o.settings.timezone = Some("America/New_York".to_owned());
    store.create_org(&o).await.unwrap();
    let monthly = budget(&store, o.id, BudgetScope::Org, "10", true).await;
    // 03:00 UTC on February 1st is still January 31st in New York.
    let late_january = at("2026-02-01T03:00:00Z");
    let states = reserved(
        store
            .reserve(o.id, &request(&[monthly.id], "4", late_january))
            .await
            .unwrap(),
    );
    assert_eq!(states[0].period_start, at("2026-01-01T05:00:00Z"));
    assert_eq!(states[0].period_end, at("2026-02-01T05:00:00Z"));
    // From 05:00 UTC it is February there: a new period, from zero.
    let february = state(&store, o.id, monthly.id, at("2026-02-01T05:00:00Z")).await;
    assert_eq!(
        (february.spent, february.reserved),
        (Money::ZERO, Money::ZERO)
    );
    assert_eq!(february.period_start, at("2026-02-01T05:00:00Z"));
    assert_eq!(
        totals(&store, o.id, monthly.id, at("2026-02-01T04:59:59Z")).await,
        (Money::ZERO, money("4"))
    );
}
