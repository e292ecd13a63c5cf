#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The real LiteLLM proxy restarted in the middle of a sync (see `tests/common`): while it is
//! down, outbox passes fail as transient errors (retried, never dead-lettered) and a rule
//! change waits; once it is back, the next passes push every change made meanwhile and the
//! reconciler finds nothing left.
//!
//! The test stops the proxy with the kit's `stop.sh` and starts it again with
//! `scripts/litellm-up.sh` (the same environment as the caller's, so the same port, database
//! and callback; the mock upstream is left running). It is the only test of its binary, so no
//! other test of the run sees the proxy go away.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::fake::{FakeDirectory, basic, premium};
use rust_decimal_macros::dec;
use stratai_core::budget::{BudgetPeriod, BudgetScope};
use stratai_litellm::sync::{KeyLimits, MemoryKeyVault, SyncConfig, SyncEngine};
use stratai_litellm::*;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .to_path_buf()
}

/// The work dir `scripts/litellm-up.sh` started the proxy from (its own default rule).
fn work_dir() -> PathBuf {
    let set = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    set("STRATAI_LITELLM_WORK_DIR")
        .or_else(|| set("WORK_DIR"))
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(set("HOME").expect("HOME")).join(".cache/stratai/litellm"))
}

fn kit() -> PathBuf {
    std::env::var("STRATAI_LITELLM_KIT")
        .ok()
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("../shared/litellm"))
}

fn stop_proxy() {
    let status = Command::new(kit().join("stop.sh"))
        .arg(work_dir())
        .status()
        .expect("run the kit's stop.sh");
    assert!(status.success(), "stop.sh failed");
}

fn start_proxy() {
    let mut up = Command::new("bash");
    up.arg(repo().join("scripts/litellm-up.sh"))
        .current_dir(repo());
    if std::env::var_os("LITELLM_START_TIMEOUT").is_none() {
        // A loaded CI machine may need more than the kit's 120 s.
        up.env("LITELLM_START_TIMEOUT", "400");
    }
    let out = up.output().expect("run scripts/litellm-up.sh");
    assert!(
        out.status.success(),
        "litellm-up.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

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

async fn drain(engine: &SyncEngine, dir: &FakeDirectory) {
    for _ in 0..10 {
        if dir.undelivered() == 0 {
            return;
        }
        engine.run_once().await.unwrap();
        dir.make_all_available();
    }
    panic!("the outbox did not drain: {:?}", dir.dead());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_restart_mid_sync_is_caught_up() {
    let Some((client, _)) = common::proxy("a_proxy_restart_mid_sync_is_caught_up") else {
        return;
    };
    let run = common::run_id();
    let dir = Arc::new(FakeDirectory::new());
    let vault = Arc::new(MemoryKeyVault::new());
    let engine = SyncEngine::new(
        client.clone(),
        dir.clone(),
        dir.clone(),
        vault.clone(),
        config(),
    );
    let org = dir.add_org(&format!("restart-{run}"));
    let eng = dir.add_group(org, "eng", Some(vec![basic()]), None);
    let alice = dir.add_member(org, &format!("alice-{run}@acme.test"), None, None, &[eng]);
    drain(&engine, &dir).await;
    let alice_key = engine.member_key(org, alice).await.unwrap().expect("a key");
    let alice_token = KeyRef::Token(key_token(&alice_key));

    stop_proxy();
    // Changes while the proxy is down: the group gets premium, a new member joins, a rule
    // gives alice a limit, and a hard budget of /api/budgets applies to her.
    dir.set_group_tiers(org, eng, Some(vec![basic(), premium()]));
    let bob = dir.add_member(org, &format!("bob-{run}@acme.test"), None, None, &[eng]);
    dir.set_key_limits(
        org,
        alice,
        KeyLimits {
            rpm: Some(11),
            tpm: None,
        },
    );
    dir.add_budget(
        org,
        BudgetScope::User(alice),
        dec!(3),
        BudgetPeriod::Daily,
        true,
    );
    let down = engine.run_once().await.unwrap();
    assert!(down.failed > 0, "{down:?}");
    assert_eq!(down.dead_lettered, 0, "an outage is waited out: {down:?}");
    assert!(dir.dead().is_empty());
    assert!(dir.undelivered() > 0);

    start_proxy();
    dir.make_all_available();
    drain(&engine, &dir).await;
    // The rule change waited for the proxy too.
    engine.run_once().await.unwrap();

    let info = client.key_info(&alice_token).await.unwrap();
    assert_eq!(info.models, ["mock-gpt", "mock-gpt-premium"]);
    assert_eq!(info.rpm_limit, Some(11));
    assert_eq!(info.max_budget, Some(dec!(3)));
    assert_eq!(info.budget_duration.as_deref(), Some("1d"));
    let bob_key = engine
        .member_key(org, bob)
        .await
        .unwrap()
        .expect("bob's key");
    let bob_info = client
        .key_info(&KeyRef::Token(key_token(&bob_key)))
        .await
        .unwrap();
    assert_eq!(bob_info.team_id, Some(eng.to_string()));
    let team = client.team_info(&eng.to_string()).await.unwrap();
    let members: Vec<String> = team
        .team_info
        .members_with_roles
        .iter()
        .filter_map(|m| m.user_id.clone())
        .collect();
    let expected = [alice.to_string(), bob.to_string()];
    assert!(expected.iter().all(|u| members.contains(u)), "{members:?}");
    let clean = engine.reconcile(false).await.unwrap();
    assert!(clean.is_clean(), "{:?}", clean.drifts);
    // The key still works after the restart (the proxy's first calls may be slow).
    let back = ChatRequest::new("mock-gpt-premium", vec![ChatMessage::user("back")], 4);
    let answered = common::eventually(Duration::from_secs(90), || async {
        match client
            .chat(&alice_key, &Attribution::default(), &back)
            .await
        {
            Ok(answer) => Some(answer),
            Err(e) if e.is_transient() => None,
            Err(e) => panic!("the key is refused after the restart: {e:?}"),
        }
    })
    .await;
    assert!(answered.is_some(), "no answer within 90 s of the restart");
}
