//! The gateway's end-to-end setup: a database that outlives a server ([`Backing`]: a SQLite
//! file or a fresh PostgreSQL database from [`super::pg`]), the server on port 0 over it
//! (dev-mode tokens, the offline demo provider), the server binary as a child process,
//! tenants, budgets, rules, and HTTP calls; [`on_both!`] runs a test on SQLite and
//! PostgreSQL.
//!
//! [`FaultyUsage`] is a fault injector over core's `UsageStore` port: the server under test
//! writes usage through it, so a test can make usage writes fail and recover.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::Router;
use chrono::Utc;
use futures::stream::BoxStream;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use stratai_core::StoreError;
use stratai_core::TierSlug;
use stratai_core::budget::{Budget, BudgetPeriod, BudgetScope, BudgetState};
use stratai_core::directory::{
    BillingPlan, Email, Membership, OrgRole, OrgSettings, Organization, PlatformRole, Slug, User,
};
use stratai_core::ids::{BudgetId, OrgId, RequestId, RuleId, UserId};
use stratai_core::money::Money;
use stratai_core::ports::{AppendOutcome, RuleAction, RuleRecord, RuleScope, UsageStore};
use stratai_core::tiers::{BASIC_TIER_ID, STANDARD_TIER_ID, TierSubscription};
use stratai_core::usage::{AggregateRow, Dimension, UsageQuery, UsageRecord};
use stratai_server::app::{AppState, HttpLimits, router};
use stratai_server::config::Config;
use stratai_server::demo_provider::DemoConfig;
use stratai_server::gateway::GatewayState;
use stratai_server::gateway::setup::{GatewayOptions, build_state};
use stratai_server::server::Backends;
use stratai_server::stores::Stores;
use stratai_testkit::Scratch;

use super::pg;

/// Which database the server runs on.
#[derive(Clone, Copy, Debug)]
pub enum Db {
    Sqlite,
    Postgres,
}

/// The backend matrix's runner for bodies taking a [`Db`].
macro_rules! on_db {
    (sqlite, $body:path) => {
        $body(crate::harness::Db::Sqlite).await
    };
    (postgres, $body:path) => {
        $body(crate::harness::Db::Postgres).await
    };
}

/// Runs each named `async fn(Db)` as a test on SQLite and on PostgreSQL: the test kit's
/// backend matrix (`<body>::sqlite`, `<body>::postgres`).
macro_rules! on_both {
    ($($name:ident),+ $(,)?) => {
        stratai_testkit::backend_matrix!(crate::harness::on_db, [sqlite, postgres]: $($name),+);
    };
}

#[allow(unused_imports)]
pub(crate) use {on_both, on_db};

/// A database and a directory (SQLite file, spool) that outlive one server: a restarted
/// server opens the same ones. Both are removed when the last holder drops this.
pub struct Backing {
    pub db: Db,
    pub dir: Scratch,
    sqlite_url: String,
    pg: Option<pg::PgTestDb>,
}

impl Backing {
    /// A fresh database, or `None` when PostgreSQL is wanted and unavailable (skipped).
    pub async fn new(db: Db) -> Option<Arc<Self>> {
        let dir = Scratch::new();
        let sqlite_url = format!("sqlite://{}/gw.db?mode=rwc", dir.path().display());
        let pg = match db {
            Db::Sqlite => None,
            Db::Postgres => Some(pg::fresh_db().await?),
        };
        Some(Arc::new(Self {
            db,
            dir,
            sqlite_url,
            pg,
        }))
    }

    /// Opens the stores anew (a new connection pool, as a restarted process would).
    pub async fn open(&self) -> Stores {
        match &self.pg {
            None => Stores::open(&self.sqlite_url, None).await.unwrap(),
            Some(pgdb) => {
                Stores::from_backend(pgdb.connect(stratai_store::PgOptions::default()).await)
            }
        }
    }

    /// The URL a server process opens this database with (the app role on PostgreSQL).
    pub fn database_url(&self) -> String {
        match &self.pg {
            None => self.sqlite_url.clone(),
            Some(pgdb) => pgdb.app_url.clone(),
        }
    }

    /// The spool file the servers of this backing use.
    pub fn spool_path(&self) -> PathBuf {
        self.dir.join("usage.spool")
    }
}

/// What varies between the servers of the tests.
#[derive(Clone)]
pub struct Setup {
    pub demo: DemoConfig,
    pub alert_webhook: Option<url::Url>,
    /// How often the spool is replayed (the server's default is 10 s).
    pub spool_replay: Duration,
    /// When set, the server writes usage through a [`FaultyUsage`] driven by this switch.
    pub usage_fault: Option<Arc<FaultSwitch>>,
    /// The high-throughput mode: budget leases of this age and batched usage writes.
    pub fast_path: Option<Duration>,
    /// Redis for shared rate limits (the environment's `STRATAI_REDIS_URL` is not used).
    pub redis_url: Option<String>,
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            demo: DemoConfig::default(),
            alert_webhook: None,
            spool_replay: Duration::from_secs(10),
            usage_fault: None,
            fast_path: None,
            redis_url: None,
        }
    }
}

/// A running server.
pub struct Gw {
    pub base: String,
    pub http: reqwest::Client,
    /// The stores, unwrapped (assertions read through these, never through the injector).
    pub stores: Stores,
    pub gateway: GatewayState,
    pub backing: Arc<Backing>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Gw {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A server on a fresh database with the given demo settings and no webhook.
pub async fn spawn(db: Db, demo: DemoConfig) -> Option<Gw> {
    spawn_with(
        db,
        Setup {
            demo,
            ..Setup::default()
        },
    )
    .await
}

/// A server on a fresh database.
pub async fn spawn_with(db: Db, setup: Setup) -> Option<Gw> {
    let backing = Backing::new(db).await?;
    Some(serve(backing, setup).await)
}

/// The server's router as the binary builds it, with the gateway of `options` over `served`:
/// `seeded` (the same database, without a fault injector) is seeded and checks tokens;
/// bodies up to 1 MiB, 30 s per request. Returns the gateway too.
pub async fn app(
    config: &Config,
    seeded: &Stores,
    served: Stores,
    options: GatewayOptions,
) -> (Router, GatewayState) {
    let backends = Backends::seeded(seeded.clone(), config).await.unwrap();
    let auth = Arc::new(backends.auth(config).unwrap());
    let gateway = build_state(config, auth.clone(), &served, options)
        .await
        .unwrap();
    let state = AppState::new(config, auth, backends.readiness, served)
        .unwrap()
        .with_gateway(gateway.clone());
    let limits = HttpLimits {
        body_limit_bytes: 1 << 20,
        request_timeout: Duration::from_secs(30),
    };
    (router(state, limits), gateway)
}

/// A server over `backing` (its database and spool file), on a port of its own.
pub async fn serve(backing: Arc<Backing>, setup: Setup) -> Gw {
    let stores = backing.open().await;
    let mut served = stores.clone();
    if let Some(switch) = &setup.usage_fault {
        served.usage = Arc::new(FaultyUsage {
            inner: stores.usage.clone(),
            switch: switch.clone(),
        });
    }
    let env: HashMap<String, String> =
        [("DATABASE_URL".to_owned(), backing.sqlite_url.clone())].into();
    let config = Config::load(&env).unwrap();
    let mut options = GatewayOptions::from_config(&config);
    options.runtime.spool = Some(backing.spool_path());
    options.alert_webhook = setup.alert_webhook;
    options.demo = setup.demo;
    options.runtime.guardrail_reload = Some(Duration::from_secs(3600));
    options.runtime.spool_replay = setup.spool_replay;
    options.runtime.budget_lease = setup
        .fast_path
        .map(|max_age| stratai_guardrails::LeaseConfig {
            max_age,
            ..stratai_guardrails::LeaseConfig::default()
        });
    options.runtime.usage_batching =
        setup
            .fast_path
            .map(|_| stratai_guardrails::runtime::UsageBatching {
                capacity: 1024,
                linger: config.gateway.usage_batch_linger,
            });
    options.redis_url = setup.redis_url.clone();
    let (app, gateway) = app(&config, &stores, served, options).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    Gw {
        base: format!("http://{addr}"),
        http: reqwest::Client::new(),
        stores,
        gateway,
        backing,
        task,
    }
}

/// How a [`FaultyUsage`] answers `append`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Fault {
    /// Passes through.
    Healthy = 0,
    /// Fails without writing (database down).
    Down = 1,
    /// Writes, then fails (the acknowledgement was lost: a retry will find a duplicate).
    LostAck = 2,
}

/// The fault injector's switch, shared with the test.
#[derive(Debug, Default)]
pub struct FaultSwitch {
    mode: AtomicU8,
    refused: AtomicU64,
}

impl FaultSwitch {
    pub fn new(fault: Fault) -> Arc<Self> {
        let s = Arc::new(Self::default());
        s.set(fault);
        s
    }

    pub fn set(&self, fault: Fault) {
        self.mode.store(fault as u8, Ordering::SeqCst);
    }

    fn get(&self) -> Fault {
        match self.mode.load(Ordering::SeqCst) {
            1 => Fault::Down,
            2 => Fault::LostAck,
            _ => Fault::Healthy,
        }
    }

    /// `append` calls answered with an error so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::SeqCst)
    }
}

/// Core's `UsageStore` port over a real store, failing `append` as its switch says. Reads
/// pass through.
pub struct FaultyUsage {
    pub inner: Arc<dyn UsageStore>,
    pub switch: Arc<FaultSwitch>,
}

#[async_trait]
impl UsageStore for FaultyUsage {
    async fn append(
        &self,
        org: OrgId,
        records: &[UsageRecord],
    ) -> Result<AppendOutcome, StoreError> {
        match self.switch.get() {
            Fault::Healthy => self.inner.append(org, records).await,
            Fault::Down => {
                self.switch.refused.fetch_add(1, Ordering::SeqCst);
                Err(StoreError::Backend("injected: database down".to_owned()))
            }
            Fault::LostAck => {
                self.inner.append(org, records).await?;
                self.switch.refused.fetch_add(1, Ordering::SeqCst);
                Err(StoreError::Backend(
                    "injected: connection lost after the write".to_owned(),
                ))
            }
        }
    }
    async fn get(&self, org: OrgId, request_id: RequestId) -> Result<UsageRecord, StoreError> {
        self.inner.get(org, request_id).await
    }
    async fn query(
        &self,
        org: OrgId,
        query: &UsageQuery,
        limit: u32,
    ) -> Result<Vec<UsageRecord>, StoreError> {
        self.inner.query(org, query, limit).await
    }
    async fn aggregate(
        &self,
        org: OrgId,
        query: &UsageQuery,
        group_by: &[Dimension],
    ) -> Result<Vec<AggregateRow>, StoreError> {
        self.inner.aggregate(org, query, group_by).await
    }
    async fn totals_by_org(
        &self,
        from: chrono::DateTime<chrono::Utc>,
        to: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<(OrgId, stratai_core::usage::UsageTotals)>, StoreError> {
        self.inner.totals_by_org(from, to).await
    }
    async fn charged_under_lease(
        &self,
        org: OrgId,
        lease: RequestId,
    ) -> Result<(Money, u64), StoreError> {
        self.inner.charged_under_lease(org, lease).await
    }
    fn stream(
        &self,
        org: OrgId,
        query: UsageQuery,
    ) -> BoxStream<'static, Result<UsageRecord, StoreError>> {
        self.inner.stream(org, query)
    }
}

/// The records waiting in a usage log file for the store.
pub fn spooled(path: &Path) -> Vec<stratai_server::spool::SpoolEntry> {
    stratai_server::spool::waiting(path)
}

/// Waits (up to `limit`) until `check` holds; returns whether it did.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An organization subscribed to Basic and Standard (not Premium), with `n` members.
pub struct Tenant {
    pub org: OrgId,
    /// Each member's id and dev token.
    pub users: Vec<(UserId, String)>,
    /// Each member's email (for new tokens from a restarted server).
    pub emails: Vec<String>,
}

pub async fn tenant(gw: &Gw, n: usize) -> Tenant {
    let now = Utc::now();
    let tag = &uuid::Uuid::new_v4().simple().to_string()[..10];
    let basic = TierSlug::new("basic").unwrap();
    let standard = TierSlug::new("standard").unwrap();
    let org = Organization::new(
        "Acme",
        Slug::new(format!("acme-{tag}")).unwrap(),
        OrgSettings::new(vec![basic, standard.clone()], standard).unwrap(),
        BillingPlan::Business,
        now,
    )
    .unwrap();
    gw.stores.directory.create_org(&org).await.unwrap();
    for tier in [BASIC_TIER_ID, STANDARD_TIER_ID] {
        gw.stores
            .tiers
            .put_subscription(
                org.id,
                &TierSubscription {
                    org_id: org.id,
                    tier_id: tier,
                    enabled: true,
                    monthly_budget: None,
                    enabled_at: now,
                },
            )
            .await
            .unwrap();
    }
    let mut users = Vec::new();
    let mut emails = Vec::new();
    for i in 0..n {
        let email = format!("member{i}-{tag}@acme.test");
        let user = User::new(Email::new(&email).unwrap(), None, PlatformRole::User, now).unwrap();
        gw.stores.directory.create_user(&user).await.unwrap();
        gw.stores
            .directory
            .add_member(
                org.id,
                &Membership::new(org.id, user.id, OrgRole::Member, now),
            )
            .await
            .unwrap();
        let token = token(gw, &email).await;
        users.push((user.id, token));
        emails.push(email);
    }
    Tenant {
        org: org.id,
        users,
        emails,
    }
}

/// A dev token for `email`.
pub async fn token(gw: &Gw, email: &str) -> String {
    dev_token(&gw.http, &gw.base, email).await
}

/// A monthly budget alerting at 80%.
pub async fn budget(gw: &Gw, org: OrgId, scope: BudgetScope, limit: &str, hard: bool) -> Budget {
    budget_alerting(gw, org, scope, limit, hard, Decimal::new(8, 1)).await
}

/// The current period's state of budget `id` (spent, reserved, whether its alert went out).
pub async fn budget_state(gw: &Gw, org: OrgId, id: BudgetId) -> BudgetState {
    gw.stores
        .budgets
        .states(org, &[id], Utc::now())
        .await
        .unwrap()
        .remove(0)
}

/// A monthly budget alerting at `threshold` (a fraction of the limit).
pub async fn budget_alerting(
    gw: &Gw,
    org: OrgId,
    scope: BudgetScope,
    limit: &str,
    hard: bool,
    threshold: Decimal,
) -> Budget {
    let b = Budget::new(
        org,
        scope,
        Money::parse(limit).unwrap(),
        BudgetPeriod::Monthly,
        hard,
        threshold,
        Utc::now(),
    )
    .unwrap();
    gw.stores.budgets.create_budget(org, &b).await.unwrap();
    b
}

/// An organization rule, stored and loaded into the gateway's policy.
pub async fn rule(
    gw: &Gw,
    org: OrgId,
    name: &str,
    rule_type: &str,
    config: Value,
    action: RuleAction,
) -> RuleId {
    let scope = RuleScope::Org { org_id: org };
    rule_at(gw, org, scope, name, rule_type, config, action).await
}

/// A rule at `scope` of `org`, stored and loaded into the gateway's policy.
pub async fn rule_at(
    gw: &Gw,
    org: OrgId,
    scope: RuleScope,
    name: &str,
    rule_type: &str,
    config: Value,
    action: RuleAction,
) -> RuleId {
    let r = RuleRecord {
        id: RuleId::new(),
        name: name.to_owned(),
        description: None,
        rule_type: rule_type.to_owned(),
        config,
        scope,
        action,
        priority: 0,
        active: true,
        created_at: Utc::now(),
    };
    gw.stores.guardrails.put_rule(org, &r).await.unwrap();
    gw.gateway.pipeline.reload_guardrails().await.unwrap();
    r.id
}

pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

pub async fn chat(gw: &Gw, token: &str, body: Value) -> Answer {
    let r = gw
        .http
        .post(format!("{}/v1/chat/completions", gw.base))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let body = r.json().await.unwrap_or(Value::Null);
    Answer {
        status,
        headers,
        body,
    }
}

/// `GET /metrics`: the Prometheus text.
pub async fn metrics_text(gw: &Gw) -> String {
    gw.http
        .get(format!("{}/metrics", gw.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// `POST /api/explain` with `body` (model, optional user and time) as `token`: the what-if
/// decision's JSON.
pub async fn explain(gw: &Gw, token: &str, body: Value) -> Value {
    gw.http
        .post(format!("{}/api/explain", gw.base))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

pub fn ask(model: &str, text: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": text}]})
}

pub fn request_id(headers: &reqwest::header::HeaderMap) -> RequestId {
    headers["x-stratai-request-id"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// The `x-stratai-billed-cost` header of a complete answer.
pub fn billed_header(headers: &reqwest::header::HeaderMap) -> Decimal {
    headers["x-stratai-billed-cost"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// SSE `data:` payloads and comment lines of a whole stream.
pub async fn sse(
    gw: &Gw,
    token: &str,
    body: Value,
) -> (u16, reqwest::header::HeaderMap, Vec<String>) {
    let r = gw
        .http
        .post(format!("{}/v1/chat/completions", gw.base))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.text().await.unwrap();
    let lines = text
        .split("\n\n")
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect();
    (status, headers, lines)
}

pub fn streamed_text(events: &[String]) -> String {
    events
        .iter()
        .filter_map(|e| e.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect()
}

/// The billed cost a stream reports in its final comment line
/// (`: stratai billed_cost=<amount> request_id=<id>`), checked against the request id.
pub fn streamed_billed(events: &[String], rid: RequestId) -> Decimal {
    let comment = events
        .iter()
        .find(|e| e.starts_with(": stratai billed_cost="))
        .expect("billed cost comment");
    assert!(comment.contains(&rid.to_string()), "{comment}");
    comment
        .trim_start_matches(": stratai billed_cost=")
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

pub const MODEL: &str = "gpt-4o-mini";
pub const PREMIUM: &str = "claude-opus-4-5-20251101";

/// The concurrency check, shared by the strict and the high-throughput mode: 200
/// concurrent requests of 20 members against tight hard budgets (each member's and the
/// organization's). Then, after `drain` (graceful shutdown's settling of leases and queued
/// records, for the high-throughput mode): no budget overspent or left reserved, every admitted
/// request recorded exactly once, the records' total equal to the billed-cost headers and to
/// the organization budget's spend.
pub async fn two_hundred_requests_against_tight_budgets(gw: Gw, drain: bool) {
    use std::collections::HashSet;
    let t = tenant(&gw, 20).await;
    let mut ids = Vec::new();
    for (user, _) in &t.users {
        ids.push(
            budget(&gw, t.org, BudgetScope::User(*user), "0.0003", true)
                .await
                .id,
        );
    }
    let org_budget = budget(&gw, t.org, BudgetScope::Org, "0.004", true).await.id;
    ids.push(org_budget);
    let gw = Arc::new(gw);
    let mut tasks = Vec::new();
    for i in 0..200 {
        let gw = gw.clone();
        let tok = t.users[i % 20].1.clone();
        tasks.push(tokio::spawn(async move {
            let mut body = ask(MODEL, &format!("request number {i}"));
            body["max_tokens"] = json!(50);
            let a = chat(&gw, &tok, body).await;
            let billed = (a.status == 200).then(|| billed_header(&a.headers));
            (a.status, request_id(&a.headers), billed, a.body)
        }));
    }
    let mut admitted = HashSet::new();
    let mut billed = Money::ZERO;
    let mut refused = 0;
    for task in tasks {
        let (status, rid, amount, body) = task.await.unwrap();
        match status {
            200 => {
                assert!(admitted.insert(rid), "request id {rid} answered twice");
                billed = billed + Money::new(amount.unwrap()).unwrap();
            }
            429 => {
                assert_eq!(body["error"]["type"], "insufficient_quota", "{body}");
                refused += 1;
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert!(refused > 0, "the budgets were not tight");
    assert!(!admitted.is_empty());
    if drain {
        gw.gateway.drainer.drain(Duration::from_secs(10)).await;
    }
    let rows = records_once(&gw, t.org).await;
    let unique: HashSet<RequestId> = rows.keys().copied().collect();
    assert_eq!(unique, admitted, "admitted and recorded requests differ");
    let total: Money = rows.values().map(|r| r.billed_amount).sum();
    assert_eq!(total, billed, "records and responses disagree on the bill");
    let states = gw
        .stores
        .budgets
        .states(t.org, &ids, Utc::now())
        .await
        .unwrap();
    assert_eq!(states.len(), ids.len());
    for s in &states {
        assert!(s.spent <= s.budget.limit, "overspent: {s:?}");
        assert_eq!(s.reserved, Money::ZERO, "left reserved: {s:?}");
    }
    let org_state = states.iter().find(|s| s.budget.id == org_budget).unwrap();
    assert_eq!(org_state.spent, total);
}

/// Every record of the organization, checked to hold each request id once.
pub async fn records_once(gw: &Gw, org: OrgId) -> HashMap<RequestId, UsageRecord> {
    let rows = gw
        .stores
        .usage
        .query(org, &UsageQuery::default(), 10_000)
        .await
        .unwrap();
    let n = rows.len();
    let by_id: HashMap<RequestId, UsageRecord> =
        rows.into_iter().map(|r| (r.request_id, r)).collect();
    assert_eq!(by_id.len(), n, "a request was recorded twice");
    by_id
}

/// The server binary (`stratai-server`) as a child process, killed when dropped.
pub struct ServerProcess {
    pub child: Child,
    pub base: String,
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ServerProcess {
    /// `kill -9`, waited for.
    pub fn kill_nine(&mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().unwrap();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts the server binary over `backing`'s database with its usage log at `spool`, dev-mode
/// tokens, the offline demo provider (1 ms between stream chunks) and `env` on top, on a free
/// port; returns once `/health/ready` answers 200 (at most 30 s).
pub async fn start_process(backing: &Backing, spool: &Path, env: &[(&str, &str)]) -> ServerProcess {
    let port = free_port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_stratai-server"));
    cmd.env_clear()
        .env("DATABASE_URL", backing.database_url())
        .env("STRATAI_BIND", format!("127.0.0.1:{port}"))
        .env("STRATAI_USAGE_SPOOL", spool)
        .env("STRATAI_MAILBOX_DIR", backing.dir.join("mailbox"))
        .env("STRATAI_DEMO_CHUNK_DELAY_MS", "1")
        .env("STRATAI_LOG_FORMAT", "text")
        .env("RUST_LOG", "warn")
        .current_dir(backing.dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().expect("start the server binary");
    let server = ServerProcess {
        child,
        base: format!("http://127.0.0.1:{port}"),
    };
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = http
            .get(format!("{}/health/ready", server.base))
            .send()
            .await
            && r.status() == 200
        {
            return server;
        }
        assert!(Instant::now() < deadline, "the server did not become ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A dev token for `email` from the server at `base`.
pub async fn dev_token(http: &reqwest::Client, base: &str, email: &str) -> String {
    let r = http
        .post(format!("{base}/auth/dev/token"))
        .json(&json!({ "email": email }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    v["token"].as_str().unwrap().to_owned()
}

/// The Redis URL for tests: `STRATAI_TEST_REDIS_URL`, else `REDIS_URL`, else
/// `redis://127.0.0.1:6379`; `None` (the test says it skipped) when none answers, unless
/// `CI=true` (then the test fails).
pub async fn redis_url() -> Option<String> {
    let url = ["STRATAI_TEST_REDIS_URL", "REDIS_URL"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|s| !s.trim().is_empty()))
        .unwrap_or_else(|| "redis://127.0.0.1:6379".to_owned());
    let probe = stratai_store::RedisRateLimiter::new(&url).unwrap();
    match probe.ping().await {
        Ok(()) => Some(url),
        Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("Redis is required under CI=true but unavailable: {e}")
        }
        Err(e) => {
            eprintln!("SKIPPED: no Redis for this test: {e}");
            None
        }
    }
}
