//! Building the gateway from the configuration: provider choice (LiteLLM when configured,
//! otherwise the offline demo provider, announced at start), the usage spool, budget alerts,
//! the guardrail engine and their background tasks.
//!
//! With LiteLLM configured (wired by stratai-litellm's [`Integration`]), the server also runs
//! its [`SyncEngine`](stratai_litellm::sync::SyncEngine) in-process, on the
//! [`SyncRunner`](stratai_litellm::sync::SyncRunner) `examples/litellm-worker` runs too: a background task consumes the
//! store's outbox, reconciles with repair at start and every five minutes and polls the spend
//! logs. The gateway reads members' keys
//! from the engine's vault and asks the engine for a member's key on demand, so the engine is
//! the only code path that creates keys (stratai-litellm's
//! [`LiteLlmGateway`](stratai_litellm::gateway::LiteLlmGateway)). The vault seals the secrets
//! in the database (`STRATAI_VAULT_KEY`), so they survive restarts and are shared with
//! `litellm-worker`. With `STRATAI_LITELLM_SYNC=worker` the server leaves the
//! outbox and reconciles to the worker (run one consumer of the outbox, not both) and only
//! reads keys, pushing a member on demand when the vault has none yet.
//!
//! The settings are [`Config::gateway`]'s (see the server README's table): the spool file,
//! the alert webhook, the caller-view cache, budget leases ([`stratai_guardrails::lease`]),
//! batched usage writes ([`super::batch`]) and the Redis that shares rate limits across
//! instances ([`stratai_store::RedisRateLimiter`]; while it is unreachable a request is
//! decided by the instance's own limiter, logged at most once a minute).
//!
//! Outside dev mode (OIDC configured) the gateway needs an LLM upstream: without LiteLLM it
//! refuses to start instead of answering with the offline demo provider.
//!
//! The budget lease and usage batch settings are the high-throughput mode: with both, a
//! request makes no database round trip on its path once its member's view is cached. Hard
//! budget limits hold in both modes; what changes is how soon spend and records reach the
//! database.

use std::sync::Arc;
use std::time::Duration;

use stratai_core::ports::LlmGateway;
use stratai_guardrails::GatekeeperConfig;
use stratai_guardrails::runtime::alerts::AlertSink;
use stratai_guardrails::runtime::demo::{DemoConfig, DemoProvider};
use stratai_guardrails::runtime::{
    Runtime, RuntimeHandle, RuntimeSettings, RuntimeStores, UsageBatching, lease_config,
};
use stratai_litellm::integration::{Integration, IntegrationStores};
use stratai_store::RedisRateLimiter;
use url::Url;

use super::GatewayState;
use crate::api::litellm::desk_alerts;
use crate::auth::Auth;
use crate::config::Config;
use crate::stores::Stores;

/// The gateway's settings: the runtime's ([`runtime_settings`] reads them from [`Config`])
/// and what is the server's own.
#[derive(Clone)]
pub struct GatewayOptions {
    /// The runtime's settings: view cache, budget leases, batched usage writes, the usage
    /// spool and its replay, guardrail reloads, the heartbeat, prices.
    pub runtime: RuntimeSettings,
    /// Budget alert webhook.
    pub alert_webhook: Option<Url>,
    /// A provider to use instead of the configured one (tests, embedding).
    pub llm: Option<(Arc<dyn LlmGateway>, &'static str)>,
    /// Settings of the demo provider when it is used.
    pub demo: DemoConfig,
    /// How often the in-process LiteLLM sync reads the outbox (when LiteLLM is configured).
    pub sync_interval: Duration,
    /// Redis for rate limits shared across instances (`None`: per-instance limits).
    pub redis_url: Option<String>,
}

impl std::fmt::Debug for GatewayOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayOptions")
            .field("runtime", &self.runtime)
            .field(
                "alert_webhook",
                &self.alert_webhook.as_ref().map(Url::as_str),
            )
            .finish_non_exhaustive()
    }
}

impl GatewayOptions {
    /// The options `config` sets; the rest (reload and replay intervals) at their defaults.
    #[must_use]
    pub fn from_config(config: &Config) -> Self {
        let g = &config.gateway;
        Self {
            runtime: runtime_settings(config),
            alert_webhook: g.alert_webhook.clone(),
            llm: None,
            demo: DemoConfig {
                chunk_chars: 0,
                chunk_delay: g.demo_chunk_delay,
                answer_delay: Duration::ZERO,
            },
            sync_interval: Duration::from_secs(1),
            redis_url: g.redis_url.as_ref().map(|u| u.expose().to_owned()),
        }
    }
}

/// The runtime's settings `config` sets (its gateway section and prices); the guardrail
/// reload (every 5 s) and spool replay (every 10 s) at the runtime's defaults.
#[must_use]
pub fn runtime_settings(config: &Config) -> RuntimeSettings {
    let g = &config.gateway;
    RuntimeSettings {
        view_cache_ttl: g.view_cache_ttl,
        budget_lease: g
            .budget_lease
            .map(|lease| lease_config(lease.max_age, lease.block_requests)),
        usage_batching: g.usage_batch.then(|| UsageBatching {
            linger: g.usage_batch_linger,
            ..UsageBatching::default()
        }),
        spool: Some(g.usage_spool.clone()),
        liveness: g.liveness,
        gatekeeper: GatekeeperConfig {
            prices: config.prices.clone(),
            ..GatekeeperConfig::default()
        },
        ..RuntimeSettings::default()
    }
}

/// What must be flushed and stopped at graceful shutdown: the runtime's handle.
pub type Drainer = RuntimeHandle;

/// Builds the gateway's state and starts its background tasks (spool replay, guardrail
/// reload). Must run inside a Tokio runtime.
pub async fn build_state(
    config: &Config,
    auth: Arc<Auth>,
    stores: &Stores,
    options: GatewayOptions,
) -> Result<GatewayState, String> {
    let mut upstream = None;
    let mut litellm: Option<Integration> = None;
    let mut start_sync = None;
    let (llm, provider): (Arc<dyn LlmGateway>, &'static str) = match (options.llm, &config.litellm)
    {
        (Some(given), _) => given,
        (None, Some(l)) => {
            let wired = Integration::new(
                &l.proxy,
                IntegrationStores {
                    directory: stores.directory.clone(),
                    tiers: stores.tiers.clone(),
                    budgets: stores.budgets.clone(),
                    usage: stores.usage.clone(),
                    outbox: stores.outbox.clone(),
                    key_vault: stores.key_vault.clone(),
                },
            )?;
            upstream = Some(wired.client.clone());
            tracing::info!(url = %l.proxy.url, "chat goes through the LiteLLM proxy with each member's virtual key");
            if wired.vault_ephemeral {
                tracing::warn!(
                    vault_key_id = %wired.vault_key_id,
                    "STRATAI_VAULT_KEY is not set (dev mode): members' LiteLLM virtual keys are sealed with an EPHEMERAL master key that dies with this process, so every key is regenerated after a restart and litellm-worker cannot read them; set STRATAI_VAULT_KEY (32 bytes, e.g. `openssl rand -base64 32`) to keep them"
                );
            } else {
                tracing::info!(
                    vault_key_id = %wired.vault_key_id,
                    replace_foreign = l.proxy.vault_replace_foreign,
                    "members' LiteLLM virtual keys are sealed in the database with the configured vault master key"
                );
            }
            let gateway: Arc<dyn LlmGateway> = wired.gateway.clone();
            litellm = Some(wired);
            (gateway, "litellm")
        }
        (None, None) if !config.dev_mode() => {
            return Err(
                "no LLM upstream outside dev mode: OIDC is configured but LITELLM_URL and \
                 LITELLM_MASTER_KEY are not; the offline demo provider answers in dev mode only"
                    .to_owned(),
            );
        }
        (None, None) => {
            tracing::warn!("{}", DemoProvider::banner());
            (Arc::new(DemoProvider::new(options.demo)), "demo")
        }
    };
    let shared_rates = match &options.redis_url {
        Some(url) => {
            let limiter = RedisRateLimiter::new(url).map_err(|e| e.to_string())?;
            match limiter.ping().await {
                Ok(()) => tracing::info!("rate limits are shared through Redis"),
                Err(e) => tracing::warn!(
                    error = %e,
                    "Redis does not answer: rate limits are per instance until it does"
                ),
            }
            Some(limiter)
        }
        None => None,
    };
    let alerts = AlertSink::webhook(options.alert_webhook);
    let litellm_spend = match (&litellm, &config.litellm) {
        (Some(wired), Some(l)) => {
            let desk = Arc::new(wired.spend_desk(desk_alerts(alerts.clone())));
            if l.proxy.callback_secret.is_some() {
                tracing::info!(
                    "LiteLLM's spend callback is accepted at POST /api/litellm/spend-callback"
                );
            }
            if l.sync_in_process {
                tracing::info!(
                    poll_secs = l.proxy.spend_poll.as_secs(),
                    "the LiteLLM sync and spend-log poll run in-process"
                );
                // Started once the runtime (and its guardrail policy) exists.
                let runner = wired.runner(&desk, options.sync_interval);
                start_sync = Some((runner, desk.clone()));
            } else {
                tracing::info!(
                    "the LiteLLM outbox sync and spend-log poll are left to litellm-worker (STRATAI_LITELLM_SYNC=worker); members' keys come from the shared vault"
                );
            }
            Some(desk)
        }
        _ => None,
    };
    let mut builder = Runtime::builder(RuntimeStores {
        directory: stores.directory.clone(),
        tiers: stores.tiers.clone(),
        budgets: stores.budgets.clone(),
        usage: stores.usage.clone(),
        rules: stores.guardrails.clone(),
    })
    .settings(options.runtime)
    .provider(llm, provider)
    .alerts(alerts);
    if let Some(limiter) = shared_rates {
        builder = builder.shared_rate_limiter(Arc::new(limiter));
    }
    let (pipeline, drainer) = builder.build().await.map_err(|e| e.to_string())?;
    if let Some(wired) = &litellm {
        // The rate-limit guardrails as members' key limits: the runtime's compiled policy
        // (reloaded from the store every `guardrail_reload`); until now the sync failed as
        // transient and retried.
        wired.key_limits.set(pipeline.deps().guardrails.clone());
    }
    if let Some((runner, desk)) = start_sync {
        runner.spawn(std::future::pending(), move |tick| {
            tick.log();
            desk.observe_tick(tick);
        });
    }
    // Make the metrics recorder exist before the first request, with its upkeep running.
    crate::metrics::start();
    Ok(GatewayState {
        auth,
        pipeline,
        provider,
        upstream,
        drainer,
        litellm_spend,
    })
}
