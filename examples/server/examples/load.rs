//! Gateway load harness (figures, not a test; an example of the server crate, so that the
//! benches crate depends on library crates only): requests/s and p50/p99 latency at fixed
//! request rates, side by side, in one run on one machine:
//!
//! 1. `direct`: straight to the project's instant mock upstream;
//! 2. `proxy`: through a bare pass-through proxy built on the gateway's HTTP stack (axum,
//!    reqwest) with nothing else: what the extra network hop alone costs;
//! 3. `strict` and `fast`: through the StratAI gateway (auth, tier check, guardrails, budget
//!    reservation, settlement and usage recording in PostgreSQL) to the same mock;
//! 4. `litellm`: through the LiteLLM proxy (when `STRATAI_LITELLM_URL` and
//!    `STRATAI_LITELLM_MASTER_KEY` are set, e.g. by `scripts/litellm-up.sh`), whose upstream
//!    is the same mock program.
//!
//! Loopback only; every run is bounded (rate x seconds requests, at most 2,000 in flight).
//! Latency is measured from each request's *scheduled* start (open loop), so a saturated
//! target shows up as growing latency rather than hidden by slower sending.
//!
//! At each rate direct, the bare proxy and the high-throughput gateway (`fast`) take
//! turns: `--rounds` slices of `secs / rounds` each, one target after the other, pooled per
//! target. Whatever else the machine does during the run (PostgreSQL's checkpoints, other
//! processes) then lands on all of them alike instead of on whichever ran at that moment;
//! the p99 *difference* between direct and the gateway (and how much of it the hop alone
//! explains) is what this measures. Each slice starts with a quarter of a second at the
//! rate that is not measured (the steady state is measured, not the step from idle). The
//! strict gateway, which saturates at these rates and leaves a backlog behind, runs alone
//! after them; LiteLLM alone, last.
//!
//! The last two columns are each proxy's own account of a request: its own time, the
//! upstream call excluded (StratAI's `Server-Timing: gateway;dur=<ms>` header, from the moment
//! its middleware stack has the request to the response head, and LiteLLM's
//! `x-litellm-overhead-duration-ms`), and the upstream call as it timed it (StratAI's
//! `upstream;dur=<ms>`). They leave out what no proxy can see of itself (its sockets, the
//! wait for a CPU before its code runs), which the latency columns include. The very last
//! splits the slowest 1 % of a gateway's requests (those at and above its p99) into the
//! three: the medians of their own time, their upstream call, and the rest of their latency.
//!
//! Requests are started by a pacer thread sleeping on the kernel's high-resolution timers
//! (a Tokio timer's millisecond ticks would start them up to a millisecond late); how late
//! they actually started is measured and shown.
//!
//! ```text
//! cargo run --release -p stratai-server --example load -- [--rates 200,500,1000] [--secs 5] [--rounds 5] [--concurrency 32] [--targets direct,proxy,strict,fast,litellm] [--server-threads 2] [--client-threads 2] [--upstream-threads 2] [--store postgres]
//! ```
//! `--targets` picks the targets to measure (default: all five; `strict` and `fast` are the
//! gateway's two modes). Knobs for finding where the gateway's time goes, not for the
//! recorded figures: `--server-threads`, `--client-threads` and `--upstream-threads` set the
//! worker threads of the runtimes of the gateways and the bare proxy, of the load generator
//! and of the mock upstream (default 2 each), and `--store memory` puts the gateways on the
//! in-memory store instead of PostgreSQL (no database is created then).
//! PostgreSQL: `DATABASE_URL` (a superuser URL), else `postgres://postgres@127.0.0.1:5432/postgres`.
//! A fresh database `stratai_load_<time>` is created and dropped at the end.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::{Value, json};
use stratai_core::budget::{Budget, BudgetPeriod, BudgetScope};
use stratai_core::directory::{
    Email, INTERNAL_ORG_SLUG, Membership, OrgRole, PlatformRole, Slug, User,
};
use stratai_core::money::Money;
use stratai_guardrails::LeaseConfig;
use stratai_server::app::{AppState, HttpLimits, router};
use stratai_server::auth::Auth;
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
    /// Short name for `--targets`: direct, strict, fast, litellm.
    key: &'static str,
    name: &'static str,
    url: String,
    token: String,
    body: Value,
}

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
) -> Vec<Outcome> {
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
            let p = fixed_rate(http, t, rate, lead_in, n).await;
            acc.sent += p.sent;
            acc.errors += p.errors;
            acc.lat.extend(p.lat);
            acc.late.extend(p.late);
            acc.own.extend(p.own);
            acc.upstream.extend(p.upstream);
            acc.joint.extend(p.joint);
            acc.busy += p.busy;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    paced.into_iter().map(|p| p.outcome(rate)).collect()
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
}

async fn fresh_pg() -> Result<(Stores, PgDb), BoxError> {
    use sqlx::Connection;
    let admin_url = std::env::var("DATABASE_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let name = format!("stratai_load_{}", Utc::now().format("%Y%m%d%H%M%S"));
    let mut conn = sqlx::PgConnection::connect(&admin_url).await?;
    // `name` is `stratai_load_` + digits: nothing to inject.
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
    Ok((Stores::from_backend(store), PgDb { admin_url, name }))
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

/// Starts the StratAI server in-process on PostgreSQL, upstream = `upstream`; returns its
/// chat URL, a member's token and the store (for counting records).
async fn start_gateway(
    upstream: String,
    stores: Stores,
    fast: bool,
) -> Result<(String, String, Drainer), BoxError> {
    let env: HashMap<String, String> =
        [("DATABASE_URL".to_owned(), "sqlite://unused.db".to_owned())].into();
    let config = Config::load(&env)?;
    let backends = Backends::seeded(stores.clone(), &config).await?;
    let mut auth = Auth::from_config(&config, backends.directory, backends.sessions)?;
    if fast {
        auth = auth.with_auth_cache(Duration::from_secs(2));
    }
    let auth = Arc::new(auth);
    let mut options = GatewayOptions::from_config(&config);
    options.spool_path = std::env::temp_dir().join(format!(
        "stratai-load-{}-{}.spool",
        std::process::id(),
        if fast { "fast" } else { "strict" }
    ));
    options.llm = Some((
        Arc::new(OpenAiCompatProvider::new(&upstream, None)?),
        "mock",
    ));
    if fast {
        options.budget_lease = Some(LeaseConfig::default());
        options.usage_batch = Some(65_536);
    } else {
        options.budget_lease = None;
        options.usage_batch = None;
    }
    let gateway = build_state(&config, auth.clone(), &stores, options).await?;
    let drainer = gateway.drainer.clone();
    let app = router(
        AppState {
            auth,
            prices: std::sync::Arc::new(config.prices.clone()),
            readiness: backends.readiness,
            stores: stores.clone(),
            gateway: Some(gateway),
            mail: std::sync::Arc::new(
                stratai_server::server::postman(&config).map_err(|e| e.to_string())?,
            ),
            settings: config.summary().into(),
        },
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
    // A member of the internal pilot org (all tiers) with a large hard budget, so every
    // request goes through reservation and settlement.
    let now = Utc::now();
    let org = stores
        .directory
        .find_org_by_slug(&Slug::new(INTERNAL_ORG_SLUG)?)
        .await?
        .ok_or("internal org missing")?;
    let email = if fast {
        "load-fast@stratai.test"
    } else {
        "load@stratai.test"
    };
    let user = User::new(Email::new(email)?, None, PlatformRole::User, now)?;
    stores.directory.create_user(&user).await?;
    stores
        .directory
        .add_member(
            org.id,
            &Membership::new(org.id, user.id, OrgRole::Member, now),
        )
        .await?;
    let budget = Budget::new(
        org.id,
        BudgetScope::User(user.id),
        Money::dollars(1_000_000),
        BudgetPeriod::Monthly,
        true,
        rust_decimal::Decimal::ONE,
        now,
    )?;
    stores.budgets.create_budget(org.id, &budget).await?;
    let http = reqwest::Client::new();
    let v: Value = http
        .post(format!("http://{addr}/auth/dev/token"))
        .json(&json!({ "email": email }))
        .send()
        .await?
        .json()
        .await?;
    let token = v["token"].as_str().ok_or("no dev token")?.to_owned();
    Ok((format!("http://{addr}/v1/chat/completions"), token, drainer))
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
    let rates: Vec<u32> = arg(&args, "--rates")
        .unwrap_or_else(|| "200,500,1000".to_owned())
        .split(',')
        .filter_map(|r| r.trim().parse().ok())
        .filter(|r| (1..=5000).contains(r))
        .collect();
    let secs: u64 = arg(&args, "--secs")
        .and_then(|s| s.parse().ok())
        .unwrap_or(5)
        .clamp(1, 30);
    let rounds: u32 = arg(&args, "--rounds")
        .and_then(|s| s.parse().ok())
        .unwrap_or(5)
        .clamp(1, 100);
    let workers: usize = arg(&args, "--concurrency")
        .and_then(|s| s.parse().ok())
        .unwrap_or(32)
        .clamp(1, 512);
    let memory = match arg(&args, "--store").as_deref() {
        None | Some("postgres") => false,
        Some("memory") => true,
        Some(other) => {
            return Err(format!("unknown --store `{other}` (known: postgres, memory)").into());
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
    if let Some(unknown) = only
        .iter()
        .find(|k| !["direct", "proxy", "strict", "fast", "litellm"].contains(&k.as_str()))
    {
        return Err(format!(
            "unknown target `{unknown}` in --targets (known: direct, proxy, strict, fast, litellm)"
        )
        .into());
    }

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
    let (stores, pg) = if memory {
        (Stores::memory(), None)
    } else {
        let (stores, pg) = fresh_pg().await?;
        (stores, Some(pg))
    };
    let plan = Plan {
        rates,
        secs,
        rounds,
        workers,
        only,
    };
    let result = run(&servers, &mock, stores.clone(), &plan).await;
    let recorded = count_usage(&stores).await;
    if let Some(pg) = &pg {
        drop_pg(pg).await;
    }
    drop(mock);
    servers.shutdown_background();
    upstream.shutdown_background();
    let table = result?;
    println!("{table}");
    println!("usage records written by the gateways during the run: {recorded}");
    Ok(())
}

async fn count_usage(stores: &Stores) -> usize {
    let Ok(Some(org)) = stores
        .directory
        .find_org_by_slug(&match Slug::new(INTERNAL_ORG_SLUG) {
            Ok(s) => s,
            Err(_) => return 0,
        })
        .await
    else {
        return 0;
    };
    stores
        .usage
        .query(
            org.id,
            &stratai_core::usage::UsageQuery::default(),
            1_000_000,
        )
        .await
        .map_or(0, |r| r.len())
}

/// What to measure (from the command line).
struct Plan {
    /// Open-loop request rates.
    rates: Vec<u32>,
    /// Seconds per target and rate.
    secs: u64,
    /// Interleaved slices per rate.
    rounds: u32,
    /// Clients of the closed-loop (maximum throughput) run.
    workers: usize,
    /// Targets to measure (empty: all).
    only: Vec<String>,
}

async fn run(
    servers: &tokio::runtime::Runtime,
    mock: &mock_upstream::MockServer,
    stores: Stores,
    plan: &Plan,
) -> Result<String, BoxError> {
    let Plan {
        rates,
        secs,
        rounds,
        workers,
        only,
    } = plan;
    let (secs, rounds, workers) = (*secs, *rounds, *workers);
    let body = |model: &str| {
        json!({
            "model": model,
            "messages": [{"role": "user", "content": "Say hello to the load test"}],
            "max_tokens": 16
        })
    };
    let (gw_url, gw_token, _) = servers
        .spawn(start_gateway(mock.base_url(), stores.clone(), false))
        .await??;
    let (fast_url, fast_token, fast_drainer) = servers
        .spawn(start_gateway(mock.base_url(), stores, true))
        .await??;
    let proxy_url = servers.spawn(start_proxy(mock.base_url())).await??;
    let mut targets = vec![
        Target {
            key: "direct",
            name: "direct (mock)",
            url: format!("{}/chat/completions", mock.base_url()),
            token: "none".to_owned(),
            body: body("gpt-4o-mini"),
        },
        Target {
            key: "proxy",
            name: "bare proxy (hop only)",
            url: proxy_url,
            token: "none".to_owned(),
            body: body("gpt-4o-mini"),
        },
        Target {
            key: "strict",
            name: "stratai gateway, strict",
            url: gw_url,
            token: gw_token,
            body: body("gpt-4o-mini"),
        },
        Target {
            key: "fast",
            name: "stratai gateway, leases + batched usage",
            url: fast_url,
            token: fast_token,
            body: body("gpt-4o-mini"),
        },
    ];
    match (
        std::env::var("STRATAI_LITELLM_URL")
            .ok()
            .filter(|v| !v.is_empty()),
        std::env::var("STRATAI_LITELLM_MASTER_KEY")
            .ok()
            .filter(|v| !v.is_empty()),
    ) {
        (Some(url), Some(key)) => targets.push(Target {
            key: "litellm",
            name: "litellm proxy",
            url: format!("{}/v1/chat/completions", url.trim_end_matches('/')),
            token: key,
            body: body("mock-gpt"),
        }),
        _ => eprintln!(
            "STRATAI_LITELLM_URL / STRATAI_LITELLM_MASTER_KEY unset: the LiteLLM column is skipped"
        ),
    }
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(2048)
        .timeout(Duration::from_secs(30))
        .build()?;
    let mut out = String::from(
        "| target | load | sent | ok | errors | achieved req/s | p50 ms | p99 ms | started late, p99 ms | own time p50 / p99 ms | upstream as it timed it, p50 / p99 ms | slowest 1 %: own / upstream / rest, medians ms |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    targets.retain(|t| only.is_empty() || only.iter().any(|k| k == t.key));
    // Direct, the bare proxy and the high-throughput gateway, whose differences the run
    // measures, take turns at each rate. The strict gateway and LiteLLM, which fall behind
    // at these rates (the strict gateway on this machine from a few hundred requests/s) and
    // leave a backlog of work behind their slices, are measured alone, after them: LiteLLM
    // last, since it keeps working (and writing its spend logs) long after.
    let (paired, alone): (Vec<&Target>, Vec<&Target>) = targets
        .iter()
        .partition(|t| t.key == "direct" || t.key == "proxy" || t.key == "fast");
    let mut rows: Vec<Vec<String>> = targets.iter().map(|_| Vec::new()).collect();
    let index = |t: &Target| targets.iter().position(|x| x.key == t.key).unwrap_or(0);
    for t in &paired {
        eprintln!("warming up {}", t.name);
        let _ = fixed_rate(&http, t, 50, 0, 50).await;
    }
    if !paired.is_empty() {
        for &rate in rates {
            eprintln!(
                "{rate} req/s for {secs}s each, in {rounds} interleaved rounds: {}",
                paired.iter().map(|t| t.key).collect::<Vec<_>>().join(", ")
            );
            for (t, o) in paired
                .iter()
                .zip(interleaved(&http, &paired, rate, secs, rounds).await)
            {
                rows[index(t)].push(row(t.name, &o));
            }
        }
    }
    // Between two measurements, 3 s for what the previous one left behind (a saturated
    // gateway's backlog, PostgreSQL's writes) to settle.
    let settle = || tokio::time::sleep(Duration::from_secs(3));
    for t in &paired {
        settle().await;
        rows[index(t)].push(closed_loop(&http, t, workers, secs).await);
    }
    for t in &alone {
        settle().await;
        eprintln!("warming up {}", t.name);
        let _ = fixed_rate(&http, t, 50, 0, 50).await;
        let slices = if t.key == "litellm" { 1 } else { rounds };
        for &rate in rates {
            eprintln!("{}: {rate} req/s for {secs}s", t.name);
            let o = interleaved(&http, &[t], rate, secs, slices).await;
            rows[index(t)].extend(o.iter().map(|o| row(t.name, o)));
            settle().await;
        }
        rows[index(t)].push(closed_loop(&http, t, workers, secs).await);
    }
    for r in rows.into_iter().flatten() {
        out.push_str(&r);
    }
    // Settle the fast gateway's leases and write its queued records before counting.
    servers
        .spawn(async move { fast_drainer.drain(Duration::from_secs(30)).await })
        .await?;
    Ok(out)
}

/// The closed-loop (maximum throughput) row of `t`.
async fn closed_loop(http: &reqwest::Client, t: &Target, workers: usize, secs: u64) -> String {
    eprintln!("{}: max throughput, {workers} clients for {secs}s", t.name);
    row(t.name, &max_throughput(http, t, workers, secs).await)
}

fn row(name: &str, o: &Outcome) -> String {
    let load = o
        .rate
        .map_or_else(|| "max (closed loop)".to_owned(), |r| format!("{r} req/s"));
    format!(
        "| {name} | {load} | {} | {} | {} | {:.0} | {} | {} | {} | {} | {} | {} |\n",
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
    )
}

/// `p50 / p99` in milliseconds, or `-`.
fn pair(p: Option<(Duration, Duration)>) -> String {
    p.map_or_else(
        || "-".to_owned(),
        |(p50, p99)| format!("{} / {}", ms(p50), ms(p99)),
    )
}
