//! Building the gateway from the configuration: provider choice (LiteLLM when configured,
//! otherwise the offline demo provider, announced at start), the usage spool, budget alerts,
//! the guardrail engine and their background tasks.
//!
//! With LiteLLM configured, the server also runs stratai-litellm's [`SyncEngine`] in-process:
//! a background task consumes the store's outbox (as `examples/litellm-worker` does) and
//! reconciles with repair at start and every five minutes. The gateway reads members' keys
//! from the engine's vault and asks the engine for a member's key on demand, so the engine is
//! the only code path that creates keys. The vault seals the secrets in the database
//! ([`super::litellm::key_vault`], `STRATAI_VAULT_KEY`), so they survive restarts and are
//! shared with `litellm-worker`. With `STRATAI_LITELLM_SYNC=worker` the server leaves the
//! outbox and reconciles to the worker (run one consumer of the outbox, not both) and only
//! reads keys, pushing a member on demand when the vault has none yet.
//!
//! Environment (all optional):
//! - `STRATAI_USAGE_SPOOL`: spool file (default `./.stratai/usage.spool`);
//! - `STRATAI_ALERT_WEBHOOK_URL`: where budget alerts are POSTed (default: log only);
//! - `STRATAI_DEMO_CHUNK_DELAY_MS`: pause between the demo provider's stream chunks;
//! - `STRATAI_GATEWAY_CACHE_MS`: how long a caller's membership, tier access and budget list
//!   are reused between requests (default 2000; 0 disables).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use stratai_core::ports::{LlmGateway, SystemClock};
use stratai_guardrails::{Gatekeeper, GatekeeperConfig, Guardrails, Policy};
use stratai_litellm::sync::{CoreDirectory, SyncConfig, SyncEngine};
use url::Url;

use super::GatewayState;
use super::litellm::LiteLlmProvider;
use super::pipeline::{Pipeline, PipelineDeps};
use crate::alerts::AlertSink;
use crate::auth::Auth;
use crate::config::Config;
use crate::demo_provider::{DemoConfig, DemoProvider};
use crate::spool::Spool;
use crate::stores::Stores;

/// Gateway settings that are not in [`Config`].
#[derive(Clone)]
pub struct GatewayOptions {
    /// The usage spool file.
    pub spool_path: PathBuf,
    /// Budget alert webhook.
    pub alert_webhook: Option<Url>,
    /// A provider to use instead of the configured one (tests, embedding).
    pub llm: Option<(Arc<dyn LlmGateway>, &'static str)>,
    /// Settings of the demo provider when it is used.
    pub demo: DemoConfig,
    /// How often the guardrail policy is recompiled from the store.
    pub guardrail_reload: Duration,
    /// How often the spool is replayed.
    pub spool_replay: Duration,
    /// How long a caller's membership, tier access and budget list are reused.
    pub view_cache_ttl: Duration,
    /// How often the in-process LiteLLM sync reads the outbox (when LiteLLM is configured).
    pub sync_interval: Duration,
}

impl std::fmt::Debug for GatewayOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayOptions")
            .field("spool_path", &self.spool_path)
            .field(
                "alert_webhook",
                &self.alert_webhook.as_ref().map(Url::as_str),
            )
            .finish_non_exhaustive()
    }
}

impl GatewayOptions {
    /// Options from the environment (see the module docs).
    #[must_use]
    pub fn from_env() -> Self {
        let spool_path = std::env::var("STRATAI_USAGE_SPOOL")
            .ok()
            .filter(|s| !s.trim().is_empty())
            .map_or_else(|| PathBuf::from("./.stratai/usage.spool"), PathBuf::from);
        let delay = std::env::var("STRATAI_DEMO_CHUNK_DELAY_MS")
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
        Self {
            spool_path,
            alert_webhook: AlertSink::webhook_from_env(),
            llm: None,
            demo: DemoConfig {
                chunk_chars: 0,
                chunk_delay: Duration::from_millis(delay),
            },
            guardrail_reload: Duration::from_secs(5),
            spool_replay: Duration::from_secs(10),
            sync_interval: Duration::from_secs(1),
            view_cache_ttl: Duration::from_millis(
                std::env::var("STRATAI_GATEWAY_CACHE_MS")
                    .ok()
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .unwrap_or(2000),
            ),
        }
    }
}

/// How often the in-process sync reconciles LiteLLM with the directory (repairing drift,
/// including keys whose secret this process does not hold, e.g. after a restart).
const RECONCILE_EVERY: Duration = Duration::from_secs(300);

/// The in-process LiteLLM sync: outbox passes every `interval`, a repairing reconcile at
/// start and every [`RECONCILE_EVERY`].
fn spawn_sync(engine: Arc<SyncEngine>, interval: Duration) {
    tokio::spawn(async move {
        let mut last_reconcile: Option<tokio::time::Instant> = None;
        loop {
            match engine.run_once().await {
                Ok(pass) if pass.events > 0 => tracing::info!(?pass, "litellm sync pass"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "litellm sync: outbox failed"),
            }
            if last_reconcile.is_none_or(|t| t.elapsed() >= RECONCILE_EVERY) {
                last_reconcile = Some(tokio::time::Instant::now());
                match engine.reconcile(true).await {
                    Ok(r) if !r.drifts.is_empty() => tracing::info!(
                        drifts = r.drifts.len(),
                        repaired = r.repaired,
                        "litellm reconcile repaired drift"
                    ),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "litellm reconcile failed"),
                }
            }
            tokio::time::sleep(interval).await;
        }
    });
}

/// Builds the gateway's state and starts its background tasks (spool replay, guardrail
/// reload). Must run inside a Tokio runtime.
pub async fn build_state(
    config: &Config,
    auth: Arc<Auth>,
    stores: &Stores,
    options: GatewayOptions,
) -> Result<GatewayState, String> {
    let mut upstream = None;
    let (llm, provider): (Arc<dyn LlmGateway>, &'static str) = match (options.llm, &config.litellm)
    {
        (Some(given), _) => given,
        (None, Some(l)) => {
            let client = stratai_litellm::LiteLlmClient::new(stratai_litellm::ClientConfig::new(
                l.url.as_str().trim_end_matches('/'),
                stratai_litellm::Secret::new(l.master_key.expose()),
            ))
            .map_err(|e| format!("litellm client: {e}"))?;
            upstream = Some(client.clone());
            tracing::info!(url = %l.url, "chat goes through the LiteLLM proxy with each member's virtual key");
            let engine = Arc::new(SyncEngine::new(
                client,
                Arc::new(CoreDirectory::new(
                    stores.directory.clone(),
                    stores.tiers.clone(),
                )),
                stores.outbox.clone(),
                super::litellm::key_vault(l, stores)?,
                SyncConfig::default(),
            ));
            if l.sync_in_process {
                tracing::info!("the LiteLLM sync runs in-process");
                spawn_sync(engine.clone(), options.sync_interval);
            } else {
                tracing::info!(
                    "the LiteLLM outbox sync is left to litellm-worker (STRATAI_LITELLM_SYNC=worker); members' keys come from the shared vault"
                );
            }
            (
                Arc::new(LiteLlmProvider::with_sync_engine(engine)),
                "litellm",
            )
        }
        (None, None) => {
            tracing::warn!("{}", DemoProvider::banner());
            (Arc::new(DemoProvider::new(options.demo)), "demo")
        }
    };
    let spool = Arc::new(
        Spool::open(&options.spool_path)
            .await
            .map_err(|e| e.to_string())?,
    );
    if spool.pending() > 0 {
        tracing::warn!(
            pending = spool.pending(),
            path = %options.spool_path.display(),
            "usage records waiting in the spool; they will be replayed"
        );
    }
    let guardrails = Arc::new(Guardrails::new(Policy::empty()));
    let gatekeeper = Gatekeeper::new(
        stores.directory.clone(),
        stores.tiers.clone(),
        stores.budgets.clone(),
        stores.usage.clone(),
        guardrails.clone(),
        GatekeeperConfig::default(),
    );
    let pipeline = Pipeline::new(PipelineDeps {
        directory: stores.directory.clone(),
        tiers: stores.tiers.clone(),
        ledger: stores.budgets.clone(),
        usage: stores.usage.clone(),
        spool: spool.clone(),
        alerts: AlertSink::new(options.alert_webhook),
        clock: Arc::new(SystemClock),
        guardrails,
        gatekeeper,
        rules: stores.guardrails.clone(),
        view_ttl: options.view_cache_ttl,
    });
    if let Err(e) = pipeline.reload_guardrails().await {
        tracing::warn!(error = %e, "guardrail policy not loaded at start; running with the empty policy until the next reload");
    }
    pipeline.spawn_guardrail_reloader(options.guardrail_reload);
    spool.spawn_replayer(
        stores.budgets.clone(),
        stores.usage.clone(),
        options.spool_replay,
    );
    // Make the metrics recorder exist before the first request.
    let _ = crate::metrics::handle();
    Ok(GatewayState {
        auth,
        pipeline,
        llm,
        provider,
        upstream,
    })
}
