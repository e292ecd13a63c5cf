//! Model-based test of a store's ledger against core's pure `LedgerModel`.

use std::future::Future;

use chrono::{DateTime, Duration, Utc};
use proptest::prelude::*;
use rust_decimal::Decimal;
use stratai_core::budget::{BudgetPeriod, BudgetScope, LedgerModel};
use stratai_core::ports::ReserveRequest;
use stratai_core::{BudgetId, Money, RequestId};

use super::fixtures::*;

/// One ledger operation; requests and budgets are indexes into small fixed pools, times are
/// minutes after a base instant two days before a month boundary.
#[derive(Clone, Debug)]
pub enum Op {
    Reserve {
        request: usize,
        budgets: Vec<usize>,
        cents: i64,
        minute: i64,
        ttl_minutes: i64,
    },
    Settle {
        request: usize,
        budgets: Vec<usize>,
        cents: i64,
        minute: i64,
    },
    Release {
        request: usize,
    },
    Reclaim {
        minute: i64,
    },
}

const REQUESTS: usize = 8;
const BUDGETS: usize = 3;
const SPAN_MINUTES: i64 = 4 * 24 * 60;

fn budgets() -> impl Strategy<Value = Vec<usize>> {
    proptest::collection::vec(0..BUDGETS, 0..=BUDGETS)
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..REQUESTS, budgets(), 0..300i64, 0..SPAN_MINUTES, 1..600i64).prop_map(
            |(request, budgets, cents, minute, ttl_minutes)| Op::Reserve {
                request,
                budgets,
                cents,
                minute,
                ttl_minutes,
            }
        ),
        3 => (0..REQUESTS, budgets(), 0..300i64, 0..SPAN_MINUTES).prop_map(
            |(request, budgets, cents, minute)| Op::Settle {
                request,
                budgets,
                cents,
                minute,
            }
        ),
        1 => (0..REQUESTS).prop_map(|request| Op::Release { request }),
        1 => (0..SPAN_MINUTES).prop_map(|minute| Op::Reclaim { minute }),
    ]
}

/// Sequences of operations.
pub fn ops() -> impl Strategy<Value = Vec<Op>> {
    proptest::collection::vec(op(), 1..40)
}

fn base() -> DateTime<Utc> {
    at("2026-01-30T20:00:00Z")
}

fn cents(n: i64) -> Money {
    Money::new(Decimal::new(n, 2)).unwrap()
}

/// Runs `ops` on a fresh store from `make` and on the model, comparing every outcome and the
/// budgets' states after every step.
pub fn check<S, F, Fut>(make: F, ops: Vec<Op>)
where
    S: Store,
    F: FnOnce() -> Fut,
    Fut: Future<Output = S>,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let store = make().await;
        let mut model = LedgerModel::new();
        let mut o = new_org();
        o.settings.timezone = Some("Europe/Berlin".to_owned());
        store.create_org(&o).await.unwrap();
        model.set_timezone(o.id, chrono_tz::Europe::Berlin);

        let specs = [
            (BudgetPeriod::Monthly, "5", true),
            (BudgetPeriod::Daily, "2", true),
            (BudgetPeriod::Weekly, "3", false),
        ];
        let mut budget_ids = Vec::new();
        for (period, limit, hard) in specs {
            let mut b = new_budget(o.id, BudgetScope::Org, limit, hard);
            b.period = period;
            store.create_budget(o.id, &b).await.unwrap();
            model.create_budget(o.id, &b).unwrap();
            budget_ids.push(b.id);
        }
        let requests: Vec<RequestId> = (0..REQUESTS).map(|_| RequestId::new()).collect();
        let pick = |indexes: &[usize]| -> Vec<BudgetId> {
            indexes.iter().map(|i| budget_ids[*i]).collect()
        };

        for (step, op) in ops.iter().enumerate() {
            let at = match op {
                Op::Reserve { minute, .. } | Op::Settle { minute, .. } | Op::Reclaim { minute } => {
                    base() + Duration::minutes(*minute)
                }
                Op::Release { .. } => base(),
            };
            match op {
                Op::Reserve {
                    request,
                    budgets,
                    cents: c,
                    ttl_minutes,
                    ..
                } => {
                    let req = ReserveRequest {
                        request_id: requests[*request],
                        budgets: pick(budgets),
                        amount: cents(*c),
                        now: at,
                        expires_at: at + Duration::minutes(*ttl_minutes),
                        holder: None,
                    };
                    let got = store.reserve(o.id, &req).await.unwrap();
                    let want = model.reserve(o.id, &req).unwrap();
                    assert_eq!(got, want, "step {step}: {op:?}");
                }
                Op::Settle {
                    request,
                    budgets,
                    cents: c,
                    ..
                } => {
                    let got = store
                        .settle(o.id, requests[*request], &pick(budgets), cents(*c), at)
                        .await
                        .unwrap();
                    let want = model
                        .settle(o.id, requests[*request], &pick(budgets), cents(*c), at)
                        .unwrap();
                    assert_eq!(got, want, "step {step}: {op:?}");
                }
                Op::Release { request } => {
                    store.release(o.id, requests[*request]).await.unwrap();
                    model.release(o.id, requests[*request]).unwrap();
                }
                Op::Reclaim { .. } => {
                    let got = store.reclaim_expired(at).await.unwrap();
                    let want = model.reclaim_expired(at);
                    assert_eq!(got, want, "step {step}: {op:?}");
                }
            }
            for sample in [
                at,
                base(),
                base() + Duration::days(2),
                base() + Duration::days(4),
            ] {
                assert_eq!(
                    store.states(o.id, &budget_ids, sample).await.unwrap(),
                    model.states(o.id, &budget_ids, sample).unwrap(),
                    "step {step}: {op:?}, states at {sample}"
                );
            }
        }
    });
}
