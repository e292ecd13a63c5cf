//! [`BatchedUsage`]: usage records written off the response path, in batches.
//!
//! `append` queues the records and returns; one background writer collects what arrives
//! within the linger (5 ms by default, `STRATAI_USAGE_BATCH_LINGER_MS`) of a batch's first
//! record (less when a reader or the shutdown drain waits, or a full batch of 2,000 is
//! queued), groups it by organization and appends each group in one store call (one
//! transaction), so a gateway at 1,000 requests/s makes about 150 usage writes per second of
//! about seven records each instead of one per request. When a batch cannot be written it
//! goes to the durable [`Spool`] (replayed later, idempotent by request id), so a store
//! outage loses nothing. Reads (`get`, `query`, `aggregate`) first wait until the queue is
//! drained, so this process reads its own writes.
//!
//! Why 5 ms and not longer: a longer linger makes fewer, larger transactions, but each is a
//! longer burst of work for the writer and the database, and on a host they share with the
//! gateway those bursts show in the gateway's p99 (BENCHMARKS.md, run L, at 1,000 req/s: p99
//! over the mock's +1.04 ms on average with 50 ms, over 1 ms in 5 of 8 runs; +0.69 ms with
//! 5 ms, at most +0.89 in 13 runs). The price is the database's CPU: about 0.11 ms per
//! request with 5 ms against 0.04 ms with 50 ms, at about 155 transactions per second against
//! 34. Where the database has its own machine and its CPU matters more, raise the linger.
//!
//! What it costs: a record reaches the store up to about the linger after its response (the
//! `stratai_usage_write_lag_seconds{path="batched"}` histogram shows how long); records still
//! queued when the process is killed (not stopped: [`BatchedUsage::drain`] runs at graceful
//! shutdown) are lost from the store. `append` reports queued records as inserted.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::Utc;
use futures::stream::BoxStream;
use stratai_core::StoreError;
use stratai_core::ids::{OrgId, RequestId};
use stratai_core::ports::{AppendOutcome, UsageStore};
use stratai_core::usage::{AggregateRow, Dimension, UsageQuery, UsageRecord};
use tokio::sync::{Notify, mpsc};

use super::spool::{Spool, SpoolEntry};

/// Most records written in one store call.
const MAX_BATCH: usize = 2_000;

/// How long the writer waits by default for more records after the first of a batch, unless
/// a reader (or the shutdown drain) asks for everything now (see the module docs for the
/// choice): a busy gateway writes several records per transaction instead of one, and no
/// write is a long burst.
pub const DEFAULT_LINGER: Duration = Duration::from_millis(5);

/// A [`UsageStore`] that queues appends for a background batch writer (see the module docs).
pub struct BatchedUsage {
    inner: Arc<dyn UsageStore>,
    tx: mpsc::Sender<(Instant, UsageRecord)>,
    /// Records handed to the writer so far.
    queued: AtomicU64,
    /// Records the writer has written or spooled so far.
    written: Arc<AtomicU64>,
    drained: Arc<Notify>,
    /// Tells the writer to stop lingering: someone waits for the queue to drain.
    flush_now: Arc<Notify>,
}

impl std::fmt::Debug for BatchedUsage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchedUsage")
            .field("pending", &self.pending())
            .finish_non_exhaustive()
    }
}

impl BatchedUsage {
    /// A batched store over `inner`, with a queue of `capacity` records (when full, `append`
    /// writes synchronously) and its writer task, which waits `linger` after a batch's first
    /// record for more; failed batches go to `spool`.
    #[must_use]
    pub fn spawn(
        inner: Arc<dyn UsageStore>,
        spool: Arc<Spool>,
        capacity: usize,
        linger: Duration,
    ) -> Arc<Self> {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let written = Arc::new(AtomicU64::new(0));
        let drained = Arc::new(Notify::new());
        let flush_now = Arc::new(Notify::new());
        tokio::spawn(writer(
            inner.clone(),
            spool,
            linger,
            rx,
            written.clone(),
            drained.clone(),
            flush_now.clone(),
        ));
        Arc::new(Self {
            inner,
            tx,
            queued: AtomicU64::new(0),
            written,
            drained,
            flush_now,
        })
    }

    /// Records queued and not yet written (or spooled).
    #[must_use]
    pub fn pending(&self) -> u64 {
        self.queued
            .load(Ordering::Acquire)
            .saturating_sub(self.written.load(Ordering::Acquire))
    }

    /// Waits until every record queued before the call is written (or spooled); records
    /// queued meanwhile by other requests are not waited for.
    pub async fn drain(&self) {
        let target = self.queued.load(Ordering::Acquire);
        if self.written.load(Ordering::Acquire) >= target {
            return;
        }
        self.flush_now.notify_one();
        loop {
            let notified = self.drained.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.written.load(Ordering::Acquire) >= target {
                return;
            }
            notified.await;
        }
    }
}

async fn writer(
    inner: Arc<dyn UsageStore>,
    spool: Arc<Spool>,
    linger: Duration,
    mut rx: mpsc::Receiver<(Instant, UsageRecord)>,
    written: Arc<AtomicU64>,
    drained: Arc<Notify>,
    flush_now: Arc<Notify>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        // Linger without watching the queue: records arriving meanwhile wake nobody (a
        // wake-up per record would cost the request path a task switch, often a thread
        // wake-up); `append` cuts the wait short when a full batch is queued.
        if rx.len() + 1 < MAX_BATCH {
            tokio::select! {
                biased;
                () = flush_now.notified() => {}
                () = tokio::time::sleep(linger) => {}
            }
        }
        // What was queued meanwhile goes in the same batch.
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        let count = batch.len();
        let oldest = batch.first().map(|(at, _)| *at);
        let mut by_org: BTreeMap<OrgId, Vec<UsageRecord>> = BTreeMap::new();
        for (_, r) in batch.drain(..) {
            by_org.entry(r.org_id).or_default().push(r);
        }
        for (org, records) in by_org {
            match inner.append(org, &records).await {
                Ok(_) => {
                    if let Some(at) = oldest {
                        super::metrics::record_usage_write_lag("batched", at);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, records = records.len(), "usage batch not written; spooling");
                    for record in records {
                        let entry = SpoolEntry {
                            record,
                            settle: None,
                            spooled_at: Utc::now(),
                        };
                        if let Err(se) = spool.push(&entry).await {
                            tracing::error!(error = %se, record = ?entry, "USAGE RECORD NOT DURABLE: store and spool both failed");
                        }
                    }
                }
            }
        }
        written.fetch_add(count as u64, Ordering::AcqRel);
        drained.notify_waiters();
    }
}

#[async_trait]
impl UsageStore for BatchedUsage {
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
        let mut queued = 0u64;
        for (i, record) in records.iter().enumerate() {
            if let Err(e) = self.tx.try_send((Instant::now(), record.clone())) {
                let full = matches!(e, mpsc::error::TrySendError::Full(_));
                if !full {
                    tracing::warn!("usage batch writer is gone; writing synchronously");
                }
                // Queue full (back-pressure) or writer gone: write the rest now.
                let rest = self.inner.append(org, &records[i..]).await?;
                return Ok(AppendOutcome {
                    inserted: queued + rest.inserted,
                    duplicates: rest.duplicates,
                });
            }
            self.queued.fetch_add(1, Ordering::AcqRel);
            queued += 1;
        }
        if self.tx.max_capacity() - self.tx.capacity() >= MAX_BATCH {
            // A full batch is waiting: no reason to linger.
            self.flush_now.notify_one();
        }
        Ok(AppendOutcome {
            inserted: queued,
            duplicates: 0,
        })
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

    /// Streams from the store; records queued in the last milliseconds may be missing.
    fn stream(
        &self,
        org: OrgId,
        query: UsageQuery,
    ) -> BoxStream<'static, Result<UsageRecord, StoreError>> {
        self.inner.stream(org, query)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::runtime::spool::tests::{FlakyUsage, record};
    use stratai_testkit::Scratch;

    /// The writer over a flaky store, and the scratch folder of its spool (removed on drop).
    async fn batched(linger: Duration) -> (Arc<FlakyUsage>, Arc<BatchedUsage>, Scratch) {
        let scratch = Scratch::new();
        let spool = Arc::new(Spool::open(scratch.join("usage.spool")).await.unwrap());
        let inner = Arc::new(FlakyUsage::default());
        let batch = BatchedUsage::spawn(inner.clone(), spool, 1024, linger);
        (inner, batch, scratch)
    }

    #[tokio::test]
    async fn records_arriving_within_the_linger_share_one_write_which_a_reader_cuts_short() {
        let (inner, batch, _scratch) = batched(Duration::from_secs(3600)).await;
        let org = OrgId::new();
        for _ in 0..3 {
            batch.append(org, &[record(org)]).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            inner.appends.lock().unwrap().clone(),
            Vec::<usize>::new(),
            "written before the linger ended"
        );
        assert_eq!(batch.pending(), 3);

        // A reader (each drains first) does not wait out the hour: the writer stops lingering.
        tokio::time::timeout(Duration::from_secs(5), batch.drain())
            .await
            .expect("the reader waited for the linger");
        assert_eq!(inner.appends.lock().unwrap().clone(), vec![3]);
        assert_eq!(batch.pending(), 0);
    }

    #[tokio::test]
    async fn a_short_linger_writes_without_anyone_waiting() {
        let (inner, batch, _scratch) = batched(Duration::from_millis(5)).await;
        let org = OrgId::new();
        let r = record(org);
        batch.append(org, std::slice::from_ref(&r)).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while inner.appends.lock().unwrap().is_empty() {
            assert!(
                Instant::now() < deadline,
                "not written 5 s after a 5 ms linger"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        assert_eq!(
            inner.rows.lock().unwrap().as_slice(),
            std::slice::from_ref(&r)
        );
        // The next record starts a batch of its own.
        batch.append(org, &[record(org)]).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while inner.appends.lock().unwrap().len() < 2 {
            assert!(Instant::now() < deadline, "second batch not written");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        assert_eq!(inner.appends.lock().unwrap().clone(), vec![1, 1]);
    }
}
