#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The sync runner's schedule: what one tick runs at which instant (outbox pass every tick,
//! reconcile and key rotation, spend-log poll, guardrail reload), against the stateful fake
//! proxy of `common::fake_litellm`. Instants are given to [`SyncRunner::tick`], so nothing
//! waits for the schedule.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::fake::FakeDirectory;
use common::fake_litellm::{self, calls};
use stratai_litellm::spend::{SpendImporter, SpendSettings};
use stratai_litellm::sync::runner::{Cadence, GuardrailSource, SPEND_LOG_LAG, TickReport};
use stratai_litellm::sync::{
    MemoryKeyVault, PolicyKeyLimits, SyncConfig, SyncEngine, SyncRunner, SyncSchedule,
};
use stratai_litellm::{ClientConfig, LiteLlmClient, RetryPolicy, Secret};
use stratai_store::MemoryStore;
use tokio::time::Instant;
use wiremock::MockServer;

const SECOND: Duration = Duration::from_secs(1);

fn engine(server: &MockServer, dir: &Arc<FakeDirectory>) -> Arc<SyncEngine> {
    let mut config = ClientConfig::new(server.uri(), Secret::new("sk-master-test"));
    config.retry = RetryPolicy {
        max_retries: 0,
        min_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(2),
    };
    config.request_timeout = Duration::from_secs(5);
    let client = LiteLlmClient::new(config).unwrap();
    Arc::new(SyncEngine::new(
        client,
        dir.clone(),
        dir.clone(),
        Arc::new(MemoryKeyVault::new()),
        SyncConfig::default(),
    ))
}

/// Which steps a tick ran, as (guardrails, reconcile, rotation, spend); every step that ran
/// must have succeeded.
fn ran(tick: &TickReport) -> (bool, bool, bool, bool) {
    tick.pass.as_ref().expect("outbox pass");
    if let Some(r) = &tick.guardrails {
        r.as_ref().expect("guardrail reload");
    }
    if let Some((_, r)) = &tick.reconcile {
        r.as_ref().expect("reconcile");
    }
    if let Some(r) = &tick.rotation {
        r.as_ref().expect("key rotation");
    }
    if let Some(r) = &tick.spend {
        r.as_ref().expect("spend poll");
    }
    (
        tick.guardrails.is_some(),
        tick.reconcile.is_some(),
        tick.rotation.is_some(),
        tick.spend.is_some(),
    )
}

#[tokio::test]
async fn each_step_runs_on_its_own_cadence_and_the_outbox_on_every_tick() {
    let (server, state) = fake_litellm::start(false).await;
    let dir = Arc::new(FakeDirectory::new());
    let org = dir.add_org("runner-cadence");
    let user = dir.add_member(org, "runner@example.com", None, None, &[]);
    let store = Arc::new(MemoryStore::new());
    let importer = Arc::new(SpendImporter::new(
        store.clone(),
        store.clone(),
        store.clone(),
        store.clone(),
        SpendSettings::default(),
    ));
    let limits = Arc::new(PolicyKeyLimits::new());
    let schedule = SyncSchedule {
        interval: SECOND,
        reconcile: Cadence::from_start(300 * SECOND),
        repair: true,
        spend_poll: Cadence::after_first(60 * SECOND),
        spend_window: 3600 * SECOND,
        guardrail_reload: Cadence::from_start(5 * SECOND),
    };
    let mut runner = SyncRunner::new(engine(&server, &dir), schedule)
        .with_spend_poll(importer)
        .with_guardrail_reload(GuardrailSource {
            limits: limits.clone(),
            directory: store.clone(),
            tiers: store.clone(),
            rules: store.clone(),
        });

    let t0 = Instant::now();
    // The start: the guardrails, the outbox (the new member gets a key), a repairing
    // reconcile and the rotation; the spend poll waits one period.
    let first = runner.tick(t0).await;
    assert_eq!(ran(&first), (true, true, true, false));
    assert!(first.pass.as_ref().unwrap().events > 0, "{first:?}");
    assert!(limits.is_loaded());
    assert_eq!(
        state
            .lock()
            .unwrap()
            .keys_of(&org.to_string(), &user.to_string())
            .len(),
        1
    );

    // (offset from the start in seconds, guardrails, reconcile and rotation, spend poll):
    // each period counts from the step's last run, not from the start.
    let expected = [
        (1, false, false, false),
        (5, true, false, false),
        (59, true, false, false),
        (60, false, false, true),
        (61, false, false, false),
        (120, true, false, true),
        (299, true, false, true),
        (300, false, true, false),
        (301, false, false, false),
        (600, true, true, true),
    ];
    for (offset, guardrails, reconcile, spend) in expected {
        let tick = runner.tick(t0 + offset * SECOND).await;
        assert_eq!(
            ran(&tick),
            (guardrails, reconcile, reconcile, spend),
            "at +{offset}s: {tick:?}"
        );
        assert_eq!(tick.pass.as_ref().unwrap().events, 0, "at +{offset}s");
    }
    // Four polls, each reading the configured window ending the lag behind now.
    assert_eq!(calls(&server, "GET", "/spend/logs/v2").await, 4);
    let poll = runner
        .poll_spend(chrono::Utc::now())
        .await
        .expect("an importer")
        .expect("poll");
    assert_eq!(
        poll.report.to - poll.report.from,
        chrono::Duration::hours(1)
    );
    assert!(
        chrono::Utc::now() - poll.report.to >= chrono::Duration::from_std(SPEND_LOG_LAG).unwrap()
    );
}

#[tokio::test]
async fn a_runner_without_importer_or_guardrail_source_only_syncs_and_reconciles() {
    let (server, _state) = fake_litellm::start(false).await;
    let dir = Arc::new(FakeDirectory::new());
    dir.add_org("runner-bare");
    let schedule = SyncSchedule {
        reconcile: Cadence::after_first(10 * SECOND),
        ..SyncSchedule::default()
    };
    let mut runner = SyncRunner::new(engine(&server, &dir), schedule);
    let t0 = Instant::now();
    assert_eq!(ran(&runner.tick(t0).await), (false, false, false, false));
    assert_eq!(
        ran(&runner.tick(t0 + 10 * SECOND).await),
        (false, true, true, false)
    );
    assert!(runner.poll_spend(chrono::Utc::now()).await.is_none());
    assert!(runner.reload_guardrails().await.is_none());
    assert_eq!(calls(&server, "GET", "/spend/logs/v2").await, 0);
}
