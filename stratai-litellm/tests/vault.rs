#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The encrypted key vault over stratai-store's backends: secrets survive a "restart" (a new
//! store connection and a new vault over the same SQLite file), are refused under another
//! master key, and go with the membership. Then, against the real LiteLLM proxy (see
//! `tests/common`), two sync engines over the same store: the second reuses the key the
//! first created instead of regenerating it; a wrong master key is a clear error; with
//! `ForeignSecrets::Replace` the member gets a new key.

mod common;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use stratai_core::directory::{
    BillingPlan, Email, Membership, OrgRole, OrgSettings, Organization, PlatformRole, Slug, User,
};
use stratai_core::ids::{ModelId, OrgId, TierSlug, UserId};
use stratai_core::ports::{DirectoryStore, KeyVaultStore, OutboxStore, TierStore};
use stratai_core::tiers::{BASIC_TIER_ID, default_tiers, subscriptions_for};
use stratai_litellm::sync::{CoreDirectory, KeyVault, SyncConfig, SyncEngine};
use stratai_litellm::vault::{EncryptedKeyVault, ForeignSecrets, VaultKey};
use stratai_litellm::*;
use stratai_store::{MemoryStore, SqliteStore};

const MASTER: &str = "q2Xv1m3b8Jc0ZCk5mP0wV9y4Rz7LhT2sN6aE1uQ8dFo=";
const OTHER_MASTER: &str = "8f6b0c2d4e1a3957b6c8d0e2f4a6b8c0d2e4f6a8b0c2d4e6f8a0b2c4d6e8f0a2";

/// A SQLite database file in a scratch folder, removed (with its WAL files) on drop.
struct TempDb(stratai_testkit::Scratch);

impl TempDb {
    fn new() -> Self {
        Self(stratai_testkit::Scratch::new())
    }
    fn url(&self) -> String {
        format!("sqlite://{}", self.0.join("vault.db").display())
    }
}

fn suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()
}

/// The default catalog with the proxy's `mock-gpt` as the only basic model, one organization
/// subscribed to it and one member.
async fn seed<S: DirectoryStore + TierStore>(store: &S) -> (OrgId, UserId) {
    let now = Utc::now();
    for mut tier in default_tiers() {
        tier.models = if tier.id == BASIC_TIER_ID {
            vec![ModelId::new("mock-gpt").unwrap()]
        } else {
            Vec::new()
        };
        store.upsert_tier(&tier).await.unwrap();
    }
    let run = suffix();
    let basic = TierSlug::new("basic").unwrap();
    let settings = OrgSettings::new(vec![basic.clone()], basic).unwrap();
    let org = Organization::new(
        "Vault",
        Slug::new(format!("vault-{run}")).unwrap(),
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
        Email::new(format!("vault-{run}@example.com")).unwrap(),
        Some("Vera"),
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

#[tokio::test]
async fn sealed_secrets_survive_a_reconnect_and_stay_bound_to_their_member() {
    let db = TempDb::new();
    let store = Arc::new(SqliteStore::connect(&db.url()).await.unwrap());
    let (org, user) = seed(store.as_ref()).await;
    let vault = EncryptedKeyVault::new(store.clone(), VaultKey::parse(MASTER).unwrap());
    vault
        .put(org, user, "token-hash", &Secret::new("sk-member-secret"))
        .await
        .unwrap();
    // The database holds the key id, never the secret in clear.
    let row = store.find_sealed_key(org, user).await.unwrap().unwrap();
    assert_eq!(row.key_id, "token-hash");
    assert!(
        !row.sealed
            .windows(b"sk-member-secret".len())
            .any(|w| w == b"sk-member-secret")
    );
    store.close().await;
    drop((vault, store));

    // "Restart": a new connection and a new vault from the same configured key.
    let store = Arc::new(SqliteStore::connect(&db.url()).await.unwrap());
    let vault = EncryptedKeyVault::new(store.clone(), VaultKey::parse(MASTER).unwrap());
    let (token, secret) = vault.get(org, user).await.unwrap().unwrap();
    assert_eq!(
        (token.as_str(), secret.expose()),
        ("token-hash", "sk-member-secret")
    );

    // Another master key: a clear error, or "no secret" when told to replace.
    let other = EncryptedKeyVault::new(store.clone(), VaultKey::parse(OTHER_MASTER).unwrap());
    let err = other.get(org, user).await.unwrap_err().to_string();
    assert!(err.contains("another vault master key"), "{err}");
    assert!(
        err.contains(&VaultKey::parse(MASTER).unwrap().id()),
        "{err}"
    );
    assert!(!err.contains("sk-member-secret"), "{err}");
    let replacing = EncryptedKeyVault::new(store.clone(), VaultKey::parse(OTHER_MASTER).unwrap())
        .with_foreign_secrets(ForeignSecrets::Replace);
    assert!(replacing.get(org, user).await.unwrap().is_none());

    // Removing the member removes the sealed key.
    store.remove_member(org, user).await.unwrap();
    assert!(vault.get(org, user).await.unwrap().is_none());
    store.close().await;
}

#[tokio::test]
async fn a_sealed_row_copied_to_another_member_does_not_open() {
    let store = Arc::new(MemoryStore::new());
    let (org, alice) = seed(store.as_ref()).await;
    let bob = User::new(
        Email::new(format!("bob-{}@example.com", suffix())).unwrap(),
        None,
        PlatformRole::User,
        Utc::now(),
    )
    .unwrap();
    store.create_user(&bob).await.unwrap();
    store
        .add_member(
            org,
            &Membership::new(org, bob.id, OrgRole::Member, Utc::now()),
        )
        .await
        .unwrap();
    let vault = EncryptedKeyVault::new(store.clone(), VaultKey::parse(MASTER).unwrap());
    vault
        .put(org, alice, "alice-hash", &Secret::new("sk-alice"))
        .await
        .unwrap();
    let row = store.find_sealed_key(org, alice).await.unwrap().unwrap();
    store.put_sealed_key(org, bob.id, &row).await.unwrap();
    let err = vault.get(org, bob.id).await.unwrap_err().to_string();
    assert!(err.contains("failed authentication"), "{err}");
    assert_eq!(
        vault.get(org, alice).await.unwrap().unwrap().1.expose(),
        "sk-alice"
    );
}

// ---- against the real LiteLLM proxy ----

fn engine(
    client: &LiteLlmClient,
    store: &Arc<SqliteStore>,
    vault: EncryptedKeyVault<SqliteStore>,
) -> SyncEngine {
    let config = SyncConfig {
        backoff: RetryPolicy {
            max_retries: 0,
            min_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(200),
        },
        ..SyncConfig::default()
    };
    SyncEngine::new(
        client.clone(),
        Arc::new(CoreDirectory::new(store.clone(), store.clone())),
        store.clone(),
        Arc::new(vault),
        config,
    )
}

/// Runs passes until the store's outbox has nothing pending.
async fn drain(engine: &SyncEngine, store: &SqliteStore) {
    for _ in 0..50 {
        let far = Utc::now() + chrono::Duration::days(1);
        if store.pending(far, 10).await.unwrap().is_empty() {
            return;
        }
        let pass = engine.run_once().await.unwrap();
        if pass.failed > 0 {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    panic!(
        "the outbox did not drain; dead letters: {:?}",
        store.dead_letters(10).await.unwrap()
    );
}

/// The member's live managed keys in LiteLLM, by token.
async fn live_tokens(client: &LiteLlmClient, user: UserId) -> Vec<String> {
    let mut tokens: Vec<String> = client
        .key_list(&KeyListQuery {
            user_id: Some(user.to_string()),
            ..KeyListQuery::default()
        })
        .await
        .unwrap()
        .into_iter()
        .filter(|k| !k.is_deleted())
        .filter_map(|k| k.token)
        .collect();
    tokens.sort();
    tokens
}

#[tokio::test]
async fn a_restarted_engine_reuses_the_sealed_key_on_the_real_proxy() {
    let Some((client, _)) =
        common::proxy("a_restarted_engine_reuses_the_sealed_key_on_the_real_proxy")
    else {
        return;
    };
    let db = TempDb::new();
    let store = Arc::new(SqliteStore::connect(&db.url()).await.unwrap());
    let (org, user) = seed(store.as_ref()).await;

    // First process: the outbox creates the member's user and key; the secret is sealed.
    let first = engine(
        &client,
        &store,
        EncryptedKeyVault::new(store.clone(), VaultKey::parse(MASTER).unwrap()),
    );
    drain(&first, &store).await;
    assert!(store.dead_letters(10).await.unwrap().is_empty());
    let key = first.member_key(org, user).await.unwrap().expect("a key");
    let token = key_token(&key);
    assert_eq!(
        live_tokens(&client, user).await,
        std::slice::from_ref(&token)
    );
    assert_eq!(
        store.get_member(org, user).await.unwrap().litellm_key_id,
        Some(token.clone())
    );
    drop(first);
    store.close().await;
    drop(store);

    // Second process (a restart, or the server next to the worker): same database, same
    // master key. It reads the key instead of regenerating it.
    let store = Arc::new(SqliteStore::connect(&db.url()).await.unwrap());
    let second = engine(
        &client,
        &store,
        EncryptedKeyVault::new(store.clone(), VaultKey::parse(MASTER).unwrap()),
    );
    let again = second
        .provision_member(org, user, None)
        .await
        .unwrap()
        .expect("the key");
    assert_eq!(again.expose(), key.expose());
    second.sync_member(org, user, None).await.unwrap();
    assert_eq!(
        live_tokens(&client, user).await,
        std::slice::from_ref(&token)
    );
    let who = Attribution {
        end_user_id: Some(user.to_string()),
        user_id: Some(user.to_string()),
        org_id: Some(org.to_string()),
        ..Attribution::default()
    };
    let answer = client
        .chat(
            &again,
            &who,
            &ChatRequest::new("mock-gpt", vec![ChatMessage::user("hello again")], 4),
        )
        .await
        .unwrap();
    assert!(answer.completion.id.starts_with("chatcmpl-"), "{answer:?}");
    let drift = second.reconcile(false).await.unwrap();
    assert!(
        drift
            .drifts
            .iter()
            .all(|d| d.org_id != org || d.subject != user.to_string()),
        "{drift:?}"
    );

    // A process with another master key: a clear error, and the member's key is untouched.
    let wrong = engine(
        &client,
        &store,
        EncryptedKeyVault::new(store.clone(), VaultKey::parse(OTHER_MASTER).unwrap()),
    );
    let err = wrong
        .provision_member(org, user, None)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("another vault master key"), "{err}");
    assert!(wrong.sync_member(org, user, None).await.is_err());
    assert_eq!(
        live_tokens(&client, user).await,
        std::slice::from_ref(&token)
    );

    // The master key was lost: with Replace, the member gets a new key sealed under the new
    // master key, and the old one is deleted.
    let replacing = engine(
        &client,
        &store,
        EncryptedKeyVault::new(store.clone(), VaultKey::parse(OTHER_MASTER).unwrap())
            .with_foreign_secrets(ForeignSecrets::Replace),
    );
    let fresh = replacing
        .provision_member(org, user, None)
        .await
        .unwrap()
        .expect("a new key");
    assert_ne!(fresh.expose(), key.expose());
    let fresh_token = key_token(&fresh);
    assert_eq!(
        live_tokens(&client, user).await,
        std::slice::from_ref(&fresh_token)
    );
    assert_eq!(
        store.get_member(org, user).await.unwrap().litellm_key_id,
        Some(fresh_token)
    );
    client
        .chat(
            &fresh,
            &who,
            &ChatRequest::new("mock-gpt", vec![ChatMessage::user("new key")], 4),
        )
        .await
        .unwrap();

    // Clean up: the member leaves, their key goes.
    store.remove_member(org, user).await.unwrap();
    drain(&replacing, &store).await;
    assert!(live_tokens(&client, user).await.is_empty());
    store.close().await;
}
