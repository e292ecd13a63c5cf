#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

//! `LeasedLedger` over real ledgers (the memory store, and SQLite shared by two "instances"):
//! local admissions inside leased blocks, settlement of the sum, idempotency, refusal, alerts,
//! and the hard limit under concurrency across instances.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use stratai_core::budget::{Budget, BudgetPeriod, BudgetScope, BudgetState};
use stratai_core::directory::{BillingPlan, OrgSettings, Organization, Slug};
use stratai_core::ids::{BudgetId, InstanceId, OrgId, RequestId, TierSlug};
use stratai_core::ports::{
    BudgetLedger, DirectoryStore, HeldReservation, ReserveOutcome, ReserveRequest, SettleOutcome,
};
use stratai_core::{Money, StoreError};
use stratai_guardrails::{LeaseConfig, LeasedLedger};
use stratai_store::{MemoryStore, SqliteStore};

fn money(s: &str) -> Money {
    Money::parse(s).unwrap()
}

async fn org_with_budget<S: DirectoryStore + BudgetLedger>(
    store: &S,
    limit: &str,
    threshold: Decimal,
) -> (OrgId, Budget) {
    let now = Utc::now();
    let slug = Slug::new(format!(
        "lease-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    ))
    .unwrap();
    let settings = OrgSettings::new(
        vec![TierSlug::new("basic").unwrap()],
        TierSlug::new("basic").unwrap(),
    )
    .unwrap();
    let org = Organization::new("Lease Co", slug, settings, BillingPlan::Business, now).unwrap();
    store.create_org(&org).await.unwrap();
    let budget = Budget::new(
        org.id,
        BudgetScope::Org,
        money(limit),
        BudgetPeriod::Monthly,
        true,
        threshold,
        now,
    )
    .unwrap();
    store.create_budget(org.id, &budget).await.unwrap();
    (org.id, budget)
}

fn request(budget: BudgetId, amount: &str) -> ReserveRequest {
    let now = Utc::now();
    ReserveRequest {
        request_id: RequestId::new(),
        budgets: vec![budget],
        amount: money(amount),
        now,
        expires_at: now + chrono::Duration::minutes(15),
        holder: None,
    }
}

/// Reserves `amount` on `budget` through `leased` and asserts that it was admitted; returns
/// the request (to settle or release it later).
async fn admit(
    leased: &LeasedLedger,
    org: OrgId,
    budget: BudgetId,
    amount: &str,
) -> ReserveRequest {
    let r = request(budget, amount);
    let outcome = leased.reserve(org, &r).await.unwrap();
    assert!(
        matches!(outcome, ReserveOutcome::Reserved(_)),
        "not admitted: {outcome:?}"
    );
    r
}

async fn state(ledger: &dyn BudgetLedger, org: OrgId, budget: BudgetId) -> BudgetState {
    ledger
        .states(org, &[budget], Utc::now())
        .await
        .unwrap()
        .remove(0)
}

/// Whether [`LeasedLedger::refill_wanted`] resolves within 10 ms (a wake is queued before
/// the call that causes it returns).
async fn woken(leased: &LeasedLedger) -> bool {
    tokio::time::timeout(Duration::from_millis(10), leased.refill_wanted())
        .await
        .is_ok()
}

fn config(max_age_ms: u64, block_requests: u32) -> LeaseConfig {
    LeaseConfig {
        max_age: Duration::from_millis(max_age_ms),
        block_requests,
        ..LeaseConfig::default()
    }
}

#[tokio::test]
async fn requests_are_admitted_inside_one_block_and_the_sum_is_settled() {
    let store = Arc::new(MemoryStore::new());
    let (org, budget) = org_with_budget(&*store, "100", Decimal::ONE).await;
    let leased = LeasedLedger::new(store.clone(), config(60_000, 10));

    let mut ids = Vec::new();
    for _ in 0..10 {
        let r = request(budget.id, "0.5");
        match leased.reserve(org, &r).await.unwrap() {
            ReserveOutcome::Reserved(states) => {
                // The reader of a lease sees what its requests hold, not the whole block.
                assert_eq!(states.len(), 1);
                assert!(states[0].reserved <= money("5"));
            }
            ReserveOutcome::Refused(r) => panic!("refused: {r:?}"),
        }
        ids.push(r.request_id);
    }
    // One block of 10 x 0.5 in the shared ledger, nothing spent yet.
    assert_eq!(leased.open_leases(), 1);
    let shared = state(&*store, org, budget.id).await;
    assert_eq!((shared.spent, shared.reserved), (Money::ZERO, money("5")));

    for id in &ids {
        let out = leased
            .settle(org, *id, &[budget.id], money("0.25"), Utc::now())
            .await
            .unwrap();
        assert!(out.applied);
    }
    // Still open (young): the shared ledger still holds the block.
    assert_eq!(state(&*store, org, budget.id).await.reserved, money("5"));
    let (waiting, _) = leased.close_all(Utc::now()).await.unwrap();
    assert_eq!(waiting, 0);
    let shared = state(&*store, org, budget.id).await;
    assert_eq!((shared.spent, shared.reserved), (money("2.5"), Money::ZERO));
}

#[tokio::test]
async fn an_aged_lease_closes_when_its_last_request_ends_and_a_new_one_opens() {
    let store = Arc::new(MemoryStore::new());
    let (org, budget) = org_with_budget(&*store, "100", Decimal::ONE).await;
    let leased = LeasedLedger::new(store.clone(), config(50, 4));
    let first = admit(&leased, org, budget.id, "1").await;
    tokio::time::sleep(Duration::from_millis(80)).await;
    // The old lease is too old to admit: a second lease opens.
    let second = admit(&leased, org, budget.id, "1").await;
    assert_eq!(leased.open_leases(), 2);
    assert_eq!(state(&*store, org, budget.id).await.reserved, money("8"));
    // Ending the first request closes the first lease (it is aged and idle) and wakes the
    // background task; the request does not wait for the shared ledger: the flush settles it.
    assert!(!woken(&leased).await, "woken before any lease closed");
    leased
        .settle(
            org,
            first.request_id,
            &[budget.id],
            money("0.7"),
            Utc::now(),
        )
        .await
        .unwrap();
    assert_eq!(leased.open_leases(), 1);
    assert!(
        woken(&leased).await,
        "a closed lease did not wake the flush"
    );
    let shared = state(&*store, org, budget.id).await;
    assert_eq!((shared.spent, shared.reserved), (Money::ZERO, money("8")));
    leased.flush(Utc::now()).await.unwrap();
    let shared = state(&*store, org, budget.id).await;
    assert_eq!((shared.spent, shared.reserved), (money("0.7"), money("4")));
    // A flush after the second request ends and the lease ages settles it too.
    leased.release(org, second.request_id).await.unwrap();
    tokio::time::sleep(Duration::from_millis(60)).await;
    leased.flush(Utc::now()).await.unwrap();
    assert_eq!(leased.open_leases(), 0);
    let shared = state(&*store, org, budget.id).await;
    assert_eq!((shared.spent, shared.reserved), (money("0.7"), Money::ZERO));
}

#[tokio::test]
async fn settle_release_and_reserve_are_idempotent_by_request_id() {
    let store = Arc::new(MemoryStore::new());
    let (org, budget) = org_with_budget(&*store, "100", Decimal::ONE).await;
    let leased = LeasedLedger::new(store.clone(), config(60_000, 8));
    let r = admit(&leased, org, budget.id, "1").await;
    leased.reserve(org, &r).await.unwrap();
    assert_eq!(
        leased.in_flight(),
        1,
        "a repeated reserve holds nothing more"
    );
    let once = leased
        .settle(org, r.request_id, &[budget.id], money("0.6"), Utc::now())
        .await
        .unwrap();
    let twice = leased
        .settle(org, r.request_id, &[budget.id], money("0.6"), Utc::now())
        .await
        .unwrap();
    assert!(once.applied);
    assert!(!twice.applied);
    leased.release(org, r.request_id).await.unwrap();
    leased.close_all(Utc::now()).await.unwrap();
    let shared = state(&*store, org, budget.id).await;
    assert_eq!((shared.spent, shared.reserved), (money("0.6"), Money::ZERO));
}

#[tokio::test]
async fn near_exhaustion_the_block_shrinks_to_the_request_and_then_refuses() {
    let store = Arc::new(MemoryStore::new());
    let (org, budget) = org_with_budget(&*store, "2.5", Decimal::ONE).await;
    let leased = LeasedLedger::new(store.clone(), config(60_000, 32));
    // A block of 32 does not fit: the exact amount is reserved instead, twice.
    let a = admit(&leased, org, budget.id, "1").await;
    admit(&leased, org, budget.id, "1").await;
    // 0.5 left: a third request of 1 is refused, naming the budget.
    match leased.reserve(org, &request(budget.id, "1")).await.unwrap() {
        ReserveOutcome::Refused(refusal) => {
            assert_eq!(refusal.budget_id, budget.id);
            assert_eq!(refusal.scope, BudgetScope::Org);
        }
        ReserveOutcome::Reserved(_) => panic!("reserved past the hard limit"),
    }
    // Idle room held by a lease of this instance is given back before refusing.
    leased
        .settle(org, a.request_id, &[budget.id], money("0.2"), Utc::now())
        .await
        .unwrap();
    admit(&leased, org, budget.id, "1").await;
}

#[tokio::test]
async fn room_held_by_closed_leases_awaiting_settlement_is_given_back_before_refusing() {
    let store = Arc::new(MemoryStore::new());
    let (org, budget) = org_with_budget(&*store, "10", Decimal::ONE).await;
    // Leases age at once: each closes when its request ends and waits for the background
    // settlement (`flush`, not called here) with three of its four worst cases unused.
    let leased = LeasedLedger::new(store.clone(), config(0, 4));
    for _ in 0..10 {
        let r = admit(&leased, org, budget.id, "1").await;
        leased
            .settle(org, r.request_id, &[budget.id], money("1"), Utc::now())
            .await
            .unwrap();
    }
    // Spent exactly: the eleventh is refused.
    match leased.reserve(org, &request(budget.id, "1")).await.unwrap() {
        ReserveOutcome::Refused(refusal) => assert_eq!(refusal.budget_id, budget.id),
        ReserveOutcome::Reserved(_) => panic!("reserved past the hard limit"),
    }
    leased.close_all(Utc::now()).await.unwrap();
    let shared = state(&*store, org, budget.id).await;
    assert_eq!(shared.spent, money("10"));
    assert_eq!(shared.reserved, Money::ZERO);
}

#[tokio::test]
async fn threshold_alerts_fire_once_when_leases_settle() {
    let store = Arc::new(MemoryStore::new());
    let (org, budget) = org_with_budget(&*store, "10", Decimal::new(5, 1)).await;
    let leased = LeasedLedger::new(store.clone(), config(0, 4));
    let mut alerts = Vec::new();
    for _ in 0..8 {
        let r = admit(&leased, org, budget.id, "1").await;
        let out = leased
            .settle(org, r.request_id, &[budget.id], money("1"), Utc::now())
            .await
            .unwrap();
        alerts.extend(out.alerts);
    }
    let (_, rest) = leased.close_all(Utc::now()).await.unwrap();
    alerts.extend(rest);
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0].budget_id, budget.id);
    assert_eq!(state(&*store, org, budget.id).await.spent, money("8"));
}

/// The memory ledger with faults and counts: `settle` fails while `failing` is set;
/// `reserve` is counted and takes `reserve_delay` (a slow database).
struct FlakySettle {
    inner: Arc<MemoryStore>,
    failing: AtomicBool,
    failures: AtomicU32,
    reserves: AtomicU32,
    reserve_delay: Duration,
}

impl FlakySettle {
    fn over(inner: Arc<MemoryStore>) -> Self {
        Self {
            inner,
            failing: AtomicBool::new(false),
            failures: AtomicU32::new(0),
            reserves: AtomicU32::new(0),
            reserve_delay: Duration::ZERO,
        }
    }
}

#[async_trait]
impl BudgetLedger for FlakySettle {
    async fn create_budget(&self, org: OrgId, budget: &Budget) -> Result<(), StoreError> {
        self.inner.create_budget(org, budget).await
    }
    async fn get_budget(&self, org: OrgId, budget: BudgetId) -> Result<Budget, StoreError> {
        self.inner.get_budget(org, budget).await
    }
    async fn list_budgets(&self, org: OrgId) -> Result<Vec<Budget>, StoreError> {
        self.inner.list_budgets(org).await
    }
    async fn update_budget(&self, org: OrgId, budget: &Budget) -> Result<(), StoreError> {
        self.inner.update_budget(org, budget).await
    }
    async fn delete_budget(&self, org: OrgId, budget: BudgetId) -> Result<(), StoreError> {
        self.inner.delete_budget(org, budget).await
    }
    async fn states(
        &self,
        org: OrgId,
        budgets: &[BudgetId],
        now: DateTime<Utc>,
    ) -> Result<Vec<BudgetState>, StoreError> {
        self.inner.states(org, budgets, now).await
    }
    async fn reserve(&self, org: OrgId, r: &ReserveRequest) -> Result<ReserveOutcome, StoreError> {
        self.reserves.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(self.reserve_delay).await;
        self.inner.reserve(org, r).await
    }
    async fn settle(
        &self,
        org: OrgId,
        id: RequestId,
        budgets: &[BudgetId],
        actual: Money,
        now: DateTime<Utc>,
    ) -> Result<SettleOutcome, StoreError> {
        if self.failing.load(Ordering::SeqCst) {
            self.failures.fetch_add(1, Ordering::SeqCst);
            return Err(StoreError::Backend("database down".to_owned()));
        }
        self.inner.settle(org, id, budgets, actual, now).await
    }
    async fn release(&self, org: OrgId, id: RequestId) -> Result<(), StoreError> {
        self.inner.release(org, id).await
    }
    async fn reclaim_expired(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        self.inner.reclaim_expired(now).await
    }
    async fn settle_total(
        &self,
        org: OrgId,
        id: RequestId,
        budgets: &[BudgetId],
        total: Money,
        now: DateTime<Utc>,
    ) -> Result<SettleOutcome, StoreError> {
        if self.failing.load(Ordering::SeqCst) {
            self.failures.fetch_add(1, Ordering::SeqCst);
            return Err(StoreError::Backend("database down".to_owned()));
        }
        self.inner.settle_total(org, id, budgets, total, now).await
    }
    async fn beat(&self, instance: InstanceId, now: DateTime<Utc>) -> Result<(), StoreError> {
        self.inner.beat(instance, now).await
    }
    async fn retire_instance(&self, instance: InstanceId) -> Result<(), StoreError> {
        self.inner.retire_instance(instance).await
    }
    async fn abandoned_leases(
        &self,
        dead_before: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<HeldReservation>, StoreError> {
        self.inner.abandoned_leases(dead_before, limit).await
    }
}

#[tokio::test]
async fn a_lease_whose_settlement_fails_is_kept_and_settled_by_a_later_flush() {
    let store = Arc::new(MemoryStore::new());
    let (org, budget) = org_with_budget(&*store, "100", Decimal::ONE).await;
    let flaky = Arc::new(FlakySettle::over(store.clone()));
    flaky.failing.store(true, Ordering::SeqCst);
    let leased = LeasedLedger::new(flaky.clone(), config(0, 4));
    let r = admit(&leased, org, budget.id, "1").await;
    // The request's own settlement succeeds (it is in memory, the closed lease is left to
    // the flush); the lease's settlement by the flush fails, and a later flush retries it.
    let out = leased
        .settle(org, r.request_id, &[budget.id], money("0.9"), Utc::now())
        .await
        .unwrap();
    assert!(out.applied);
    assert_eq!(flaky.failures.load(Ordering::SeqCst), 0);
    assert!(leased.flush(Utc::now()).await.is_err());
    assert!(flaky.failures.load(Ordering::SeqCst) >= 1);
    assert_eq!(state(&*store, org, budget.id).await.spent, Money::ZERO);
    flaky.failing.store(false, Ordering::SeqCst);
    leased.flush(Utc::now()).await.unwrap();
    let shared = state(&*store, org, budget.id).await;
    assert_eq!((shared.spent, shared.reserved), (money("0.9"), Money::ZERO));
}

/// A burst of requests that finds no lease waits for the one lease the first of them opens,
/// instead of each reserving a block in the (slow) shared ledger.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_without_a_lease_opens_one_lease() {
    let store = Arc::new(MemoryStore::new());
    let (org, budget) = org_with_budget(&*store, "100", Decimal::ONE).await;
    let mut slow = FlakySettle::over(store.clone());
    slow.reserve_delay = Duration::from_millis(30);
    let slow = Arc::new(slow);
    let leased = Arc::new(LeasedLedger::new(slow.clone(), config(60_000, 64)));
    let mut tasks = Vec::new();
    for _ in 0..40 {
        let leased = leased.clone();
        tasks.push(tokio::spawn(async move {
            let r = request(budget.id, "0.1");
            matches!(
                leased.reserve(org, &r).await.unwrap(),
                ReserveOutcome::Reserved(_)
            )
        }));
    }
    for t in tasks {
        assert!(t.await.unwrap(), "a request of the burst was refused");
    }
    assert_eq!(slow.reserves.load(Ordering::SeqCst), 1);
    assert_eq!(leased.open_leases(), 1);
    assert_eq!(leased.in_flight(), 40);
    // The one block (64 x 0.1) is all the shared ledger holds.
    assert_eq!(state(&*store, org, budget.id).await.reserved, money("6.4"));
}

/// Two instances (two `LeasedLedger`s) over one SQLite database, 200 concurrent requests
/// costing their worst case: the hard limit is never overspent and
/// the shared ledger ends with exactly the sum of the admitted requests' actual costs.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_never_overspend_a_hard_limit() {
    let dir = stratai_testkit::Scratch::new();
    let url = format!("sqlite://{}", dir.join("ledger.db").display());
    let store = Arc::new(SqliteStore::connect(&url).await.unwrap());
    let (org, budget) = org_with_budget(&*store, "3", Decimal::ONE).await;
    let instances = [
        Arc::new(LeasedLedger::new(store.clone(), config(20, 8))),
        Arc::new(LeasedLedger::new(store.clone(), config(20, 8))),
    ];
    let mut tasks = Vec::new();
    for i in 0..200u32 {
        let ledger = instances[(i % 2) as usize].clone();
        tasks.push(tokio::spawn(async move {
            let r = request(budget.id, "0.05");
            match ledger.reserve(org, &r).await.unwrap() {
                ReserveOutcome::Reserved(_) => {
                    tokio::time::sleep(Duration::from_millis(u64::from(i % 7))).await;
                    // Actual cost = the worst case: then the limit bounds how many requests
                    // may ever be admitted (60), whatever leases closed and reopened meanwhile.
                    // (With cheaper actual costs, settled leases give room back and more
                    // requests fit, so only `spent <= limit` would be checkable.)
                    let actual = money("0.05");
                    ledger
                        .settle(org, r.request_id, &[budget.id], actual, Utc::now())
                        .await
                        .unwrap();
                    Some(actual)
                }
                ReserveOutcome::Refused(_) => None,
            }
        }));
    }
    let mut admitted = Vec::new();
    for t in tasks {
        if let Some(actual) = t.await.unwrap() {
            admitted.push(actual);
        }
    }
    for ledger in &instances {
        let (waiting, _) = ledger.close_all(Utc::now()).await.unwrap();
        assert_eq!(waiting, 0);
    }
    let shared = state(&*store, org, budget.id).await;
    let total: Money = admitted.iter().copied().sum();
    assert_eq!(shared.spent, total);
    assert_eq!(shared.reserved, Money::ZERO);
    assert!(shared.spent <= money("3"), "overspent: {}", shared.spent);
    assert!(admitted.len() <= 60, "{} admitted", admitted.len());
    assert!(!admitted.is_empty());
}

#[tokio::test]
async fn refill_opens_a_successor_ahead_of_need_and_never_near_exhaustion() {
    let store = Arc::new(MemoryStore::new());
    let (org, budget) = org_with_budget(&*store, "1000", Decimal::ONE).await;
    let leased = LeasedLedger::new(store.clone(), config(60_000, 4));
    // Three of the first lease's four worst cases are taken: it will not last the horizon.
    for _ in 0..3 {
        admit(&leased, org, budget.id, "1").await;
    }
    assert_eq!(leased.open_leases(), 1);
    let opened = leased
        .refill(Duration::from_secs(1), Utc::now())
        .await
        .unwrap();
    assert_eq!(opened, 1);
    assert_eq!(leased.open_leases(), 2);
    // The next requests fit in the two leases without opening another.
    for _ in 0..5 {
        admit(&leased, org, budget.id, "1").await;
    }
    assert_eq!(leased.open_leases(), 2);
    // Everything reserved in the shared ledger is accounted for by the two blocks.
    let reserved = state(&*store, org, budget.id).await.reserved;
    assert!(reserved >= money("9"), "{reserved}");

    // A budget close to its end gets no prefetch: a quarter of what is left is less than a
    // lease of four worst cases.
    let (org2, tight) = org_with_budget(&*store, "10", Decimal::ONE).await;
    let leased = LeasedLedger::new(store.clone(), config(60_000, 4));
    for _ in 0..3 {
        admit(&leased, org2, tight.id, "1").await;
    }
    assert_eq!(
        leased
            .refill(Duration::from_secs(1), Utc::now())
            .await
            .unwrap(),
        0
    );
    assert_eq!(leased.open_leases(), 1);
}

#[tokio::test]
async fn half_a_block_used_wakes_the_refill_and_a_paused_budget_set_keeps_a_standby_lease() {
    let store = Arc::new(MemoryStore::new());
    let (org, budget) = org_with_budget(&*store, "1000", Decimal::ONE).await;
    let leased = LeasedLedger::new(store.clone(), config(1000, 4));
    // The first request opens a lease of four on its path; two of four used is not below
    // half yet, three is.
    for _ in 0..2 {
        admit(&leased, org, budget.id, "1").await;
    }
    assert!(!woken(&leased).await, "woken with half the block left");
    admit(&leased, org, budget.id, "1").await;
    assert!(
        woken(&leased).await,
        "a lease below half did not ask for a successor"
    );
    assert!(!woken(&leased).await, "one wake per lease");

    // Traffic pauses. The refill opens a successor as the lease ages, then, the successor
    // unused and about to age too, a standby lease of `block_requests` worst cases. (Leases
    // age by the wall clock: each step's window is 400 ms wide, so a loaded host's late
    // wake-ups do not move a step into the next one.)
    tokio::time::sleep(Duration::from_millis(600)).await;
    let horizon = Duration::from_millis(500);
    assert_eq!(leased.refill(horizon, Utc::now()).await.unwrap(), 1);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(leased.refill(horizon, Utc::now()).await.unwrap(), 1);
    let reserved = state(&*store, org, budget.id).await.reserved;
    // First lease (4) + successor (at least 4) + standby (exactly 4).
    assert!(reserved >= money("12"), "{reserved}");
    // The successor ages out; the next request is admitted from the standby lease without
    // a reservation of its own, and its first use asks for a successor sized for traffic.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = leased.open_leases();
    admit(&leased, org, budget.id, "1").await;
    assert_eq!(
        leased.open_leases(),
        before,
        "the request opened a lease of its own"
    );
    assert!(
        woken(&leased).await,
        "the standby lease's first use did not wake the refill"
    );

    // After close_all (shutdown), nothing opens any more.
    leased.close_all(Utc::now()).await.unwrap();
    assert_eq!(leased.refill(horizon, Utc::now()).await.unwrap(), 0);
}

#[tokio::test]
async fn no_standby_lease_once_keep_warm_has_passed() {
    let store = Arc::new(MemoryStore::new());
    let (org, budget) = org_with_budget(&*store, "1000", Decimal::ONE).await;
    let leased = LeasedLedger::new(
        store.clone(),
        LeaseConfig {
            keep_warm: Duration::from_millis(200),
            ..config(600, 4)
        },
    );
    let r = admit(&leased, org, budget.id, "1").await;
    leased
        .settle(org, r.request_id, &[budget.id], money("1"), Utc::now())
        .await
        .unwrap();
    // The used lease gets a successor as it nears its age...
    tokio::time::sleep(Duration::from_millis(300)).await;
    let horizon = Duration::from_millis(400);
    assert_eq!(leased.refill(horizon, Utc::now()).await.unwrap(), 1);
    // ...but the unused successor gets none: the last admission is older than keep_warm.
    tokio::time::sleep(Duration::from_millis(320)).await;
    assert_eq!(leased.refill(horizon, Utc::now()).await.unwrap(), 0);
}

#[tokio::test]
async fn a_request_that_must_open_a_lease_sizes_it_for_the_traffic_seen() {
    let store = Arc::new(MemoryStore::new());
    let (org, budget) = org_with_budget(&*store, "1000", Decimal::ONE).await;
    let leased = LeasedLedger::new(store.clone(), config(60_000, 4));
    // The first request knows no traffic: a lease of `block_requests` worst cases.
    for _ in 0..4 {
        admit(&leased, org, budget.id, "1").await;
    }
    assert_eq!(state(&*store, org, budget.id).await.reserved, money("4"));
    // Four admissions within moments: the next lease opened on a request's path holds what
    // that pace uses in half a lease's age, but never more than a quarter of what the budget
    // had left (996 / 4).
    admit(&leased, org, budget.id, "1").await;
    assert_eq!(leased.open_leases(), 2);
    assert_eq!(state(&*store, org, budget.id).await.reserved, money("253"));
}
