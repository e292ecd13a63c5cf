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

/// The worker with exactly `env` (nothing of the developer's environment).
fn worker_with(env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_litellm-worker"))
        .arg("--once")
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

fn worker(url: &str, master: &str, database: &str, vault_key: Option<&str>) -> Output {
    let mut env = vec![
        ("LITELLM_URL", url),
        ("LITELLM_MASTER_KEY", master),
        ("DATABASE_URL", database),
    ];
    if let Some(key) = vault_key {
        env.push(("STRATAI_VAULT_KEY", key));
    }
    worker_with(&env)
}

#[test]
fn an_in_memory_database_is_refused_unless_asked_for() {
    let base = [
        ("LITELLM_URL", "http://127.0.0.1:1"),
        ("LITELLM_MASTER_KEY", "x"),
        ("DATABASE_URL", "sqlite::memory:"),
    ];
    let output = worker_with(&base);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("STRATAI_ALLOW_MEMORY_DATABASE"), "{stderr}");
    // No database at all is not a silent in-memory one either.
    let output = worker_with(&base[..2]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("DATABASE_URL") && stderr.contains("required"),
        "{stderr}"
    );
}

#[test]
fn the_former_names_are_read_with_a_warning() {
    // A malformed vault key stops the worker after the names were read, before any I/O.
    let output = worker_with(&[
        ("STRATAI_LITELLM_URL", "http://127.0.0.1:1"),
        ("STRATAI_LITELLM_MASTER_KEY", "x"),
        ("STRATAI_DATABASE_URL", "sqlite:///nonexistent/w.db"),
        ("STRATAI_VAULT_KEY", "short"),
    ]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("invalid setting STRATAI_VAULT_KEY"),
        "{stderr}"
    );
    // The names were taken (the error is the vault key's, not a missing URL)...
    let output = worker_with(&[
        ("STRATAI_LITELLM_URL", "http://127.0.0.1:1"),
        ("STRATAI_LITELLM_MASTER_KEY", "x"),
        ("STRATAI_DATABASE_URL", "sqlite::memory:"),
        ("STRATAI_ALLOW_MEMORY_DATABASE", "true"),
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    // ...and each is named in a warning (the run then fails: nothing listens on port 1).
    for (old, new) in [
        ("STRATAI_DATABASE_URL", "DATABASE_URL"),
        ("STRATAI_LITELLM_URL", "LITELLM_URL"),
        ("STRATAI_LITELLM_MASTER_KEY", "LITELLM_MASTER_KEY"),
    ] {
        assert!(
            stderr.contains(&format!(
                "warning: `{old}` is deprecated: set `{new}` instead"
            )),
            "{stderr}"
        );
    }
}

#[test]
fn a_database_file_needs_a_valid_vault_key_which_is_never_echoed() {
    let db = TempDb::new();
    let output = worker("http://127.0.0.1:1", "x", &db.url(), None);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("invalid setting STRATAI_VAULT_KEY: required"),
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
