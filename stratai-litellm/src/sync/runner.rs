//! The sync loop every process that runs the sync uses (the server in-process,
//! `litellm-worker`): outbox passes, a reconcile (and key rotation ahead of expiry) on its
//! cadence, the spend-log poll and, where no runtime reloads it, the guardrail rules behind
//! members' key limits.
//!
//! [`SyncRunner::tick`] runs whatever is due at one instant and returns a [`TickReport`]; the
//! caller decides what to say about it (the worker prints, the server logs and feeds its
//! metrics). [`SyncRunner::run_until`] ticks every [`SyncSchedule::interval`] until its
//! shutdown future resolves. The instant is a parameter, so the schedule is tested without
//! waiting for it.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use stratai_core::StoreError;
use stratai_core::ports::{DirectoryStore, GuardrailStore, TierStore};
use tokio::time::Instant;

use super::{DriftReport, PassReport, PolicyKeyLimits, RotationReport, SyncEngine, SyncError};
use crate::spend::{Imported, PollReport, SpendError, SpendImporter};

/// How far a spend-log poll's window ends behind now: LiteLLM writes spend logs in batches.
pub const SPEND_LOG_LAG: Duration = Duration::from_secs(15);

/// When a periodic step runs: every `every`, the first time at the first tick (`at_start`)
/// or one period after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cadence {
    /// The period.
    pub every: Duration,
    /// Whether the first tick runs the step.
    pub at_start: bool,
}

impl Cadence {
    /// Every `every`, starting at the first tick.
    #[must_use]
    pub const fn from_start(every: Duration) -> Self {
        Self {
            every,
            at_start: true,
        }
    }

    /// Every `every`, the first time one period after the first tick.
    #[must_use]
    pub const fn after_first(every: Duration) -> Self {
        Self {
            every,
            at_start: false,
        }
    }
}

/// When the runner does what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncSchedule {
    /// Pause between ticks; every tick runs one pass over the outbox.
    pub interval: Duration,
    /// The directory reconcile, followed by the rotation of keys expiring soon.
    pub reconcile: Cadence,
    /// Whether a reconcile repairs the drift it finds.
    pub repair: bool,
    /// The spend-log poll (when the runner has an importer).
    pub spend_poll: Cadence,
    /// How far back a spend-log poll reads; its window ends [`SPEND_LOG_LAG`] behind now.
    pub spend_window: Duration,
    /// The guardrail reload (when the runner has a [`GuardrailSource`]).
    pub guardrail_reload: Cadence,
}

impl Default for SyncSchedule {
    /// A pass every second, a repairing reconcile at start and every five minutes, the
    /// spend-log poll of the last hour at start and every minute, the guardrail rules at
    /// start and every five seconds.
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(1),
            reconcile: Cadence::from_start(Duration::from_secs(300)),
            repair: true,
            spend_poll: Cadence::from_start(Duration::from_secs(60)),
            spend_window: Duration::from_secs(3600),
            guardrail_reload: Cadence::from_start(Duration::from_secs(5)),
        }
    }
}

/// Where the runner recompiles the guardrail rules whose rate limits become members' key
/// limits, for a process without a guardrail runtime that reloads them (`litellm-worker`).
#[derive(Clone)]
pub struct GuardrailSource {
    /// The limits the sync engine's source reads.
    pub limits: Arc<PolicyKeyLimits>,
    /// Directory store.
    pub directory: Arc<dyn DirectoryStore>,
    /// Tier store.
    pub tiers: Arc<dyn TierStore>,
    /// Guardrail rule store.
    pub rules: Arc<dyn GuardrailStore>,
}

impl std::fmt::Debug for GuardrailSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuardrailSource")
            .field("loaded", &self.limits.is_loaded())
            .finish_non_exhaustive()
    }
}

/// A guardrail reload that failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReloadFailure {
    /// Why.
    pub error: String,
    /// Whether a policy loaded earlier stays in force (otherwise members' keys wait for one).
    pub previous_in_force: bool,
}

/// One spend-log poll: the report and every row's outcome (for alerts and metrics).
#[derive(Debug)]
pub struct SpendPoll {
    /// The counts.
    pub report: PollReport,
    /// Each row's outcome.
    pub outcomes: Vec<Imported>,
}

/// What one [`SyncRunner::tick`] did; a step that was not due is `None`.
#[derive(Debug)]
pub struct TickReport {
    /// The guardrail reload: the policy version loaded.
    pub guardrails: Option<Result<u64, ReloadFailure>>,
    /// The pass over the outbox (every tick).
    pub pass: Result<PassReport, StoreError>,
    /// The reconcile, and when it ran.
    pub reconcile: Option<(DateTime<Utc>, Result<DriftReport, SyncError>)>,
    /// The key rotation that follows every reconcile.
    pub rotation: Option<Result<RotationReport, SyncError>>,
    /// The spend-log poll.
    pub spend: Option<Result<SpendPoll, SpendError>>,
}

impl TickReport {
    /// Logs the tick with `tracing`, as a process that logs rather than prints reports it
    /// (the server): at info a pass that read events, a reconcile that found drift, keys
    /// rotated, a spend poll that recorded direct calls or found mismatches; every failure
    /// at warn. Quiet ticks log nothing.
    pub fn log(&self) {
        if let Some(Err(failure)) = &self.guardrails {
            tracing::warn!(
                error = %failure.error,
                previous_in_force = failure.previous_in_force,
                "guardrail rules not reloaded for members' key limits"
            );
        }
        match &self.pass {
            Ok(pass) if pass.events > 0 => tracing::info!(?pass, "litellm sync pass"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "litellm sync: outbox failed"),
        }
        match &self.reconcile {
            Some((_, Ok(r))) if !r.drifts.is_empty() => tracing::info!(
                drifts = r.drifts.len(),
                repaired = r.repaired,
                "litellm reconcile repaired drift"
            ),
            Some((_, Err(e))) => tracing::warn!(error = %e, "litellm reconcile failed"),
            Some((_, Ok(_))) | None => {}
        }
        match &self.rotation {
            Some(Ok(r)) if !r.rotated.is_empty() || r.revoked > 0 => tracing::info!(
                rotated = r.rotated.len(),
                revoked = r.revoked,
                "litellm virtual keys rotated ahead of expiry"
            ),
            Some(Err(e)) => tracing::warn!(error = %e, "litellm key rotation failed"),
            Some(Ok(_)) | None => {}
        }
        match &self.spend {
            Some(Ok(poll)) if poll.report.direct_recorded > 0 || poll.report.mismatches > 0 => {
                tracing::info!(report = ?poll.report, "litellm spend poll");
            }
            Some(Err(e)) => {
                tracing::warn!(error = %e, "litellm spend poll failed; retried next time");
            }
            Some(Ok(_)) | None => {}
        }
    }
}

/// Runs a [`SyncEngine`] on a [`SyncSchedule`] (see the module docs).
pub struct SyncRunner {
    engine: Arc<SyncEngine>,
    schedule: SyncSchedule,
    spend: Option<Arc<SpendImporter>>,
    guardrails: Option<GuardrailSource>,
    started: Option<Instant>,
    last_reconcile: Option<Instant>,
    last_spend: Option<Instant>,
    last_reload: Option<Instant>,
}

impl std::fmt::Debug for SyncRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncRunner")
            .field("schedule", &self.schedule)
            .field("spend", &self.spend.is_some())
            .field("guardrails", &self.guardrails)
            .finish_non_exhaustive()
    }
}

/// Whether a step last run at `last` (never: `None`) on `cadence` is due at `now`, the
/// runner having started at `started`.
fn due(cadence: Cadence, last: Option<Instant>, started: Instant, now: Instant) -> bool {
    match last {
        Some(last) => now.saturating_duration_since(last) >= cadence.every,
        None => cadence.at_start || now.saturating_duration_since(started) >= cadence.every,
    }
}

impl SyncRunner {
    /// A runner of `engine` on `schedule`, without spend-log polls or guardrail reloads.
    #[must_use]
    pub fn new(engine: Arc<SyncEngine>, schedule: SyncSchedule) -> Self {
        Self {
            engine,
            schedule,
            spend: None,
            guardrails: None,
            started: None,
            last_reconcile: None,
            last_spend: None,
            last_reload: None,
        }
    }

    /// Polls LiteLLM's spend logs into `importer` on [`SyncSchedule::spend_poll`].
    #[must_use]
    pub fn with_spend_poll(mut self, importer: Arc<SpendImporter>) -> Self {
        self.spend = Some(importer);
        self
    }

    /// Recompiles the guardrail rules from `source` on [`SyncSchedule::guardrail_reload`].
    #[must_use]
    pub fn with_guardrail_reload(mut self, source: GuardrailSource) -> Self {
        self.guardrails = Some(source);
        self
    }

    /// The engine.
    #[must_use]
    pub fn engine(&self) -> &Arc<SyncEngine> {
        &self.engine
    }

    /// The schedule.
    #[must_use]
    pub fn schedule(&self) -> &SyncSchedule {
        &self.schedule
    }

    /// Runs what is due at `now`: the guardrail reload, one outbox pass, the reconcile and
    /// key rotation, the spend-log poll, in that order. The first call is the start.
    pub async fn tick(&mut self, now: Instant) -> TickReport {
        let started = *self.started.get_or_insert(now);
        let schedule = self.schedule.clone();
        let mut guardrails = None;
        if let Some(source) = &self.guardrails
            && due(schedule.guardrail_reload, self.last_reload, started, now)
        {
            self.last_reload = Some(now);
            guardrails = Some(reload(source).await);
        }
        let pass = self.engine.run_once().await;
        let (mut reconcile, mut rotation) = (None, None);
        if due(schedule.reconcile, self.last_reconcile, started, now) {
            self.last_reconcile = Some(now);
            let result = self.engine.reconcile(schedule.repair).await;
            reconcile = Some((Utc::now(), result));
            rotation = Some(self.engine.rotate_keys(Utc::now()).await);
        }
        let mut spend = None;
        if self.spend.is_some() && due(schedule.spend_poll, self.last_spend, started, now) {
            self.last_spend = Some(now);
            spend = self.poll_spend(Utc::now()).await;
        }
        TickReport {
            guardrails,
            pass,
            reconcile,
            rotation,
            spend,
        }
    }

    /// Recompiles the guardrail rules now (`None` without a [`GuardrailSource`]).
    pub async fn reload_guardrails(&self) -> Option<Result<u64, ReloadFailure>> {
        Some(reload(self.guardrails.as_ref()?).await)
    }

    /// Polls the spend logs of [`SyncSchedule::spend_window`] ending [`SPEND_LOG_LAG`] before
    /// `now`, now (`None` without an importer).
    pub async fn poll_spend(&self, now: DateTime<Utc>) -> Option<Result<SpendPoll, SpendError>> {
        let importer = self.spend.as_ref()?;
        let lag = chrono::Duration::from_std(SPEND_LOG_LAG).unwrap_or(chrono::Duration::zero());
        let window = chrono::Duration::from_std(self.schedule.spend_window)
            .unwrap_or(chrono::Duration::hours(1));
        let to = now - lag;
        Some(
            importer
                .poll(self.engine.client(), to - window, to, now)
                .await
                .map(|(report, outcomes)| SpendPoll { report, outcomes }),
        )
    }

    /// Ticks every [`SyncSchedule::interval`], handing each report to `observe`, until
    /// `shutdown` resolves.
    pub async fn run_until(
        mut self,
        shutdown: impl std::future::Future<Output = ()>,
        mut observe: impl FnMut(&TickReport),
    ) {
        tokio::pin!(shutdown);
        loop {
            let report = self.tick(Instant::now()).await;
            observe(&report);
            tokio::select! {
                () = &mut shutdown => return,
                () = tokio::time::sleep(self.schedule.interval) => {}
            }
        }
    }

    /// [`run_until`](Self::run_until) on a task of its own. Must run inside a Tokio runtime.
    pub fn spawn(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
        observe: impl FnMut(&TickReport) + Send + 'static,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(self.run_until(shutdown, observe))
    }
}

async fn reload(source: &GuardrailSource) -> Result<u64, ReloadFailure> {
    source
        .limits
        .load(
            source.directory.as_ref(),
            source.tiers.as_ref(),
            source.rules.as_ref(),
        )
        .await
        .map_err(|error| ReloadFailure {
            error,
            previous_in_force: source.limits.is_loaded(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_at_start_runs_at_the_first_tick_then_every_period() {
        let t0 = Instant::now();
        let every = Duration::from_secs(60);
        let cadence = Cadence::from_start(every);
        assert!(due(cadence, None, t0, t0));
        assert!(!due(cadence, Some(t0), t0, t0 + Duration::from_secs(59)));
        assert!(due(cadence, Some(t0), t0, t0 + every));
    }

    #[test]
    fn a_step_after_the_first_waits_one_period_from_the_start() {
        let t0 = Instant::now();
        let every = Duration::from_secs(300);
        let cadence = Cadence::after_first(every);
        assert!(!due(cadence, None, t0, t0));
        assert!(!due(cadence, None, t0, t0 + Duration::from_secs(299)));
        assert!(due(cadence, None, t0, t0 + every));
    }
}
