#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Limits and budgets mirrored on the real LiteLLM proxy (see `tests/common`), the second
//! wall for calls made with a member's key directly:
//!
//! - the per-minute limits the rate-limit rules give a member become the key's `rpm_limit` /
//!   `tpm_limit`, follow a rule change on the next pass, and the proxy enforces them;
//! - the hard budgets of `/api/budgets` (and the `monthly_budget` fields) become the key's and
//!   the team's `max_budget` with the closest `budget_duration`; soft ones stay StratAI's;
//! - limits, budgets and the blocked flag edited on the proxy by hand are found by the
//!   reconciler, reported by kind, and repaired.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::fake::{FakeDirectory, basic};
use rust_decimal_macros::dec;
use stratai_core::budget::{BudgetPeriod, BudgetScope};
use stratai_litellm::sync::{DriftKind, KeyLimits, MemoryKeyVault, SyncConfig, SyncEngine};
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

fn hello() -> ChatRequest {
    ChatRequest::new("mock-gpt", vec![ChatMessage::user("hello")], 4)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_and_budgets_are_mirrored_enforced_and_repaired() {
    let Some((client, _)) = common::proxy("limits_and_budgets_are_mirrored_enforced_and_repaired")
    else {
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
    let org = dir.add_org(&format!("mirror-{run}"));
    // The group: $40 a month by its field, $5 a week by /api/budgets (at most $25 a month:
    // the tighter one), and a soft $1 a day that only warns.
    let eng = dir.add_group(org, "eng", Some(vec![basic()]), Some(dec!(40)));
    dir.add_budget(
        org,
        BudgetScope::Group(eng),
        dec!(5),
        BudgetPeriod::Weekly,
        true,
    );
    dir.add_budget(
        org,
        BudgetScope::Group(eng),
        dec!(1),
        BudgetPeriod::Daily,
        false,
    );
    // The member: $30 a month by the field; a hard $2 a day lets up to $62 a month through,
    // so the month stays the key's budget.
    let user = dir.add_member(
        org,
        &format!("mirror-{run}@acme.test"),
        None,
        Some(dec!(30)),
        &[eng],
    );
    dir.add_budget(
        org,
        BudgetScope::User(user),
        dec!(2),
        BudgetPeriod::Daily,
        true,
    );
    dir.set_key_limits(
        org,
        user,
        KeyLimits {
            rpm: Some(7),
            tpm: None,
        },
    );
    drain(&engine, &dir).await;

    let key = engine.member_key(org, user).await.unwrap().expect("a key");
    let token = KeyRef::Token(key_token(&key));
    let info = client.key_info(&token).await.unwrap();
    assert_eq!(info.rpm_limit, Some(7));
    assert_eq!(info.tpm_limit, None);
    assert_eq!(info.max_budget, Some(dec!(30)));
    assert_eq!(info.budget_duration.as_deref(), Some("1mo"));
    let team = client.team_info(&eng.to_string()).await.unwrap().team_info;
    assert_eq!(team.max_budget, Some(dec!(5)));
    assert_eq!(team.budget_duration.as_deref(), Some("7d"));
    let clean = engine.reconcile(false).await.unwrap();
    assert!(clean.is_clean(), "{:?}", clean.drifts);

    // A tighter hard budget of /api/budgets (a week of $4: at most $20 a month) carries no
    // outbox event: the reconciler finds it and makes it the key's.
    dir.add_budget(
        org,
        BudgetScope::User(user),
        dec!(4),
        BudgetPeriod::Weekly,
        true,
    );
    let found = engine.reconcile(true).await.unwrap();
    assert_eq!(
        found.counts().get(&DriftKind::KeyBudget),
        Some(&1),
        "{:?}",
        found.drifts
    );
    let info = client.key_info(&token).await.unwrap();
    assert_eq!(info.max_budget, Some(dec!(4)));
    assert_eq!(info.budget_duration.as_deref(), Some("7d"));

    // A rule change moves the limits: the next pass pushes every member.
    dir.set_key_limits(
        org,
        user,
        KeyLimits {
            rpm: Some(2),
            tpm: Some(50_000),
        },
    );
    let pass = engine.run_once().await.unwrap();
    assert!(pass.limit_pushes >= 1, "{pass:?}");
    let info = client.key_info(&token).await.unwrap();
    assert_eq!((info.rpm_limit, info.tpm_limit), (Some(2), Some(50_000)));

    // The proxy enforces them on a direct call: the third request within a minute is refused.
    let who = Attribution::default();
    let mut refused = None;
    for _ in 0..4 {
        match client.chat(&key, &who, &hello()).await {
            Ok(_) => {}
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
    }
    let refused = refused.expect("LiteLLM let more than 2 requests a minute through");
    assert!(
        matches!(refused, LiteLlmError::RateLimited { .. }),
        "{refused:?}"
    );

    // Hand edits on the proxy: limits raised, budget raised, the key blocked, the team's
    // budget removed. The reconciler reports each kind, and repairs them.
    client
        .key_update(
            &token,
            &KeyUpdate {
                rpm_limit: Some(1000),
                max_budget: Some(dec!(999)),
                blocked: Some(true),
                ..KeyUpdate::default()
            },
        )
        .await
        .unwrap();
    client
        .team_update(&TeamUpdate {
            team_id: eng.to_string(),
            clear_max_budget: true,
            ..TeamUpdate::default()
        })
        .await
        .unwrap();
    let drift = engine.reconcile(false).await.unwrap();
    let counts = drift.counts();
    for kind in [
        DriftKind::KeyLimits,
        DriftKind::KeyBudget,
        DriftKind::KeyBlocked,
        DriftKind::TeamBudget,
    ] {
        assert_eq!(counts.get(&kind), Some(&1), "{kind:?}: {:?}", drift.drifts);
    }
    assert_eq!(drift.repaired, 0, "a dry run repairs nothing");
    let repaired = engine.reconcile(true).await.unwrap();
    assert!(repaired.repaired >= 2, "{repaired:?}");
    let info = client.key_info(&token).await.unwrap();
    assert_eq!((info.rpm_limit, info.tpm_limit), (Some(2), Some(50_000)));
    assert_eq!(info.max_budget, Some(dec!(4)));
    assert_eq!(info.blocked, Some(false));
    let team = client.team_info(&eng.to_string()).await.unwrap().team_info;
    assert_eq!(team.max_budget, Some(dec!(5)));
    let clean = engine.reconcile(false).await.unwrap();
    assert!(clean.is_clean(), "{:?}", clean.drifts);

    // The rules drop the limits: the key's are cleared, not left behind.
    dir.set_key_limits(org, user, KeyLimits::default());
    engine.run_once().await.unwrap();
    let info = client.key_info(&token).await.unwrap();
    assert_eq!((info.rpm_limit, info.tpm_limit), (None, None));

    // A deactivated user's key is blocked; unblocked by hand, the reconciler blocks it again.
    dir.set_user_active(user, false);
    drain(&engine, &dir).await;
    assert_eq!(client.key_info(&token).await.unwrap().blocked, Some(true));
    client
        .key_update(
            &token,
            &KeyUpdate {
                blocked: Some(false),
                ..KeyUpdate::default()
            },
        )
        .await
        .unwrap();
    let drift = engine.reconcile(true).await.unwrap();
    assert_eq!(
        drift.counts().get(&DriftKind::KeyBlocked),
        Some(&1),
        "{:?}",
        drift.drifts
    );
    assert_eq!(client.key_info(&token).await.unwrap().blocked, Some(true));
    let refused = client.chat(&key, &who, &hello()).await.unwrap_err();
    assert!(
        !matches!(refused, LiteLlmError::RateLimited { .. }),
        "a blocked key is refused as such: {refused:?}"
    );
}
