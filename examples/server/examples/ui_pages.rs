// A measurement harness: any failed setup step should stop it loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! How fast the web UI's heaviest pages render over 1,000,000 usage records in PostgreSQL:
//! the organization dashboard (`GET /org/{id}`: spend this month by day, person, model and
//! group, and the budget gauges) and the platform overview (`GET /admin`), each asked through
//! the server's router with a signed-in browser session, as a browser would.
//!
//! ```text
//! cargo run --release -p stratai-server --example ui_pages
//! ```
//!
//! Needs PostgreSQL (`DATABASE_URL`, default `postgres://postgres@127.0.0.1:5432/postgres`;
//! the test kit's throwaway database, dropped at the end). The records are spread over 20
//! organizations of 10 people and 3 groups and the 90 days up to now (so about a third of
//! each organization's 50,000 fall in this month), appended through `UsageStore::append` as
//! the gateway writes them. `STRATAI_BENCH_RECORDS` overrides the count.
//! `STRATAI_BENCH_AHEAD_DAYS=<n>` ends the 90 days `n` days after now (records dated ahead,
//! which the store takes as any other): with the days left in this month, the dashboard's
//! month is full, as on its last day (a third of an organization's records in it).
//!
//! Besides the times, each page's SQL statements per render are counted (sqlx's statement
//! events, target `sqlx::query`, during one extra render). `STRATAI_BENCH_HOLD_SECS=<n>`
//! keeps the database for `n` seconds after the measurement (its name and URLs are printed)
//! to `EXPLAIN ANALYZE` the pages' queries in `psql`.

use stratai_testkit::pg;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use chrono::{DateTime, Utc};
use rand::Rng;
use rust_decimal::Decimal;
use stratai_core::budget::{Budget, BudgetPeriod, BudgetScope};
use stratai_core::directory::{
    BillingPlan, Email, Group, Membership, OrgRole, OrgSettings, Organization, PlatformRole, Slug,
    User,
};
use stratai_core::money::Money;
use stratai_core::ports::{BudgetLedger, DirectoryStore, TierStore, UsageStore};
use stratai_core::tiers::subscriptions_for;
use stratai_core::usage::{UsageRecord, UsageStatus};
use stratai_core::{GroupId, OrgId, RequestId, TierId, TierSlug, UserId};
use stratai_server::config::{Config, FileConfig};
use stratai_server::server::{Backends, build_state, limits};
use stratai_server::stores::Stores;
use tower::ServiceExt as _;
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt as _};

const ORGS: usize = 20;
const USERS_PER_ORG: usize = 10;
const GROUPS_PER_ORG: usize = 3;
const BATCH: usize = 5_000;
const WRITERS: usize = 4;
const SAMPLES: usize = 41;

/// Whether statements are being counted (only during the counted render).
static COUNTING: AtomicBool = AtomicBool::new(false);
/// Statements counted.
static STATEMENTS: AtomicU64 = AtomicU64::new(0);

/// Counts sqlx's statement events while [`COUNTING`] is on.
struct Statements;

impl<S: Subscriber> Layer<S> for Statements {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        if COUNTING.load(Ordering::SeqCst) && event.metadata().target() == "sqlx::query" {
            STATEMENTS.fetch_add(1, Ordering::SeqCst);
        }
    }
}

struct Tenant {
    org: OrgId,
    owner: Email,
    users: Vec<UserId>,
    groups: Vec<GroupId>,
}

async fn tenants(store: &pg::PgTestDb) -> Vec<Tenant> {
    let s = &store.store;
    let now = Utc::now();
    let catalog = s.list_tiers().await.expect("catalog");
    let slugs: Vec<TierSlug> = catalog.iter().map(|t| t.slug.clone()).collect();
    let mut out = Vec::new();
    for o in 0..ORGS {
        let org = Organization::new(
            &format!("Org {o}"),
            Slug::new(format!("bench-org-{o}")).expect("slug"),
            OrgSettings::new(slugs.clone(), slugs[0].clone()).expect("settings"),
            BillingPlan::Enterprise,
            now,
        )
        .expect("org");
        s.create_org(&org).await.expect("create org");
        let ids: Vec<TierId> = catalog.iter().map(|t| t.id).collect();
        for sub in subscriptions_for(org.id, &ids, now) {
            s.put_subscription(org.id, &sub)
                .await
                .expect("subscription");
        }
        let mut users = Vec::new();
        let mut owner = None;
        for u in 0..USERS_PER_ORG {
            let email = Email::new(format!("user{u}-org{o}@example.com")).expect("email");
            let user = User::new(email.clone(), None, PlatformRole::User, now).expect("user");
            s.create_user(&user).await.expect("create user");
            let role = if u == 0 {
                OrgRole::Owner
            } else {
                OrgRole::Member
            };
            s.add_member(org.id, &Membership::new(org.id, user.id, role, now))
                .await
                .expect("member");
            // A monthly budget per person, so the dashboard draws its gauges.
            let budget = Budget::new(
                org.id,
                BudgetScope::User(user.id),
                Money::new(Decimal::new(500, 0)).expect("limit"),
                BudgetPeriod::Monthly,
                true,
                Decimal::new(8, 1),
                now,
            )
            .expect("budget");
            s.create_budget(org.id, &budget)
                .await
                .expect("create budget");
            owner.get_or_insert(email);
            users.push(user.id);
        }
        let mut groups = Vec::new();
        for g in 0..GROUPS_PER_ORG {
            let group = Group::new(org.id, &format!("Group {g}"), now).expect("group");
            s.create_group(org.id, &group).await.expect("create group");
            groups.push(group.id);
        }
        out.push(Tenant {
            org: org.id,
            owner: owner.expect("an owner"),
            users,
            groups,
        });
    }
    out
}

/// A batch of one organization's records spread over the 90 days up to now.
fn batch(
    tenant: &Tenant,
    tiers: &[(TierId, Vec<stratai_core::ModelId>)],
    n: usize,
    ahead: chrono::Duration,
) -> Vec<UsageRecord> {
    let mut rng = rand::rng();
    let now = Utc::now() + ahead;
    let span = 90 * 24 * 3600;
    (0..n)
        .map(|_| {
            let input: u32 = rng.random_range(10..4_000);
            let output: u32 = rng.random_range(10..2_000);
            let cost = Decimal::new(i64::from(input) * 3 + i64::from(output) * 15, 6);
            let created: DateTime<Utc> = now - chrono::Duration::seconds(rng.random_range(1..span));
            let (tier, models) = &tiers[rng.random_range(0..tiers.len())];
            UsageRecord {
                request_id: RequestId::new(),
                org_id: tenant.org,
                group_id: rng
                    .random_bool(0.8)
                    .then(|| tenant.groups[rng.random_range(0..tenant.groups.len())]),
                user_id: tenant.users[rng.random_range(0..tenant.users.len())],
                tier_id: Some(*tier),
                model: models[rng.random_range(0..models.len())].clone(),
                input_tokens: input,
                output_tokens: output,
                provider_cost: Money::new(cost).expect("cost"),
                billed_amount: Money::new(cost * Decimal::new(12, 1)).expect("billed"),
                overage: Default::default(),
                litellm_request_id: None,
                conversation_id: None,
                endpoint: "chat".into(),
                status: UsageStatus::Success,
                created_at: created,
                lease_id: None,
            }
        })
        .collect()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// The session cookie of `email`, as the dev sign-in sets it.
async fn session(state: &stratai_server::app::AppState, email: &str) -> String {
    let user = state
        .auth()
        .signin()
        .identities()
        .find_by_email(email)
        .await
        .expect("lookup")
        .expect("known person");
    let principal = stratai_server::auth::Principal::from(&user);
    let cookie = stratai_server::auth::routes::start_session(state.auth(), &principal, false)
        .await
        .expect("session");
    cookie
        .to_str()
        .expect("ascii")
        .split(';')
        .next()
        .expect("pair")
        .to_owned()
}

async fn render(app: &axum::Router, path: &str, cookie: &str) -> (Duration, usize) {
    let request = Request::get(path)
        .header("cookie", cookie)
        .body(Body::empty())
        .expect("request");
    let started = Instant::now();
    let response = app.clone().oneshot(request).await.expect("answer");
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("body");
    let took = started.elapsed();
    assert_eq!(
        status,
        StatusCode::OK,
        "{path}: {}",
        String::from_utf8_lossy(&body)
    );
    (took, body.len())
}

/// The statements one render of `path` executes.
async fn statements(app: &axum::Router, path: &str, cookie: &str) -> u64 {
    STATEMENTS.store(0, Ordering::SeqCst);
    COUNTING.store(true, Ordering::SeqCst);
    render(app, path, cookie).await;
    COUNTING.store(false, Ordering::SeqCst);
    STATEMENTS.load(Ordering::SeqCst)
}

async fn measure(app: &axum::Router, path: &str, cookie: &str) -> (Duration, Duration, usize) {
    let mut times = Vec::new();
    let mut size = 0;
    for i in 0..=SAMPLES {
        let (took, len) = render(app, path, cookie).await;
        size = len;
        // The first answer warms the caches and connections; it is not counted.
        if i > 0 {
            times.push(took);
        }
    }
    times.sort();
    (percentile(&times, 0.5), percentile(&times, 0.95), size)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let total: usize = std::env::var("STRATAI_BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let ahead = chrono::Duration::days(
        std::env::var("STRATAI_BENCH_AHEAD_DAYS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
    );
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(Statements))
        .expect("the bench's only tracing subscriber");
    let db = pg::fresh_db().await.expect("PostgreSQL");
    let stores = Stores::from_backend(db.store.clone());
    let config = Config::from_parts(FileConfig::default(), &HashMap::new()).expect("config");
    let backends = Backends::seeded(stores.clone(), &config)
        .await
        .expect("seed");
    let state = build_state(&config, backends).expect("state");
    let tenants = std::sync::Arc::new(tenants(&db).await);
    let tiers: Vec<(TierId, Vec<stratai_core::ModelId>)> = db
        .store
        .list_tiers()
        .await
        .expect("catalog")
        .into_iter()
        .map(|t| (t.id, t.models))
        .collect();

    let batches: Vec<(usize, Vec<UsageRecord>)> = (0..total.div_ceil(BATCH))
        .map(|i| {
            let t = i % ORGS;
            (
                t,
                batch(&tenants[t], &tiers, BATCH.min(total - i * BATCH), ahead),
            )
        })
        .collect();
    let queue = std::sync::Arc::new(tokio::sync::Mutex::new(batches));
    let started = Instant::now();
    let mut writers = Vec::new();
    for _ in 0..WRITERS {
        let store = db.store.clone();
        let queue = queue.clone();
        let tenants = tenants.clone();
        writers.push(tokio::spawn(async move {
            let mut inserted = 0;
            loop {
                // The queue's lock is released before the batch is written.
                let next = queue.lock().await.pop();
                let Some((t, records)) = next else {
                    break;
                };
                inserted += store
                    .append(tenants[t].org, &records)
                    .await
                    .expect("append")
                    .inserted;
            }
            inserted
        }));
    }
    let mut inserted = 0;
    for w in writers {
        inserted += w.await.expect("writer");
    }
    println!(
        "loaded {inserted} usage records into PostgreSQL in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let mut owner = <sqlx::PgConnection as sqlx::Connection>::connect(&db.owner_url)
        .await
        .expect("owner");
    sqlx::query("ANALYZE")
        .execute(&mut owner)
        .await
        .expect("analyze");

    let app = stratai_server::app::router(state.clone(), limits(&config));
    let org = &tenants[0];
    let owner_cookie = session(&state, org.owner.as_str()).await;
    let operator_cookie = session(&state, &config.super_admin_email).await;
    for (label, path, cookie) in [
        ("org dashboard", format!("/org/{}", org.org), &owner_cookie),
        ("platform overview", "/admin".to_owned(), &operator_cookie),
    ] {
        let (p50, p95, size) = measure(&app, &path, cookie).await;
        let statements = statements(&app, &path, cookie).await;
        println!(
            "{label} (GET {}): median {:.1} ms, p95 {:.1} ms over {SAMPLES} renders ({size} bytes, \
             {statements} SQL statements a render)",
            if path.starts_with("/org/") {
                "/org/{id}"
            } else {
                path.as_str()
            },
            p50.as_secs_f64() * 1e3,
            p95.as_secs_f64() * 1e3
        );
    }
    if let Some(secs) = std::env::var("STRATAI_BENCH_HOLD_SECS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        println!(
            "holding database {} for {secs} s (owner: {}, app role: {})",
            db.name, db.owner_url, db.app_url
        );
        tokio::time::sleep(Duration::from_secs(secs)).await;
    }
}
