//! Several instances, proven (issue 21, point 6): three server processes (the real binary)
//! over one PostgreSQL database and one Redis, in the default mode (budget leases, batched
//! usage, cached views: nothing pinned), each with its own usage log. 200 concurrent clients
//! make 2,000 chats (streamed and not) spread over the three, against tight hard budgets at
//! user, group and organization scope and a rate limit shared through Redis; one instance is
//! `kill -9`ed mid-run. Two runs:
//! - **restarted at once** over the same database and its own usage log, before the others
//!   would take it for dead: its restart settles the leases it held from its log, so after
//!   recovery **no budget's ledger spent exceeds its limit**, exactly;
//! - **down until taken over**: it stays down while the two others settle the budget leases
//!   it held (its heartbeat stops; polled until no lease of a dead instance is left), then is
//!   restarted on its log: no budget's spent exceeds its limit but by what its records charged
//!   after the fact (records only in its log when it died reach the ledger when it is back,
//!   after the others settled its leases without them: overage by design, alerted).
//!
//! In both, once the leases and batches have settled (polled): nothing is left reserved;
//! - every complete 2xx answer has exactly one usage record, no request id is recorded twice,
//!   and a record without a complete answer is one of the requests the kill cut off;
//! - for every budget, the ledger's spent equals the sum of what its records charged
//!   (`billed_amount - overage`);
//! - the rate-limited group's admissions stay within what the rule allows over the run (a
//!   burst of `requests`, then one every `period / requests`).
//!
//! PostgreSQL as in the other gateway tests; Redis as in `gateway_redis.rs`: without either
//! the test says it skipped, and under `CI=true` it fails. The whole test is bounded by a
//! timeout. It prints its figures.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod harness;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::{Value, json};
use stratai_core::budget::BudgetScope;
use stratai_core::directory::{Group, GroupMembership, GroupRole};
use stratai_core::ids::{BudgetId, GroupId, RequestId, UserId};
use stratai_core::money::Money;
use stratai_core::ports::{RuleAction, RuleScope};
use stratai_core::usage::{UsageQuery, UsageRecord};

use harness::*;

const INSTANCES: usize = 3;
const CLIENTS: usize = 200;
const CHATS: usize = 2_000;
/// Members of the organization; each is the caller of `CLIENTS / MEMBERS` clients.
const MEMBERS: usize = 40;
/// Members `0..10` are group A (a tight group budget), `10..20` group B (the rate limit),
/// `20..30` have tight budgets of their own, `30..40` spend until the organization's runs out.
const GROUP_A: std::ops::Range<usize> = 0..10;
const GROUP_B: std::ops::Range<usize> = 10..20;
const TIGHT_USERS: std::ops::Range<usize> = 20..30;
/// The shared rate limit of group B: this many requests per minute, one bucket for the group.
const RATE_LIMIT: u32 = 60;
/// One chat's charge (`max_tokens` 30 of gpt-4o-mini on the demo provider, as the records
/// show): the budgets are multiples of it.
const CHAT: &str = "0.00005";
/// The instances' heartbeat and when an instance counts as dead (short, so the dead phase is
/// short; well above the heartbeat, so a busy live instance is not taken for dead).
const HEARTBEAT_MS: &str = "300";
const DEAD_AFTER_MS: &str = "6000";
/// The whole test's bound.
const TIMEOUT: Duration = Duration::from_secs(240);

/// What happens to the killed instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Death {
    /// Restarted at once on its own log, before the others would take it for dead: the restart
    /// settles its leases from its log, exactly (no budget over its limit at all).
    RestartedAtOnce,
    /// Kept down until the others have settled its leases (its heartbeat stale for
    /// `DEAD_AFTER_MS`), then restarted on its log: what only that log held is charged after
    /// the fact, over a hard limit by at most those records (overage by design).
    DownUntilTakenOver,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_one_killed_and_restarted_at_once_exactly() {
    three_instances(Death::RestartedAtOnce).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_one_down_until_the_others_settle_its_leases() {
    three_instances(Death::DownUntilTakenOver).await;
}

async fn three_instances(death: Death) {
    let Some(redis) = redis_url().await else {
        return;
    };
    let Some(backing) = Backing::new(Db::Postgres).await else {
        return;
    };
    tokio::time::timeout(TIMEOUT, run(backing, redis, death))
        .await
        .unwrap_or_else(|_| panic!("the three-instance test took longer than {TIMEOUT:?}"));
}

/// Which budget scope a record is charged to.
#[derive(Clone, Copy, Debug)]
enum Charged {
    Org,
    Group(GroupId),
    User(UserId),
}

/// A budget of the test: its id, scope, name in the figures, and whether the workload must
/// exhaust it.
struct Limit {
    id: BudgetId,
    scope: Charged,
    name: String,
    tight: bool,
}

/// How one chat ended, as its client saw it.
#[derive(Debug)]
enum Outcome {
    /// 2xx and the whole answer arrived.
    Answered(RequestId),
    /// The kill cut it off: no answer (`None`) or an incomplete one.
    CutOff(Option<RequestId>),
    /// 429 from the rate limit.
    RateLimited(RequestId),
    /// 429 because a budget (of this scope, this id) is exhausted.
    BudgetRefused(RequestId, String, Option<BudgetId>),
    /// Anything else: status and body.
    Other(u16, String),
}

struct Chat {
    member: usize,
    instance: usize,
    sent: Instant,
    outcome: Outcome,
}

/// The instances' addresses and, per instance, each member's token (`None` while it is down).
type Live = Arc<RwLock<Vec<(String, Option<Arc<Vec<String>>>)>>>;

async fn run(backing: Arc<Backing>, redis: String, death: Death) {
    let began = Instant::now();
    let chat = Money::parse(CHAT).unwrap();
    let times = |n: i64| Money::new(chat.amount() * rust_decimal::Decimal::from(n)).unwrap();

    // The organization, its groups, budgets and the rate limit rule, written by an in-process
    // server over the same database before the instances start (each loads them at start).
    let (t, budgets) = {
        let gw = serve(backing.clone(), Setup::default()).await;
        let t = tenant(&gw, MEMBERS).await;
        let mut groups = Vec::new();
        for (name, members) in [("Group A", GROUP_A), ("Group B", GROUP_B)] {
            let g = Group::new(t.org, name, Utc::now()).unwrap();
            gw.stores.directory.create_group(t.org, &g).await.unwrap();
            for m in members {
                let gm =
                    GroupMembership::new(t.org, g.id, t.users[m].0, GroupRole::Member, Utc::now());
                gw.stores
                    .directory
                    .put_group_member(t.org, &gm)
                    .await
                    .unwrap();
            }
            groups.push(g.id);
        }
        // Every member has a budget: ten tight ones, the others wide enough that the group's
        // or the organization's runs out first. The organization's is smaller than what the
        // members could spend together, so it runs out late in the run.
        let mut budgets: Vec<Limit> = Vec::new();
        let mut add = |id, scope, name: String, tight| {
            budgets.push(Limit {
                id,
                scope,
                name,
                tight,
            });
        };
        for (m, (user, _)) in t.users.iter().enumerate() {
            let tight = TIGHT_USERS.contains(&m);
            let limit = times(if tight { 12 } else { 40 });
            let b = budget(
                &gw,
                t.org,
                BudgetScope::User(*user),
                &limit.amount().to_string(),
                true,
            )
            .await;
            add(b.id, Charged::User(*user), format!("member {m}"), tight);
        }
        let scope = BudgetScope::Group(groups[0]);
        let b = budget(&gw, t.org, scope, &times(40).amount().to_string(), true).await;
        add(b.id, Charged::Group(groups[0]), "group A".to_owned(), true);
        let b = budget(
            &gw,
            t.org,
            BudgetScope::Org,
            &times(500).amount().to_string(),
            true,
        )
        .await;
        add(b.id, Charged::Org, "organization".to_owned(), true);
        rule_at(
            &gw,
            t.org,
            RuleScope::Group {
                org_id: t.org,
                group_id: groups[1],
            },
            "group B sixty per minute",
            "rate_limit",
            json!({"requests": RATE_LIMIT, "period": "minute", "bucket": "scope"}),
            RuleAction::Block,
        )
        .await;
        (t, budgets)
    };

    // Three instances, each with its own usage log; the default mode except for the Redis.
    let logs: Vec<_> = (0..INSTANCES)
        .map(|i| backing.dir.join(format!("usage-{i}.log")))
        .collect();
    let dead_after = match death {
        Death::DownUntilTakenOver => DEAD_AFTER_MS,
        // Far beyond the restart: no other instance takes the killed one for dead.
        Death::RestartedAtOnce => "600000",
    };
    let env = [
        ("STRATAI_REDIS_URL", redis.as_str()),
        ("STRATAI_HEARTBEAT_MS", HEARTBEAT_MS),
        ("STRATAI_DEAD_AFTER_MS", dead_after),
        // Three debug builds on two cores wait for pool connections: not this test's figures.
        ("RUST_LOG", "warn,sqlx=error"),
    ];
    let mut servers =
        futures::future::join_all(logs.iter().map(|log| start_process(&backing, log, &env))).await;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(CLIENTS)
        .build()
        .unwrap();
    let mut live = Vec::new();
    for s in &servers {
        live.push((
            s.base.clone(),
            Some(Arc::new(tokens(&http, &s.base, &t.emails).await)),
        ));
    }
    let live: Live = Arc::new(RwLock::new(live));
    let ready = began.elapsed();

    // The load: each client makes its share of the chats, spread over the instances that are
    // up; one instance is killed once a third of the chats are done and restarted at once.
    let done = Arc::new(AtomicUsize::new(0));
    let load_began = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (http, live, done) = (http.clone(), live.clone(), done.clone());
            tokio::spawn(async move {
                let member = c % MEMBERS;
                let stream = (c / MEMBERS) % 2 == 1;
                let mut chats = Vec::new();
                for n in 0..CHATS / CLIENTS {
                    let (instance, base, token) = pick(&live, c + n, member);
                    let sent = Instant::now();
                    let outcome = one_chat(&http, &base, &token, stream, c * 100 + n).await;
                    chats.push(Chat {
                        member,
                        instance,
                        sent,
                        outcome,
                    });
                    done.fetch_add(1, Ordering::Relaxed);
                }
                chats
            })
        })
        .collect();
    while done.load(Ordering::Relaxed) < CHATS / 3 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    live.write().unwrap()[0].1 = None;
    servers[0].kill_nine();
    let killed = Instant::now();
    let killed_utc = Utc::now();
    let killed_at = load_began.elapsed();
    let done_at_kill = done.load(Ordering::Relaxed);
    let stores = backing.open().await;
    let stores_ref = &stores;
    let (held_by_dead, dead_for, before_restart) = if death == Death::DownUntilTakenOver {
        // The dead phase: instance 0 stays down while the others go on serving; its heartbeat
        // is the only one older than the kill once theirs were written again, so the leases of
        // dead instances by that cutoff are its leases. The others settle them after
        // `dead_after` (polled).
        tokio::time::sleep(Duration::from_secs(1)).await;
        let held_by_dead = stores
            .budgets
            .abandoned_leases(killed_utc, 10_000)
            .await
            .unwrap()
            .len();
        let taken_over = eventually(Duration::from_secs(40), || async move {
            stores_ref
                .budgets
                .abandoned_leases(killed_utc, 10_000)
                .await
                .unwrap()
                .is_empty()
        })
        .await;
        assert!(
            taken_over,
            "the leases of the killed instance were not settled by the others within 40 s"
        );
        // What the store has before the killed instance's log is replayed: records of its
        // requests that appear later were only in its log, and are charged after the fact.
        let before_restart: HashSet<RequestId> =
            records_of(&stores, t.org).await.0.into_keys().collect();
        (held_by_dead, killed.elapsed(), Some(before_restart))
    } else {
        (0, Duration::ZERO, None)
    };
    servers[0] = start_process(&backing, &logs[0], &env).await;
    let restarted = Arc::new(tokens(&http, &servers[0].base, &t.emails).await);
    *live.write().unwrap().get_mut(0).unwrap() = (servers[0].base.clone(), Some(restarted));
    let back = Instant::now();
    let back_at = back.duration_since(load_began);
    let done_at_restart = done.load(Ordering::Relaxed);
    let mut chats = Vec::new();
    for c in clients {
        chats.extend(c.await.unwrap());
    }
    let load_took = load_began.elapsed();

    // What the clients saw.
    let mut answered: HashMap<RequestId, usize> = HashMap::new();
    let mut cut_ids: HashSet<RequestId> = HashSet::new();
    let mut cut_off = 0;
    let mut refused: HashSet<RequestId> = HashSet::new();
    let mut rate_limited = 0;
    let mut budget_refused: BTreeMap<String, usize> = BTreeMap::new();
    let mut refused_by: HashMap<Option<BudgetId>, usize> = HashMap::new();
    let mut others = Vec::new();
    for c in &chats {
        match &c.outcome {
            Outcome::Answered(rid) => {
                assert!(
                    answered.insert(*rid, c.member).is_none(),
                    "{rid} answered twice"
                );
            }
            Outcome::CutOff(rid) => {
                cut_off += 1;
                cut_ids.extend(*rid);
            }
            Outcome::RateLimited(rid) => {
                rate_limited += 1;
                refused.insert(*rid);
            }
            Outcome::BudgetRefused(rid, scope, id) => {
                *budget_refused.entry(scope.clone()).or_default() += 1;
                *refused_by.entry(*id).or_default() += 1;
                refused.insert(*rid);
            }
            Outcome::Other(status, body) => others.push(format!("{status} {body}")),
        }
    }
    let group_b: HashSet<UserId> = GROUP_B.map(|m| t.users[m].0).collect();
    let mut per_instance = [0; INSTANCES];
    for c in chats
        .iter()
        .filter(|c| matches!(c.outcome, Outcome::Answered(_)))
    {
        per_instance[c.instance] += 1;
    }
    let by_restarted = chats
        .iter()
        .filter(|c| c.instance == 0 && c.sent >= back && matches!(c.outcome, Outcome::Answered(_)))
        .count();
    let first_sent = chats.iter().map(|c| c.sent).min().unwrap();

    // After recovery: poll until every budget's reservations are settled, its spent equals
    // its records, and every instance's usage log has nothing waiting (leases close after
    // their age, standby leases after `keep_warm`).
    let ids: Vec<BudgetId> = budgets.iter().map(|b| b.id).collect();
    let settle_began = Instant::now();
    let (org, ids_ref, logs_ref, budgets_ref) = (t.org, &ids, &logs, &budgets);
    let settled = eventually(Duration::from_secs(60), || async move {
        let records = records_of(stores_ref, org).await;
        let states = stores_ref
            .budgets
            .states(org, ids_ref, Utc::now())
            .await
            .unwrap();
        logs_ref.iter().all(|l| spooled(l).is_empty())
            && budgets_ref.iter().all(|b| {
                let s = states.iter().find(|s| s.budget.id == b.id).unwrap();
                s.reserved == Money::ZERO && s.spent == charged_to(&records.0, b.scope)
            })
    })
    .await;
    let settle_took = settle_began.elapsed();
    let (records, duplicates) = records_of(&stores, t.org).await;
    let states = stores
        .budgets
        .states(t.org, &ids, Utc::now())
        .await
        .unwrap();

    // The figures.
    let missing: Vec<&RequestId> = answered
        .keys()
        .filter(|r| !records.contains_key(*r))
        .collect();
    let unanswered: Vec<&UsageRecord> = records
        .values()
        .filter(|r| !answered.contains_key(&r.request_id))
        .collect();
    let recorded_refusals = unanswered
        .iter()
        .filter(|r| refused.contains(&r.request_id))
        .count();
    let b_admitted = records
        .values()
        .filter(|r| group_b.contains(&r.user_id))
        .count();
    let b_answered = answered.values().filter(|m| GROUP_B.contains(*m)).count();
    let b_span = load_took.saturating_sub(first_sent.duration_since(load_began));
    // GCRA: a burst of RATE_LIMIT, then one per 60 s / RATE_LIMIT (the Redis script's
    // interval, rounded up to a microsecond), over the span between the first request sent
    // and the last answer received; one more for the boundary.
    let interval_us = 60_000_000u128.div_ceil(u128::from(RATE_LIMIT));
    let rate_allows =
        RATE_LIMIT as usize + usize::try_from(b_span.as_micros() / interval_us).unwrap() + 1;
    // Records of instance 0's requests made before the kill that reached the store only
    // when its log was replayed: charged after the others had settled its leases.
    let before_kill: HashSet<RequestId> = chats
        .iter()
        .filter(|c| c.instance == 0 && c.sent < killed)
        .filter_map(|c| match &c.outcome {
            Outcome::Answered(rid) | Outcome::CutOff(Some(rid)) => Some(*rid),
            _ => None,
        })
        .collect();
    let late: HashMap<RequestId, UsageRecord> = records
        .iter()
        .filter(|(rid, _)| {
            before_restart
                .as_ref()
                .is_some_and(|seen| before_kill.contains(*rid) && !seen.contains(*rid))
        })
        .map(|(rid, r)| (*rid, r.clone()))
        .collect();
    let mut lines = Vec::new();
    let mut over = Vec::new();
    let mut mismatched = Vec::new();
    let mut never_refused = Vec::new();
    for b in &budgets {
        let s = states.iter().find(|s| s.budget.id == b.id).unwrap();
        let sum = charged_to(&records, b.scope);
        let refusals = refused_by.get(&Some(b.id)).copied().unwrap_or(0);
        lines.push(format!(
            "{}: spent {} of {} (records {sum}, reserved {}, {refusals} refused)",
            b.name,
            s.spent.amount(),
            s.budget.limit.amount(),
            s.reserved.amount()
        ));
        let late_charged = charged_to(&late, b.scope);
        if s.spent > s.budget.limit + late_charged {
            over.push(format!(
                "{}: spent {} > limit {} + charged after the fact {late_charged}",
                b.name, s.spent, s.budget.limit
            ));
        }
        if s.spent != sum || s.reserved != Money::ZERO {
            mismatched.push(format!(
                "{}: spent {} vs records {sum}, reserved {}",
                b.name, s.spent, s.reserved
            ));
        }
        if b.tight && refusals == 0 {
            never_refused.push(b.name.clone());
        }
    }
    println!(
        "three instances on PostgreSQL + Redis, default mode: {} chats from {CLIENTS} clients \
         over {INSTANCES} instances in {load_took:?} (instances ready after {ready:?}); \
         instance 0 killed at {killed_at:?} after {done_at_kill} chats, its {held_by_dead} \
         leases settled by the others within {dead_for:?} (dead after {dead_after} ms), \
         serving again at {back_at:?} (after {done_at_restart} chats); {} records ({}) charged \
         after the fact at its restart",
        chats.len(),
        late.len(),
        charged_to(&late, Charged::Org),
    );
    println!(
        "  2xx complete {}, cut off by the kill {cut_off} ({} with a request id), 429 rate limit \
         {rate_limited}, 429 budget {budget_refused:?}, other {}; 2xx per instance \
         {per_instance:?} ({by_restarted} by the restarted one)",
        answered.len(),
        cut_ids.len(),
        others.len()
    );
    println!(
        "  records {} ({} of requests without a complete answer), {} answered without a \
         record, {duplicates} duplicates; group B admitted {b_admitted} ({b_answered} answered) \
         vs the rate limit's {rate_allows} over {b_span:?}",
        records.len(),
        unanswered.len(),
        missing.len(),
    );
    println!(
        "  {} of {} budgets refused requests; settled after {settle_took:?} ({}); whole test \
         {:?}",
        refused_by.len(),
        budgets.len(),
        if settled { "polled" } else { "NOT within 60 s" },
        began.elapsed()
    );
    println!("  {}", lines.join("; "));

    assert!(others.is_empty(), "unexpected answers: {others:#?}");
    assert!(missing.is_empty(), "answered without a record: {missing:?}");
    assert_eq!(duplicates, 0, "a request was recorded twice");
    assert_eq!(recorded_refusals, 0, "a refused request has a record");
    assert!(
        unanswered.len() <= cut_off,
        "{} records of requests without a complete answer, only {cut_off} were cut off",
        unanswered.len()
    );
    assert!(over.is_empty(), "budgets over their limit: {over:#?}");
    assert!(
        mismatched.is_empty(),
        "ledger differs from records: {mismatched:#?}"
    );
    // Every request admitted under the rule is recorded (checked above), so the records of
    // group B count the admissions. The bound holds while Redis answers every call in time:
    // a call that times out is decided by that instance's own limiter (logged as "shared
    // rate limiter unreachable"), and such admissions are the only way past it.
    assert!(
        b_admitted <= rate_allows,
        "the shared rate limit let {b_admitted} requests of group B through, the rule allows \
         {rate_allows} over {b_span:?}"
    );
    // The workload did what it is for: every kind of limit was reached during the run.
    assert!(rate_limited > 0, "the rate limit was never hit");
    assert!(
        never_refused.is_empty(),
        "tight budgets that never refused a request: {never_refused:?}"
    );
    for l in &logs {
        assert!(
            spooled(l).is_empty(),
            "{} holds records waiting",
            l.display()
        );
    }
    drop(servers);
}

/// Each member's dev token from the server at `base`.
async fn tokens(http: &reqwest::Client, base: &str, emails: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for email in emails {
        out.push(dev_token(http, base, email).await);
    }
    out
}

/// The instance for a client's `n`th chat (round robin over those up) and `member`'s token there.
fn pick(live: &Live, n: usize, member: usize) -> (usize, String, String) {
    let live = live.read().unwrap();
    (0..INSTANCES)
        .map(|k| (n + k) % INSTANCES)
        .find_map(|i| {
            let (base, tokens) = &live[i];
            tokens
                .as_ref()
                .map(|t| (i, base.clone(), t[member].clone()))
        })
        .expect("an instance is up")
}

async fn one_chat(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    stream: bool,
    n: usize,
) -> Outcome {
    let mut body = ask(MODEL, &format!("instances test chat {n}"));
    body["max_tokens"] = json!(30);
    if stream {
        body["stream"] = json!(true);
    }
    let Ok(r) = http
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
    else {
        return Outcome::CutOff(None);
    };
    let status = r.status().as_u16();
    let rid: Option<RequestId> = r
        .headers()
        .get("x-stratai-request-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let text = r.text().await;
    let Some(rid) = rid else {
        return Outcome::Other(status, text.unwrap_or_default());
    };
    match (status, text) {
        (200, Ok(t)) => {
            let complete = if stream {
                t.contains("data: [DONE]")
            } else {
                serde_json::from_str::<Value>(&t).is_ok_and(|v| v["choices"][0].is_object())
            };
            if complete {
                Outcome::Answered(rid)
            } else {
                Outcome::CutOff(Some(rid))
            }
        }
        (200, Err(_)) => Outcome::CutOff(Some(rid)),
        (429, Ok(t)) => {
            let v: Value = serde_json::from_str(&t).unwrap_or(Value::Null);
            match v["error"]["type"].as_str() {
                Some("rate_limit_error") => Outcome::RateLimited(rid),
                Some("insufficient_quota") => Outcome::BudgetRefused(
                    rid,
                    v["error"]["scope"].as_str().unwrap_or("?").to_owned(),
                    serde_json::from_value(v["error"]["budget_id"].clone()).ok(),
                ),
                _ => Outcome::Other(status, t),
            }
        }
        (status, t) => Outcome::Other(status, t.unwrap_or_default()),
    }
}

/// The organization's records by request id, and how many rows repeated an id.
async fn records_of(
    stores: &stratai_server::stores::Stores,
    org: stratai_core::ids::OrgId,
) -> (HashMap<RequestId, UsageRecord>, usize) {
    let rows = stores
        .usage
        .query(org, &UsageQuery::default(), 100_000)
        .await
        .unwrap();
    let n = rows.len();
    let by_id: HashMap<RequestId, UsageRecord> =
        rows.into_iter().map(|r| (r.request_id, r)).collect();
    let duplicates = n - by_id.len();
    (by_id, duplicates)
}

/// What the records charged to a budget of `scope` (`billed_amount - overage`).
fn charged_to(records: &HashMap<RequestId, UsageRecord>, scope: Charged) -> Money {
    records
        .values()
        .filter(|r| match scope {
            Charged::Org => true,
            Charged::Group(g) => r.group_id == Some(g),
            Charged::User(u) => r.user_id == u,
        })
        .map(|r| r.billed_amount.saturating_sub(r.overage))
        .sum()
}
