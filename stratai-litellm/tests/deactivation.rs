#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! A deactivated user's virtual keys are blocked through the outbox: the store writes a member
//! event per membership in the deactivation's transaction, the sync engine pushes the key
//! with `blocked`; reactivation unblocks it. Over the memory and SQLite stores (the outbox
//! events themselves are checked on PostgreSQL too by stratai-store's conformance suite),
//! against `common::fake_litellm`, which stores `/key/update`'s fields as LiteLLM does.

mod common;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use common::fake_litellm::{self, Shared};
use serde_json::{Value, json};
use stratai_core::directory::{
    BillingPlan, Email, Membership, OrgRole, OrgSettings, Organization, PlatformRole, Slug, User,
};
use stratai_core::ids::{OrgId, TierSlug, UserId};
use stratai_core::ports::{DirectoryStore, OutboxStore, TierStore};
use stratai_core::tiers::{default_tiers, subscriptions_for};
use stratai_litellm::sync::{CoreDirectory, MemoryKeyVault, Organizations, SyncConfig, SyncEngine};
use stratai_litellm::*;
use wiremock::MockServer;

fn engine<S>(server: &MockServer, store: &Arc<S>) -> SyncEngine
where
    S: DirectoryStore + TierStore + OutboxStore + 'static,
{
    let mut config = ClientConfig::new(server.uri(), Secret::new("sk-master-test"));
    config.retry = RetryPolicy {
        max_retries: 0,
        min_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(2),
    };
    let client = LiteLlmClient::new(config).unwrap();
    let sync = SyncConfig {
        organizations: Organizations::Off,
        ..SyncConfig::default()
    };
    SyncEngine::new(
        client,
        Arc::new(CoreDirectory::new(store.clone(), store.clone())),
        store.clone(),
        Arc::new(MemoryKeyVault::new()),
        sync,
    )
}

/// Runs passes until no event is pending.
async fn drain<S: OutboxStore>(engine: &SyncEngine, store: &S) {
    let far = "2100-01-01T00:00:00Z".parse().unwrap();
    for _ in 0..20 {
        if store.pending(far, 1).await.unwrap().is_empty() {
            assert!(store.dead_letters(10).await.unwrap().is_empty());
            return;
        }
        engine.run_once().await.unwrap();
    }
    panic!(
        "the outbox did not drain: dead letters {:?}",
        store.dead_letters(10).await.unwrap()
    );
}

async fn seed<S: DirectoryStore + TierStore>(store: &S, name: &str) -> (OrgId, UserId) {
    let now = Utc::now();
    if store.list_tiers().await.unwrap().is_empty() {
        for tier in default_tiers() {
            store.upsert_tier(&tier).await.unwrap();
        }
    }
    let run = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
    let basic = TierSlug::new("basic").unwrap();
    let settings = OrgSettings::new(vec![basic.clone()], basic).unwrap();
    let org = Organization::new(
        name,
        Slug::new(format!("{name}-{run}")).unwrap(),
        settings,
        BillingPlan::Business,
        now,
    )
    .unwrap();
    store.create_org(&org).await.unwrap();
    let tiers: Vec<_> = default_tiers().iter().map(|t| t.id).collect();
    for subscription in subscriptions_for(org.id, &tiers, now) {
        store.put_subscription(org.id, &subscription).await.unwrap();
    }
    let user = User::new(
        Email::new(format!("{name}-{run}@example.com")).unwrap(),
        None,
        PlatformRole::User,
        now,
    )
    .unwrap();
    store.create_user(&user).await.unwrap();
    store
        .add_member(
            org.id,
            &Membership::new(org.id, user.id, OrgRole::Member, now),
        )
        .await
        .unwrap();
    (org.id, user.id)
}

/// The member's one key in the fake.
fn key_of(state: &Shared, org: OrgId, user: UserId) -> Value {
    let state = state.lock().unwrap();
    let keys = state.keys_of(&org.to_string(), &user.to_string());
    assert_eq!(keys.len(), 1, "one key per member: {keys:?}");
    keys[0].clone()
}

fn blocked(key: &Value) -> bool {
    key["blocked"].as_bool().unwrap_or(false)
}

async fn deactivation_blocks_and_reactivation_unblocks<S>(store: Arc<S>)
where
    S: DirectoryStore + TierStore + OutboxStore + 'static,
{
    let (server, state) = fake_litellm::start(false).await;
    let engine = engine(&server, &store);
    let (org, user) = seed(store.as_ref(), "people").await;
    // A second organization of the same person: both keys follow the account.
    let (org2, _) = seed(store.as_ref(), "other").await;
    store
        .add_member(
            org2,
            &Membership::new(org2, user, OrgRole::Member, Utc::now()),
        )
        .await
        .unwrap();
    drain(&engine, store.as_ref()).await;
    assert!(!blocked(&key_of(&state, org, user)));
    assert!(!blocked(&key_of(&state, org2, user)));
    let token = key_of(&state, org, user)["token"].clone();

    store.set_user_active(user, false).await.unwrap();
    drain(&engine, store.as_ref()).await;
    let key = key_of(&state, org, user);
    assert_eq!(key["blocked"], json!(true), "{key}");
    assert_eq!(key["token"], token, "the same key, blocked (not replaced)");
    assert!(blocked(&key_of(&state, org2, user)));

    store.set_user_active(user, true).await.unwrap();
    drain(&engine, store.as_ref()).await;
    let key = key_of(&state, org, user);
    assert_eq!(key["blocked"], json!(false), "{key}");
    assert_eq!(key["token"], token);
    assert!(!blocked(&key_of(&state, org2, user)));

    // A person deactivated before their first sync gets a key created blocked.
    let (org3, late) = seed(store.as_ref(), "late").await;
    store.set_user_active(late, false).await.unwrap();
    drain(&engine, store.as_ref()).await;
    assert_eq!(key_of(&state, org3, late)["blocked"], json!(true));
}

/// Opens `$backend` and runs the body on its store.
macro_rules! on_store {
    (memory, $body:path) => {
        $body(std::sync::Arc::new(stratai_store::MemoryStore::new())).await
    };
    (sqlite, $body:path) => {
        let scratch = stratai_testkit::Scratch::new();
        let url = format!("sqlite://{}", scratch.join("people.db").display());
        let store = std::sync::Arc::new(stratai_store::SqliteStore::connect(&url).await.unwrap());
        $body(store.clone()).await;
        store.close().await;
    };
    (postgres, $body:path) => {
        let Some(db) = stratai_testkit::pg::fresh_db().await else {
            return;
        };
        $body(std::sync::Arc::new(db.store.clone())).await;
    };
}

stratai_testkit::backend_matrix!(on_store, [memory, sqlite, postgres], threads = current:
    deactivation_blocks_and_reactivation_unblocks,
);
