// A measurement harness: any failed setup step should stop it loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Usage ingestion into PostgreSQL: 1,000,000 records through `UsageStore::append` (UNNEST
//! batches, idempotent on request id), then one organization's month aggregated out of them.
//!
//! A harness (not criterion: one ingestion of a million rows is the measurement), run with
//!
//! ```text
//! cargo bench -p stratai-benches --bench usage_ingest
//! ```
//!
//! Needs a PostgreSQL superuser URL in `DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`). It creates a database
//! `stratai_bench_<time>`, migrates it, serves through the app role `stratai_bench_app` as
//! production does (row-level security on), and drops the database at the end.
//! `STRATAI_BENCH_RECORDS` overrides the record count.

use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use rand::Rng;
use rust_decimal::Decimal;
use sqlx::{AssertSqlSafe, Connection, PgConnection};
use stratai_core::directory::{
    BillingPlan, Email, Group, Membership, OrgRole, OrgSettings, Organization, PlatformRole, Slug,
    User,
};
use stratai_core::ports::{DirectoryStore, TierStore, UsageStore};
use stratai_core::tiers::ModelTier;
use stratai_core::usage::{Dimension, UsageQuery, UsageRecord, UsageStatus};
use stratai_core::{GroupId, ModelId, Money, OrgId, RequestId, TierId, TierSlug, UserId};
use stratai_store::{PgOptions, PgStore};

const ORGS: usize = 20;
const USERS_PER_ORG: usize = 10;
const GROUPS_PER_ORG: usize = 3;
const BATCH: usize = 5_000;
const WRITERS: usize = 4;
const MODELS: [&str; 4] = [
    "gpt-4o",
    "gpt-4o-mini",
    "claude-sonnet-4-5",
    "claude-haiku-4-5",
];

struct Tenant {
    org: OrgId,
    users: Vec<UserId>,
    groups: Vec<GroupId>,
}

fn with_database(admin_url: &str, database: &str, role: Option<&str>) -> String {
    let options: sqlx::postgres::PgConnectOptions = admin_url.parse().expect("DATABASE_URL");
    let options = options.database(database);
    let options = match role {
        Some(role) => options.username(role).password("stratai-bench"),
        None => options,
    };
    sqlx::ConnectOptions::to_url_lossy(&options).to_string()
}

async fn setup(admin_url: &str) -> (String, String, String) {
    let name = format!(
        "stratai_bench_{}",
        Utc::now().timestamp_nanos_opt().unwrap_or_default()
    );
    let mut admin = PgConnection::connect(admin_url).await.expect("connect");
    sqlx::raw_sql(
        "DO $$ BEGIN
             CREATE ROLE stratai_bench_app LOGIN NOSUPERUSER NOBYPASSRLS PASSWORD 'stratai-bench';
         EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$;",
    )
    .execute(&mut admin)
    .await
    .expect("app role");
    // The name is generated above from digits only.
    sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .expect("create database");
    admin.close().await.ok();
    let owner_url = with_database(admin_url, &name, None);
    let app_url = with_database(admin_url, &name, Some("stratai_bench_app"));
    PgStore::migrate(&owner_url).await.expect("migrate");
    PgStore::setup_app_role(&owner_url, "stratai_bench_app", None)
        .await
        .expect("grant");
    (name, owner_url, app_url)
}

async fn tenants(store: &PgStore) -> (Vec<Tenant>, TierId) {
    let now = Utc::now();
    let tier = ModelTier {
        id: TierId::new(),
        slug: TierSlug::new("standard").expect("slug"),
        name: "Standard".into(),
        description: String::new(),
        best_use_case: String::new(),
        models: MODELS
            .iter()
            .map(|m| ModelId::new(*m).expect("model"))
            .collect(),
        base_price: Money::ZERO,
        input_rate_per_million: Decimal::new(3, 0),
        output_rate_per_million: Decimal::new(15, 0),
        sort_order: 0,
        active: true,
        rate_schedule: Vec::new(),
    };
    store.upsert_tier(&tier).await.expect("tier");
    let mut out = Vec::new();
    for o in 0..ORGS {
        let basic = TierSlug::new("standard").expect("slug");
        let org = Organization::new(
            &format!("Org {o}"),
            Slug::new(format!("bench-org-{o}")).expect("slug"),
            OrgSettings::new(vec![basic.clone()], basic).expect("settings"),
            BillingPlan::Enterprise,
            now,
        )
        .expect("org");
        store.create_org(&org).await.expect("create org");
        let mut users = Vec::new();
        for u in 0..USERS_PER_ORG {
            let user = User::new(
                Email::new(format!("user{u}-org{o}@example.com")).expect("email"),
                None,
                PlatformRole::User,
                now,
            )
            .expect("user");
            store.create_user(&user).await.expect("create user");
            store
                .add_member(
                    org.id,
                    &Membership::new(org.id, user.id, OrgRole::Member, now),
                )
                .await
                .expect("member");
            users.push(user.id);
        }
        let mut groups = Vec::new();
        for g in 0..GROUPS_PER_ORG {
            let group = Group::new(org.id, &format!("Group {g}"), now).expect("group");
            store
                .create_group(org.id, &group)
                .await
                .expect("create group");
            groups.push(group.id);
        }
        out.push(Tenant {
            org: org.id,
            users,
            groups,
        });
    }
    (out, tier.id)
}

/// A batch of one organization's records spread over January to March 2026.
fn batch(tenant: &Tenant, tier: TierId, n: usize) -> Vec<UsageRecord> {
    let mut rng = rand::rng();
    let start = Utc
        .with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
        .single()
        .expect("start");
    let span = 90 * 24 * 3600;
    (0..n)
        .map(|_| {
            let input: u32 = rng.random_range(10..4_000);
            let output: u32 = rng.random_range(10..2_000);
            let cost = Decimal::new(i64::from(input) * 3 + i64::from(output) * 15, 6);
            let created: DateTime<Utc> =
                start + chrono::Duration::seconds(rng.random_range(0..span));
            UsageRecord {
                request_id: RequestId::new(),
                org_id: tenant.org,
                group_id: if rng.random_bool(0.8) {
                    Some(tenant.groups[rng.random_range(0..tenant.groups.len())])
                } else {
                    None
                },
                user_id: tenant.users[rng.random_range(0..tenant.users.len())],
                tier_id: Some(tier),
                model: ModelId::new(MODELS[rng.random_range(0..MODELS.len())]).expect("model"),
                input_tokens: input,
                output_tokens: output,
                provider_cost: Money::new(cost).expect("cost"),
                billed_amount: Money::new(cost * Decimal::new(12, 1)).expect("billed"),
                overage: Default::default(),
                litellm_request_id: Some(format!("chatcmpl-{}", rng.random::<u64>())),
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

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing useful: only run
    // the measurement when invoked as a bench.
    if !std::env::args().any(|a| a == "--bench") {
        println!("usage_ingest: run with `cargo bench -p stratai-benches --bench usage_ingest`");
        return;
    }
    let admin_url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let total: usize = std::env::var("STRATAI_BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let (name, owner_url, app_url) = setup(&admin_url).await;
    let store = PgStore::connect_with(
        &app_url,
        PgOptions {
            max_connections: u32::try_from(WRITERS).unwrap_or(4),
            ..PgOptions::default()
        },
    )
    .await
    .expect("connect as app role");
    let (tenants, tier) = tenants(&store).await;
    let tenants = std::sync::Arc::new(tenants);

    // Generate every batch first, so the timing is the database's work alone.
    let batches: Vec<(usize, Vec<UsageRecord>)> = (0..total.div_ceil(BATCH))
        .map(|i| {
            let t = i % ORGS;
            let n = BATCH.min(total - i * BATCH);
            (t, batch(&tenants[t], tier, n))
        })
        .collect();
    let queue = std::sync::Arc::new(tokio::sync::Mutex::new(batches));
    let started = Instant::now();
    let mut writers = Vec::new();
    for _ in 0..WRITERS {
        let store = store.clone();
        let queue = queue.clone();
        let tenants = tenants.clone();
        writers.push(tokio::spawn(async move {
            let mut inserted = 0u64;
            loop {
                let next = queue.lock().await.pop();
                let Some((t, records)) = next else {
                    break;
                };
                let outcome = store
                    .append(tenants[t].org, &records)
                    .await
                    .expect("append");
                inserted += outcome.inserted;
            }
            inserted
        }));
    }
    let mut inserted = 0;
    for writer in writers {
        inserted += writer.await.expect("writer");
    }
    let elapsed = started.elapsed();
    let rate = inserted as f64 / elapsed.as_secs_f64();
    println!(
        "ingest: {inserted} records in {:.2} s = {:.0} records/s ({WRITERS} writers, batches of {BATCH})",
        elapsed.as_secs_f64(),
        rate
    );

    // Fresh statistics, as autovacuum would have after such a load.
    let mut owner = PgConnection::connect(&owner_url).await.expect("owner");
    sqlx::query("ANALYZE usage_records")
        .execute(&mut owner)
        .await
        .expect("analyze");

    let org = tenants[0].org;
    let month = UsageQuery {
        from: Some(
            Utc.with_ymd_and_hms(2026, 2, 1, 0, 0, 0)
                .single()
                .expect("from"),
        ),
        to: Some(
            Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0)
                .single()
                .expect("to"),
        ),
        ..UsageQuery::default()
    };
    let shapes: [(&str, Vec<Dimension>); 4] = [
        ("totals", vec![]),
        ("by day", vec![Dimension::Day]),
        ("by user x model", vec![Dimension::User, Dimension::Model]),
        ("by group x day", vec![Dimension::Group, Dimension::Day]),
    ];
    for (label, group_by) in &shapes {
        let mut times = Vec::new();
        let mut rows = 0;
        let mut requests = 0;
        for _ in 0..21 {
            let started = Instant::now();
            let result = store
                .aggregate(org, &month, group_by)
                .await
                .expect("aggregate");
            times.push(started.elapsed());
            rows = result.len();
            requests = result.iter().map(|r| r.totals.requests).sum::<u64>();
        }
        times.sort();
        println!(
            "aggregate one org's month ({label}): {rows} rows over {requests} records, median {:.1} ms, p95 {:.1} ms",
            percentile(&times, 0.5).as_secs_f64() * 1e3,
            percentile(&times, 0.95).as_secs_f64() * 1e3
        );
    }

    owner.close().await.ok();
    drop(store);
    let mut admin = PgConnection::connect(&admin_url).await.expect("connect");
    sqlx::query(AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await
    .expect("drop database");
}
