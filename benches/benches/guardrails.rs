//! Full pre-request guardrail decision (model access + effective policy + every pre check,
//! including a governor rate-limit token), warm, with 10, 1,000 and 10,000 rules spread over
//! 1,000 organizations.
//!
//! Run: `cargo bench -p stratai-benches --bench guardrails`. Besides criterion's estimates it
//! prints p50/p99 of single decisions and the 10 -> 10,000 growth ratio.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use criterion::{BenchmarkId, Criterion, criterion_group};
use serde_json::json;
use stratai_core::gateway::ChatMessage;
use stratai_core::ports::{RuleAction, RuleRecord, RuleScope};
use stratai_core::{GroupId, Money, OrgId, RuleId, TierId, UserId};
use stratai_guardrails::{Guardrails, KnownScopes, Outcome, Policy, PreRequest, Principal};
use uuid::Uuid;

const ORGS: u128 = 1_000;
const GROUPS_PER_ORG: u128 = 3;
const USERS_PER_ORG: u128 = 10;
const TIERS: u128 = 3;
const SIZES: [usize; 3] = [10, 1_000, 10_000];

fn org(i: u128) -> OrgId {
    OrgId::from_uuid(Uuid::from_u128(0x1_0000_0000 + i))
}
fn group(o: u128, g: u128) -> GroupId {
    GroupId::from_uuid(Uuid::from_u128(0x2_0000_0000 + o * 16 + g))
}
fn user(o: u128, u: u128) -> UserId {
    UserId::from_uuid(Uuid::from_u128(0x3_0000_0000 + o * 16 + u))
}
fn tier(t: u128) -> TierId {
    TierId::from_uuid(Uuid::from_u128(0x4_0000_0000 + t))
}

struct Bench {
    engine: Guardrails,
    principals: Vec<(Principal, Option<TierId>)>,
    messages: Vec<ChatMessage>,
    cost: Money,
    now: DateTime<Utc>,
}

/// `n` rules: two global ones, the rest spread round-robin over the organizations, cycling
/// through the eight types and the org, tier-in-org, group and user levels. Every rule is
/// evaluated for its principals and none refuses, so the measured path is the full one.
fn rules(n: usize) -> Vec<RuleRecord> {
    let mut out = Vec::with_capacity(n);
    let mk = |i: usize, rule_type: &str, config: serde_json::Value, scope, action| RuleRecord {
        id: RuleId::from_uuid(Uuid::from_u128(0x9_0000_0000 + i as u128)),
        name: format!("rule {i}"),
        description: None,
        rule_type: rule_type.to_owned(),
        config,
        scope,
        action,
        priority: (i % 5) as i32,
        active: true,
        created_at: Utc.timestamp_opt(1_700_000_000, 0).unwrap(),
    };
    out.push(mk(
        0,
        "model_denylist",
        json!({"models": ["gpt-3.5-turbo"]}),
        RuleScope::Global,
        RuleAction::Block,
    ));
    out.push(mk(1, "content_filter", json!({"blocked_topics": ["ransomware", "keylogger"], "blocked_patterns": ["(?i)build\\s{1,3}a\\s{1,3}bomb"]}), RuleScope::Global, RuleAction::Block));
    for i in 2..n {
        let k = i as u128;
        let o = k % ORGS;
        let org_id = org(o);
        let scope = match (k / ORGS) % 4 {
            0 => RuleScope::Org { org_id },
            1 => RuleScope::Tier {
                org_id: Some(org_id),
                tier_id: tier(k % TIERS),
            },
            2 => RuleScope::Group {
                org_id,
                group_id: group(o, k % GROUPS_PER_ORG),
            },
            _ => RuleScope::User {
                org_id,
                user_id: user(o, k % USERS_PER_ORG),
            },
        };
        let (rule_type, config, action) = match i % 8 {
            0 => (
                "model_allowlist",
                json!({"models": ["claude-sonnet-4-5", "claude-haiku-4-5", format!("custom-{i}")]}),
                RuleAction::Block,
            ),
            1 => (
                "model_denylist",
                json!({"models": [format!("banned-{i}"), "gpt-3.5-turbo"]}),
                RuleAction::Block,
            ),
            2 => (
                "token_limit",
                json!({"max_input": 100_000, "max_output": 8_000}),
                RuleAction::Block,
            ),
            3 => (
                "rate_limit",
                json!({"requests": 1_000_000, "period": "minute", "bucket": if i % 2 == 0 { "scope" } else { "per_user" }}),
                RuleAction::Block,
            ),
            4 => (
                "content_filter",
                json!({"blocked_topics": [format!("competitor{i}"), format!("project-{i}")], "blocked_patterns": [format!("ticket-{i}-[0-9]{{4}}")]}),
                RuleAction::Block,
            ),
            5 => (
                "output_modifier",
                json!({"append": format!("Disclaimer {}", i % 7)}),
                RuleAction::Modify,
            ),
            6 => (
                "budget_limit",
                json!({"amount": "100000", "period": "month"}),
                RuleAction::Block,
            ),
            _ => (
                "time_restriction",
                json!({"timezone": "Europe/Berlin", "allowed_hours": [{"start": "00:00", "end": "24:00"}]}),
                RuleAction::Block,
            ),
        };
        out.push(mk(i, rule_type, config, scope, action));
    }
    out
}

fn known() -> KnownScopes {
    let mut k = KnownScopes::new();
    for t in 0..TIERS {
        k.add_tier(tier(t));
    }
    for o in 0..ORGS {
        k.add_org(org(o));
        for g in 0..GROUPS_PER_ORG {
            k.add_group(org(o), group(o, g));
        }
        for u in 0..USERS_PER_ORG {
            k.add_member(org(o), user(o, u));
        }
    }
    k
}

fn bench_world(n: usize, known: &KnownScopes) -> Bench {
    let policy = Policy::compile(&rules(n), known, 1).unwrap();
    let mut principals = Vec::new();
    for i in 0..4_096u128 {
        let o = (i * 7919) % ORGS;
        principals.push((
            Principal {
                org_id: org(o),
                user_id: user(o, i % USERS_PER_ORG),
                groups: vec![
                    group(o, i % GROUPS_PER_ORG),
                    group(o, (i + 1) % GROUPS_PER_ORG),
                ],
            },
            Some(tier(i % TIERS)),
        ));
    }
    let prompt = "Please summarise the attached quarterly planning notes for the leadership team. \
        Focus on hiring, the roadmap for the next two quarters, open risks and the budget. \
        Keep it under three hundred words and use short bullet points where it helps. Thanks!";
    Bench {
        engine: Guardrails::new(policy),
        principals,
        messages: vec![
            ChatMessage {
                role: "system".into(),
                content: "You are a helpful assistant.".into(),
            },
            ChatMessage {
                role: "user".into(),
                content: prompt.into(),
            },
        ],
        cost: Money::parse("0.02").unwrap(),
        now: Utc.timestamp_opt(1_764_324_000, 0).unwrap(),
    }
}

impl Bench {
    /// Mean number of active rules that apply to a measured decision (the principals are
    /// cycled evenly, so this is the mean over the measured decisions).
    fn mean_applicable_rules(&self) -> f64 {
        let policy = self.engine.policy();
        let total: usize = self
            .principals
            .iter()
            .map(|(p, t)| policy.applicable_rules(p, *t).len())
            .sum();
        total as f64 / self.principals.len() as f64
    }

    fn decide(&self, i: usize) -> Outcome {
        let (principal, tier) = &self.principals[i % self.principals.len()];
        let request = PreRequest {
            principal,
            model: "claude-sonnet-4-5",
            tier: *tier,
            input_tokens: 120,
            max_tokens: Some(1_000),
            messages: &self.messages,
            estimated_cost: self.cost,
            spend: None,
            now: self.now,
        };
        self.engine.check(&request).outcome
    }
}

fn percentiles(bench: &Bench, samples: usize) -> (Duration, Duration) {
    let mut times = Vec::with_capacity(samples);
    for i in 0..samples {
        let start = Instant::now();
        black_box(bench.decide(i));
        times.push(start.elapsed());
    }
    times.sort_unstable();
    (times[samples / 2], times[samples * 99 / 100])
}

fn decisions(c: &mut Criterion) {
    let known = known();
    let mut group = c.benchmark_group("guardrails_pre_request");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    let mut p50s = Vec::new();
    let mut applicable = Vec::new();
    for n in SIZES {
        let bench = bench_world(n, &known);
        // Every decision is allowed: the measured path runs every check to the end.
        for i in 0..bench.principals.len() {
            assert_ne!(
                bench.decide(i),
                Outcome::Deny,
                "bench request refused with {n} rules"
            );
        }
        group.bench_with_input(BenchmarkId::from_parameter(n), &bench, |b, bench| {
            let mut i = 0;
            b.iter(|| {
                i += 1;
                black_box(bench.decide(i))
            });
        });
        let (p50, p99) = percentiles(&bench, 200_000);
        let rules_per_decision = bench.mean_applicable_rules();
        println!(
            "guardrails pre-request decision, {n:>6} rules: p50 {p50:?}, p99 {p99:?} (200,000 timed single decisions); \
             {rules_per_decision:.2} applicable rules per decision on average, p50 per applicable rule {:.0} ns",
            p50.as_nanos() as f64 / rules_per_decision
        );
        p50s.push(p50);
        applicable.push(rules_per_decision);
    }
    group.finish();
    let ratio = p50s[2].as_secs_f64() / p50s[0].as_secs_f64();
    println!("guardrails growth 10 -> 10,000 rules (p50): {ratio:.2}x");
    // The larger sets give each principal more applicable rules (its org's rules besides the
    // two global ones), so part of the growth is more work per decision, not slower lookups.
    let extra = applicable[2] - applicable[0];
    if extra > 0.0 {
        let marginal = (p50s[2].as_nanos() as f64 - p50s[0].as_nanos() as f64) / extra;
        println!(
            "guardrails applicable rules per decision 10 -> 10,000: {:.2} -> {:.2}; marginal p50 cost {marginal:.0} ns per extra applicable rule",
            applicable[0], applicable[2]
        );
    }
}

criterion_group!(benches, decisions);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
}
