#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Key lifetime against the real LiteLLM proxy (see `tests/common`): keys are generated with
//! the configured duration; rotating a member's key while chats run through the gateway fails
//! no chat (the old key works through its grace period), the vault holds the new key, the old
//! one is revoked after the grace period; a removed member loses every key at once, a rotated
//! one still in its grace period included.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use chrono::Utc;
use common::fake::{FakeDirectory, basic};
use rust_decimal_macros::dec;
use stratai_core::gateway::{CallContext, ChatMessage as CoreMessage, ChatRequest as CoreRequest};
use stratai_core::ids::RequestId;
use stratai_core::ports::LlmGateway;
use stratai_litellm::gateway::LiteLlmGateway;
use stratai_litellm::sync::{MemoryKeyVault, RETIRING_UNTIL, SyncConfig, SyncEngine};
use stratai_litellm::*;

fn config() -> SyncConfig {
    SyncConfig {
        backoff: RetryPolicy {
            max_retries: 0,
            min_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(200),
        },
        key_duration: Some("30d".to_owned()),
        // Every key is "about to expire": a rotation pass rotates it.
        rotate_before: Duration::from_secs(60 * 86_400),
        key_grace: Duration::from_secs(120),
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keys_expire_rotate_under_load_and_go_with_their_member() {
    let Some((client, _)) = common::proxy("keys_expire_rotate_under_load_and_go_with_their_member")
    else {
        return;
    };
    let run = common::run_id();
    let dir = Arc::new(FakeDirectory::new());
    let vault = Arc::new(MemoryKeyVault::new());
    let engine = Arc::new(SyncEngine::new(
        client.clone(),
        dir.clone(),
        dir.clone(),
        vault.clone(),
        config(),
    ));
    let org = dir.add_org(&format!("rot-{run}"));
    let eng = dir.add_group(org, "eng", Some(vec![basic()]), Some(dec!(10)));
    let user = dir.add_member(org, &format!("rot-{run}@acme.test"), None, None, &[eng]);
    drain(&engine, &dir).await;

    // Generated with the configured lifetime.
    let old = engine.member_key(org, user).await.unwrap().expect("a key");
    let old_token = key_token(&old);
    let info = client
        .key_info(&KeyRef::Token(old_token.clone()))
        .await
        .unwrap();
    let expires = info.expires.expect("a key with a lifetime");
    let days = (expires - Utc::now()).num_hours() as f64 / 24.0;
    assert!((29.0..=30.1).contains(&days), "expires in {days} days");

    // Chats run through the gateway while the key rotates.
    let gateway = Arc::new(LiteLlmGateway::with_sync_engine(engine.clone()));
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for w in 0..3 {
        let (gateway, stop, ok) = (gateway.clone(), stop.clone(), ok.clone());
        workers.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let ctx = CallContext {
                    org_id: org,
                    user_id: user,
                    request_id: RequestId::new(),
                };
                let request = CoreRequest {
                    model: "mock-gpt".to_owned(),
                    messages: vec![CoreMessage {
                        role: "user".to_owned(),
                        content: format!("worker {w} under rotation"),
                    }],
                    max_tokens: Some(4),
                    temperature: None,
                    stream: false,
                    user: None,
                };
                match gateway.chat(&ctx, &request).await {
                    Ok(_) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => failures.push(e.to_string()),
                }
            }
            failures
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = ok.load(Ordering::Relaxed);
    let report = engine.rotate_keys(Utc::now()).await.unwrap();
    assert_eq!(report.rotated, [(org, user)], "{report:?}");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut failures = Vec::new();
    for w in workers {
        failures.extend(w.await.unwrap());
    }
    assert!(
        failures.is_empty(),
        "chats failed under rotation: {failures:?}"
    );
    assert!(
        ok.load(Ordering::Relaxed) > before,
        "no chat ran after the rotation"
    );

    // The vault holds a new key; the old one lives on for its grace period only.
    let new = engine.member_key(org, user).await.unwrap().expect("a key");
    let new_token = key_token(&new);
    assert_ne!(new_token, old_token);
    let retiring = client
        .key_info(&KeyRef::Token(old_token.clone()))
        .await
        .unwrap();
    assert!(!retiring.is_deleted());
    assert!(
        retiring
            .metadata
            .as_ref()
            .is_some_and(|m| m.contains_key(RETIRING_UNTIL)),
        "{retiring:?}"
    );
    let left = retiring.expires.expect("a grace period") - Utc::now();
    assert!(
        left <= chrono::Duration::seconds(121) && left > chrono::Duration::zero(),
        "{left:?}"
    );
    assert_eq!(
        dir.membership(org, user).unwrap().litellm_key_id.as_deref(),
        Some(new_token.as_str())
    );
    // A drift reconcile sees one key for the member, not a duplicate.
    let drift = engine.reconcile(false).await.unwrap();
    assert!(
        !drift
            .drifts
            .iter()
            .any(|d| d.subject == user.to_string() || d.subject == old_token),
        "{drift:?}"
    );

    // After the grace period the rotation pass revokes it.
    let later = Utc::now() + chrono::Duration::seconds(121);
    let quiet = SyncEngine::new(
        client.clone(),
        dir.clone(),
        dir.clone(),
        vault.clone(),
        SyncConfig {
            rotate_before: Duration::from_secs(1),
            ..config()
        },
    );
    let report = quiet.rotate_keys(later).await.unwrap();
    assert!(report.rotated.is_empty(), "{report:?}");
    assert!(report.revoked >= 1, "{report:?}");
    let gone = client.key_info(&KeyRef::Token(old_token)).await;
    assert!(
        matches!(&gone, Err(LiteLlmError::NotFound(_)))
            || gone.as_ref().is_ok_and(KeyInfo::is_deleted),
        "{gone:?}"
    );
    let refused = client
        .chat(
            &old,
            &Attribution::default(),
            &ChatRequest::new("mock-gpt", vec![ChatMessage::user("old key")], 4),
        )
        .await;
    assert!(refused.is_err(), "the revoked key still works");

    // Rotate again, then remove the member: both keys go at once, the one in its grace
    // period too.
    engine.rotate_member(org, user, Utc::now()).await.unwrap();
    let newest = engine.member_key(org, user).await.unwrap().expect("a key");
    assert_ne!(key_token(&newest), new_token);
    dir.remove_member(org, user);
    drain(&engine, &dir).await;
    for (secret, what) in [(&new, "the rotated key"), (&newest, "the current key")] {
        let refused = client
            .chat(
                secret,
                &Attribution::default(),
                &ChatRequest::new("mock-gpt", vec![ChatMessage::user("removed")], 4),
            )
            .await;
        assert!(refused.is_err(), "{what} of a removed member still works");
    }
    assert!(engine.member_key(org, user).await.unwrap().is_none());
}
