//! [`LoggedUsage`]: the usage store every request writes through when the runtime has a
//! usage log ([`super::spool`]): the record goes to the log first (one `write(2)`, before
//! the request is settled and answered), then to the store, either at once (strict mode) or
//! in batches by the log's writer task (usage batching).
//!
//! Batched: one background writer collects what arrives within the linger (5 ms by default,
//! `STRATAI_USAGE_BATCH_LINGER_MS`) of a batch's first record (less when a reader or the
//! shutdown drain waits, or a full batch of 2,000 is queued), groups it by organization and
//! appends each group in one store call (one transaction), so a gateway at 1,000 requests/s
//! makes about 150 usage writes per second of about seven records each instead of one per
//! request. Reads (`get`, `query`, `aggregate`) first wait until the queue is drained, so
//! this process reads its own writes.
//!
//! Why 5 ms and not longer: a longer linger makes fewer, larger transactions, but each is a
//! longer burst of work for the writer and the database, and on a host they share with the
//! gateway those bursts show in the gateway's p99 (BENCHMARKS.md, run L, at 1,000 req/s: p99
//! over the mock's +1.04 ms on average with 50 ms, over 1 ms in 5 of 8 runs; +0.69 ms with
//! 5 ms, at most +0.89 in 13 runs). Where the database has its own machine, raise it.
//!
//! Either way a record the store refuses stays in the log and the writer retries it every
//! `retry` (the runtime's `spool_replay`); a record queued when the process is killed is in
//! the log and reaches the store at the next start. The same writer settles the reservations
//! a previous process left (see [`UsageLog::recover`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;
use stratai_core::StoreError;
use stratai_core::ids::{OrgId, RequestId};
use stratai_core::ports::{AppendOutcome, BudgetLedger, UsageStore};
use stratai_core::usage::{AggregateRow, Dimension, UsageQuery, UsageRecord};
use tokio::sync::Notify;

use super::alerts::AlertSink;
use super::spool::UsageLog;

/// Most records written in one store call.
pub const MAX_BATCH: usize = 2_000;

/// How long the writer waits by default for more records after the first of a batch, unless
/// a reader (or the shutdown drain) asks for everything now (see the module docs).
pub const DEFAULT_LINGER: Duration = Duration::from_millis(5);

/// A [`UsageStore`] writing through the [`UsageLog`] (see the module docs).
pub struct LoggedUsage {
    inner: Arc<dyn UsageStore>,
    log: Arc<UsageLog>,
    /// Batched: `Some(linger)`; strict: records are written before `append` returns.
    linger: Option<Duration>,
    /// Batched: at most this many records wait; beyond, `append` writes them itself.
    capacity: usize,
    wake: Notify,
    flush_now: Notify,
    /// Writer passes finished so far.
    passes: AtomicU64,
    pass_done: Notify,
    failing: AtomicBool,
}

impl std::fmt::Debug for LoggedUsage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoggedUsage")
            .field("pending", &self.pending())
            .finish_non_exhaustive()
    }
}

impl LoggedUsage {
    /// A store over `inner` writing through `log`, and its writer task (returned), which
    /// writes batched and refused records, retries refused settlements and settles a
    /// previous process's reservations through `ledger` (the runtime's: leases pass unknown
    /// ids to the shared ledger, journaled in the same log), every `retry` at least (the
    /// file is compacted at least every second). `batching`: `Some` for batched writes.
    pub fn spawn(
        inner: Arc<dyn UsageStore>,
        log: Arc<UsageLog>,
        ledger: Arc<dyn BudgetLedger>,
        alerts: AlertSink,
        batching: Option<super::UsageBatching>,
        retry: Duration,
    ) -> (Arc<Self>, tokio::task::JoinHandle<()>) {
        let me = Arc::new(Self {
            inner,
            log,
            linger: batching.map(|b| b.linger),
            capacity: batching.map_or(usize::MAX, |b| b.capacity.max(1)),
            wake: Notify::new(),
            flush_now: Notify::new(),
            passes: AtomicU64::new(0),
            pass_done: Notify::new(),
            failing: AtomicBool::new(false),
        });
        let task = tokio::spawn(me.clone().writer(ledger, alerts, retry));
        (me, task)
    }

    /// The log.
    #[must_use]
    pub fn log(&self) -> &Arc<UsageLog> {
        &self.log
    }

    /// Records waiting for the store.
    #[must_use]
    pub fn pending(&self) -> u64 {
        self.log.pending() as u64
    }

    /// Waits until the records waiting at the call were written, or one writer pass that
    /// started after the call ended (the store may be refusing them: they stay in the log).
    pub async fn drain(&self) {
        if self.log.pending() == 0 {
            return;
        }
        let target = self.passes.load(Ordering::Acquire) + 2;
        loop {
            let done = self.pass_done.notified();
            tokio::pin!(done);
            done.as_mut().enable();
            self.flush_now.notify_one();
            if self.log.pending() == 0 || self.passes.load(Ordering::Acquire) >= target {
                return;
            }
            done.await;
        }
    }

    /// One pass: what waits goes to the store, the ledger's leftovers are settled.
    pub async fn pass(&self, ledger: &dyn BudgetLedger, alerts: &AlertSink) {
        let mut raised = super::spool::Raised::default();
        let result = self
            .log
            .recover(ledger, self.inner.as_ref(), &mut raised)
            .await;
        alerts.fire(&raised.alerts);
        for state in &raised.late_overage {
            alerts.late_overage(state);
        }
        match result {
            Ok(r) => {
                if self.failing.swap(false, Ordering::AcqRel) {
                    tracing::info!("usage store accepts records again");
                }
                if r.settled + r.released > 0 {
                    tracing::info!(
                        inserted = r.inserted,
                        duplicates = r.duplicates,
                        settled = r.settled,
                        released = r.released,
                        "usage log of a previous process replayed"
                    );
                }
            }
            Err(e) => {
                if !self.failing.swap(true, Ordering::AcqRel) {
                    tracing::warn!(error = %e, pending = self.log.pending(), "usage records not written; they wait in the usage log");
                }
            }
        }
        self.passes.fetch_add(1, Ordering::AcqRel);
        self.pass_done.notify_waiters();
    }

    async fn writer(
        self: Arc<Self>,
        ledger: Arc<dyn BudgetLedger>,
        alerts: AlertSink,
        retry: Duration,
    ) {
        let idle = retry.min(Duration::from_secs(1));
        loop {
            let failing = self.failing.load(Ordering::Acquire);
            let more = !failing && self.log.pending() > 0;
            let linger = if more {
                self.linger
            } else {
                tokio::select! {
                    biased;
                    () = self.flush_now.notified() => None,
                    () = self.wake.notified(), if !failing => self.linger,
                    () = tokio::time::sleep(if failing { retry } else { idle }) => None,
                }
            };
            if let Some(linger) = linger
                && self.log.pending() < MAX_BATCH
            {
                // Linger without watching the queue: records arriving meanwhile wake
                // nobody; `append` cuts the wait short for a full batch, a reader too.
                tokio::select! {
                    biased;
                    () = self.flush_now.notified() => {}
                    () = tokio::time::sleep(linger) => {}
                }
            }
            self.pass(ledger.as_ref(), &alerts).await;
        }
    }
}

#[async_trait]
impl UsageStore for LoggedUsage {
    async fn append(
        &self,
        org: OrgId,
        records: &[UsageRecord],
    ) -> Result<AppendOutcome, StoreError> {
        if let Some(r) = records.iter().find(|r| r.org_id != org) {
            return Err(StoreError::TenantMismatch(format!(
                "usage record `{}` belongs to organization `{}`, not `{org}`",
                r.request_id, r.org_id
            )));
        }
        // Each record names the lease it was admitted under, in the log and in the store.
        let records = self.log.with_leases(records);
        let records = records.as_ref();
        // A full queue (back-pressure): this request writes its records itself.
        let batched = self.linger.is_some() && self.log.pending() < self.capacity;
        let before = self
            .log
            .log_usage(records, batched)
            .map_err(|e| StoreError::Backend(e.to_string()))?;
        if batched {
            if before == 0 {
                self.wake.notify_one();
            } else if before + records.len() >= MAX_BATCH {
                self.flush_now.notify_one();
            }
            return Ok(AppendOutcome {
                inserted: records.len() as u64,
                duplicates: 0,
            });
        }
        let ids: Vec<RequestId> = records.iter().map(|r| r.request_id).collect();
        match self.inner.append(org, records).await {
            Ok(outcome) => {
                self.log.stored(&ids);
                Ok(outcome)
            }
            Err(e) => {
                // Safe in the log: the writer retries it.
                tracing::warn!(error = %e, records = ids.len(), "usage not written; it waits in the usage log");
                self.log.requeue(&ids);
                super::metrics::record_spooled();
                Ok(AppendOutcome {
                    inserted: records.len() as u64,
                    duplicates: 0,
                })
            }
        }
    }

    async fn get(&self, org: OrgId, request_id: RequestId) -> Result<UsageRecord, StoreError> {
        self.drain().await;
        self.inner.get(org, request_id).await
    }

    async fn query(
        &self,
        org: OrgId,
        query: &UsageQuery,
        limit: u32,
    ) -> Result<Vec<UsageRecord>, StoreError> {
        self.drain().await;
        self.inner.query(org, query, limit).await
    }

    async fn aggregate(
        &self,
        org: OrgId,
        query: &UsageQuery,
        group_by: &[Dimension],
    ) -> Result<Vec<AggregateRow>, StoreError> {
        self.drain().await;
        self.inner.aggregate(org, query, group_by).await
    }

    async fn totals_by_org(
        &self,
        from: chrono::DateTime<chrono::Utc>,
        to: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<(OrgId, stratai_core::usage::UsageTotals)>, StoreError> {
        self.drain().await;
        self.inner.totals_by_org(from, to).await
    }

    async fn charged_under_lease(
        &self,
        org: OrgId,
        lease: RequestId,
    ) -> Result<(stratai_core::Money, u64), StoreError> {
        self.drain().await;
        self.inner.charged_under_lease(org, lease).await
    }

    /// Streams from the store; records queued in the last milliseconds may be missing.
    fn stream(
        &self,
        org: OrgId,
        query: UsageQuery,
    ) -> BoxStream<'static, Result<UsageRecord, StoreError>> {
        self.inner.stream(org, query)
    }
}
