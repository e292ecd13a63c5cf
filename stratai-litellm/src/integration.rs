//! LiteLLM wired into a StratAI deployment in one call: the proxy client, the key vault,
//! the [`SyncEngine`] over the directory with members' budgets and the rate-limit guardrails
//! as key limits, and the gateway that chats with each member's virtual key. The spend side
//! ([`SpendImporter`] under a [`SpendDesk`]) and the background [`SyncRunner`] are built from
//! it when the embedder runs them. Logging the choices (the vault's ephemeral key, where the
//! sync runs) stays with the embedder.
//!
//! Both processes that run the sync use it. The server ([`Integration::new`],
//! [`Integration::spend_desk`], [`Integration::runner`]) sets the key limits to its guardrail
//! runtime's policy and runs the sync on its fixed schedule. `litellm-worker`, without a
//! guardrail runtime, maps model names ([`IntegrationOptions`]) and runs
//! [`Integration::standalone_runner`]: its own [`SyncSchedule`], the spend poll without a
//! desk, the guardrail rules recompiled from the store into the key limits.

use std::sync::Arc;
use std::time::Duration;

use stratai_core::ports::{
    BudgetLedger, DirectoryStore, GuardrailStore, KeyVaultStore, OutboxStore, TierStore, UsageStore,
};

use crate::LiteLlmClient;
use crate::config::LiteLlmSettings;
use crate::gateway::LiteLlmGateway;
use crate::spend::desk::{SpendAlerts, SpendDesk};
use crate::spend::{SpendImporter, SpendSettings};
use crate::sync::runner::{Cadence, GuardrailSource};
use crate::sync::{
    CoreDirectory, ModelNames, PolicyKeyLimits, SyncConfig, SyncEngine, SyncRunner, SyncSchedule,
};

/// How often the in-process sync reconciles LiteLLM with the directory (repairing drift,
/// including keys whose secret this process does not hold, e.g. after a restart).
pub const RECONCILE_EVERY: Duration = Duration::from_secs(300);

/// The stores LiteLLM's integration reads and writes.
#[derive(Clone)]
pub struct IntegrationStores {
    /// Organizations, members, groups.
    pub directory: Arc<dyn DirectoryStore>,
    /// The tier catalog and subscriptions.
    pub tiers: Arc<dyn TierStore>,
    /// Budgets (members' key budgets; spend imported against them).
    pub budgets: Arc<dyn BudgetLedger>,
    /// Usage records (spend imported as records).
    pub usage: Arc<dyn UsageStore>,
    /// The sync outbox.
    pub outbox: Arc<dyn OutboxStore>,
    /// Sealed virtual-key secrets.
    pub key_vault: Arc<dyn KeyVaultStore>,
}

impl std::fmt::Debug for IntegrationStores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IntegrationStores").finish_non_exhaustive()
    }
}

/// What an embedder chooses beyond the [`LiteLlmSettings`] ([`Integration::with_options`]);
/// the default is the server's wiring.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IntegrationOptions {
    /// StratAI model ids -> LiteLLM model names, for a proxy whose model names differ from
    /// the catalog's (`litellm-worker`'s `--model STRATAI=LITELLM`). Default: the identity.
    pub model_names: ModelNames,
}

/// LiteLLM wired over the stores ([`Integration::new`]).
pub struct Integration {
    /// A client of the proxy with the master key.
    pub client: LiteLlmClient,
    /// The sync engine: the only code path that creates members' keys.
    pub engine: Arc<SyncEngine>,
    /// The gateway answering chat with each member's virtual key, asking the engine for a
    /// key on demand.
    pub gateway: Arc<LiteLlmGateway>,
    /// The rate-limit guardrails as key limits: empty until the embedder sets the compiled
    /// policy ([`PolicyKeyLimits::set`]); until then a sync fails as transient and retries.
    pub key_limits: Arc<PolicyKeyLimits>,
    /// The vault master key's id (names it without revealing it).
    pub vault_key_id: String,
    /// Whether the vault's master key was generated for this process (no
    /// `STRATAI_VAULT_KEY`): keys sealed under it die with the process.
    pub vault_ephemeral: bool,
    settings: LiteLlmSettings,
    stores: IntegrationStores,
}

impl std::fmt::Debug for Integration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Integration")
            .field("vault_key_id", &self.vault_key_id)
            .field("vault_ephemeral", &self.vault_ephemeral)
            .finish_non_exhaustive()
    }
}

impl Integration {
    /// The client, vault, engine and gateway of `settings` over `stores`. Refuses a client
    /// or vault that cannot be built (the message names which).
    pub fn new(settings: &LiteLlmSettings, stores: IntegrationStores) -> Result<Self, String> {
        Self::with_options(settings, stores, IntegrationOptions::default())
    }

    /// [`new`](Self::new) with `options` applied to the engine's [`SyncConfig`] (the rest of
    /// it from [`LiteLlmSettings::sync_config`]).
    pub fn with_options(
        settings: &LiteLlmSettings,
        stores: IntegrationStores,
        options: IntegrationOptions,
    ) -> Result<Self, String> {
        let client = settings
            .client()
            .map_err(|e| format!("litellm client: {e}"))?;
        let vault = settings
            .key_vault(stores.key_vault.clone())
            .map_err(|e| format!("key vault: {e}"))?;
        let key_limits = Arc::new(PolicyKeyLimits::new());
        let engine = Arc::new(SyncEngine::new(
            client.clone(),
            Arc::new(
                CoreDirectory::new(stores.directory.clone(), stores.tiers.clone())
                    .with_budgets(stores.budgets.clone())
                    .with_rate_limits(key_limits.clone()),
            ),
            stores.outbox.clone(),
            vault.vault,
            SyncConfig {
                model_names: options.model_names,
                ..settings.sync_config()
            },
        ));
        Ok(Self {
            client,
            gateway: Arc::new(LiteLlmGateway::with_sync_engine(engine.clone())),
            engine,
            key_limits,
            vault_key_id: vault.key_id,
            vault_ephemeral: vault.ephemeral,
            settings: settings.clone(),
            stores,
        })
    }

    /// The spend desk: LiteLLM's spend imported as usage (callback and poll), told to
    /// `alerts`, the callback checked against the configured secret.
    #[must_use]
    pub fn spend_desk(&self, alerts: Arc<dyn SpendAlerts>) -> SpendDesk {
        SpendDesk::new(
            self.spend_importer(),
            alerts,
            self.settings.callback_secret.clone(),
        )
    }

    /// The importer of LiteLLM's spend into the usage records and budgets.
    fn spend_importer(&self) -> Arc<SpendImporter> {
        Arc::new(SpendImporter::new(
            self.stores.directory.clone(),
            self.stores.tiers.clone(),
            self.stores.budgets.clone(),
            self.stores.usage.clone(),
            SpendSettings::default(),
        ))
    }

    /// The background sync: the outbox read every `interval`, a repairing reconcile at start
    /// and every [`RECONCILE_EVERY`], the spend logs polled into `desk`'s importer at the
    /// configured cadence and window. Spawn it once the key limits are set.
    #[must_use]
    pub fn runner(&self, desk: &SpendDesk, interval: Duration) -> SyncRunner {
        let schedule = SyncSchedule {
            interval,
            reconcile: Cadence::from_start(RECONCILE_EVERY),
            repair: true,
            spend_poll: Cadence::from_start(self.settings.spend_poll),
            spend_window: self.settings.spend_window,
            ..SyncSchedule::default()
        };
        SyncRunner::new(self.engine.clone(), schedule).with_spend_poll(desk.importer().clone())
    }

    /// The sync of a process without a guardrail runtime (`litellm-worker`), on `schedule`
    /// (the caller's cadences, repair or not, spend window): the spend logs polled into an
    /// importer of its own (no [`SpendDesk`]: the caller reports each
    /// [`TickReport`](crate::sync::TickReport)'s spend itself), and the guardrail rules
    /// compiled from `rules` into [`key_limits`](Self::key_limits) on
    /// [`SyncSchedule::guardrail_reload`], so the caller does not set them. Until the rules
    /// have loaded once, members are not pushed (retried) rather than pushed without limits.
    #[must_use]
    pub fn standalone_runner(
        &self,
        schedule: SyncSchedule,
        rules: Arc<dyn GuardrailStore>,
    ) -> SyncRunner {
        SyncRunner::new(self.engine.clone(), schedule)
            .with_spend_poll(self.spend_importer())
            .with_guardrail_reload(GuardrailSource {
                limits: self.key_limits.clone(),
                directory: self.stores.directory.clone(),
                tiers: self.stores.tiers.clone(),
                rules,
            })
    }
}
