#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The sync engine and reconcilers against the real LiteLLM proxy (see `tests/common`).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::Utc;
use common::fake::{FakeDirectory, basic, premium};
use rust_decimal_macros::dec;
use stratai_core::Money;
use stratai_core::budget::BudgetPeriod;
use stratai_core::ids::{OrgId, RequestId, UserId};
use stratai_core::ports::{OutboxEntity, OutboxEvent};
use stratai_core::usage::UsageRecord;
use stratai_litellm::sync::{
    Applied, DriftKind, MemoryKeyVault, OrgMapping, SyncConfig, SyncEngine,
};
use stratai_litellm::*;

fn config() -> SyncConfig {
    SyncConfig {
        backoff: RetryPolicy {
            max_retries: 0,
            min_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(200),
        },
        ..SyncConfig::default()
    }
}

fn engine(
    client: LiteLlmClient,
    dir: &Arc<FakeDirectory>,
    vault: &Arc<MemoryKeyVault>,
) -> SyncEngine {
    SyncEngine::new(client, dir.clone(), dir.clone(), vault.clone(), config())
}

/// Runs passes until the outbox is empty (skipping backoff waits), at most `max` passes.
async fn drain(engine: &SyncEngine, dir: &FakeDirectory, max: usize) {
    for _ in 0..max {
        if dir.undelivered() == 0 {
            return;
        }
        engine.run_once().await.unwrap();
        dir.make_all_available();
    }
    panic!(
        "the outbox did not drain: {} undelivered, dead letters {:?}",
        dir.undelivered(),
        dir.dead()
    );
}

fn hello(model: &str) -> ChatRequest {
    ChatRequest::new(model, vec![ChatMessage::user("hello")], 4)
}

fn usage(org: OrgId, user: UserId, answer: &ChatResponse) -> UsageRecord {
    stratai_testkit::usage_record(org, user)
        .model("mock-gpt")
        .tokens(1, 4)
        .spent(Money::new(answer.meta.response_cost.unwrap()).unwrap())
        .litellm_request_id(answer.completion.id.clone())
        .endpoint("/v1/chat/completions")
        .build()
}

#[tokio::test]
async fn sync_lifecycle_reconcile_and_spend_on_the_real_proxy() {
    let Some((client, _)) = common::proxy("sync_lifecycle_reconcile_and_spend_on_the_real_proxy")
    else {
        return;
    };
    let run = common::run_id();
    let started = Utc::now() - chrono::Duration::minutes(1);
    let dir = Arc::new(FakeDirectory::new());
    let vault = Arc::new(MemoryKeyVault::new());
    let engine = engine(client.clone(), &dir, &vault);

    // group -> team; member -> user + key
    let org = dir.add_org(&format!("acme-{run}"));
    let eng = dir.add_group(org, "eng", Some(vec![basic()]), Some(dec!(10)));
    let alice = dir.add_member(
        org,
        &format!("alice-{run}@acme.test"),
        None,
        Some(dec!(1)),
        &[eng],
    );
    drain(&engine, &dir, 10).await;
    assert!(dir.dead().is_empty());
    // The kit has no Enterprise license: organizations fall back to metadata (one 403).
    assert_eq!(engine.org_mapping(), Some(OrgMapping::Metadata));
    let team = client.team_info(&eng.to_string()).await.unwrap();
    assert_eq!(team.team_info.models, ["mock-gpt"]);
    assert_eq!(
        team.team_info.team_alias.as_deref(),
        Some(format!("acme-{run}/eng").as_str())
    );
    assert_eq!(team.team_info.max_budget, Some(dec!(10)));
    assert!(team.team_info.has_member(&alice.to_string()));
    let key = engine
        .member_key(org, alice)
        .await
        .unwrap()
        .expect("a key for alice");
    let token = key_token(&key);
    assert_eq!(
        dir.membership(org, alice)
            .unwrap()
            .litellm_key_id
            .as_deref(),
        Some(token.as_str())
    );
    let info = client
        .key_info(&KeyRef::Token(token.clone()))
        .await
        .unwrap();
    assert_eq!(info.key_alias, Some(format!("stratai:{org}:{alice}")));
    assert_eq!(info.team_id, Some(eng.to_string()));
    assert_eq!(info.max_budget, Some(dec!(1)));
    assert_eq!(info.models, ["mock-gpt"]);

    // chat on the allowed model; the other tier is denied
    let who = Attribution {
        end_user_id: Some(alice.to_string()),
        user_id: Some(alice.to_string()),
        org_id: Some(org.to_string()),
        ..Attribution::default()
    };
    let first = client.chat(&key, &who, &hello("mock-gpt")).await.unwrap();
    // the same through core's LlmGateway port, with the key from the vault
    let gateway = stratai_litellm::gateway::LiteLlmGateway::new(client.clone(), vault.clone());
    let ctx = stratai_core::gateway::CallContext {
        request_id: RequestId::new(),
        org_id: org,
        user_id: alice,
    };
    let core_request = stratai_core::gateway::ChatRequest {
        model: "mock-gpt".into(),
        messages: vec![stratai_core::gateway::ChatMessage {
            role: "user".into(),
            content: "hello".into(),
        }],
        max_tokens: Some(4),
        temperature: None,
        stream: false,
        user: None,
    };
    let via_port = stratai_core::ports::LlmGateway::chat(&gateway, &ctx, &core_request)
        .await
        .unwrap();
    assert_eq!(via_port.usage.completion_tokens, 4);
    let denied = client
        .chat(&key, &who, &hello("mock-gpt-premium"))
        .await
        .unwrap_err();
    assert!(
        matches!(denied, LiteLlmError::KeyModelDenied(_)),
        "{denied:?}"
    );

    // tier change -> key and team models updated -> the model is allowed
    dir.set_group_tiers(org, eng, Some(vec![basic(), premium()]));
    drain(&engine, &dir, 10).await;
    assert_eq!(
        client
            .key_info(&KeyRef::Token(token.clone()))
            .await
            .unwrap()
            .models,
        ["mock-gpt", "mock-gpt-premium"]
    );
    let second = client
        .chat(&key, &who, &hello("mock-gpt-premium"))
        .await
        .unwrap();

    // a stale event (older version than applied) writes nothing
    let stale = OutboxEvent {
        seq: 0,
        org_id: org,
        entity: OutboxEntity::Group(eng),
        deleted: false,
        version: 1,
        attempts: 0,
        last_error: None,
        available_at: Utc::now(),
        created_at: Utc::now(),
    };
    assert_eq!(engine.apply(&stale).await.unwrap(), Applied::Stale);

    // spend reconciliation: StratAI's records against LiteLLM's logs, no gap
    // The port's answer has no cost: StratAI prices it itself (1 prompt + 4 completion tokens).
    let mut port_record = usage(org, alice, &first);
    port_record.litellm_request_id = Some(via_port.id.clone());
    port_record.provider_cost = Money::new(dec!(0.009)).unwrap();
    let records = vec![
        usage(org, alice, &first),
        usage(org, alice, &second),
        port_record,
    ];
    let report = common::eventually(Duration::from_secs(25), || async {
        let report = engine
            .reconcile_spend(
                &records,
                started,
                Utc::now() + chrono::Duration::minutes(1),
                dec!(0.000001),
            )
            .await
            .ok()?;
        report.is_clean().then_some(report)
    })
    .await
    .expect("spend reconciliation never came clean");
    assert_eq!(report.matched, 3);
    // and a record LiteLLM never saw is reported
    let mut ghost = records.clone();
    ghost[0].litellm_request_id = Some(format!("chatcmpl-ghost-{run}"));
    let gap = engine
        .reconcile_spend(
            &ghost,
            started,
            Utc::now() + chrono::Duration::minutes(1),
            dec!(0.000001),
        )
        .await
        .unwrap();
    assert_eq!(gap.missing_in_litellm, [format!("chatcmpl-ghost-{run}")]);
    assert_eq!(
        gap.missing_in_stratai,
        std::slice::from_ref(&first.completion.id)
    );

    // reconcile: no drift; then drift made by hand is found and repaired
    let clean = engine.reconcile(false).await.unwrap();
    assert!(clean.is_clean(), "{:?}", clean.drifts);
    client
        .key_update(
            &KeyRef::Token(token.clone()),
            &KeyUpdate {
                models: Some(vec!["mock-gpt-premium".into()]),
                ..KeyUpdate::default()
            },
        )
        .await
        .unwrap();
    client
        .team_update(&TeamUpdate {
            team_id: eng.to_string(),
            max_budget: Some(dec!(99)),
            ..TeamUpdate::default()
        })
        .await
        .unwrap();
    let drift = engine.reconcile(true).await.unwrap();
    let kinds: Vec<DriftKind> = drift.drifts.iter().map(|d| d.kind).collect();
    assert!(
        kinds.contains(&DriftKind::KeyModels) && kinds.contains(&DriftKind::TeamBudget),
        "{kinds:?}"
    );
    assert!(drift.repaired >= 2);
    assert!(engine.reconcile(false).await.unwrap().is_clean());

    // budgets removed in StratAI are removed in LiteLLM
    dir.set_group_budget(org, eng, None);
    dir.set_member_budget(org, alice, None);
    drain(&engine, &dir, 10).await;
    assert_eq!(
        client
            .team_info(&eng.to_string())
            .await
            .unwrap()
            .team_info
            .max_budget,
        None
    );
    assert_eq!(
        client
            .key_info(&KeyRef::Token(token.clone()))
            .await
            .unwrap()
            .max_budget,
        None
    );
    assert!(engine.reconcile(false).await.unwrap().is_clean());

    // member removed -> key gone
    dir.remove_member(org, alice);
    drain(&engine, &dir, 10).await;
    let gone = client.key_info(&KeyRef::Token(token.clone())).await;
    assert!(
        matches!(&gone, Ok(i) if i.is_deleted()) || matches!(&gone, Err(LiteLlmError::NotFound(_))),
        "{gone:?}"
    );
    assert!(matches!(
        client
            .chat(&key, &who, &hello("mock-gpt"))
            .await
            .unwrap_err(),
        LiteLlmError::Unauthorized(_)
    ));
    assert!(engine.member_key(org, alice).await.unwrap().is_none());
    assert!(
        !client
            .team_info(&eng.to_string())
            .await
            .unwrap()
            .team_info
            .has_member(&alice.to_string())
    );
    assert!(engine.reconcile(false).await.unwrap().is_clean());

    // group deleted -> team gone
    dir.delete_group(org, eng);
    drain(&engine, &dir, 10).await;
    assert!(matches!(
        client.team_info(&eng.to_string()).await.unwrap_err(),
        LiteLlmError::NotFound(_)
    ));
    assert!(dir.dead().is_empty());
}

#[tokio::test]
async fn monthly_budgets_reset_on_stratai_calendar_month_boundaries() {
    let Some((client, _)) =
        common::proxy("monthly_budgets_reset_on_stratai_calendar_month_boundaries")
    else {
        return;
    };
    let run = common::run_id();
    let dir = Arc::new(FakeDirectory::new());
    let vault = Arc::new(MemoryKeyVault::new());
    let engine = engine(client.clone(), &dir, &vault);
    let utc_org = dir.add_org(&format!("month-utc-{run}"));
    let group = dir.add_group(utc_org, "eng", Some(vec![basic()]), Some(dec!(10)));
    let member = dir.add_member(
        utc_org,
        &format!("month-{run}@acme.test"),
        None,
        Some(dec!(1)),
        &[group],
    );
    let tokyo_org = dir.add_org(&format!("month-tokyo-{run}"));
    dir.set_org_timezone(tokyo_org, Some("Asia/Tokyo"));
    let tokyo_member = dir.add_member(
        tokyo_org,
        &format!("month-tokyo-{run}@acme.test"),
        None,
        Some(dec!(1)),
        &[],
    );
    let before = Utc::now();
    drain(&engine, &dir, 10).await;
    assert!(dir.dead().is_empty(), "{:?}", dir.dead());
    let after = Utc::now();

    // StratAI's monthly period of an organization in UTC ends where LiteLLM's `1mo`
    // resets: 00:00 UTC on the 1st (the kit's proxy keeps the default UTC timezone).
    let utc = dir.organization(utc_org).tz();
    let period = BudgetPeriod::Monthly.window(before, utc);
    assert_eq!(
        period,
        BudgetPeriod::Monthly.window(after, utc),
        "the test ran across a month boundary; run it again"
    );
    let key = |org, user| {
        let vault = vault.clone();
        let client = client.clone();
        async move {
            let (token, _) = vault_entry(&vault, org, user).await;
            client.key_info(&KeyRef::Token(token)).await.unwrap()
        }
    };
    let info = key(utc_org, member).await;
    assert_eq!(info.budget_duration.as_deref(), Some("1mo"));
    assert_eq!(info.budget_reset_at, Some(period.end), "{info:?}");
    let team = client
        .team_info(&group.to_string())
        .await
        .unwrap()
        .team_info;
    assert_eq!(team.budget_duration.as_deref(), Some("1mo"));
    assert_eq!(team.budget_reset_at, Some(period.end), "{team:?}");

    // The documented gap: the proxy has one reset timezone, so an organization in another
    // zone gets LiteLLM's UTC boundary, not its own (Tokyo's month starts 9 h earlier).
    let tokyo = dir.organization(tokyo_org).tz();
    let tokyo_period = BudgetPeriod::Monthly.window(after, tokyo);
    let info = key(tokyo_org, tokyo_member).await;
    assert_eq!(info.budget_reset_at, Some(period.end), "{info:?}");
    assert_ne!(info.budget_reset_at, Some(tokyo_period.end));
    assert!(engine.reconcile(false).await.unwrap().is_clean());

    for (org, user) in [(utc_org, member), (tokyo_org, tokyo_member)] {
        dir.remove_member(org, user);
    }
    dir.delete_group(utc_org, group);
    drain(&engine, &dir, 10).await;
}

/// A TCP forwarder in front of the proxy that can play "LiteLLM is down" (open connections
/// are cut, new ones accepted and dropped) without restarting the proxy.
struct Switch {
    up: Arc<AtomicBool>,
    connections: Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
    url: String,
}

impl Switch {
    fn down(&self) {
        self.up.store(false, Ordering::SeqCst);
        for connection in self.connections.lock().unwrap().drain(..) {
            connection.abort();
        }
    }

    fn up(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

async fn switch_to(target: &str) -> Switch {
    let target = target
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let up = Arc::new(AtomicBool::new(true));
    let connections: Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
    let (flag, open) = (up.clone(), connections.clone());
    tokio::spawn(async move {
        loop {
            let Ok((mut inbound, _)) = listener.accept().await else {
                return;
            };
            if !flag.load(Ordering::SeqCst) {
                drop(inbound);
                continue;
            }
            let target = target.clone();
            let task = tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
            open.lock().unwrap().push(task.abort_handle());
        }
    });
    Switch {
        up,
        connections,
        url,
    }
}

#[tokio::test]
async fn outage_of_100_changes_catches_up_with_no_drift_and_no_duplicate_keys() {
    let Some((_, proxy_config)) =
        common::proxy("outage_of_100_changes_catches_up_with_no_drift_and_no_duplicate_keys")
    else {
        return;
    };
    let run = common::run_id();
    let switch = switch_to(&proxy_config.base_url).await;
    let mut config = ClientConfig::new(switch.url.clone(), proxy_config.master_key.clone());
    config.retry = RetryPolicy {
        max_retries: 1,
        min_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(50),
    };
    config.request_timeout = Duration::from_secs(20);
    let client = LiteLlmClient::new(config).unwrap();
    let dir = Arc::new(FakeDirectory::new());
    let vault = Arc::new(MemoryKeyVault::new());
    let engine = engine(client.clone(), &dir, &vault);

    let org = dir.add_org(&format!("outage-{run}"));
    let g1 = dir.add_group(org, "one", Some(vec![basic()]), Some(dec!(5)));
    let g2 = dir.add_group(org, "two", None, None);
    let mut members: Vec<UserId> = (0..5)
        .map(|i| dir.add_member(org, &format!("m{i}-{run}@acme.test"), None, None, &[g1]))
        .collect();
    drain(&engine, &dir, 20).await;

    // LiteLLM goes down; 100 directory changes pile up in the outbox.
    switch.down();
    let mut changes = 0;
    for i in 0..30 {
        let groups = match i % 3 {
            0 => vec![g1],
            1 => vec![g2],
            _ => vec![],
        };
        members.push(dir.add_member(
            org,
            &format!("n{i}-{run}@acme.test"),
            None,
            Some(dec!(2)),
            &groups,
        ));
        changes += 1;
    }
    for (i, user) in members.iter().take(20).enumerate() {
        dir.set_member_tiers(
            org,
            *user,
            Some(if i % 2 == 0 {
                vec![basic()]
            } else {
                vec![basic(), premium()]
            }),
        );
        changes += 1;
    }
    for (i, user) in members.iter().skip(5).take(20).enumerate() {
        dir.set_member_budget(org, *user, if i % 4 == 0 { None } else { Some(dec!(3.5)) });
        changes += 1;
    }
    for user in members.iter().skip(10).take(5) {
        dir.join_group(org, *user, g2);
        dir.leave_group(org, *user, g2);
        changes += 2;
    }
    let removed: Vec<UserId> = members.iter().skip(25).take(10).copied().collect();
    for user in &removed {
        dir.remove_member(org, *user);
        changes += 1;
    }
    for i in 0..5 {
        dir.set_group_tiers(
            org,
            g2,
            Some(if i % 2 == 0 {
                vec![basic()]
            } else {
                vec![basic(), premium()]
            }),
        );
        dir.set_group_budget(org, g1, Some(dec!(5) + rust_decimal::Decimal::from(i)));
        changes += 2;
    }
    assert_eq!(changes, 100);

    // While down: every pass fails, transiently; nothing is dead-lettered.
    for _ in 0..3 {
        let report = engine.run_once().await.unwrap();
        assert_eq!(report.completed, 0, "{report:?}");
        assert!(report.failed > 0);
        dir.make_all_available();
    }
    assert!(dir.dead().is_empty());

    // It comes back: the sync catches up.
    switch.up();
    drain(&engine, &dir, 60).await;
    assert!(dir.dead().is_empty(), "dead letters: {:?}", dir.dead());

    // Zero drift, zero duplicate keys, removed members have none.
    let report = engine.reconcile(false).await.unwrap();
    assert!(
        report.is_clean(),
        "drift after catch-up: {:?}",
        report.drifts
    );
    let org_text = org.to_string();
    let all = client.key_list(&KeyListQuery::default()).await.unwrap();
    for user in &members {
        let user_text = user.to_string();
        let keys: Vec<_> = all
            .iter()
            .filter(|k| sync::is_managed(k.metadata.as_ref()))
            .filter(|k| {
                k.metadata
                    .as_ref()
                    .and_then(|m| m.get("stratai_org_id"))
                    .and_then(|v| v.as_str())
                    == Some(org_text.as_str())
            })
            .filter(|k| {
                k.metadata
                    .as_ref()
                    .and_then(|m| m.get("stratai_user_id"))
                    .and_then(|v| v.as_str())
                    == Some(user_text.as_str())
            })
            .collect();
        if removed.contains(user) {
            assert!(
                keys.is_empty(),
                "removed member {user} still has {} keys",
                keys.len()
            );
        } else {
            assert_eq!(keys.len(), 1, "member {user} has {} keys", keys.len());
            let (token, _) = vault_entry(&vault, org, *user).await;
            assert_eq!(keys[0].token.as_deref(), Some(token.as_str()));
        }
    }
    assert_eq!(dir.members_of(org).len(), 25);

    // Clean up this run's entities.
    for user in dir.members_of(org) {
        dir.remove_member(org, user);
    }
    dir.delete_group(org, g1);
    dir.delete_group(org, g2);
    drain(&engine, &dir, 20).await;
}

async fn vault_entry(vault: &MemoryKeyVault, org: OrgId, user: UserId) -> (String, Secret) {
    use stratai_litellm::sync::KeyVault;
    vault.get(org, user).await.unwrap().expect("vault entry")
}
