//! [`RuntimeBuilder`]: a [`Runtime`] from its stores and typed settings, and the
//! [`RuntimeHandle`] that owns its background tasks.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use stratai_core::ids::InstanceId;
use stratai_core::ports::{
    BudgetLedger, Clock, DirectoryStore, GuardrailStore, LlmGateway, RateLimitStore, SystemClock,
    TierStore, UsageStore,
};
use tokio::task::JoinHandle;

use super::alerts::AlertSink;
use super::batch::{DEFAULT_LINGER, LoggedUsage};
use super::demo::{DemoConfig, DemoProvider};
use super::fresh_cache::locked;
use super::liveness::{self, AbandonedReport, Liveness};
use super::spool::{DEFAULT_SYNC_EVERY, JournaledLedger, SpoolError, UsageLog};
use super::{RESERVATION_TTL_SECS, Runtime, RuntimeDeps};
use crate::{Gatekeeper, GatekeeperConfig, Guardrails, LeaseConfig, LeasedLedger, Policy};

/// The storage ports a [`Runtime`] works on.
#[derive(Clone)]
pub struct RuntimeStores {
    /// Organizations, members, groups.
    pub directory: Arc<dyn DirectoryStore>,
    /// Tier catalog and subscriptions.
    pub tiers: Arc<dyn TierStore>,
    /// Budgets and their ledger.
    pub budgets: Arc<dyn BudgetLedger>,
    /// Usage records.
    pub usage: Arc<dyn UsageStore>,
    /// Guardrail rules.
    pub rules: Arc<dyn GuardrailStore>,
}

impl std::fmt::Debug for RuntimeStores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuntimeStores").finish_non_exhaustive()
    }
}

/// Batched usage writes (see [`LoggedUsage`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UsageBatching {
    /// How many records may wait for the writer (beyond, a record is written to the store
    /// before its response).
    pub capacity: usize,
    /// How long the writer collects records after a batch's first one.
    pub linger: Duration,
}

impl Default for UsageBatching {
    fn default() -> Self {
        Self {
            capacity: 65_536,
            linger: DEFAULT_LINGER,
        }
    }
}

/// A runtime's settings, all typed (the server builds them from its configuration; the
/// library reads no environment).
#[derive(Clone, Debug)]
pub struct RuntimeSettings {
    /// How long a caller's organization, membership, groups, tier access and budget list are
    /// reused (zero: never).
    pub view_cache_ttl: Duration,
    /// Budget leases (`None`: a reservation per request in the ledger, and the budget list
    /// read at every admission).
    pub budget_lease: Option<LeaseConfig>,
    /// Batched usage writes (`None`: each record written to the store before the response).
    /// Needs the usage log.
    pub usage_batching: Option<UsageBatching>,
    /// The usage log file (see [`super::spool`]): every record and every shared reservation
    /// is written there first, so a killed process loses nothing and the next start settles
    /// what it held (`None`: records go straight to the store; not crash-safe).
    pub spool: Option<PathBuf>,
    /// How often records the store refused (and settlements the ledger refused) are retried.
    pub spool_replay: Duration,
    /// How often the usage log is `fsync`ed (the bound on what a power loss can take).
    pub log_sync: Duration,
    /// How often the guardrail policy is recompiled from the store (`None`: loaded once at
    /// build, then only by [`Runtime::reload_guardrails`]).
    pub guardrail_reload: Option<Duration>,
    /// The instance's heartbeat in the shared store and the settlement of dead instances'
    /// budget leases (see [`super::liveness`]; `None`: no heartbeat, so this instance's
    /// leases name no holder and expire if it dies, and it settles no one else's).
    pub liveness: Option<Liveness>,
    /// The Gatekeeper's settings (prices, defaults).
    pub gatekeeper: GatekeeperConfig,
}

impl Default for RuntimeSettings {
    fn default() -> Self {
        Self {
            view_cache_ttl: Duration::ZERO,
            budget_lease: None,
            usage_batching: None,
            spool: None,
            spool_replay: Duration::from_secs(10),
            log_sync: DEFAULT_SYNC_EVERY,
            guardrail_reload: Some(Duration::from_secs(5)),
            liveness: Some(Liveness::default()),
            gatekeeper: GatekeeperConfig::default(),
        }
    }
}

/// Why a runtime could not be built.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The spool could not be opened.
    #[error("usage spool: {0}")]
    Spool(#[from] SpoolError),
    /// Batched usage writes without a usage log (a killed process would lose the queue).
    #[error("usage batching needs a usage log (RuntimeBuilder::spool)")]
    BatchingWithoutSpool,
    /// The initial guardrail policy load is refused (only with
    /// [`RuntimeBuilder::require_policy`]).
    #[error("guardrail policy: {0}")]
    Policy(String),
}

/// Builds a [`Runtime`] (see [`Runtime::builder`]).
pub struct RuntimeBuilder {
    stores: RuntimeStores,
    settings: RuntimeSettings,
    alerts: AlertSink,
    llm: Option<(Arc<dyn LlmGateway>, &'static str)>,
    shared_rates: Option<Arc<dyn RateLimitStore>>,
    clock: Arc<dyn Clock>,
    require_policy: bool,
}

impl std::fmt::Debug for RuntimeBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuntimeBuilder")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl RuntimeBuilder {
    pub(super) fn new(stores: RuntimeStores) -> Self {
        Self {
            stores,
            settings: RuntimeSettings::default(),
            alerts: AlertSink::log(),
            llm: None,
            shared_rates: None,
            clock: Arc::new(SystemClock),
            require_policy: false,
        }
    }

    /// All settings at once (replacing any set before).
    #[must_use]
    pub fn settings(mut self, settings: RuntimeSettings) -> Self {
        self.settings = settings;
        self
    }

    /// The LLM provider and its label in metrics (default: the offline [`DemoProvider`]).
    #[must_use]
    pub fn provider(mut self, llm: Arc<dyn LlmGateway>, label: &'static str) -> Self {
        self.llm = Some((llm, label));
        self
    }

    /// Reuse a caller's view for at most `ttl` (see [`RuntimeSettings::view_cache_ttl`]).
    #[must_use]
    pub fn cache(mut self, ttl: Duration) -> Self {
        self.settings.view_cache_ttl = ttl;
        self
    }

    /// Reserve budget in leases (see [`crate::lease`]).
    #[must_use]
    pub fn budget_leases(mut self, lease: LeaseConfig) -> Self {
        self.settings.budget_lease = Some(lease);
        self
    }

    /// Write usage records in batches off the response path.
    #[must_use]
    pub fn usage_batching(mut self, batching: UsageBatching) -> Self {
        self.settings.usage_batching = Some(batching);
        self
    }

    /// The usage log file (see [`RuntimeSettings::spool`]).
    #[must_use]
    pub fn spool(mut self, path: impl Into<PathBuf>) -> Self {
        self.settings.spool = Some(path.into());
        self
    }

    /// Where budget and overage alerts go (default: the log).
    #[must_use]
    pub fn alerts(mut self, sink: AlertSink) -> Self {
        self.alerts = sink;
        self
    }

    /// Rate limits shared across instances (e.g. stratai-store's Redis limiter).
    #[must_use]
    pub fn shared_rate_limiter(mut self, store: Arc<dyn RateLimitStore>) -> Self {
        self.shared_rates = Some(store);
        self
    }

    /// The Gatekeeper's settings (prices, defaults).
    #[must_use]
    pub fn gatekeeper(mut self, config: GatekeeperConfig) -> Self {
        self.settings.gatekeeper = config;
        self
    }

    /// The clock (default: the system's).
    #[must_use]
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Refuse to build when the stored guardrail rules do not compile (default: log and run
    /// with the empty policy until a reload succeeds).
    #[must_use]
    pub fn require_policy(mut self) -> Self {
        self.require_policy = true;
        self
    }

    /// Builds the runtime, loads the guardrail policy and starts the background tasks. Must
    /// run inside a Tokio runtime.
    pub async fn build(self) -> Result<(Runtime, RuntimeHandle), RuntimeError> {
        let Self {
            stores,
            settings,
            alerts,
            llm,
            shared_rates,
            clock,
            require_policy,
        } = self;
        let (llm, provider) = llm.unwrap_or_else(|| {
            tracing::warn!("{}", DemoProvider::banner());
            (Arc::new(DemoProvider::new(DemoConfig::default())), "demo")
        });
        let log = match &settings.spool {
            Some(path) => Some(Arc::new(UsageLog::open(path)?)),
            None => None,
        };
        let handle = RuntimeHandle {
            alerts: alerts.clone(),
            ..RuntimeHandle::default()
        };
        let mut tasks = Vec::new();
        // This instance, alive from its first heartbeat on (before any lease names it).
        let instance = InstanceId::new();
        let beating = match settings.liveness {
            Some(_) => match stores.budgets.beat(instance, chrono::Utc::now()).await {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(error = %e, "heartbeat not written; budget leases name no holder and expire if this process dies");
                    false
                }
            },
            None => false,
        };
        // The shared ledger, every reservation journaled in the usage log first.
        let shared: Arc<dyn BudgetLedger> = match &log {
            Some(log) => Arc::new(JournaledLedger::new(stores.budgets.clone(), log.clone())),
            None => stores.budgets.clone(),
        };
        let mut leases = None;
        let ledger: Arc<dyn BudgetLedger> = match &settings.budget_lease {
            Some(lease) => {
                tracing::info!(
                    max_age_ms = lease.max_age.as_millis(),
                    block_requests = lease.block_requests,
                    "budget leases on: budget is reserved in blocks"
                );
                // Named only when another instance can settle them from their records: the
                // heartbeat is written and records carry their lease (the usage log).
                let holder = (beating && log.is_some()).then_some(instance);
                let lease = LeaseConfig {
                    holder,
                    ..lease.clone()
                };
                let leased = Arc::new(LeasedLedger::new(shared.clone(), lease.clone()));
                if let Some(log) = &log {
                    log.set_leases(leased.clone());
                }
                tasks.push(spawn_lease_flusher(
                    leased.clone(),
                    alerts.clone(),
                    lease.max_age,
                ));
                leases = Some(leased.clone());
                leased
            }
            None => shared.clone(),
        };
        let mut batch = None;
        let usage: Arc<dyn UsageStore> = match (&log, settings.usage_batching) {
            (Some(log), batching) => {
                if batching.is_some() {
                    tracing::info!("usage records are written in batches off the response path");
                }
                let (logged, writer) = LoggedUsage::spawn(
                    stores.usage.clone(),
                    log.clone(),
                    ledger.clone(),
                    alerts.clone(),
                    batching,
                    settings.spool_replay,
                );
                // What a previous process left: its records to the store, its reservations
                // settled from them, before the first request.
                logged.pass(ledger.as_ref(), &alerts).await;
                tasks.push(writer);
                tasks.push(log.clone().spawn_syncer(settings.log_sync));
                batch = Some(logged.clone());
                logged
            }
            (None, Some(_)) => return Err(RuntimeError::BatchingWithoutSpool),
            (None, None) => stores.usage.clone(),
        };
        let guardrails = Arc::new(Guardrails::new(Policy::empty()));
        let gatekeeper = Gatekeeper::new(
            stores.directory.clone(),
            stores.tiers.clone(),
            ledger.clone(),
            usage.clone(),
            guardrails.clone(),
            settings.gatekeeper.clone(),
        );
        let gatekeeper = match shared_rates {
            Some(store) => gatekeeper.with_shared_rate_limiter(store),
            None => gatekeeper,
        };
        let runtime = Runtime::new(RuntimeDeps {
            directory: stores.directory.clone(),
            tiers: stores.tiers.clone(),
            ledger: ledger.clone(),
            usage,
            spool: log.clone(),
            llm,
            provider,
            alerts: alerts.clone(),
            clock,
            guardrails,
            gatekeeper,
            rules: stores.rules.clone(),
            view_ttl: settings.view_cache_ttl,
            fresh_budgets: settings.budget_lease.is_none(),
        });
        if let Err(e) = runtime.reload_guardrails().await {
            if require_policy {
                return Err(RuntimeError::Policy(e));
            }
            tracing::warn!(error = %e, "guardrail policy not loaded at start; running with the empty policy until the next reload");
        }
        if let Some(every) = settings.guardrail_reload {
            tasks.push(runtime.spawn_guardrail_reloader(every));
        }
        let upkeep = settings.liveness.map(|liveness| {
            tasks.push(liveness::spawn(
                instance,
                stores.budgets.clone(),
                stores.usage.clone(),
                alerts.clone(),
                liveness,
            ));
            Arc::new(Upkeep {
                instance,
                ledger: stores.budgets.clone(),
                usage: stores.usage.clone(),
                liveness,
            })
        });
        let handle = RuntimeHandle {
            leases,
            batch,
            upkeep,
            tasks: Arc::new(Mutex::new(tasks)),
            ..handle
        };
        Ok((runtime, handle))
    }
}

/// Owns a runtime's background tasks: [`drain`](Self::drain) flushes what they hold (open
/// budget leases, queued usage records), [`shutdown`](Self::shutdown) drains and stops them.
/// Cheap to clone (clones share the tasks).
#[derive(Clone, Debug, Default)]
pub struct RuntimeHandle {
    leases: Option<Arc<LeasedLedger>>,
    batch: Option<Arc<LoggedUsage>>,
    upkeep: Option<Arc<Upkeep>>,
    alerts: AlertSink,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

/// What the heartbeat and the settlement of dead instances' leases work on.
struct Upkeep {
    instance: InstanceId,
    /// The shared store's ledger (not journaled: other instances' leases are not this log's).
    ledger: Arc<dyn BudgetLedger>,
    usage: Arc<dyn UsageStore>,
    liveness: Liveness,
}

impl std::fmt::Debug for Upkeep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upkeep")
            .field("instance", &self.instance)
            .field("liveness", &self.liveness)
            .finish_non_exhaustive()
    }
}

impl RuntimeHandle {
    /// This instance's id (the holder its budget leases name), when it writes a heartbeat.
    #[must_use]
    pub fn instance(&self) -> Option<InstanceId> {
        self.upkeep.as_ref().map(|u| u.instance)
    }

    /// Settles now the budget leases of instances whose heartbeat is older than `dead_after`
    /// (what the upkeep task does every few heartbeats; see [`liveness::settle_abandoned`]),
    /// firing the alerts it raises. Nothing without a heartbeat ([`RuntimeSettings::liveness`]).
    pub async fn settle_abandoned_leases(
        &self,
    ) -> Result<AbandonedReport, stratai_core::StoreError> {
        let Some(u) = &self.upkeep else {
            return Ok(AbandonedReport::default());
        };
        let mut fired = Vec::new();
        let report = liveness::settle_abandoned(
            u.ledger.as_ref(),
            u.usage.as_ref(),
            Some(u.instance),
            u.liveness.dead_after,
            chrono::Utc::now(),
            &mut fired,
        )
        .await;
        self.alerts.fire(&fired);
        report
    }

    /// Stops every background task at once, draining nothing and keeping the heartbeat row:
    /// what a killed process leaves (its budget leases open, its queued records in the usage
    /// log). For tests and tools that simulate a crash; a service calls
    /// [`shutdown`](Self::shutdown).
    pub fn abort(&self) {
        for task in std::mem::take(&mut *locked(&self.tasks)) {
            task.abort();
        }
    }

    /// Settles every budget lease and writes every queued usage record, waiting at most
    /// `patience` for requests still in flight. The tasks keep running (call after the
    /// service stopped taking requests, or at any time to make everything durable now).
    pub async fn drain(&self, patience: Duration) {
        let deadline = tokio::time::Instant::now() + patience;
        if let Some(leases) = &self.leases {
            loop {
                match leases.close_all(chrono::Utc::now()).await {
                    Ok((0, alerts)) => {
                        self.alerts.fire(&alerts);
                        break;
                    }
                    Ok((_, alerts)) => {
                        self.alerts.fire(&alerts);
                    }
                    Err(e) => tracing::warn!(error = %e, "budget leases not settled yet"),
                }
                if tokio::time::Instant::now() >= deadline {
                    tracing::warn!(
                        open = leases.open_leases(),
                        "budget leases left open at shutdown; their reservations expire in the database"
                    );
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        if let Some(batch) = &self.batch
            && tokio::time::timeout_at(deadline, batch.drain())
                .await
                .is_err()
        {
            tracing::warn!(
                pending = batch.pending(),
                "usage records not in the store at shutdown; they wait in the usage log"
            );
        }
        if let Some(batch) = &self.batch {
            let log = batch.log().clone();
            match tokio::task::spawn_blocking(move || log.sync()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!(error = %e, "usage log not synced at shutdown"),
                Err(e) => tracing::error!(error = %e, "usage log sync task failed"),
            }
        }
    }

    /// [`drain`](Self::drain), then stops the periodic tasks (policy reload, spool replay,
    /// lease upkeep, heartbeat) and removes the heartbeat.
    pub async fn shutdown(&self, patience: Duration) {
        self.drain(patience).await;
        let tasks = std::mem::take(&mut *locked(&self.tasks));
        for task in &tasks {
            task.abort();
        }
        for task in tasks {
            let _ = task.await;
        }
        // Gone: a lease still open (a request outlived the patience) is settled by another
        // instance from its records from now on, not after `dead_after`.
        if let Some(u) = &self.upkeep
            && let Err(e) = u.ledger.retire_instance(u.instance).await
        {
            tracing::warn!(error = %e, "heartbeat not removed; this instance counts as dead after `dead_after`");
        }
    }

    /// How many periodic tasks run.
    #[must_use]
    pub fn running_tasks(&self) -> usize {
        locked(&self.tasks)
            .iter()
            .filter(|t| !t.is_finished())
            .count()
    }
}

/// Every quarter of a lease's age, and whenever the ledger asks (a lease half used, a
/// standby lease used, a lease closed by its last request): settles closed and aged leases
/// (firing the alerts they bring) and opens successors ahead of need, so requests rarely
/// wait for the database.
fn spawn_lease_flusher(
    leases: Arc<LeasedLedger>,
    alerts: AlertSink,
    max_age: Duration,
) -> JoinHandle<()> {
    let every = (max_age / 4).max(Duration::from_millis(10));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = leases.refill_wanted() => {}
            }
            match leases.flush(chrono::Utc::now()).await {
                Ok(fired) => {
                    alerts.fire(&fired);
                }
                Err(e) => tracing::warn!(error = %e, "budget leases not settled; retrying"),
            }
            if let Err(e) = leases.refill(every * 2, chrono::Utc::now()).await {
                tracing::warn!(error = %e, "budget leases not refilled; requests open their own");
            }
        }
    })
}

/// The lease settings a service usually wants: `max_age` and `block_requests` given, the
/// reservation's time to live the runtime's.
#[must_use]
pub fn lease_config(max_age: Duration, block_requests: u32) -> LeaseConfig {
    LeaseConfig {
        max_age,
        block_requests,
        reservation_ttl: chrono::Duration::seconds(RESERVATION_TTL_SECS),
        ..LeaseConfig::default()
    }
}
