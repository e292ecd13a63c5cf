#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The worker's key vault: a database that outlives the process needs `STRATAI_VAULT_KEY`;
//! against the real proxy, the key a first run creates is sealed in the SQLite file, readable
//! by another process with the same master key, and reused (not regenerated) by a second run.

use std::process::{Command, Output};
use std::sync::Arc;

use chrono::Utc;
use stratai_core::directory::{
    BillingPlan, Email, Membership, OrgRole, OrgSettings, Organization, PlatformRole, Slug, User,
};
use stratai_core::ids::{ModelId, OrgId, TierSlug, UserId};
use stratai_core::ports::{DirectoryStore, TierStore};
use stratai_core::tiers::{BASIC_TIER_ID, default_tiers, subscriptions_for};
use stratai_litellm::sync::KeyVault;
use stratai_litellm::vault::{EncryptedKeyVault, VaultKey};
use stratai_litellm::{ClientConfig, KeyListQuery, LiteLlmClient, Secret, key_token};
use stratai_store::SqliteStore;

const MASTER: &str = "2b7e151628aed2a6abf7158809cf4f3c762e7160f38b4da56a784d9045190cfe";

/// A SQLite database file in a scratch folder, removed (with its WAL files) on drop.
struct TempDb(stratai_testkit::Scratch);

impl TempDb {
    fn new() -> Self {
        Self(stratai_testkit::Scratch::new())
    }
    fn url(&self) -> String {
        format!("sqlite://{}?mode=rwc", self.0.join("vault.db").display())
    }
}

fn uuid_like() -> String {
    OrgId::new().as_uuid().simple().to_string()
}

fn worker(url: &str, master: &str, database: &str, vault_key: Option<&str>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_litellm-worker"));
    command
        .arg("--once")
        .env("STRATAI_LITELLM_URL", url)
        .env("STRATAI_LITELLM_MASTER_KEY", master)
        .env("STRATAI_DATABASE_URL", database)
        .env_remove("STRATAI_VAULT_KEY");
    if let Some(key) = vault_key {
        command.env("STRATAI_VAULT_KEY", key);
    }
    command.output().unwrap()
}

#[test]
fn a_database_file_needs_a_valid_vault_key_which_is_never_echoed() {
    let db = TempDb::new();
    let output = worker("http://127.0.0.1:1", "x", &db.url(), None);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("env `STRATAI_VAULT_KEY` is not set"),
        "{stderr}"
    );
    let output = worker(
        "http://127.0.0.1:1",
        "x",
        &db.url(),
        Some("not-a-32-byte-secret"),
    );
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("invalid vault master key"), "{stderr}");
    assert!(!stderr.contains("not-a-32-byte-secret"), "{stderr}");
}

async fn seed(store: &SqliteStore) -> (OrgId, UserId) {
    let now = Utc::now();
    for mut tier in default_tiers() {
        tier.models = if tier.id == BASIC_TIER_ID {
            vec![ModelId::new("mock-gpt").unwrap()]
        } else {
            Vec::new()
        };
        store.upsert_tier(&tier).await.unwrap();
    }
    let run = &uuid_like()[..12];
    let basic = TierSlug::new("basic").unwrap();
    let org = Organization::new(
        "Worker Vault",
        Slug::new(format!("wv-{run}")).unwrap(),
        OrgSettings::new(vec![basic.clone()], basic).unwrap(),
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
        Email::new(format!("wv-{run}@example.com")).unwrap(),
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_run_reuses_the_key_the_first_sealed_in_the_database() {
    let url = std::env::var("STRATAI_LITELLM_URL")
        .ok()
        .filter(|v| !v.is_empty());
    let master = std::env::var("STRATAI_LITELLM_MASTER_KEY")
        .ok()
        .filter(|v| !v.is_empty());
    let (Some(url), Some(master)) = (url, master) else {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!(
                "STRATAI_LITELLM_URL / STRATAI_LITELLM_MASTER_KEY unset under CI=true: run `eval \"$(scripts/litellm-up.sh)\"` first"
            );
        }
        eprintln!(
            "SKIPPED a_second_run_reuses_the_key_the_first_sealed_in_the_database: STRATAI_LITELLM_URL / STRATAI_LITELLM_MASTER_KEY are not set (run `eval \"$(scripts/litellm-up.sh)\"`)"
        );
        return;
    };
    let db = TempDb::new();
    let store = Arc::new(SqliteStore::connect(&db.url()).await.unwrap());
    let (org, user) = seed(&store).await;
    store.close().await;

    let first = worker(&url, &master, &db.url(), Some(MASTER));
    let out = String::from_utf8_lossy(&first.stdout);
    assert!(
        first.status.success(),
        "{out}\n{}",
        String::from_utf8_lossy(&first.stderr)
    );

    // Another process with the same master key (the server) reads the worker's key.
    let store = Arc::new(SqliteStore::connect(&db.url()).await.unwrap());
    let vault = EncryptedKeyVault::new(store.clone(), VaultKey::parse(MASTER).unwrap());
    let (token, secret) = vault.get(org, user).await.unwrap().expect("a sealed key");
    assert_eq!(key_token(&secret), token);
    store.close().await;

    let second = worker(&url, &master, &db.url(), Some(MASTER));
    assert!(
        second.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&second.stdout),
        String::from_utf8_lossy(&second.stderr)
    );
    let store = Arc::new(SqliteStore::connect(&db.url()).await.unwrap());
    let vault = EncryptedKeyVault::new(store.clone(), VaultKey::parse(MASTER).unwrap());
    let (again, same) = vault.get(org, user).await.unwrap().expect("still sealed");
    assert_eq!(again, token);
    assert_eq!(same.expose(), secret.expose());
    let client =
        LiteLlmClient::new(ClientConfig::new(url.clone(), Secret::new(master.clone()))).unwrap();
    let live = |client: LiteLlmClient| async move {
        client
            .key_list(&KeyListQuery {
                user_id: Some(user.to_string()),
                ..KeyListQuery::default()
            })
            .await
            .unwrap()
            .into_iter()
            .filter(|k| !k.is_deleted())
            .filter_map(|k| k.token)
            .collect::<Vec<String>>()
    };
    assert_eq!(
        live(client.clone()).await,
        [token],
        "exactly the first run's key, not a new one"
    );

    // Clean up the proxy: the member leaves, a last run deletes the key.
    store.remove_member(org, user).await.unwrap();
    store.close().await;
    let last = worker(&url, &master, &db.url(), Some(MASTER));
    assert!(
        last.status.success(),
        "{}",
        String::from_utf8_lossy(&last.stdout)
    );
    assert!(live(client).await.is_empty());
}
