//! Instance liveness: every runtime writes a heartbeat into the shared store, and settles the
//! budget leases of instances whose heartbeat stopped.
//!
//! A budget lease's reservation names its holder (the runtime's [`InstanceId`]), and each
//! request admitted under it carries the lease's id on its usage record. The upkeep task
//! (`spawn`) writes the heartbeat every `heartbeat` and, every few heartbeats, looks for
//! active leases whose holder's heartbeat is older than `dead_after` (or missing: its holder
//! shut down, or never beat) and settles each from the records in the store written under it
//! ([`settle_abandoned`]), the way a restart settles its own leases from its usage log
//! (the spool's `settle_from_records`): spent = what those records charge, the rest
//! released. Two instances doing it at once charge each lease once (the ledger's
//! [`BudgetLedger::settle_total`] is one conditional transaction).
//!
//! What this cannot see: records that were only in the dead instance's local usage log (the
//! batch not yet written, at most the batch linger plus the log's `fsync` interval of
//! traffic). They reach the store, and the ledger (charged after the fact, as overage past a
//! hard limit, alerted by [`super::alerts::AlertSink::late_overage`]), when that instance's
//! disk comes back and its log is replayed at its next start.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use stratai_core::StoreError;
use stratai_core::budget::BudgetAlert;
use stratai_core::ids::InstanceId;
use stratai_core::ports::{BudgetLedger, UsageStore};
use tokio::task::JoinHandle;

use super::alerts::AlertSink;
use super::spool::settle_from_records;

/// How often, by default, a runtime writes its heartbeat.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(2);
/// How old, by default, a heartbeat is when its instance counts as dead.
pub const DEFAULT_DEAD_AFTER: Duration = Duration::from_secs(15);
/// Abandoned leases settled per store read.
const PAGE: u32 = 100;
/// Heartbeats between two looks for abandoned leases.
const RECOVER_EVERY: u32 = 3;

/// The heartbeat's settings (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Liveness {
    /// How often the heartbeat is written.
    pub heartbeat: Duration,
    /// How old a holder's heartbeat is when its leases are settled by another instance.
    /// Keep it well above `heartbeat` (and above the longest pause of a live instance: a live
    /// holder taken for dead has its leases settled under it; its own settlement then charges
    /// what they missed, but until then its requests are admitted on released budget).
    pub dead_after: Duration,
}

impl Default for Liveness {
    fn default() -> Self {
        Self {
            heartbeat: DEFAULT_HEARTBEAT,
            dead_after: DEFAULT_DEAD_AFTER,
        }
    }
}

/// What one pass of [`settle_abandoned`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AbandonedReport {
    /// Leases settled from their records by this pass.
    pub settled: u64,
    /// Leases released (no record under them).
    pub released: u64,
    /// Leases another instance settled first (nothing changed here).
    pub already: u64,
}

/// Settles every active lease whose holder's heartbeat is older than `dead_after` at `now`
/// (or missing) from the records in `usage` written under it (see the module docs), except
/// those of `me` (this instance: its own leases are its to settle, even when its heartbeat
/// is late). The threshold alerts the settlements raised go to `alerts`. Stops at the first
/// store failure.
pub async fn settle_abandoned(
    ledger: &dyn BudgetLedger,
    usage: &dyn UsageStore,
    me: Option<InstanceId>,
    dead_after: Duration,
    now: DateTime<Utc>,
    alerts: &mut Vec<BudgetAlert>,
) -> Result<AbandonedReport, StoreError> {
    let dead_before =
        now - chrono::Duration::from_std(dead_after).unwrap_or_else(|_| chrono::Duration::days(1));
    let mut report = AbandonedReport::default();
    loop {
        let found = ledger.abandoned_leases(dead_before, PAGE).await?;
        let full = found.len() == PAGE as usize;
        for lease in found {
            if Some(lease.holder) == me {
                report.already += 1;
                continue;
            }
            let (charged, records) = usage
                .charged_under_lease(lease.org, lease.request_id)
                .await?;
            let outcome = settle_from_records(
                ledger,
                lease.org,
                lease.request_id,
                &lease.budgets,
                charged,
                records,
                now,
            )
            .await?;
            let kind = match outcome {
                None => {
                    report.released += 1;
                    "released"
                }
                Some(o) if o.applied => {
                    alerts.extend(o.alerts);
                    report.settled += 1;
                    "settled"
                }
                Some(_) => {
                    report.already += 1;
                    continue;
                }
            };
            super::metrics::record_abandoned_lease(kind);
            tracing::info!(
                lease = %lease.request_id,
                holder = %lease.holder,
                charged = %charged,
                records,
                "budget lease of a dead instance settled from its usage records"
            );
        }
        // A full page may hide more; a page settled by others meanwhile reads empty next.
        if !full || report.settled + report.released == 0 {
            return Ok(report);
        }
    }
}

/// The upkeep task of [`Liveness`]: writes `instance`'s heartbeat every `heartbeat` and,
/// every few heartbeats, settles the leases of dead instances ([`settle_abandoned`]), until
/// aborted.
pub(super) fn spawn(
    instance: InstanceId,
    ledger: Arc<dyn BudgetLedger>,
    usage: Arc<dyn UsageStore>,
    alerts: AlertSink,
    liveness: Liveness,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(liveness.heartbeat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut beats: u32 = 0;
        loop {
            tick.tick().await;
            if let Err(e) = ledger.beat(instance, Utc::now()).await {
                tracing::warn!(error = %e, "heartbeat not written; other instances may settle this one's budget leases");
            }
            beats = beats.wrapping_add(1);
            if !beats.is_multiple_of(RECOVER_EVERY) {
                continue;
            }
            let mut fired = Vec::new();
            let result = settle_abandoned(
                ledger.as_ref(),
                usage.as_ref(),
                Some(instance),
                liveness.dead_after,
                Utc::now(),
                &mut fired,
            )
            .await;
            alerts.fire(&fired);
            if let Err(e) = result {
                tracing::warn!(error = %e, "budget leases of dead instances not settled; retrying");
            }
        }
    })
}
