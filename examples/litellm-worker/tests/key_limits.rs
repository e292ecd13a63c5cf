#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The worker mirrors the rate-limit guardrails onto members' keys: it loads the guardrail
//! rules from the database (SQLite file) at start and on its periodic reload, so a blocking
//! limit of 10 requests a minute for the organization becomes the member's key `rpm_limit`
//! of 20 (`KeyLimits::rpm_bound`), a changed rule changes the key at the next pass, and a
//! rule that no longer blocks lifts the limit. The proxy is the stateful fake of
//! stratai-litellm's tests (wiremock), the worker the real binary in its loop.

#[path = "../../../stratai-litellm/tests/common/fake_litellm.rs"]
mod fake_litellm;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::{Value, json};
use stratai_core::directory::{
    BillingPlan, Email, Membership, OrgRole, OrgSettings, Organization, PlatformRole, Slug, User,
};
use stratai_core::ids::{ModelId, OrgId, RuleId, TierSlug, UserId};
use stratai_core::ports::{
    DirectoryStore, GuardrailStore, RuleAction, RuleRecord, RuleScope, TierStore,
};
use stratai_core::tiers::{BASIC_TIER_ID, default_tiers, subscriptions_for};
use stratai_litellm::sync::KeyLimits;
use stratai_store::SqliteStore;

const MASTER: &str = "2b7e151628aed2a6abf7158809cf4f3c762e7160f38b4da56a784d9045190cfe";

/// The worker process, killed when dropped.
struct Worker(Child);

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
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
    let run = &OrgId::new().as_uuid().simple().to_string()[..12];
    let basic = TierSlug::new("basic").unwrap();
    let org = Organization::new(
        "Worker Limits",
        Slug::new(format!("wl-{run}")).unwrap(),
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
        Email::new(format!("wl-{run}@example.com")).unwrap(),
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

fn rate_rule(id: RuleId, org: OrgId, requests: u32, action: RuleAction) -> RuleRecord {
    RuleRecord {
        id,
        name: format!("{requests} a minute"),
        description: None,
        rule_type: "rate_limit".to_owned(),
        config: json!({"requests": requests, "period": "minute", "bucket": "per_user"}),
        scope: RuleScope::Org { org_id: org },
        action,
        priority: 0,
        active: true,
        created_at: Utc::now(),
    }
}

/// Waits (at most 30 s: the worker reloads the rules every 5 s) until the member's one key
/// on the fake proxy has `rpm_limit` = `expected`.
async fn key_rpm_becomes(
    state: &fake_litellm::Shared,
    worker: &mut Worker,
    org: OrgId,
    user: UserId,
    expected: Value,
) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let seen: Vec<Value> = {
            let state = state.lock().unwrap();
            state
                .keys_of(&org.to_string(), &user.to_string())
                .into_iter()
                .map(|k| k["rpm_limit"].clone())
                .collect()
        };
        if seen == [expected.clone()] {
            return;
        }
        if let Some(status) = worker.0.try_wait().unwrap() {
            panic!("the worker exited ({status}) while the key's rpm_limit was {seen:?}");
        }
        assert!(
            Instant::now() < deadline,
            "the member's key never got rpm_limit {expected}: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limit_rules_become_the_members_key_rpm_limit_and_follow_changes() {
    let scratch = stratai_testkit::Scratch::new();
    let url = format!("sqlite://{}?mode=rwc", scratch.join("limits.db").display());
    let store = SqliteStore::connect(&url).await.unwrap();
    let (org, user) = seed(&store).await;
    let rule = RuleId::new();
    store
        .put_rule(org, &rate_rule(rule, org, 10, RuleAction::Block))
        .await
        .unwrap();
    let (proxy, state) = fake_litellm::start(false).await;

    let mut worker = Worker(
        Command::new(env!("CARGO_BIN_EXE_litellm-worker"))
            .args(["--interval-ms", "100"])
            .env_clear()
            .envs([
                ("LITELLM_URL", proxy.uri().as_str()),
                ("LITELLM_MASTER_KEY", "sk-master"),
                ("DATABASE_URL", url.as_str()),
                ("STRATAI_VAULT_KEY", MASTER),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );

    // 10 a minute: the most a StratAI limiter admits in one LiteLLM minute window.
    let bound = KeyLimits::rpm_bound(10, Duration::from_secs(60));
    assert_eq!(bound, 20);
    key_rpm_becomes(&state, &mut worker, org, user, json!(bound)).await;

    // The rule tightened: the key follows once the worker has reloaded the rules.
    store
        .put_rule(org, &rate_rule(rule, org, 5, RuleAction::Block))
        .await
        .unwrap();
    let tighter = KeyLimits::rpm_bound(5, Duration::from_secs(60));
    assert_eq!(tighter, 10);
    key_rpm_becomes(&state, &mut worker, org, user, json!(tighter)).await;

    // Only blocking rules limit the key: a rule that merely warns refuses nothing.
    store
        .put_rule(org, &rate_rule(rule, org, 5, RuleAction::Warn))
        .await
        .unwrap();
    key_rpm_becomes(&state, &mut worker, org, user, Value::Null).await;
    drop(worker);
    store.close().await;
}
