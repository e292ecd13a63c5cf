#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! LiteLLM wired in one call ([`Integration`]) over the memory stores: what it builds from
//! the settings, without reaching the proxy (nothing is spawned, nothing connects).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use stratai_core::budget::BudgetAlert;
use stratai_core::usage::UsageRecord;
use stratai_litellm::config::{FileLiteLlm, LiteLlmSettings};
use stratai_litellm::integration::{Integration, IntegrationStores};
use stratai_litellm::spend::desk::SpendAlerts;
use stratai_store::Stores;

#[derive(Debug)]
struct NoAlerts;

impl SpendAlerts for NoAlerts {
    fn budget_alerts(&self, _: &[BudgetAlert]) {}
    fn outside_stratai(&self, _: &UsageRecord) {}
}

fn settings(pairs: &[(&str, &str)]) -> LiteLlmSettings {
    let env: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    LiteLlmSettings::load(&env, &FileLiteLlm::default(), true)
        .unwrap()
        .unwrap()
}

fn stores(s: &Stores) -> IntegrationStores {
    IntegrationStores {
        directory: s.directory.clone(),
        tiers: s.tiers.clone(),
        budgets: s.budgets.clone(),
        usage: s.usage.clone(),
        outbox: s.outbox.clone(),
        key_vault: s.key_vault.clone(),
    }
}

#[tokio::test]
async fn one_call_wires_the_engine_the_gateway_and_the_spend_desk() {
    let memory = Stores::memory();
    let proxy = settings(&[
        ("LITELLM_URL", "http://127.0.0.1:9"),
        ("LITELLM_MASTER_KEY", "sk-integration-test"),
        ("STRATAI_LITELLM_CALLBACK_SECRET", "0123456789abcdef0123"),
    ]);
    let wired = Integration::new(&proxy, stores(&memory)).unwrap();
    // No STRATAI_VAULT_KEY: a key of this process only, said so for the start log.
    assert!(wired.vault_ephemeral);
    assert!(!wired.vault_key_id.is_empty());

    let desk = wired.spend_desk(Arc::new(NoAlerts));
    assert_eq!(
        desk.callback_secret().map(|s| s.expose().to_owned()),
        Some("0123456789abcdef0123".to_owned())
    );
    let _runner = wired.runner(&desk, Duration::from_secs(1));
}

#[tokio::test]
async fn the_worker_wiring_maps_model_names_and_loads_the_key_limits_itself() {
    use stratai_litellm::integration::IntegrationOptions;
    use stratai_litellm::sync::runner::Cadence;
    use stratai_litellm::sync::{ModelNames, SyncSchedule};

    let memory = Stores::memory();
    let proxy = settings(&[
        ("LITELLM_URL", "http://127.0.0.1:9"),
        ("LITELLM_MASTER_KEY", "sk-integration-test"),
    ]);
    let names = ModelNames::identity().with("gpt-4o", "azure-gpt-4o");
    let wired = Integration::with_options(
        &proxy,
        stores(&memory),
        IntegrationOptions {
            model_names: names.clone(),
        },
    )
    .unwrap();
    assert_eq!(wired.engine.config().model_names, names);
    // The rest of the engine's configuration is the settings'.
    assert_eq!(
        wired.engine.config().key_duration,
        proxy.sync_config().key_duration
    );
    // The server's wiring maps nothing.
    let server = Integration::new(&proxy, stores(&memory)).unwrap();
    assert_eq!(server.engine.config().model_names, ModelNames::identity());

    let schedule = SyncSchedule {
        interval: Duration::from_millis(250),
        reconcile: Cadence::after_first(Duration::from_secs(30)),
        repair: false,
        ..SyncSchedule::default()
    };
    let runner = wired.standalone_runner(schedule.clone(), memory.guardrails.clone());
    assert_eq!(runner.schedule(), &schedule);
    // The key limits wait for the rules until the runner loads them from the store.
    assert!(!wired.key_limits.is_loaded());
    assert!(matches!(runner.reload_guardrails().await, Some(Ok(_))));
    assert!(wired.key_limits.is_loaded());
    // The server's runner leaves the key limits to the embedder (its guardrail runtime).
    let desk = server.spend_desk(Arc::new(NoAlerts));
    assert!(
        server
            .runner(&desk, Duration::from_secs(1))
            .reload_guardrails()
            .await
            .is_none()
    );
}
