//! Gateway load harness (figures, not a test; an example of the server crate, so that the
//! benches crate depends on library crates only): requests/s and p50/p99 latency at fixed
//! request rates, side by side, in one run on one machine:
//!
//! 1. `direct`: straight to the project's instant mock upstream;
//! 2. `proxy`: through a bare pass-through proxy built on the gateway's HTTP stack (axum,
//!    reqwest) with nothing else: what the extra network hop alone costs;
//! 3. the StratAI gateway in this process (auth, tier check, guardrails, budget reservation,
//!    settlement and usage recording in the store of `--store`) to the same mock: `fast` and
//!    `free` with the default settings (the fast path), for a caller with a budget and one
//!    to whom no budget applies; `strict` in strict mode (a caller with a budget);
//! 4. the release server binary as deployed, started by the harness on a database of its own
//!    (`--binary PATH`: `bin`, `bin-free`), and another build of it for comparison
//!    (`--base-binary PATH`: `base`, `base-free`, run with the settings that were the
//!    high-throughput mode before the fast path became the default); their answers come from
//!    their offline demo provider (dev mode), with no upstream hop; their statements per
//!    request (counted from their log, one line per statement) and resident memory are
//!    shown; `--no-statement-log` runs them without that log (the deployed binary's latency
//!    and memory; no statement counts);
//! 5. `litellm`: through the LiteLLM proxy (when `STRATAI_LITELLM_URL` and
//!    `STRATAI_LITELLM_MASTER_KEY` are set, e.g. by `scripts/litellm-up.sh`), whose upstream
//!    is the same mock program: its maximum throughput (and open-loop rates with
//!    `--litellm-rates`).
//!
//! Loopback only; every run is bounded (rate x seconds requests, at most 2,000 in flight).
//! Latency is measured from each request's *scheduled* start (open loop), so a saturated
//! target shows up as growing latency rather than hidden by slower sending.
//!
//! At each rate every target but `strict` and `litellm` takes turns: `--rounds` slices of
//! `secs / rounds` each, one target after the other, pooled per target. Whatever else the
//! machine does during the run (PostgreSQL's checkpoints, other processes) then lands on all
//! of them alike instead of on whichever ran at that moment; the p99 *difference* between
//! direct and a gateway (and how much of it the hop alone explains) is what this measures.
//! `--repeat N` runs each rate N times and reports each target's p99 over direct's as the
//! median and range of the N runs. Each slice starts with a quarter of a second at the rate
//! that is not measured (the steady state is measured, not the step from idle). The strict
//! gateway, which saturates at these rates and leaves a backlog behind, runs alone after
//! them; LiteLLM alone, last.
//!
//! The own-time columns are each proxy's own account of a request: its own time, the
//! upstream call excluded (StratAI's `Server-Timing: gateway;dur=<ms>` header, from the moment
//! its middleware stack has the request to the response head, and LiteLLM's
//! `x-litellm-overhead-duration-ms`), and the upstream call as it timed it (StratAI's
//! `upstream;dur=<ms>`). They leave out what no proxy can see of itself (its sockets, the
//! wait for a CPU before its code runs), which the latency columns include. The next splits
//! the slowest 1 % of a gateway's requests (those at and above its p99) into the three: the
//! medians of their own time, their upstream call, and the rest of their latency.
//!
//! Requests are started by a pacer thread sleeping on the kernel's high-resolution timers
//! (a Tokio timer's millisecond ticks would start them up to a millisecond late); how late
//! they actually started is measured and shown.
//!
//! ```text
//! cargo run --release -p stratai-server --example load -- [--rates 200,500,1000] [--secs 5] [--rounds 5] [--repeat 1] [--concurrency 32] [--targets direct,proxy,strict,fast,free,bin,bin-free,base,base-free,litellm] [--store postgres|sqlite|memory] [--binary target/release/stratai-server] [--base-binary PATH] [--litellm-rates R,..] [--server-threads 2] [--client-threads 2] [--upstream-threads 2]
//! ```
//! `--targets` picks the targets to measure (default: all there are). Knobs for finding where
//! the gateway's time goes, not for the recorded figures: `--server-threads`,
//! `--client-threads` and `--upstream-threads` set the worker threads of the runtimes of the
//! in-process gateways and the bare proxy, of the load generator and of the mock upstream
//! (default 2 each), and `--store memory` puts the in-process gateways on the in-memory
//! store (no database is created then; binaries get a SQLite file).
//! PostgreSQL: `DATABASE_URL` (a superuser URL), else `postgres://postgres@127.0.0.1:5432/postgres`.
//! Fresh databases `stratai_load_<time>_<tag>` are created and dropped at the end; SQLite
//! files live in a temporary folder removed at the end.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::{Value, json};
use stratai_core::budget::{Budget, BudgetPeriod, BudgetScope};
use stratai_core::directory::{
    BillingPlan, Email, INTERNAL_ORG_SLUG, Membership, OrgRole, OrgSettings, Organization,
    PlatformRole, Slug, User,
};
use stratai_core::money::Money;
use stratai_core::tiers::subscriptions_for;
use stratai_server::app::{AppState, HttpLimits, router};
use stratai_server::config::Config;
use stratai_server::gateway::openai::OpenAiCompatProvider;
use stratai_server::gateway::setup::{Drainer, GatewayOptions, build_state};
use stratai_server::server::Backends;
use stratai_server::stores::Stores;
use tokio::sync::Semaphore;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The allocator of the server binary, so the in-process gateway runs as it does there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Clone)]
struct Target {
    /// Short name for `--targets` (see [`KEYS`]).
    key: &'static str,
    name: String,
    url: String,
    token: String,
    body: Value,
    /// The statements its server executed so far (a spawned binary's, from its log).
    statements: Option<Arc<AtomicU64>>,
    /// Its server's resident memory (a spawned binary's).
    rss: Option<Arc<Rss>>,
}

/// The targets `--targets` knows.
const KEYS: [&str; 10] = [
    "direct",
    "proxy",
    "strict",
    "fast",
    "free",
    "bin",
    "bin-free",
    "base",
    "base-free",
    "litellm",
];

struct Outcome {
    rate: Option<u32>,
    sent: usize,
    ok: usize,
    errors: usize,
    rps: f64,
    p50: Duration,
    p99: Duration,
    /// p99 of how late the load generator started the requests (open loop only).
    late_p99: Option<Duration>,
    /// p50 and p99 of the target's own time, as it reports it (see [`own_time`]).
    own: Option<(Duration, Duration)>,
    /// p50 and p99 of the upstream call as the target timed it.
    upstream: Option<(Duration, Duration)>,
    /// The slowest 1 % of the requests that reported both times (open loop only): the
    /// medians of their own time, their upstream call and the rest of their latency.
    tail: Option<[Duration; 3]>,
    /// Statements its server executed per request sent (a spawned binary's).
    statements: Option<f64>,
    /// Its server's resident memory at the end, KiB (a spawned binary's).
    rss: Option<u64>,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// What one request returned: success, and the target's own time on it when the target
/// reports one.
struct Answer {
    ok: bool,
    own: Option<Duration>,
    /// The upstream call as the proxy timed it (StratAI's `upstream;dur=`).
    upstream: Option<Duration>,
}

async fn one(http: &reqwest::Client, t: &Target) -> Answer {
    match http
        .post(&t.url)
        .bearer_auth(&t.token)
        .json(&t.body)
        .send()
        .await
    {
        Ok(r) => {
            let ok = r.status().is_success();
            let (own, upstream) = own_time(r.headers());
            let _ = r.bytes().await;
            Answer { ok, own, upstream }
        }
        Err(_) => Answer {
            ok: false,
            own: None,
            upstream: None,
        },
    }
}

/// The time a proxy says it spent on a request itself, the upstream call excluded (StratAI's
/// `Server-Timing: gateway;dur=<ms>` or LiteLLM's `x-litellm-overhead-duration-ms`), and the
/// upstream call as it timed it (StratAI's `upstream;dur=<ms>`).
fn own_time(headers: &reqwest::header::HeaderMap) -> (Option<Duration>, Option<Duration>) {
    let millis = |v: &str| {
        v.trim()
            .parse::<f64>()
            .ok()
            .filter(|m| m.is_finite() && *m >= 0.0)
            .map(|m| Duration::from_secs_f64(m / 1000.0))
    };
    if let Some(v) = headers.get("server-timing").and_then(|v| v.to_str().ok()) {
        let dur = |name: &str| {
            v.split(',')
                .filter_map(|metric| metric.trim().strip_prefix(name)?.strip_prefix(';'))
                .flat_map(|params| params.split(';'))
                .find_map(|p| p.trim().strip_prefix("dur="))
                .and_then(millis)
        };
        return (dur("gateway"), dur("upstream"));
    }
    let litellm = headers
        .get("x-litellm-overhead-duration-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(millis);
    (litellm, None)
}

/// What one or more open-loop runs of a target measured.
#[derive(Default)]
struct Paced {
    sent: usize,
    errors: usize,
    /// Latencies of the successful requests, from their scheduled start.
    lat: Vec<Duration>,
    /// How late each request started after its scheduled start (the load generator's own
    /// error, included in `lat`).
    late: Vec<Duration>,
    /// The target's own time on each successful request that reported one.
    own: Vec<Duration>,
    /// The upstream call as the target timed it, where it reported that.
    upstream: Vec<Duration>,
    /// Latency, own time and upstream call of each request that reported both.
    joint: Vec<[Duration; 3]>,
    /// Time from the first scheduled start to the last answer, summed over runs.
    busy: Duration,
    /// Statements its server executed during the runs (lead-ins included), when counted.
    statements: Option<u64>,
    /// Requests sent during the runs, lead-ins included (the statements' denominator).
    requests: usize,
    /// Resident memory of its server at the end of the last run, KiB.
    rss: Option<u64>,
}

impl Paced {
    /// Adds another run's figures to these.
    fn absorb(&mut self, p: Paced) {
        self.sent += p.sent;
        self.errors += p.errors;
        self.lat.extend(p.lat);
        self.late.extend(p.late);
        self.own.extend(p.own);
        self.upstream.extend(p.upstream);
        self.joint.extend(p.joint);
        self.busy += p.busy;
        self.requests += p.requests;
        if let Some(n) = p.statements {
            self.statements = Some(self.statements.unwrap_or(0) + n);
        }
        if p.rss.is_some() {
            self.rss = p.rss;
        }
    }

    /// The p99 latency of what was measured so far.
    fn p99(&self) -> Duration {
        let mut lat = self.lat.clone();
        lat.sort_unstable();
        percentile(&lat, 0.99)
    }
}

impl Paced {
    fn outcome(mut self, rate: u32) -> Outcome {
        self.lat.sort_unstable();
        self.late.sort_unstable();
        #[allow(clippy::cast_precision_loss)]
        let rps = self.lat.len() as f64 / self.busy.as_secs_f64().max(1e-9);
        Outcome {
            rate: Some(rate),
            sent: self.sent,
            ok: self.lat.len(),
            errors: self.errors,
            rps,
            p50: percentile(&self.lat, 0.50),
            p99: percentile(&self.lat, 0.99),
            late_p99: Some(percentile(&self.late, 0.99)),
            own: p50_p99(self.own),
            upstream: p50_p99(self.upstream),
            tail: slowest_share(self.joint),
            #[allow(clippy::cast_precision_loss)]
            statements: self
                .statements
                .map(|n| n as f64 / self.requests.max(1) as f64),
            rss: self.rss,
        }
    }
}

/// The slowest 1 % of `joint` (latency, own time, upstream call) by latency: the medians of
/// their own time, their upstream call and the rest (latency less both).
fn slowest_share(mut joint: Vec<[Duration; 3]>) -> Option<[Duration; 3]> {
    if joint.is_empty() {
        return None;
    }
    joint.sort_unstable_by(|a, b| b[0].cmp(&a[0]));
    joint.truncate(joint.len().div_ceil(100));
    let median = |f: &dyn Fn(&[Duration; 3]) -> Duration| {
        let mut v: Vec<Duration> = joint.iter().map(f).collect();
        v.sort_unstable();
        percentile(&v, 0.5)
    };
    Some([
        median(&|j| j[1]),
        median(&|j| j[2]),
        median(&|j| j[0].saturating_sub(j[1] + j[2])),
    ])
}

/// p50 and p99 of `values`; `None` when there are none (the target reported nothing).
fn p50_p99(mut values: Vec<Duration>) -> Option<(Duration, Duration)> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    Some((percentile(&values, 0.50), percentile(&values, 0.99)))
}

/// Open loop: `lead_in` requests then `total` measured ones, all at `rate` requests/s;
/// returns once every answer is in. The lead-in brings the target from idle to the rate
/// (connections opened, caches and budget leases in use) and is not counted.
///
/// The requests are started by a pacer on a thread of its own that sleeps until each
/// scheduled start (`std::thread::sleep`: the kernel's high-resolution timers, tens of
/// microseconds late), not by a Tokio timer, whose millisecond ticks would start every
/// request up to a millisecond late and put that error into every latency measured.
/// How late the requests actually started is measured too (`Paced::late`).
async fn fixed_rate(
    http: &reqwest::Client,
    t: &Target,
    rate: u32,
    lead_in: usize,
    total: usize,
) -> Paced {
    let gap = Duration::from_secs_f64(1.0 / f64::from(rate));
    let counter = t.statements.clone();
    let before = counter.as_ref().map(|n| n.load(Ordering::Relaxed));
    let rss = t.rss.clone();
    let runtime = tokio::runtime::Handle::current();
    let (http, t) = (http.clone(), t.clone());
    let pacer = tokio::task::spawn_blocking(move || {
        let limit = Arc::new(Semaphore::new(2000));
        let begin = Instant::now();
        // The scheduled start of the `n`th request.
        let start_of = |n: usize| begin + gap * u32::try_from(n).unwrap_or(u32::MAX);
        let mut tasks = Vec::with_capacity(lead_in + total);
        for i in 0..lead_in + total {
            let at = start_of(i);
            let now = Instant::now();
            if at > now {
                std::thread::sleep(at - now);
            }
            let (http, t, limit) = (http.clone(), t.clone(), limit.clone());
            tasks.push(runtime.spawn(async move {
                let late = at.elapsed();
                let _permit = limit.acquire_owned().await;
                let Answer { ok, own, upstream } = one(&http, &t).await;
                Sent {
                    ok,
                    own,
                    upstream,
                    latency: at.elapsed(),
                    late,
                    done: Instant::now(),
                }
            }));
        }
        (start_of(lead_in), tasks)
    });
    let Ok((start, mut tasks)) = pacer.await else {
        return Paced {
            sent: total,
            errors: total,
            ..Paced::default()
        };
    };
    let measured = tasks.split_off(lead_in.min(tasks.len()));
    for w in tasks {
        let _ = w.await;
    }
    let mut out = Paced {
        sent: total,
        lat: Vec::with_capacity(total),
        late: Vec::with_capacity(total),
        ..Paced::default()
    };
    let mut last = start;
    for h in measured {
        match h.await {
            Ok(s) => {
                if s.ok {
                    out.lat.push(s.latency);
                    out.own.extend(s.own);
                    out.upstream.extend(s.upstream);
                    if let (Some(own), Some(up)) = (s.own, s.upstream) {
                        out.joint.push([s.latency, own, up]);
                    }
                } else {
                    out.errors += 1;
                }
                out.late.push(s.late);
                last = last.max(s.done);
            }
            Err(_) => out.errors += 1,
        }
    }
    out.busy = last - start;
    out.requests = lead_in + total;
    out.statements = before.and_then(|b| {
        counter
            .as_ref()
            .map(|n| n.load(Ordering::Relaxed).saturating_sub(b))
    });
    out.rss = rss.as_ref().map(|r| r.now.load(Ordering::Relaxed));
    out
}

/// One paced request: its outcome, latency from its scheduled start, how late it started.
struct Sent {
    ok: bool,
    own: Option<Duration>,
    upstream: Option<Duration>,
    latency: Duration,
    late: Duration,
    done: Instant,
}

/// Open loop at `rate` for `secs` seconds per target, the targets taking turns in `rounds`
/// slices (a round of each, then the next round), so that what else the machine does in
/// those seconds falls on every target alike. Each slice starts with a quarter of a second
/// of unmeasured requests at the rate (steady state is measured, not the step from idle);
/// it ends when its last answer is in.
async fn interleaved(
    http: &reqwest::Client,
    targets: &[&Target],
    rate: u32,
    secs: u64,
    rounds: u32,
) -> Vec<Paced> {
    let total = usize::try_from(u64::from(rate) * secs).unwrap_or(usize::MAX);
    let rounds = usize::try_from(rounds.max(1))
        .unwrap_or(1)
        .min(total.max(1));
    // A quarter of a second at the rate, unmeasured, before each slice.
    let lead_in = usize::try_from(rate / 4).unwrap_or(0);
    let mut paced: Vec<Paced> = targets.iter().map(|_| Paced::default()).collect();
    for round in 0..rounds {
        // Slices of (nearly) equal size that add up to `total`.
        let n = total * (round + 1) / rounds - total * round / rounds;
        for (t, acc) in targets.iter().zip(paced.iter_mut()) {
            acc.absorb(fixed_rate(http, t, rate, lead_in, n).await);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    paced
}

/// Closed loop: `workers` clients back to back for `secs` seconds (maximum throughput).
async fn max_throughput(http: &reqwest::Client, t: &Target, workers: usize, secs: u64) -> Outcome {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let start = Instant::now();
    let mut handles = Vec::new();
    for _ in 0..workers {
        let http = http.clone();
        let t = t.clone();
        handles.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut own = Vec::new();
            let mut upstream = Vec::new();
            let mut errors = 0usize;
            while Instant::now() < deadline {
                let s = Instant::now();
                let answer = one(&http, &t).await;
                if answer.ok {
                    lat.push(s.elapsed());
                    own.extend(answer.own);
                    upstream.extend(answer.upstream);
                } else {
                    errors += 1;
                }
            }
            (lat, own, upstream, errors)
        }));
    }
    let mut lat = Vec::new();
    let mut own = Vec::new();
    let mut upstream = Vec::new();
    let mut errors = 0;
    for h in handles {
        if let Ok((l, o, u, e)) = h.await {
            lat.extend(l);
            own.extend(o);
            upstream.extend(u);
            errors += e;
        }
    }
    let elapsed = start.elapsed();
    lat.sort_unstable();
    #[allow(clippy::cast_precision_loss)]
    let rps = lat.len() as f64 / elapsed.as_secs_f64();
    Outcome {
        rate: None,
        sent: lat.len() + errors,
        ok: lat.len(),
        errors,
        rps,
        p50: percentile(&lat, 0.50),
        p99: percentile(&lat, 0.99),
        late_p99: None,
        own: p50_p99(own),
        upstream: p50_p99(upstream),
        tail: None,
        statements: None,
        rss: t.rss.as_ref().map(|r| r.now.load(Ordering::Relaxed)),
    }
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

struct PgDb {
    admin_url: String,
    name: String,
    /// The database as the app role (RLS on).
    app_url: String,
}

/// A fresh database `stratai_load_<time>_<tag>` (`tag`: lower-case letters, digits, `_`),
/// migrated, with the app role; the stores connect as that role.
async fn fresh_pg(tag: &str) -> Result<(Stores, PgDb), BoxError> {
    use sqlx::Connection;
    let admin_url = std::env::var("DATABASE_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let tag: String = tag
        .to_ascii_lowercase()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    let name = format!("stratai_load_{}_{tag}", Utc::now().format("%Y%m%d%H%M%S"));
    let mut conn = sqlx::PgConnection::connect(&admin_url).await?;
    // `name` is `stratai_load_` + digits, letters and `_`: nothing to inject.
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await?;
    conn.close().await?;
    let mut db_url = url::Url::parse(&admin_url)?;
    db_url.set_path(&format!("/{name}"));
    stratai_store::PgStore::migrate(db_url.as_str()).await?;
    stratai_store::PgStore::setup_app_role(db_url.as_str(), "stratai_load_app", Some("load"))
        .await?;
    let mut app_url = db_url.clone();
    let _ = app_url.set_username("stratai_load_app");
    let _ = app_url.set_password(Some("load"));
    let store = stratai_store::PgStore::connect_with(
        app_url.as_str(),
        stratai_store::PgOptions {
            max_connections: 16,
            ..stratai_store::PgOptions::default()
        },
    )
    .await?;
    Ok((
        Stores::from_backend(store),
        PgDb {
            admin_url,
            name,
            app_url: app_url.to_string(),
        },
    ))
}

async fn drop_pg(db: &PgDb) {
    use sqlx::Connection;
    if let Ok(mut conn) = sqlx::PgConnection::connect(&db.admin_url).await {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            db.name
        )))
        .execute(&mut conn)
        .await;
        let _ = conn.close().await;
    }
}

/// A gateway's chat URL, the tokens of its two callers (one with a budget, one without) and,
/// for an in-process gateway, its drainer.
struct Gateway {
    url: String,
    budget_token: String,
    free_token: String,
    drainer: Option<Drainer>,
}

/// Starts the StratAI server in-process on `stores`, upstream = `upstream`: with the default
/// settings (the fast path: budget leases, batched usage, cached tokens and views), or in
/// strict mode (`fast` false: leases, batching and the token cache off).
async fn start_gateway(upstream: String, stores: Stores, fast: bool) -> Result<Gateway, BoxError> {
    let mut env: HashMap<String, String> =
        [("DATABASE_URL".to_owned(), "sqlite://unused.db".to_owned())].into();
    if !fast {
        for (k, v) in [
            ("STRATAI_BUDGET_LEASE_MS", "0"),
            ("STRATAI_USAGE_BATCH", "false"),
            ("STRATAI_AUTH_CACHE_MS", "0"),
        ] {
            env.insert(k.to_owned(), v.to_owned());
        }
    }
    let config = Config::load(&env)?;
    let backends = Backends::seeded(stores.clone(), &config).await?;
    let auth = Arc::new(backends.auth(&config)?);
    let mut options = GatewayOptions::from_config(&config);
    options.runtime.spool = Some(std::env::temp_dir().join(format!(
        "stratai-load-{}-{}.spool",
        std::process::id(),
        if fast { "fast" } else { "strict" }
    )));
    options.llm = Some((
        Arc::new(OpenAiCompatProvider::new(&upstream, None)?),
        "mock",
    ));
    let gateway = build_state(&config, auth.clone(), &stores, options).await?;
    let drainer = gateway.drainer.clone();
    let app = router(
        AppState::new(&config, auth, backends.readiness, stores.clone())
            .map_err(|e| e.to_string())?
            .with_gateway(gateway),
        HttpLimits {
            body_limit_bytes: 1 << 20,
            request_timeout: Duration::from_secs(30),
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        // Served as the server binary serves (TCP_NODELAY on).
        let _ = axum::serve(stratai_server::server::no_delay(listener), app).await;
    });
    let base = format!("http://{addr}");
    let (budget_token, free_token) =
        callers(&stores, &base, if fast { "fast" } else { "strict" }).await?;
    Ok(Gateway {
        url: format!("{base}/v1/chat/completions"),
        budget_token,
        free_token,
        drainer: Some(drainer),
    })
}

/// Two callers of the server at `base` (whose database `stores` is), named by `tag`: a member
/// of the internal pilot org (all tiers, the seeded hard org budget) with a large hard budget
/// of their own, so their requests go through reservation and settlement; and the only
/// member of an organization of their own without any budget (the most common caller).
/// Answers their dev tokens.
async fn callers(stores: &Stores, base: &str, tag: &str) -> Result<(String, String), BoxError> {
    let now = Utc::now();
    let internal = stores
        .directory
        .find_org_by_slug(&Slug::new(INTERNAL_ORG_SLUG)?)
        .await?
        .ok_or("internal org missing")?;
    let budgeted = format!("load-{tag}@stratai.test");
    let user = User::new(Email::new(&budgeted)?, None, PlatformRole::User, now)?;
    stores.directory.create_user(&user).await?;
    stores
        .directory
        .add_member(
            internal.id,
            &Membership::new(internal.id, user.id, OrgRole::Member, now),
        )
        .await?;
    let budget = Budget::new(
        internal.id,
        BudgetScope::User(user.id),
        Money::dollars(1_000_000),
        BudgetPeriod::Monthly,
        true,
        rust_decimal::Decimal::ONE,
        now,
    )?;
    stores.budgets.create_budget(internal.id, &budget).await?;
    // An organization with every tier and no budget.
    let tiers = stores.tiers.list_tiers().await?;
    let slugs: Vec<_> = tiers.iter().map(|t| t.slug.clone()).collect();
    let default_slug = slugs.first().cloned().ok_or("no tiers")?;
    let org = Organization::new(
        &format!("Load {tag}"),
        Slug::new(format!("load-{tag}"))?,
        OrgSettings::new(slugs, default_slug)?,
        BillingPlan::Business,
        now,
    )?;
    stores.directory.create_org(&org).await?;
    let ids: Vec<_> = tiers.iter().map(|t| t.id).collect();
    for sub in subscriptions_for(org.id, &ids, now) {
        stores.tiers.put_subscription(org.id, &sub).await?;
    }
    let free = format!("load-free-{tag}@stratai.test");
    let user = User::new(Email::new(&free)?, None, PlatformRole::User, now)?;
    stores.directory.create_user(&user).await?;
    stores
        .directory
        .add_member(
            org.id,
            &Membership::new(org.id, user.id, OrgRole::Member, now),
        )
        .await?;
    if !stores.budgets.list_budgets(org.id).await?.is_empty() {
        return Err("the budget-free organization has a budget".into());
    }
    let http = reqwest::Client::new();
    let mut tokens = Vec::new();
    for email in [budgeted, free] {
        let v: Value = http
            .post(format!("{base}/auth/dev/token"))
            .json(&json!({ "email": email }))
            .send()
            .await?
            .json()
            .await?;
        tokens.push(v["token"].as_str().ok_or("no dev token")?.to_owned());
    }
    let free_token = tokens.pop().ok_or("no token")?;
    let budget_token = tokens.pop().ok_or("no token")?;
    Ok((budget_token, free_token))
}

/// A server binary the harness started (`--binary`, `--base-binary`): the release build of the
/// server as it is deployed, on a database of its own (a SQLite file, or a fresh PostgreSQL
/// database), in dev mode, so its answers come from its offline demo provider (no upstream
/// hop: the binary has no setting for a plain OpenAI-compatible upstream). Its statements are
/// counted from its log (`RUST_LOG=warn,sqlx::query=debug`: one line per statement) and its
/// resident memory sampled from `/proc` every 100 ms.
struct Spawned {
    label: String,
    child: std::process::Child,
    /// Whether its statements are logged and counted (`--no-statement-log`: not, so its
    /// latency and memory are the deployed binary's, without a log line per statement).
    counted: bool,
    base: String,
    stores: Stores,
    statements: Arc<AtomicU64>,
    /// Its statements by kind (sqlx's `summary`: the first words of the SQL), over the whole
    /// run, for the breakdown printed at the end.
    kinds: Arc<std::sync::Mutex<HashMap<String, u64>>>,
    rss: Arc<Rss>,
    pg: Option<PgDb>,
    dir: std::path::PathBuf,
}

/// Resident memory of a process in KiB: the current sample and the peak.
#[derive(Default)]
struct Rss {
    now: AtomicU64,
    peak: AtomicU64,
    stop: std::sync::atomic::AtomicBool,
}

impl Rss {
    fn sample(pid: u32) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    fn watch(pid: u32) -> Arc<Self> {
        let rss = Arc::new(Self::default());
        let me = rss.clone();
        std::thread::spawn(move || {
            while !me.stop.load(Ordering::Relaxed) {
                let Some(kib) = Self::sample(pid) else { break };
                me.now.store(kib, Ordering::Relaxed);
                me.peak.fetch_max(kib, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        rss
    }
}

fn mib(kib: u64) -> String {
    #[allow(clippy::cast_precision_loss)]
    let m = kib as f64 / 1024.0;
    format!("{m:.1} MiB")
}

/// Starts the server binary at `path` on a database of its own (`memory` and `sqlite`: a
/// SQLite file; `postgres`: a fresh database), with `extra` settings over its defaults.
async fn spawn_binary(
    path: &str,
    label: &str,
    store: StoreKind,
    extra: &[(&str, &str)],
    counted: bool,
) -> Result<Spawned, BoxError> {
    use std::io::BufRead as _;
    let dir = std::env::temp_dir().join(format!(
        "stratai-load-{}-{}",
        std::process::id(),
        label.replace(|c: char| !c.is_ascii_alphanumeric(), "-")
    ));
    std::fs::create_dir_all(&dir)?;
    let (url, stores_url, pg) = match store {
        StoreKind::Postgres => {
            let (_, db) =
                fresh_pg(&label.replace(|c: char| !c.is_ascii_alphanumeric(), "_")).await?;
            let app = db.app_url.clone();
            (app.clone(), app, Some(db))
        }
        StoreKind::Memory | StoreKind::Sqlite => {
            let url = format!("sqlite://{}?mode=rwc", dir.join("stratai.db").display());
            (url.clone(), url, None)
        }
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut cmd = std::process::Command::new(path);
    cmd.env_clear()
        .current_dir(&dir)
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", &url)
        .env("STRATAI_BIND", format!("127.0.0.1:{port}"))
        .env("STRATAI_USAGE_SPOOL", dir.join("usage.spool"))
        .env("STRATAI_MAILBOX_DIR", dir.join("mailbox"))
        .env(
            "RUST_LOG",
            if counted {
                "warn,sqlx::query=debug"
            } else {
                "warn"
            },
        )
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    for (k, v) in extra {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().map_err(|e| format!("{path}: {e}"))?;
    let statements = Arc::new(AtomicU64::new(0));
    let stderr = child.stderr.take().ok_or("no stderr")?;
    let tally = statements.clone();
    let kinds: Arc<std::sync::Mutex<HashMap<String, u64>>> = Arc::default();
    let by_kind = kinds.clone();
    let log = dir.join("server.log");
    std::thread::spawn(move || {
        let mut keep = std::fs::File::create(log).ok();
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if line.contains("sqlx::query") {
                tally.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut kinds) = by_kind.lock() {
                    *kinds.entry(summary(&line)).or_default() += 1;
                }
            } else if let Some(f) = keep.as_mut() {
                use std::io::Write as _;
                let _ = writeln!(f, "{line}");
            }
        }
    });
    let rss = Rss::watch(child.id());
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = http.get(format!("{base}/health/ready")).send().await
            && r.status().is_success()
        {
            break;
        }
        if Instant::now() > deadline || child.try_wait()?.is_some() {
            return Err(format!("{label}: not ready (log in {})", dir.display()).into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stores = Stores::open(&stores_url, None).await?;
    Ok(Spawned {
        label: label.to_owned(),
        child,
        counted,
        base,
        stores,
        statements,
        kinds,
        rss,
        pg,
        dir,
    })
}

/// The `summary` field of one of sqlx's statement lines (`summary="SELECT * FROM budgets …"`,
/// possibly with colour codes around the `=`): the kind of statement it was.
fn summary(line: &str) -> String {
    line.split_once("summary")
        .and_then(|(_, rest)| rest.split_once('"'))
        .and_then(|(_, rest)| rest.split_once('"'))
        .map_or_else(|| "(no summary)".to_owned(), |(s, _)| s.to_owned())
}

impl Spawned {
    /// Stops the binary gracefully (SIGTERM: leases settled, queued records written), then
    /// counts its usage records; removes its database and folder.
    async fn stop(mut self) -> String {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.rss.stop.store(true, Ordering::Relaxed);
        let recorded = count_usage(&self.stores).await;
        if let Some(pg) = &self.pg {
            drop_pg(pg).await;
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        let mut kinds: Vec<(String, u64)> = self
            .kinds
            .lock()
            .map(|k| k.iter().map(|(s, n)| (s.clone(), *n)).collect())
            .unwrap_or_default();
        kinds.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let breakdown: Vec<String> = kinds
            .iter()
            .map(|(s, n)| format!("  - {n} x `{s}`"))
            .collect();
        format!(
            "{}: usage records written {recorded}; peak RSS {}; statements over the whole run (start-up, warm-up and every measurement) {}, by kind:\n{}",
            self.label,
            mib(self.rss.peak.load(Ordering::Relaxed)),
            self.statements.load(Ordering::Relaxed),
            breakdown.join("\n")
        )
    }
}

/// A bare pass-through proxy to `upstream` on the gateways' runtime: the gateway's HTTP
/// stack (axum with TCP_NODELAY, the gateway's upstream client) and nothing else. Its row is
/// the cost of the extra network hop itself, so the gateway's figures can be read as hop +
/// governance.
async fn start_proxy(upstream: String) -> Result<String, BoxError> {
    use axum::http::{StatusCode, header};
    use axum::response::IntoResponse;
    let http = OpenAiCompatProvider::http_client()?;
    let url = reqwest::Url::parse(&format!("{upstream}/chat/completions"))?;
    // The upstream's status and body, as JSON; 502 when it cannot be reached or read.
    let forward = move |body: axum::body::Bytes| {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let answer = http
                .post(url)
                .header(header::CONTENT_TYPE, "application/json")
                .body(body)
                .send()
                .await
                .map_err(|_| StatusCode::BAD_GATEWAY)?;
            let status =
                StatusCode::from_u16(answer.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            let bytes = answer.bytes().await.map_err(|_| StatusCode::BAD_GATEWAY)?;
            Ok::<_, StatusCode>(
                (status, [(header::CONTENT_TYPE, "application/json")], bytes).into_response(),
            )
        }
    };
    let app = axum::Router::new().route("/v1/chat/completions", axum::routing::post(forward));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(stratai_server::server::no_delay(listener), app).await;
    });
    Ok(format!("http://{addr}/v1/chat/completions"))
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

/// The worker threads of `--<name>-threads` (default 2).
fn threads(args: &[String], name: &str) -> usize {
    arg(args, &format!("--{name}-threads"))
        .and_then(|s| s.parse().ok())
        .unwrap_or(2)
        .clamp(1, 64)
}

fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().collect();
    // The load generator's runtime (the pacer thread hands it the requests).
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads(&args, "client"))
        .thread_name("client")
        .enable_all()
        .build()?
        .block_on(measure(args))
}

async fn measure(args: Vec<String>) -> Result<(), BoxError> {
    let list = |name: &str, default: &str| -> Vec<u32> {
        arg(&args, name)
            .unwrap_or_else(|| default.to_owned())
            .split(',')
            .filter_map(|r| r.trim().parse().ok())
            .filter(|r| (1..=5000).contains(r))
            .collect()
    };
    let rates = list("--rates", "200,500,1000");
    let litellm_rates = list("--litellm-rates", "");
    let secs: u64 = arg(&args, "--secs")
        .and_then(|s| s.parse().ok())
        .unwrap_or(5)
        .clamp(1, 30);
    let rounds: u32 = arg(&args, "--rounds")
        .and_then(|s| s.parse().ok())
        .unwrap_or(5)
        .clamp(1, 100);
    let repeat: u32 = arg(&args, "--repeat")
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
        .clamp(1, 50);
    let workers: usize = arg(&args, "--concurrency")
        .and_then(|s| s.parse().ok())
        .unwrap_or(32)
        .clamp(1, 512);
    let store = match arg(&args, "--store").as_deref() {
        None | Some("postgres") => StoreKind::Postgres,
        Some("sqlite") => StoreKind::Sqlite,
        Some("memory") => StoreKind::Memory,
        Some(other) => {
            return Err(
                format!("unknown --store `{other}` (known: postgres, sqlite, memory)").into(),
            );
        }
    };
    let only: Vec<String> = arg(&args, "--targets")
        .map(|t| {
            t.split(',')
                .map(|k| k.trim().to_owned())
                .filter(|k| !k.is_empty())
                .collect()
        })
        .unwrap_or_default();
    if let Some(unknown) = only.iter().find(|k| !KEYS.contains(&k.as_str())) {
        return Err(format!(
            "unknown target `{unknown}` in --targets (known: {})",
            KEYS.join(", ")
        )
        .into());
    }
    let binary = arg(&args, "--binary");
    let base_binary = arg(&args, "--base-binary");
    let count_statements = !args.iter().any(|a| a == "--no-statement-log");

    // The gateways (and their database pool) run on a runtime and threads of their own, the
    // mock upstream on another, as separate processes would; the load generator and its
    // pacer thread run on this one.
    let servers = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads(&args, "server"))
        .thread_name("servers")
        .enable_all()
        .build()?;
    let upstream = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads(&args, "upstream"))
        .thread_name("upstream")
        .enable_all()
        .build()?;
    let mock = upstream
        .spawn(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let mock =
                mock_upstream::MockServer::start(listener, mock_upstream::MockConfig::default())?;
            Ok::<_, BoxError>(mock)
        })
        .await??;
    // The database is created here; the gateways' pool connects from the servers' runtime.
    let mut scratch = None;
    let (stores, pg) = match store {
        StoreKind::Memory => (Stores::memory(), None),
        StoreKind::Sqlite => {
            let dir = std::env::temp_dir().join(format!("stratai-load-{}", std::process::id()));
            std::fs::create_dir_all(&dir)?;
            let url = format!("sqlite://{}?mode=rwc", dir.join("in-process.db").display());
            scratch = Some(dir);
            (Stores::open(&url, None).await?, None)
        }
        StoreKind::Postgres => {
            let (stores, pg) = fresh_pg("in_process").await?;
            (stores, Some(pg))
        }
    };
    // The binaries: this build's with its defaults, and the previous build's with the settings
    // that were its high-throughput mode (its defaults were strict), so both run the fast path.
    let mut spawned = Vec::new();
    if let Some(path) = &binary {
        spawned.push((
            "bin",
            spawn_binary(path, "binary", store, &[], count_statements).await?,
        ));
    }
    if let Some(path) = &base_binary {
        let fast = [
            ("STRATAI_AUTH_CACHE_MS", "2000"),
            ("STRATAI_BUDGET_LEASE_MS", "1000"),
            ("STRATAI_USAGE_BATCH", "true"),
        ];
        spawned.push((
            "base",
            spawn_binary(path, "base binary", store, &fast, count_statements).await?,
        ));
    }
    let plan = Plan {
        rates,
        litellm_rates,
        secs,
        rounds,
        repeat,
        workers,
        only,
    };
    let result = run(&servers, &mock, stores.clone(), &spawned, &plan).await;
    let recorded = count_usage(&stores).await;
    let mut binaries = Vec::new();
    for (_, s) in spawned {
        binaries.push(s.stop().await);
    }
    if let Some(pg) = &pg {
        drop_pg(pg).await;
    }
    if let Some(dir) = scratch {
        let _ = std::fs::remove_dir_all(dir);
    }
    drop(mock);
    servers.shutdown_background();
    upstream.shutdown_background();
    let table = result?;
    println!("store: {store:?}");
    println!("{table}");
    println!("usage records written by the in-process gateways during the run: {recorded}");
    for line in binaries {
        println!("{line}");
    }
    Ok(())
}

/// Where the gateways record (`--store`).
#[derive(Clone, Copy, Debug)]
enum StoreKind {
    Postgres,
    Sqlite,
    Memory,
}

/// Usage records in the database of `stores`, every organization's.
async fn count_usage(stores: &Stores) -> usize {
    let Ok(orgs) = stores.directory.list_orgs().await else {
        return 0;
    };
    let mut n = 0;
    for org in orgs {
        n += stores
            .usage
            .query(
                org.id,
                &stratai_core::usage::UsageQuery::default(),
                10_000_000,
            )
            .await
            .map_or(0, |r| r.len());
    }
    n
}

/// What to measure (from the command line).
struct Plan {
    /// Open-loop request rates.
    rates: Vec<u32>,
    /// Open-loop rates for LiteLLM (default none: its maximum throughput only).
    litellm_rates: Vec<u32>,
    /// Seconds per target and rate.
    secs: u64,
    /// Interleaved slices per rate.
    rounds: u32,
    /// Runs per rate (each of `secs` per target), for the median and range of p99 over direct.
    repeat: u32,
    /// Clients of the closed-loop (maximum throughput) run.
    workers: usize,
    /// Targets to measure (empty: all).
    only: Vec<String>,
}

async fn run(
    servers: &tokio::runtime::Runtime,
    mock: &mock_upstream::MockServer,
    stores: Stores,
    spawned: &[(&'static str, Spawned)],
    plan: &Plan,
) -> Result<String, BoxError> {
    let Plan {
        rates,
        litellm_rates,
        secs,
        rounds,
        repeat,
        workers,
        only,
    } = plan;
    let (secs, rounds, repeat, workers) = (*secs, *rounds, *repeat, *workers);
    let body = |model: &str| {
        json!({
            "model": model,
            "messages": [{"role": "user", "content": "Say hello to the load test"}],
            "max_tokens": 16
        })
    };
    let target = |key: &'static str, name: &str, url: &str, token: &str, model: &str| Target {
        key,
        name: name.to_owned(),
        url: url.to_owned(),
        token: token.to_owned(),
        body: body(model),
        statements: None,
        rss: None,
    };
    let wanted = |key: &str| only.is_empty() || only.iter().any(|k| k == key);
    let mut targets = vec![
        target(
            "direct",
            "direct (mock)",
            &format!("{}/chat/completions", mock.base_url()),
            "none",
            "gpt-4o-mini",
        ),
        target(
            "proxy",
            "bare proxy (hop only)",
            &servers.spawn(start_proxy(mock.base_url())).await??,
            "none",
            "gpt-4o-mini",
        ),
    ];
    let mut drainers = Vec::new();
    if wanted("strict") {
        let g = servers
            .spawn(start_gateway(mock.base_url(), stores.clone(), false))
            .await??;
        targets.push(target(
            "strict",
            "in-process gateway, strict, caller with a budget",
            &g.url,
            &g.budget_token,
            "gpt-4o-mini",
        ));
        drainers.extend(g.drainer);
    }
    if wanted("fast") || wanted("free") {
        let g = servers
            .spawn(start_gateway(mock.base_url(), stores, true))
            .await??;
        targets.push(target(
            "fast",
            "in-process gateway, defaults, caller with a budget",
            &g.url,
            &g.budget_token,
            "gpt-4o-mini",
        ));
        targets.push(target(
            "free",
            "in-process gateway, defaults, caller without a budget",
            &g.url,
            &g.free_token,
            "gpt-4o-mini",
        ));
        drainers.extend(g.drainer);
    }
    for (key, s) in spawned {
        let (budget_token, free_token) = callers(&s.stores, &s.base, key).await?;
        let url = format!("{}/v1/chat/completions", s.base);
        let (with, without): (&'static str, &'static str) = if *key == "bin" {
            ("bin", "bin-free")
        } else {
            ("base", "base-free")
        };
        for (k, token, who) in [
            (with, &budget_token, "caller with a budget"),
            (without, &free_token, "caller without a budget"),
        ] {
            let mut t = target(
                k,
                &format!("{}, {who}", s.label),
                &url,
                token,
                "gpt-4o-mini",
            );
            t.statements = s.counted.then(|| s.statements.clone());
            t.rss = Some(s.rss.clone());
            targets.push(t);
        }
    }
    match (
        std::env::var("STRATAI_LITELLM_URL")
            .ok()
            .filter(|v| !v.is_empty()),
        std::env::var("STRATAI_LITELLM_MASTER_KEY")
            .ok()
            .filter(|v| !v.is_empty()),
    ) {
        (Some(url), Some(key)) => targets.push(target(
            "litellm",
            "litellm proxy",
            &format!("{}/v1/chat/completions", url.trim_end_matches('/')),
            &key,
            "mock-gpt",
        )),
        _ => eprintln!(
            "STRATAI_LITELLM_URL / STRATAI_LITELLM_MASTER_KEY unset: the LiteLLM column is skipped"
        ),
    }
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(2048)
        .timeout(Duration::from_secs(30))
        .build()?;
    let mut out = String::from(
        "| target | load | sent | ok | errors | achieved req/s | p50 ms | p99 ms | started late, p99 ms | own time p50 / p99 ms | upstream as it timed it, p50 / p99 ms | slowest 1 %: own / upstream / rest, medians ms | statements per request | RSS |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    targets.retain(|t| wanted(t.key));
    // Direct, the bare proxy and the fast-path gateways, whose differences the run measures,
    // take turns at each rate. The strict gateway and LiteLLM, which fall behind at these
    // rates (the strict gateway on this machine from a few hundred requests/s) and leave a
    // backlog of work behind their slices, are measured alone, after them: LiteLLM last,
    // since it keeps working (and writing its spend logs) long after.
    let (paired, alone): (Vec<&Target>, Vec<&Target>) = targets
        .iter()
        .partition(|t| t.key != "strict" && t.key != "litellm");
    let mut rows: Vec<Vec<String>> = targets.iter().map(|_| Vec::new()).collect();
    let index = |t: &Target| targets.iter().position(|x| x.key == t.key).unwrap_or(0);
    // p99 over direct's, per run: (target, rate) -> differences in ms.
    let mut over: Vec<(String, u32, Vec<f64>)> = Vec::new();
    let mut max_rps: Vec<(String, f64)> = Vec::new();
    for t in &paired {
        eprintln!("warming up {}", t.name);
        let _ = fixed_rate(&http, t, 50, 0, 50).await;
    }
    if !paired.is_empty() {
        for &rate in rates {
            let mut pooled: Vec<Paced> = paired.iter().map(|_| Paced::default()).collect();
            let mut diffs: Vec<Vec<f64>> = paired.iter().map(|_| Vec::new()).collect();
            for run in 0..repeat {
                eprintln!(
                    "{rate} req/s for {secs}s each, in {rounds} interleaved rounds (run {} of {repeat}): {}",
                    run + 1,
                    paired.iter().map(|t| t.key).collect::<Vec<_>>().join(", ")
                );
                let paced = interleaved(&http, &paired, rate, secs, rounds).await;
                let direct = paired
                    .iter()
                    .position(|t| t.key == "direct")
                    .map(|i| paced[i].p99());
                for (i, p) in paced.into_iter().enumerate() {
                    if let Some(d) = direct {
                        diffs[i].push((p.p99().as_secs_f64() - d.as_secs_f64()) * 1000.0);
                    }
                    pooled[i].absorb(p);
                }
            }
            for ((t, p), d) in paired.iter().zip(pooled).zip(diffs) {
                rows[index(t)].push(row(&t.name, &p.outcome(rate)));
                if t.key != "direct" && !d.is_empty() {
                    over.push((t.name.clone(), rate, d));
                }
            }
        }
    }
    // Between two measurements, 3 s for what the previous one left behind (a saturated
    // gateway's backlog, PostgreSQL's writes) to settle.
    let settle = || tokio::time::sleep(Duration::from_secs(3));
    for t in &paired {
        settle().await;
        let (line, rps) = closed_loop(&http, t, workers, secs).await;
        rows[index(t)].push(line);
        max_rps.push((t.name.clone(), rps));
    }
    for t in &alone {
        settle().await;
        eprintln!("warming up {}", t.name);
        let _ = fixed_rate(&http, t, 50, 0, 50).await;
        let (slices, its_rates) = if t.key == "litellm" {
            (1, litellm_rates)
        } else {
            (rounds, rates)
        };
        for &rate in its_rates {
            eprintln!("{}: {rate} req/s for {secs}s", t.name);
            let o = interleaved(&http, &[t], rate, secs, slices).await;
            rows[index(t)].extend(o.into_iter().map(|p| row(&t.name, &p.outcome(rate))));
            settle().await;
        }
        let (line, rps) = closed_loop(&http, t, workers, secs).await;
        rows[index(t)].push(line);
        max_rps.push((t.name.clone(), rps));
    }
    for r in rows.into_iter().flatten() {
        out.push_str(&r);
    }
    if !over.is_empty() {
        out.push_str(&format!(
            "\np99 over direct's p99 in the same run, {repeat} run(s) per rate (each of {secs} s per target):\n\n| target | load | median | range | runs, in order |\n|---|---|---|---|---|\n"
        ));
        for (name, rate, d) in &over {
            let mut sorted = d.clone();
            sorted.sort_by(f64::total_cmp);
            let median = if sorted.len() % 2 == 1 {
                sorted[sorted.len() / 2]
            } else {
                (sorted[sorted.len() / 2 - 1] + sorted[sorted.len() / 2]) / 2.0
            };
            let runs: Vec<String> = d.iter().map(|x| format!("{x:+.2}")).collect();
            out.push_str(&format!(
                "| {name} | {rate} req/s | {median:+.2} ms | {:+.2} to {:+.2} ms | {} |\n",
                sorted[0],
                sorted[sorted.len() - 1],
                runs.join(", ")
            ));
        }
    }
    if let Some((_, litellm)) = max_rps.iter().find(|(n, _)| n == "litellm proxy") {
        out.push_str("\nMaximum throughput against LiteLLM's in the same run:\n\n");
        for (name, rps) in max_rps.iter().filter(|(n, _)| n != "litellm proxy") {
            out.push_str(&format!(
                "- {name}: {rps:.0} req/s, {:.1}x LiteLLM's {litellm:.0}\n",
                rps / litellm.max(1e-9)
            ));
        }
    }
    // Settle the in-process gateways' leases and write their queued records before counting.
    for drainer in drainers {
        servers
            .spawn(async move { drainer.drain(Duration::from_secs(30)).await })
            .await?;
    }
    Ok(out)
}

/// The closed-loop (maximum throughput) row of `t`, and its requests/s.
async fn closed_loop(
    http: &reqwest::Client,
    t: &Target,
    workers: usize,
    secs: u64,
) -> (String, f64) {
    eprintln!("{}: max throughput, {workers} clients for {secs}s", t.name);
    let o = max_throughput(http, t, workers, secs).await;
    (row(&t.name, &o), o.rps)
}

fn row(name: &str, o: &Outcome) -> String {
    let load = o
        .rate
        .map_or_else(|| "max (closed loop)".to_owned(), |r| format!("{r} req/s"));
    format!(
        "| {name} | {load} | {} | {} | {} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
        o.sent,
        o.ok,
        o.errors,
        o.rps,
        ms(o.p50),
        ms(o.p99),
        o.late_p99.map_or_else(|| "-".to_owned(), ms),
        pair(o.own),
        pair(o.upstream),
        o.tail.map_or_else(
            || "-".to_owned(),
            |[own, up, rest]| format!("{} / {} / {}", ms(own), ms(up), ms(rest))
        ),
        o.statements
            .map_or_else(|| "-".to_owned(), |n| format!("{n:.3}")),
        o.rss.map_or_else(|| "-".to_owned(), mib),
    )
}

/// `p50 / p99` in milliseconds, or `-`.
fn pair(p: Option<(Duration, Duration)>) -> String {
    p.map_or_else(
        || "-".to_owned(),
        |(p50, p99)| format!("{} / {}", ms(p50), ms(p99)),
    )
}
