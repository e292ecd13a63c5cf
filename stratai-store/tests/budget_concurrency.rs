#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Hard budgets under concurrency, on PostgreSQL and SQLite: 200 concurrent requests with
//! random costs reserve, settle or release, while a sampler reads the budgets' states. At no
//! sampled moment does `spent + reserved` pass a limit; at the end nothing is reserved and
//! each budget's spend equals exactly the sum of the amounts settled against it.

use stratai_testkit::pg;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use chrono::{DateTime, Utc};
use rand::Rng;
use rust_decimal::Decimal;
use stratai_core::budget::{Budget, BudgetPeriod, BudgetScope};
use stratai_core::directory::{
    BillingPlan, Email, Group, GroupMembership, GroupRole, Membership, OrgRole, OrgSettings,
    Organization, PlatformRole, Slug, User,
};
use stratai_core::ports::{BudgetLedger, DirectoryStore, ReserveOutcome, ReserveRequest};
use stratai_core::{BudgetId, Money, OrgId, RequestId, TierSlug, UserId};
use stratai_store::SqliteStore;
use stratai_testkit::Scratch;
use tokio::sync::Mutex;

const TASKS: usize = 200;

trait Store: DirectoryStore + BudgetLedger + Clone + Send + Sync + 'static {}
impl<T: DirectoryStore + BudgetLedger + Clone + Send + Sync + 'static> Store for T {}

fn now() -> DateTime<Utc> {
    "2026-06-15T12:00:00Z".parse().unwrap()
}

fn unique() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()
}

async fn new_org<S: Store>(store: &S) -> OrgId {
    let basic = TierSlug::new("basic").unwrap();
    let org = Organization::new(
        "Budgets",
        Slug::new(format!("org-{}", unique())).unwrap(),
        OrgSettings::new(vec![basic.clone()], basic).unwrap(),
        BillingPlan::Business,
        now(),
    )
    .unwrap();
    store.create_org(&org).await.unwrap();
    org.id
}

async fn new_member<S: Store>(store: &S, org: OrgId) -> UserId {
    let user = User::new(
        Email::new(format!("{}@example.com", unique())).unwrap(),
        None,
        PlatformRole::User,
        now(),
    )
    .unwrap();
    store.create_user(&user).await.unwrap();
    store
        .add_member(org, &Membership::new(org, user.id, OrgRole::Member, now()))
        .await
        .unwrap();
    user.id
}

async fn new_budget<S: Store>(store: &S, org: OrgId, scope: BudgetScope, limit: u32) -> BudgetId {
    let budget = Budget {
        id: BudgetId::new(),
        org_id: org,
        scope,
        limit: Money::dollars(limit),
        period: BudgetPeriod::Monthly,
        hard_limit: true,
        alert_threshold: Decimal::new(8, 1),
        created_at: now(),
        updated_at: now(),
    };
    store.create_budget(org, &budget).await.unwrap();
    budget.id
}

/// A random cost between $0.01 and $1.50, in cents.
fn random_cost(rng: &mut impl Rng) -> Money {
    Money::new(Decimal::new(rng.random_range(1..=150), 2)).unwrap()
}

struct Outcome {
    reserved: u64,
    refused: u64,
    samples: u64,
    settled: HashMap<BudgetId, Money>,
}

/// Runs the concurrent requests: task `i` draws on `paths[i % paths.len()]`.
async fn run<S: Store>(
    store: S,
    org: OrgId,
    paths: Vec<Vec<BudgetId>>,
    limits: HashMap<BudgetId, Money>,
) -> Outcome {
    let all: Vec<BudgetId> = limits.keys().copied().collect();
    let done = Arc::new(AtomicBool::new(false));
    let samples = Arc::new(AtomicU64::new(0));
    let sampler = {
        let store = store.clone();
        let done = done.clone();
        let samples = samples.clone();
        let limits = limits.clone();
        let all = all.clone();
        tokio::spawn(async move {
            while !done.load(Ordering::SeqCst) {
                for state in store.states(org, &all, now()).await.unwrap() {
                    let limit = limits[&state.budget.id];
                    assert!(
                        state.spent + state.reserved <= limit,
                        "spent {} + reserved {} passed the limit {} of {:?}",
                        state.spent,
                        state.reserved,
                        limit,
                        state.budget.scope
                    );
                }
                samples.fetch_add(1, Ordering::SeqCst);
                tokio::task::yield_now().await;
            }
        })
    };
    let settled: Arc<Mutex<HashMap<BudgetId, Money>>> = Arc::default();
    let reserved = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(TASKS);
    for i in 0..TASKS {
        let store = store.clone();
        let budgets = paths[i % paths.len()].clone();
        let settled = settled.clone();
        let reserved = reserved.clone();
        let refused = refused.clone();
        tasks.push(tokio::spawn(async move {
            let (cost, actual_cents, release) = {
                let mut rng = rand::rng();
                let cost = random_cost(&mut rng);
                let cents = (cost.amount() * Decimal::ONE_HUNDRED)
                    .try_into()
                    .unwrap_or(1u32);
                (cost, rng.random_range(0..=cents), rng.random_bool(0.1))
            };
            let request_id = RequestId::new();
            let outcome = store
                .reserve(
                    org,
                    &ReserveRequest {
                        request_id,
                        budgets: budgets.clone(),
                        amount: cost,
                        now: now(),
                        expires_at: "2100-01-01T00:00:00Z".parse().unwrap(),
                        holder: None,
                    },
                )
                .await
                .unwrap();
            match outcome {
                ReserveOutcome::Refused(refusal) => {
                    assert!(budgets.contains(&refusal.budget_id));
                    assert_eq!(refusal.requested, cost);
                    refused.fetch_add(1, Ordering::SeqCst);
                }
                ReserveOutcome::Reserved(states) => {
                    assert_eq!(states.len(), budgets.len());
                    reserved.fetch_add(1, Ordering::SeqCst);
                    tokio::task::yield_now().await;
                    if release {
                        store.release(org, request_id).await.unwrap();
                    } else {
                        // The actual cost never exceeds the reservation (worst case).
                        let actual = Money::new(Decimal::new(i64::from(actual_cents), 2)).unwrap();
                        let first = store
                            .settle(org, request_id, &budgets, actual, now())
                            .await
                            .unwrap();
                        assert!(first.applied);
                        // Idempotent: a second settlement changes nothing.
                        let again = store
                            .settle(org, request_id, &budgets, actual, now())
                            .await
                            .unwrap();
                        assert!(!again.applied);
                        let mut settled = settled.lock().await;
                        for budget in &budgets {
                            let entry = settled.entry(*budget).or_insert(Money::ZERO);
                            *entry = *entry + actual;
                        }
                    }
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    done.store(true, Ordering::SeqCst);
    sampler.await.unwrap();

    let settled = settled.lock().await.clone();
    for state in store.states(org, &all, now()).await.unwrap() {
        assert_eq!(state.reserved, Money::ZERO, "{:?}", state.budget.scope);
        assert_eq!(
            state.spent,
            settled
                .get(&state.budget.id)
                .copied()
                .unwrap_or(Money::ZERO),
            "spend of {:?} is not the sum of its settlements",
            state.budget.scope
        );
        assert!(state.spent <= limits[&state.budget.id]);
    }
    Outcome {
        reserved: reserved.load(Ordering::SeqCst),
        refused: refused.load(Ordering::SeqCst),
        samples: samples.load(Ordering::SeqCst),
        settled,
    }
}

/// One hard $10 budget: the requests ask for far more than $10 in total.
async fn one_hard_budget<S: Store>(store: S) {
    let org = new_org(&store).await;
    let budget = new_budget(&store, org, BudgetScope::Org, 10).await;
    let limits = HashMap::from([(budget, Money::dollars(10))]);
    let outcome = run(store, org, vec![vec![budget]], limits).await;
    assert!(outcome.reserved > 0, "nothing was reserved");
    assert!(outcome.refused > 0, "the $10 budget never refused");
    assert!(outcome.samples > 0, "the sampler never ran");
    assert!(
        outcome
            .settled
            .get(&budget)
            .is_some_and(|m| *m > Money::ZERO)
    );
}

/// org $100 / 4 groups of $30 / 12 users of $15: every request draws on its user, group and
/// the organization at once.
async fn hierarchy<S: Store>(store: S) {
    let org = new_org(&store).await;
    let org_budget = new_budget(&store, org, BudgetScope::Org, 100).await;
    let mut limits = HashMap::from([(org_budget, Money::dollars(100))]);
    let mut paths = Vec::new();
    for g in 0..4 {
        let group = Group::new(org, &format!("group-{g}-{}", unique()), now()).unwrap();
        store.create_group(org, &group).await.unwrap();
        let group_budget = new_budget(&store, org, BudgetScope::Group(group.id), 30).await;
        limits.insert(group_budget, Money::dollars(30));
        for _ in 0..3 {
            let user = new_member(&store, org).await;
            store
                .put_group_member(
                    org,
                    &GroupMembership::new(org, group.id, user, GroupRole::Member, now()),
                )
                .await
                .unwrap();
            let user_budget = new_budget(&store, org, BudgetScope::User(user), 15).await;
            limits.insert(user_budget, Money::dollars(15));
            paths.push(vec![user_budget, group_budget, org_budget]);
        }
    }
    let outcome = run(store, org, paths, limits).await;
    assert!(outcome.reserved > 0, "nothing was reserved");
    assert!(outcome.refused > 0, "the hierarchy never refused");
    // Every request that settled charged all three levels: the org's spend is the sum.
    let org_spent = outcome
        .settled
        .get(&org_budget)
        .copied()
        .unwrap_or_default();
    assert!(org_spent <= Money::dollars(100));
}

/// A store on a SQLite file in a scratch folder, removed (with the file) when dropped.
async fn sqlite_store() -> (SqliteStore, Scratch) {
    let scratch = Scratch::new();
    let url = format!("sqlite://{}", scratch.join("budget.db").display());
    let store = SqliteStore::connect(&url).await.unwrap();
    (store, scratch)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_one_hard_budget_is_never_overspent() {
    let Some(db) = pg::fresh_db().await else {
        return;
    };
    one_hard_budget(db.store.clone()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_budget_hierarchy_is_never_overspent() {
    let Some(db) = pg::fresh_db().await else {
        return;
    };
    hierarchy(db.store.clone()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_one_hard_budget_is_never_overspent() {
    let (store, _scratch) = sqlite_store().await;
    one_hard_budget(store.clone()).await;
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_budget_hierarchy_is_never_overspent() {
    let (store, _scratch) = sqlite_store().await;
    hierarchy(store.clone()).await;
    store.close().await;
}
