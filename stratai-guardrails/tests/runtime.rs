//! The library runtime on the in-memory store: the whole governed path, streams settled
//! exactly once (also when dropped), and the handle draining and stopping its tasks.
#![cfg(feature = "runtime")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use chrono::Utc;
use rust_decimal_macros::dec;
use stratai_core::Money;
use stratai_core::gateway::{ChatMessage, ChatRequest};
use stratai_core::ids::{BudgetId, OrgId, UserId};
use stratai_core::tiers::default_tiers;
use stratai_core::usage::Attribution;
use stratai_core::usage::{UsageQuery, UsageStatus};
use stratai_guardrails::runtime::stream::StreamEvent;
use stratai_guardrails::runtime::{
    Runtime, RuntimeHandle, RuntimeStores, UsageBatching, lease_config,
};
use stratai_store::Stores;
use stratai_testkit::Scratch;

struct World {
    stores: Stores,
    org: OrgId,
    user: UserId,
    budget: BudgetId,
}

async fn world(limit: &str) -> World {
    let stores = Stores::memory();
    let tenant = stratai_testkit::tenant::member_with_budget(&stores, limit).await;
    World {
        stores,
        org: tenant.org,
        user: tenant.user,
        budget: tenant.budget,
    }
}

fn runtime_stores(stores: &Stores) -> RuntimeStores {
    RuntimeStores {
        directory: stores.directory.clone(),
        tiers: stores.tiers.clone(),
        budgets: stores.budgets.clone(),
        usage: stores.usage.clone(),
        rules: stores.guardrails.clone(),
    }
}

fn ask(content: &str, max_tokens: u32, stream: bool) -> ChatRequest {
    ChatRequest {
        model: "gpt-4o-mini".into(),
        messages: vec![ChatMessage {
            role: "user".into(),
            content: content.into(),
        }],
        max_tokens: Some(max_tokens),
        temperature: None,
        stream,
        user: None,
    }
}

async fn spent(w: &World) -> (Money, Money) {
    let s = w
        .stores
        .budgets
        .states(w.org, &[w.budget], Utc::now())
        .await
        .unwrap();
    (s[0].spent, s[0].reserved)
}

async fn records(w: &World) -> Vec<stratai_core::usage::UsageRecord> {
    w.stores
        .usage
        .query(w.org, &UsageQuery::default(), 1000)
        .await
        .unwrap()
}

/// Builds the fast runtime (cache, leases, batching, spool) over `w`.
async fn fast(w: &World, scratch: &Scratch) -> (Runtime, RuntimeHandle) {
    Runtime::builder(runtime_stores(&w.stores))
        .cache(Duration::from_secs(5))
        .budget_leases(lease_config(Duration::from_millis(200), 4))
        .usage_batching(UsageBatching::default())
        .spool(scratch.path().join("spool.jsonl"))
        .build()
        .await
        .unwrap()
}

#[tokio::test]
async fn the_fast_path_is_durable_after_shutdown_and_stops_its_tasks() {
    let w = world("1").await;
    let scratch = Scratch::new();
    let (runtime, handle) = fast(&w, &scratch).await;
    assert!(handle.running_tasks() >= 3, "{}", handle.running_tasks());
    let mut billed = Money::ZERO;
    for _ in 0..5 {
        let answer = runtime
            .chat(w.user, Some("acme"), ask("Say hello", 50, false))
            .await
            .unwrap();
        assert!(answer.billed.amount > Money::ZERO);
        billed = billed + answer.billed.amount;
    }
    handle.shutdown(Duration::from_secs(5)).await;
    assert_eq!(handle.running_tasks(), 0);
    // Every lease settled with the actual costs, every queued record written.
    assert_eq!(spent(&w).await, (billed, Money::ZERO));
    let recs = records(&w).await;
    assert_eq!(recs.len(), 5);
    assert!(recs.iter().all(|r| r.status == UsageStatus::Success));
}

#[tokio::test]
async fn a_stream_read_to_the_end_settles_once_and_reports_its_bill() {
    let w = world("1").await;
    let (runtime, handle) = Runtime::builder(runtime_stores(&w.stores))
        .build()
        .await
        .unwrap();
    let view = runtime.caller_view(w.user, None).await.unwrap();
    let admission = runtime
        .admit(
            &view,
            ask("Tell me a story", 40, true),
            Attribution::default(),
        )
        .await
        .unwrap();
    let id = admission.ticket.request_id;
    let (_, opened) = runtime.open_stream(admission).await;
    let mut stream = opened.unwrap();
    let mut text = String::new();
    let mut done = None;
    while let Some(event) = stream.next().await {
        match event {
            StreamEvent::Chunks(chunks) => {
                for c in chunks {
                    for choice in c.choices {
                        text.push_str(choice.delta.content.as_deref().unwrap_or(""));
                    }
                }
            }
            StreamEvent::Done {
                request_id, billed, ..
            } => done = Some((request_id, billed.unwrap())),
            other => panic!("{other:?}"),
        }
    }
    let (request_id, billed) = done.expect("the stream ends with its bill");
    assert_eq!(request_id, id);
    assert!(!text.is_empty());
    drop(stream);
    assert_eq!(spent(&w).await, (billed.amount, Money::ZERO));
    let recs = records(&w).await;
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].status, UsageStatus::Success);
    handle.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_stream_dropped_midway_is_settled_as_partial() {
    let w = world("1").await;
    let (runtime, handle) = Runtime::builder(runtime_stores(&w.stores))
        .build()
        .await
        .unwrap();
    let view = runtime.caller_view(w.user, None).await.unwrap();
    let admission = runtime
        .admit(
            &view,
            ask("echo: one two three four five six seven eight", 40, true),
            Attribution::default(),
        )
        .await
        .unwrap();
    let (_, opened) = runtime.open_stream(admission).await;
    let mut stream = opened.unwrap();
    // Read until some text came, then leave like a client closing its connection.
    loop {
        match stream.next().await {
            Some(StreamEvent::Chunks(c))
                if c.iter()
                    .any(|c| c.choices.iter().any(|x| x.delta.content.is_some())) =>
            {
                break;
            }
            Some(StreamEvent::Chunks(_)) => {}
            other => panic!("{other:?}"),
        }
    }
    drop(stream);
    let mut recs = Vec::new();
    for _ in 0..100 {
        recs = records(&w).await;
        if !recs.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(recs.len(), 1, "the dropped stream was settled");
    assert_eq!(recs[0].status, UsageStatus::Partial);
    assert!(recs[0].billed_amount > Money::ZERO);
    assert_eq!(spent(&w).await, (recs[0].billed_amount, Money::ZERO));
    handle.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn batching_without_a_spool_is_refused() {
    let w = world("1").await;
    let err = Runtime::builder(runtime_stores(&w.stores))
        .usage_batching(UsageBatching::default())
        .build()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("spool"), "{err}");
}

/// A cached catalog holds the tier's rate schedule: a change scheduled before the catalog was
/// cached applies at its time, though the cache is not reloaded; a request before it keeps the
/// old rates.
#[tokio::test]
async fn a_cached_catalog_switches_rates_at_the_scheduled_time() {
    let w = world("100").await;
    let basic = default_tiers().remove(0);
    let from = Utc::now() + chrono::TimeDelta::milliseconds(400);
    let change = stratai_core::tiers::RatePeriod {
        effective_from: from,
        input_rate_per_million: dec!(1.00),
        output_rate_per_million: dec!(5.00),
    };
    let changed = basic.with_rate_change(change, Utc::now()).unwrap();
    w.stores.tiers.upsert_tier(&changed).await.unwrap();
    let (runtime, handle) = Runtime::builder(runtime_stores(&w.stores))
        .cache(Duration::from_secs(3600))
        .build()
        .await
        .unwrap();
    let before = runtime
        .chat(w.user, Some("acme"), ask("Say hello", 50, false))
        .await
        .unwrap();
    tokio::time::sleep(
        (from - Utc::now()).to_std().unwrap_or_default() + Duration::from_millis(50),
    )
    .await;
    // The tier is changed again in the store: the cached view does not see it, the schedule it
    // holds decides.
    let mut renamed = changed.clone();
    renamed.rate_schedule.clear();
    renamed.input_rate_per_million = dec!(99);
    w.stores.tiers.upsert_tier(&renamed).await.unwrap();
    let after = runtime
        .chat(w.user, Some("acme"), ask("Say hello", 50, false))
        .await
        .unwrap();
    handle.shutdown(Duration::from_secs(5)).await;
    let mut recs = records(&w).await;
    recs.sort_by_key(|r| r.created_at);
    assert_eq!(recs.len(), 2);
    let at = |input, output, r: &stratai_core::usage::UsageRecord| {
        let mut t = default_tiers().remove(0);
        t.input_rate_per_million = input;
        t.output_rate_per_million = output;
        stratai_core::pricing::billed_amount(&t, r.input_tokens, r.output_tokens)
    };
    assert!(recs[0].created_at < from && recs[1].created_at >= from);
    assert_eq!(recs[0].billed_amount, at(dec!(0.50), dec!(2.00), &recs[0]));
    assert_eq!(recs[1].billed_amount, at(dec!(1.00), dec!(5.00), &recs[1]));
    assert_eq!(before.billed.amount, recs[0].billed_amount);
    assert_eq!(after.billed.amount, recs[1].billed_amount);
    assert!(recs[1].billed_amount > recs[0].billed_amount);
}

/// `explain_for`: a member asks about themself and gets the decision with its reasons and
/// budgets; a plain member may not ask about another member; an unknown email is not found.
#[tokio::test]
async fn explain_for_answers_a_member_about_themself_only() {
    use stratai_core::directory::{Email, Membership, OrgRole, PlatformRole, User};
    use stratai_guardrails::Outcome;
    use stratai_guardrails::runtime::{
        ExplainCaller, ExplainQuestion, ExplainRefusal, ExplainSubject,
    };

    let w = world("5").await;
    let bob = User::new(
        Email::new("bob@acme.example").unwrap(),
        Some("Bob"),
        PlatformRole::User,
        Utc::now(),
    )
    .unwrap();
    w.stores.directory.create_user(&bob).await.unwrap();
    w.stores
        .directory
        .add_member(
            w.org,
            &Membership::new(w.org, bob.id, OrgRole::Member, Utc::now()),
        )
        .await
        .unwrap();
    let (runtime, handle) = Runtime::builder(runtime_stores(&w.stores))
        .build()
        .await
        .unwrap();
    let alice = ExplainCaller {
        user: w.user,
        super_admin: false,
    };
    let about = |subject| ExplainQuestion {
        subject,
        org: Some("acme".to_owned()),
        model: "gpt-4o-mini".to_owned(),
        messages: None,
        max_tokens: Some(50),
        at: None,
    };

    let own = ExplainSubject::parse(Some("alice@acme.example")).unwrap();
    let answer = runtime.explain_for(alice, about(own)).await.unwrap();
    assert_eq!(answer.outcome, Outcome::Allow, "{:?}", answer.reasons);
    assert!(answer.refusal.is_none());
    assert_eq!((answer.org_id, answer.user_id), (w.org, w.user));
    assert!(!answer.reasons.is_empty());
    assert!(answer.tier.is_some() && answer.worst_case_cost.is_some());
    assert_eq!(answer.budgets.len(), 1);
    assert_eq!(answer.budgets[0].budget_id, w.budget);

    let other = runtime
        .explain_for(alice, about(ExplainSubject::Id(bob.id)))
        .await
        .unwrap_err();
    assert!(matches!(other, ExplainRefusal::Forbidden(_)), "{other:?}");

    let unknown = ExplainSubject::parse(Some("nobody@acme.example")).unwrap();
    let missing = runtime
        .explain_for(alice, about(unknown))
        .await
        .unwrap_err();
    assert!(matches!(missing, ExplainRefusal::NotFound), "{missing:?}");
    // Nothing was reserved.
    assert_eq!(spent(&w).await, (Money::ZERO, Money::ZERO));
    handle.shutdown(Duration::from_secs(5)).await;
}
