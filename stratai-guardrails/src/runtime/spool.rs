//! A durable spool for usage records whose write failed.
//!
//! Usage is never dropped: when the store refuses a record (database down, timeout), the
//! gateway appends it here — one JSON line, then `fsync` — before answering. A background task
//! replays the spool into the store; replay is idempotent because settling the ledger and
//! appending usage are both idempotent by request id, so a record replayed twice (a crash
//! between the store write and the spool rewrite) is still counted once.
//!
//! The file is append-only while the server runs; a replay rewrites it atomically (temporary
//! file, `fsync`, rename) with only the entries that are still failing. A torn last line (a
//! crash mid-append) or any line that does not parse is moved to `<spool>.rejected` with a
//! warning rather than blocking the spool forever.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use stratai_core::ids::{BudgetId, OrgId};
use stratai_core::money::Money;
use stratai_core::ports::{BudgetLedger, UsageStore};
use stratai_core::usage::UsageRecord;
use tokio::fs::{File, OpenOptions};
use tokio::io::AsyncWriteExt;
use tokio::sync::Mutex;

/// A spool failure (the file system, never the store: store failures keep entries spooled).
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// Reading or writing the spool file failed.
    #[error("spool file `{path}`: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// An entry could not be encoded (never expected for valid records).
    #[error("cannot encode spool entry: {0}")]
    Encode(#[from] serde_json::Error),
}

/// The ledger settlement that belongs with a spooled record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpoolSettle {
    /// Budgets the request drew on.
    pub budgets: Vec<BudgetId>,
    /// Actual billed cost to settle.
    pub actual: Money,
}

/// One spooled item: a usage record, and the settlement when that failed too.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpoolEntry {
    /// The record to append.
    pub record: UsageRecord,
    /// The settlement to apply first, if it has not been applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settle: Option<SpoolSettle>,
    /// When it was spooled.
    pub spooled_at: DateTime<Utc>,
}

/// What one replay did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplayReport {
    /// Records written to the store now.
    pub inserted: u64,
    /// Records the store already had (an earlier replay or the original write got through).
    pub duplicates: u64,
    /// Entries still failing, kept for the next replay.
    pub remaining: usize,
    /// Lines that did not parse, moved to the `.rejected` file.
    pub rejected: usize,
}

/// The spool. Cheap to share behind an [`Arc`].
#[derive(Debug)]
pub struct Spool {
    path: PathBuf,
    file: Mutex<File>,
    pending: AtomicUsize,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_owned(),
        source,
    }
}

async fn open_append(path: &Path) -> Result<File, SpoolError> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .await
        .map_err(io_err(path))
}

impl Spool {
    /// Opens (creating if needed) the spool at `path`, counting what is already waiting.
    pub async fn open(path: impl Into<PathBuf>) -> Result<Self, SpoolError> {
        let path = path.into();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(dir).await.map_err(io_err(dir))?;
        }
        let file = open_append(&path).await?;
        let text = tokio::fs::read_to_string(&path)
            .await
            .map_err(io_err(&path))?;
        let pending = text.lines().filter(|l| !l.trim().is_empty()).count();
        super::metrics::set_spool_pending(pending);
        Ok(Self {
            path,
            file: Mutex::new(file),
            pending: AtomicUsize::new(pending),
        })
    }

    /// The spool file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Entries waiting to be replayed.
    #[must_use]
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::Relaxed)
    }

    /// Appends an entry durably: it is on disk (`fsync`) when this returns `Ok`.
    pub async fn push(&self, entry: &SpoolEntry) -> Result<(), SpoolError> {
        let mut line = serde_json::to_vec(entry)?;
        line.push(b'\n');
        let mut file = self.file.lock().await;
        file.write_all(&line).await.map_err(io_err(&self.path))?;
        file.sync_data().await.map_err(io_err(&self.path))?;
        let pending = self.pending.fetch_add(1, Ordering::Relaxed) + 1;
        super::metrics::record_spooled();
        super::metrics::set_spool_pending(pending);
        Ok(())
    }

    /// Replays every waiting entry into the ledger and the store, keeping those that still
    /// fail. Appends wait while a replay runs (the spool is only used when the store fails, so
    /// this is rare and short).
    pub async fn replay(
        &self,
        ledger: &dyn BudgetLedger,
        usage: &dyn UsageStore,
    ) -> Result<ReplayReport, SpoolError> {
        self.replay_alerting(ledger, usage, &mut Vec::new()).await
    }

    /// [`replay`](Self::replay), collecting the budget alerts that replayed settlements
    /// raise into `fired`.
    pub async fn replay_alerting(
        &self,
        ledger: &dyn BudgetLedger,
        usage: &dyn UsageStore,
        fired: &mut Vec<stratai_core::budget::BudgetAlert>,
    ) -> Result<ReplayReport, SpoolError> {
        let mut file = self.file.lock().await;
        let text = tokio::fs::read_to_string(&self.path)
            .await
            .map_err(io_err(&self.path))?;
        let mut report = ReplayReport::default();
        let mut rejected_lines = Vec::new();
        let mut by_org: BTreeMap<OrgId, Vec<SpoolEntry>> = BTreeMap::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            match serde_json::from_str::<SpoolEntry>(line) {
                Ok(entry) => by_org.entry(entry.record.org_id).or_default().push(entry),
                Err(e) => {
                    tracing::warn!(error = %e, "unreadable usage spool line moved to the rejected file");
                    rejected_lines.push(line.to_owned());
                }
            }
        }
        if by_org.is_empty() && rejected_lines.is_empty() {
            return Ok(report);
        }
        let mut keep: Vec<SpoolEntry> = Vec::new();
        for (org, entries) in by_org {
            let mut settled = Vec::new();
            for entry in entries {
                let ok = match &entry.settle {
                    Some(s) => ledger
                        .settle(
                            org,
                            entry.record.request_id,
                            &s.budgets,
                            s.actual,
                            entry.record.created_at,
                        )
                        .await
                        .map(|outcome| fired.extend(outcome.alerts)),
                    None => Ok(()),
                };
                match ok {
                    Ok(()) => settled.push(entry),
                    Err(e) => {
                        tracing::warn!(error = %e, request_id = %entry.record.request_id, "spool replay: settle still failing");
                        keep.push(entry);
                    }
                }
            }
            if settled.is_empty() {
                continue;
            }
            let records: Vec<UsageRecord> = settled.iter().map(|e| e.record.clone()).collect();
            match usage.append(org, &records).await {
                Ok(outcome) => {
                    report.inserted += outcome.inserted;
                    report.duplicates += outcome.duplicates;
                    for e in &settled {
                        super::metrics::record_usage_write_lag_since(e.spooled_at);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, org = %org, "spool replay: usage write still failing");
                    // Settlement is idempotent: drop it from the kept entry so it is not
                    // re-applied pointlessly, but keep it harmless if it is.
                    keep.extend(settled.into_iter().map(|mut e| {
                        e.settle = None;
                        e
                    }));
                }
            }
        }
        if !rejected_lines.is_empty() {
            let rejected_path = self.path.with_extension("rejected");
            let mut rejected = open_append(&rejected_path).await?;
            let mut buf = rejected_lines.join("\n");
            buf.push('\n');
            rejected
                .write_all(buf.as_bytes())
                .await
                .map_err(io_err(&rejected_path))?;
            rejected.sync_data().await.map_err(io_err(&rejected_path))?;
        }
        report.rejected = rejected_lines.len();
        report.remaining = keep.len();
        let tmp = self.path.with_extension("tmp");
        {
            let mut out = File::create(&tmp).await.map_err(io_err(&tmp))?;
            let mut buf = Vec::new();
            for entry in &keep {
                serde_json::to_writer(&mut buf, entry)?;
                buf.push(b'\n');
            }
            out.write_all(&buf).await.map_err(io_err(&tmp))?;
            out.sync_all().await.map_err(io_err(&tmp))?;
        }
        tokio::fs::rename(&tmp, &self.path)
            .await
            .map_err(io_err(&self.path))?;
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            // Make the rename itself durable.
            if let Ok(d) = File::open(dir).await {
                let _ = d.sync_all().await;
            }
        }
        *file = open_append(&self.path).await?;
        self.pending.store(keep.len(), Ordering::Relaxed);
        super::metrics::set_spool_pending(keep.len());
        Ok(report)
    }

    /// Replays every `interval` until the returned task is aborted.
    pub fn spawn_replayer(
        self: Arc<Self>,
        ledger: Arc<dyn BudgetLedger>,
        usage: Arc<dyn UsageStore>,
        alerts: super::alerts::AlertSink,
        interval: Duration,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if self.pending() == 0 {
                    continue;
                }
                let mut fired = Vec::new();
                let replayed = self
                    .replay_alerting(ledger.as_ref(), usage.as_ref(), &mut fired)
                    .await;
                // Alerts raised by settlements applied only now (their request's failed).
                let _ = alerts.fire(&fired);
                match replayed {
                    Ok(r) if r.inserted + r.duplicates > 0 || r.rejected > 0 => {
                        tracing::info!(
                            inserted = r.inserted,
                            duplicates = r.duplicates,
                            remaining = r.remaining,
                            rejected = r.rejected,
                            "usage spool replayed"
                        );
                    }
                    Ok(_) => {}
                    Err(e) => tracing::error!(error = %e, "usage spool replay failed"),
                }
            }
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::Mutex as StdMutex;
    use std::sync::atomic::AtomicBool;
    use stratai_testkit::Scratch;

    use async_trait::async_trait;
    use futures::stream::BoxStream;
    use stratai_core::StoreError;
    use stratai_core::budget::{Budget, BudgetState};
    use stratai_core::ids::{ModelId, RequestId, UserId};
    use stratai_core::ports::{AppendOutcome, ReserveOutcome, ReserveRequest, SettleOutcome};
    use stratai_core::usage::{AggregateRow, Dimension, UsageQuery, UsageStatus};

    /// A usage store that can be switched off, deduplicating by request id, keeping the size
    /// of each `append` call it took (also used by the batch tests).
    #[derive(Default)]
    pub(crate) struct FlakyUsage {
        pub(crate) down: AtomicBool,
        pub(crate) rows: StdMutex<Vec<UsageRecord>>,
        pub(crate) appends: StdMutex<Vec<usize>>,
    }

    #[async_trait]
    impl UsageStore for FlakyUsage {
        async fn append(
            &self,
            _org: OrgId,
            records: &[UsageRecord],
        ) -> Result<AppendOutcome, StoreError> {
            if self.down.load(Ordering::Relaxed) {
                return Err(StoreError::Backend("database down".to_owned()));
            }
            self.appends.lock().unwrap().push(records.len());
            let mut rows = self.rows.lock().unwrap();
            let mut out = AppendOutcome::default();
            for r in records {
                if rows.iter().any(|x| x.request_id == r.request_id) {
                    out.duplicates += 1;
                } else {
                    rows.push(r.clone());
                    out.inserted += 1;
                }
            }
            Ok(out)
        }
        async fn get(&self, _: OrgId, _: RequestId) -> Result<UsageRecord, StoreError> {
            unimplemented_in_test()
        }
        async fn query(
            &self,
            _: OrgId,
            _: &UsageQuery,
            _: u32,
        ) -> Result<Vec<UsageRecord>, StoreError> {
            unimplemented_in_test()
        }
        async fn aggregate(
            &self,
            _: OrgId,
            _: &UsageQuery,
            _: &[Dimension],
        ) -> Result<Vec<AggregateRow>, StoreError> {
            unimplemented_in_test()
        }
        fn stream(
            &self,
            _: OrgId,
            _: UsageQuery,
        ) -> BoxStream<'static, Result<UsageRecord, StoreError>> {
            Box::pin(futures::stream::empty())
        }
    }

    fn unimplemented_in_test<T>() -> Result<T, StoreError> {
        Err(StoreError::Backend("not used by these tests".to_owned()))
    }

    /// A ledger recording settlements (idempotent by request id).
    #[derive(Default)]
    struct CountingLedger {
        settled: StdMutex<Vec<RequestId>>,
    }

    #[async_trait]
    impl BudgetLedger for CountingLedger {
        async fn create_budget(&self, _: OrgId, _: &Budget) -> Result<(), StoreError> {
            Ok(())
        }
        async fn get_budget(&self, _: OrgId, _: BudgetId) -> Result<Budget, StoreError> {
            unimplemented_in_test()
        }
        async fn list_budgets(&self, _: OrgId) -> Result<Vec<Budget>, StoreError> {
            Ok(vec![])
        }
        async fn update_budget(&self, _: OrgId, _: &Budget) -> Result<(), StoreError> {
            Ok(())
        }
        async fn delete_budget(&self, _: OrgId, _: BudgetId) -> Result<(), StoreError> {
            Ok(())
        }
        async fn states(
            &self,
            _: OrgId,
            _: &[BudgetId],
            _: DateTime<Utc>,
        ) -> Result<Vec<BudgetState>, StoreError> {
            Ok(vec![])
        }
        async fn reserve(
            &self,
            _: OrgId,
            _: &ReserveRequest,
        ) -> Result<ReserveOutcome, StoreError> {
            Ok(ReserveOutcome::Reserved(vec![]))
        }
        async fn settle(
            &self,
            _: OrgId,
            request_id: RequestId,
            _: &[BudgetId],
            _: Money,
            _: DateTime<Utc>,
        ) -> Result<SettleOutcome, StoreError> {
            let mut s = self.settled.lock().unwrap();
            let applied = !s.contains(&request_id);
            if applied {
                s.push(request_id);
            }
            Ok(SettleOutcome {
                applied,
                alerts: vec![],
            })
        }
        async fn release(&self, _: OrgId, _: RequestId) -> Result<(), StoreError> {
            Ok(())
        }
        async fn reclaim_expired(&self, _: DateTime<Utc>) -> Result<u64, StoreError> {
            Ok(0)
        }
    }

    /// A usage record of `org` by a new user and request (also used by the batch tests).
    pub(crate) fn record(org: OrgId) -> UsageRecord {
        UsageRecord {
            request_id: RequestId::new(),
            org_id: org,
            group_id: None,
            user_id: UserId::new(),
            tier_id: None,
            model: ModelId::new("gpt-4o-mini").unwrap(),
            input_tokens: 3,
            output_tokens: 5,
            provider_cost: Money::parse("0.000012").unwrap(),
            billed_amount: Money::parse("0.0000115").unwrap(),
            overage: Default::default(),
            litellm_request_id: Some("chatcmpl-1".to_owned()),
            conversation_id: None,
            endpoint: "chat".to_owned(),
            status: UsageStatus::Success,
            created_at: Utc::now(),
        }
    }

    fn entry(org: OrgId) -> SpoolEntry {
        SpoolEntry {
            record: record(org),
            settle: Some(SpoolSettle {
                budgets: vec![BudgetId::new()],
                actual: Money::parse("0.0000115").unwrap(),
            }),
            spooled_at: Utc::now(),
        }
    }

    #[tokio::test]
    async fn spooled_records_survive_reopen_and_replay_exactly_once() {
        let scratch = Scratch::new();
        let path = scratch.join("usage.spool");
        let usage = FlakyUsage::default();
        let ledger = CountingLedger::default();
        let (a, b) = (OrgId::new(), OrgId::new());
        let entries = [entry(a), entry(a), entry(b)];
        {
            let spool = Spool::open(&path).await.unwrap();
            for e in &entries {
                spool.push(e).await.unwrap();
            }
            assert_eq!(spool.pending(), 3);
        }
        // A restart: the entries are still there.
        let spool = Spool::open(&path).await.unwrap();
        assert_eq!(spool.pending(), 3);

        usage.down.store(true, Ordering::Relaxed);
        let r = spool.replay(&ledger, &usage).await.unwrap();
        assert_eq!((r.inserted, r.remaining), (0, 3));
        assert_eq!(spool.pending(), 3);

        usage.down.store(false, Ordering::Relaxed);
        // One record already made it to the store (e.g. the original write timed out late).
        usage.append(a, &[entries[0].record.clone()]).await.unwrap();
        let r = spool.replay(&ledger, &usage).await.unwrap();
        assert_eq!(
            r,
            ReplayReport {
                inserted: 2,
                duplicates: 1,
                remaining: 0,
                rejected: 0
            }
        );
        assert_eq!(spool.pending(), 0);
        assert_eq!(usage.rows.lock().unwrap().len(), 3);
        assert_eq!(ledger.settled.lock().unwrap().len(), 3);
        // Replaying again changes nothing.
        let r = spool.replay(&ledger, &usage).await.unwrap();
        assert_eq!(r, ReplayReport::default());
        assert_eq!(usage.rows.lock().unwrap().len(), 3);
        // Appends still work after a rewrite.
        spool.push(&entry(a)).await.unwrap();
        assert_eq!(spool.replay(&ledger, &usage).await.unwrap().inserted, 1);
    }

    #[tokio::test]
    async fn a_torn_line_is_rejected_not_blocking() {
        let scratch = Scratch::new();
        let path = scratch.join("usage.spool");
        let spool = Spool::open(&path).await.unwrap();
        spool.push(&entry(OrgId::new())).await.unwrap();
        {
            let mut f = open_append(&path).await.unwrap();
            f.write_all(b"{\"record\": {\"request_id\"").await.unwrap();
            f.sync_data().await.unwrap();
        }
        let usage = FlakyUsage::default();
        let r = spool
            .replay(&CountingLedger::default(), &usage)
            .await
            .unwrap();
        assert_eq!((r.inserted, r.rejected, r.remaining), (1, 1, 0));
        let rejected = tokio::fs::read_to_string(path.with_extension("rejected"))
            .await
            .unwrap();
        assert!(rejected.contains("request_id"));
    }
}
