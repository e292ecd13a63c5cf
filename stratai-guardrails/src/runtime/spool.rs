//! The usage log: the one local, append-only file through which every usage record and every
//! budget reservation of the shared ledger passes, so that a process killed at any moment
//! (`kill -9`) loses no answered request's record and leaves the ledger exact after restart.
//!
//! What it holds, one JSON line each:
//! - `reserve`: a reservation of the shared ledger (a request's own in strict mode, a lease's
//!   with budget leases) is about to be made, with its organization and budgets (written
//!   *before* the ledger call, so no reservation exists that the log does not know);
//! - `usage`: a usage record, with the reservation it was admitted under (`under`: the
//!   request's own, or its lease), written *before* the request is settled and before its
//!   answer is returned, so before the answer's last byte leaves;
//! - `stored`: records the store has (written after the store acknowledged them);
//! - `closed`: a reservation settled or released in the shared ledger.
//!
//! A line is written with one `write(2)` into the page cache, which survives the process
//! being killed; [`UsageLog::spawn_syncer`] makes it survive power loss too, with one
//! `fsync` per `sync_every` (20 ms by default, [`DEFAULT_SYNC_EVERY`]) for whatever was
//! written meanwhile: a power loss loses at most the last `sync_every` of records.
//!
//! At start ([`UsageLog::open`]) the file is read back: records without `stored` are written
//! to the store again (idempotent by request id), and every reservation without `closed` is
//! an *orphan* of the previous process: it is settled in the shared ledger with the sum of
//! what the records logged under it charged (`billed_amount - overage`), or released when no
//! record was logged under it (requests in flight at the crash: nothing reserved, nothing
//! spent, no record). The settlement is [`BudgetLedger::settle_total`]: when another
//! instance already settled a lease of this log (its holder's heartbeat stopped, see
//! [`super::liveness`]) from the records the store had, what only this log held is charged
//! after the fact. So after recovery every budget's spent equals the sum of its records
//! and nothing is left reserved. The same writer keeps doing this while the process runs
//! ([`super::batch::LoggedUsage`]): batched records, records the store refused, and orphans
//! whose settlement failed are retried until the store has them.
//!
//! The file only grows while it holds live lines: once every record is stored and every
//! reservation closed it is truncated, and when dead lines dominate it is rewritten (a
//! temporary file, `fsync`, `rename`) with the live ones only. A torn last line (a crash in
//! the middle of a write) or any line that does not parse is moved to `<log>.rejected`.
//!
//! One log belongs to one process: two instances need two files.

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use stratai_core::StoreError;
use stratai_core::budget::{Budget, BudgetState};
use stratai_core::ids::{BudgetId, InstanceId, OrgId, RequestId};
use stratai_core::money::Money;
use stratai_core::ports::{
    BudgetLedger, HeldReservation, ReserveOutcome, ReserveRequest, SettleOutcome,
};
use stratai_core::usage::UsageRecord;

use crate::LeasedLedger;

/// How often, by default, what was written to the log is made durable against power loss.
pub const DEFAULT_SYNC_EVERY: Duration = Duration::from_millis(20);

/// A usage log failure (the file system, never the store: store failures keep lines live).
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// Reading or writing the log file failed.
    #[error("usage log `{path}`: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// An entry could not be encoded (never expected for valid records).
    #[error("cannot encode usage log entry: {0}")]
    Encode(#[from] serde_json::Error),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_owned(),
        source,
    }
}

/// One line of the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "log", rename_all = "snake_case")]
#[allow(clippy::large_enum_variant)] // short-lived, one per write; boxing buys nothing
enum Line {
    Reserve {
        id: RequestId,
        org: OrgId,
        budgets: Vec<BudgetId>,
    },
    Usage {
        record: UsageRecord,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        under: Option<RequestId>,
        at: DateTime<Utc>,
    },
    Stored {
        ids: Vec<RequestId>,
    },
    Closed {
        id: RequestId,
    },
}

/// A usage record waiting in the log for the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpoolEntry {
    /// The record.
    pub record: UsageRecord,
    /// The reservation it was admitted under (its own, or its lease), if any.
    pub under: Option<RequestId>,
    /// When it was logged.
    pub logged_at: DateTime<Utc>,
}

/// A reservation of the shared ledger the log knows of.
#[derive(Clone, Debug)]
struct Open {
    org: OrgId,
    budgets: Vec<BudgetId>,
    /// Made by a previous process: settled by the writer from its records.
    orphan: bool,
}

#[derive(Clone, Debug)]
struct Logged {
    entry: SpoolEntry,
    stored: bool,
}

/// A settlement of this process that the ledger refused; retried by the writer.
#[derive(Clone, Debug)]
struct Resettle {
    org: OrgId,
    id: RequestId,
    budgets: Vec<BudgetId>,
    amount: Money,
    at: DateTime<Utc>,
}

struct State {
    file: File,
    /// Written since the last `fsync`.
    dirty: bool,
    /// Lines in the file.
    lines: u64,
    open: HashMap<RequestId, Open>,
    /// Records logged under each open reservation.
    under: HashMap<RequestId, Vec<RequestId>>,
    /// Live records: not stored yet, or under a reservation still open.
    records: HashMap<RequestId, Logged>,
    /// Records to (re)write to the store, oldest first.
    waiting: VecDeque<RequestId>,
    resettle: Vec<Resettle>,
}

impl State {
    /// Whether the record may leave memory (and the file at the next rewrite).
    fn dead(&self, logged: &Logged) -> bool {
        logged.stored
            && logged
                .entry
                .under
                .is_none_or(|u| !self.open.contains_key(&u))
    }

    fn apply(&mut self, line: Line) {
        match line {
            Line::Reserve { id, org, budgets } => {
                self.open.insert(
                    id,
                    Open {
                        org,
                        budgets,
                        orphan: false,
                    },
                );
            }
            Line::Usage {
                mut record,
                under,
                at,
            } => {
                let id = record.request_id;
                if record.lease_id.is_none() {
                    // A line written before records carried their lease: its `under`, when
                    // not the request's own reservation, is the lease.
                    record.lease_id = under.filter(|u| *u != id);
                }
                if let Some(u) = under
                    && self.open.contains_key(&u)
                {
                    self.under.entry(u).or_default().push(id);
                }
                let fresh = self
                    .records
                    .insert(
                        id,
                        Logged {
                            entry: SpoolEntry {
                                record,
                                under,
                                logged_at: at,
                            },
                            stored: false,
                        },
                    )
                    .is_none();
                if fresh {
                    self.waiting.push_back(id);
                }
            }
            Line::Stored { ids } => {
                for id in ids {
                    self.mark_stored(id);
                }
            }
            Line::Closed { id } => self.close(id),
        }
    }

    fn mark_stored(&mut self, id: RequestId) {
        let dead = match self.records.get_mut(&id) {
            Some(l) => {
                l.stored = true;
                let l = l.clone();
                self.dead(&l)
            }
            None => false,
        };
        if dead {
            self.records.remove(&id);
        }
    }

    fn close(&mut self, id: RequestId) {
        if self.open.remove(&id).is_none() {
            return;
        }
        for rid in self.under.remove(&id).unwrap_or_default() {
            if self.records.get(&rid).is_some_and(|l| l.stored) {
                self.records.remove(&rid);
            }
        }
    }

    fn live(&self) -> usize {
        self.open.len() + self.records.len()
    }
}

/// What a recovery pass did (see [`UsageLog::recover`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplayReport {
    /// Records written to the store now.
    pub inserted: u64,
    /// Records the store already had.
    pub duplicates: u64,
    /// Records still waiting for the store.
    pub remaining: usize,
    /// Reservations of a previous process settled from their records.
    pub settled: u64,
    /// Reservations of a previous process released (no record under them).
    pub released: u64,
    /// Lines that did not parse at open, moved to the `.rejected` file.
    pub rejected: usize,
}

/// The usage log (see the module docs). Shared behind an [`Arc`].
pub struct UsageLog {
    path: PathBuf,
    state: Mutex<State>,
    leases: OnceLock<Arc<LeasedLedger>>,
    rejected: usize,
}

impl std::fmt::Debug for UsageLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UsageLog")
            .field("path", &self.path)
            .field("pending", &self.pending())
            .finish_non_exhaustive()
    }
}

fn open_append(path: &Path) -> Result<File, SpoolError> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(io_err(path))
}

fn encode(line: &Line, buf: &mut Vec<u8>) -> Result<(), SpoolError> {
    serde_json::to_writer(&mut *buf, line)?;
    buf.push(b'\n');
    Ok(())
}

/// Reads a log file: its lines, and those that do not parse.
fn read_lines(path: &Path) -> Result<(Vec<Line>, Vec<String>), SpoolError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(io_err(path)(e)),
    };
    let mut lines = Vec::new();
    let mut bad = Vec::new();
    for l in text.lines().filter(|l| !l.trim().is_empty()) {
        match serde_json::from_str::<Line>(l) {
            Ok(line) => lines.push(line),
            Err(_) => bad.push(l.to_owned()),
        }
    }
    Ok((lines, bad))
}

/// The records of the log at `path` that the store does not have yet (as far as the log
/// knows), oldest first, without opening it for writing.
pub fn waiting(path: &Path) -> Vec<SpoolEntry> {
    let Ok((lines, _)) = read_lines(path) else {
        return Vec::new();
    };
    let mut stored = std::collections::HashSet::new();
    for line in &lines {
        if let Line::Stored { ids } = line {
            stored.extend(ids.iter().copied());
        }
    }
    let mut seen = std::collections::HashSet::new();
    lines
        .into_iter()
        .filter_map(|l| match l {
            Line::Usage { record, under, at }
                if !stored.contains(&record.request_id) && seen.insert(record.request_id) =>
            {
                Some(SpoolEntry {
                    record,
                    under,
                    logged_at: at,
                })
            }
            _ => None,
        })
        .collect()
}

impl UsageLog {
    /// Opens (creating if needed) the log at `path` and reads back what a previous process
    /// left: its records wait for the store, its open reservations are orphans for
    /// [`recover`](Self::recover). The file is rewritten with the live lines only.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, SpoolError> {
        let path = path.into();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        }
        let (lines, bad) = read_lines(&path)?;
        if !bad.is_empty() {
            tracing::warn!(
                lines = bad.len(),
                "unreadable usage log lines moved to the rejected file"
            );
            let rejected_path = path.with_extension("rejected");
            let mut f = open_append(&rejected_path)?;
            let mut buf = bad.join("\n");
            buf.push('\n');
            f.write_all(buf.as_bytes())
                .and_then(|()| f.sync_data())
                .map_err(io_err(&rejected_path))?;
        }
        let mut state = State {
            file: open_append(&path)?,
            dirty: false,
            lines: lines.len() as u64,
            open: HashMap::new(),
            under: HashMap::new(),
            records: HashMap::new(),
            waiting: VecDeque::new(),
            resettle: Vec::new(),
        };
        for line in lines {
            state.apply(line);
        }
        for open in state.open.values_mut() {
            open.orphan = true;
        }
        let log = Self {
            path,
            state: Mutex::new(state),
            leases: OnceLock::new(),
            rejected: bad.len(),
        };
        {
            let mut state = log.state();
            log.rewrite(&mut state)?;
            super::metrics::set_spool_pending(state.waiting.len());
            if !state.waiting.is_empty() || !state.open.is_empty() {
                tracing::warn!(
                    records = state.waiting.len(),
                    reservations = state.open.len(),
                    path = %log.path.display(),
                    "usage log of a previous process: its records go to the store, its reservations are settled from them"
                );
            }
        }
        Ok(log)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The log file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The budget leases whose ids the records of leased requests carry.
    pub fn set_leases(&self, leases: Arc<LeasedLedger>) {
        let _ = self.leases.set(leases);
    }

    /// `records` with the lease each was admitted under (while it is in flight) written on
    /// it as its `lease_id`, so that the store has it too (another instance settles a dead
    /// holder's lease from the records carrying its id).
    #[must_use]
    pub fn with_leases<'a>(&self, records: &'a [UsageRecord]) -> Cow<'a, [UsageRecord]> {
        let Some(leases) = self.leases.get() else {
            return Cow::Borrowed(records);
        };
        // A lease is held until its request is settled, which comes after its record.
        let lease_of = |r: &UsageRecord| r.lease_id.or_else(|| leases.lease_of(r.request_id));
        if records.iter().all(|r| lease_of(r) == r.lease_id) {
            return Cow::Borrowed(records);
        }
        Cow::Owned(
            records
                .iter()
                .map(|r| UsageRecord {
                    lease_id: lease_of(r),
                    ..r.clone()
                })
                .collect(),
        )
    }

    /// Records waiting for the store.
    #[must_use]
    pub fn pending(&self) -> usize {
        self.state().waiting.len()
    }

    /// Reservations of a previous process not settled yet.
    #[must_use]
    pub fn orphans(&self) -> usize {
        self.state().open.values().filter(|o| o.orphan).count()
    }

    /// Lines in the file now (live and not yet rewritten).
    #[must_use]
    pub fn lines(&self) -> u64 {
        self.state().lines
    }

    fn write(&self, state: &mut State, buf: &[u8], lines: u64) -> Result<(), SpoolError> {
        state.file.write_all(buf).map_err(io_err(&self.path))?;
        state.dirty = true;
        state.lines += lines;
        Ok(())
    }

    /// Logs a reservation about to be made in the shared ledger.
    pub fn reserving(
        &self,
        org: OrgId,
        id: RequestId,
        budgets: &[BudgetId],
    ) -> Result<(), SpoolError> {
        let line = Line::Reserve {
            id,
            org,
            budgets: budgets.to_vec(),
        };
        let mut buf = Vec::with_capacity(160);
        encode(&line, &mut buf)?;
        let mut state = self.state();
        self.write(&mut state, &buf, 1)?;
        state.apply(line);
        Ok(())
    }

    /// Logs that reservation `id` is settled or released in the shared ledger (nothing when
    /// the log does not know it).
    pub fn closed(&self, id: RequestId) {
        let mut state = self.state();
        if !state.open.contains_key(&id) {
            return;
        }
        let mut buf = Vec::with_capacity(64);
        if encode(&Line::Closed { id }, &mut buf).is_ok()
            && let Err(e) = self.write(&mut state, &buf, 1)
        {
            // The reservation is settled; at worst the next start settles it again,
            // which the ledger ignores (idempotent by id).
            tracing::warn!(error = %e, "usage log: closed reservation not logged");
        }
        state.close(id);
    }

    /// Logs records (before their request is settled and answered), under the reservation
    /// each was admitted with. With `queue` they wait for the writer; otherwise the caller
    /// writes them to the store and reports with [`stored`](Self::stored) or
    /// [`requeue`](Self::requeue). Returns how many records waited before.
    pub fn log_usage(&self, records: &[UsageRecord], queue: bool) -> Result<usize, SpoolError> {
        let at = Utc::now();
        let leases = self.leases.get();
        let unders: Vec<Option<RequestId>> = records
            .iter()
            .map(|r| {
                r.lease_id
                    .or_else(|| leases.and_then(|l| l.lease_of(r.request_id)))
            })
            .collect();
        let mut state = self.state();
        let mut buf = Vec::with_capacity(600 * records.len());
        let mut lines = Vec::with_capacity(records.len());
        for (record, under) in records.iter().zip(unders) {
            let under = under.or_else(|| {
                state
                    .open
                    .contains_key(&record.request_id)
                    .then_some(record.request_id)
            });
            let line = Line::Usage {
                record: record.clone(),
                under,
                at,
            };
            encode(&line, &mut buf)?;
            lines.push(line);
        }
        self.write(&mut state, &buf, lines.len() as u64)?;
        let before = state.waiting.len();
        for line in lines {
            state.apply(line);
        }
        if !queue {
            // The caller writes them now; they wait only if that fails.
            let ids: std::collections::HashSet<RequestId> =
                records.iter().map(|r| r.request_id).collect();
            while state.waiting.back().is_some_and(|w| ids.contains(w)) {
                state.waiting.pop_back();
            }
        }
        super::metrics::set_spool_pending(state.waiting.len());
        Ok(before)
    }

    /// The store has these records: logged as such.
    pub fn stored(&self, ids: &[RequestId]) {
        if ids.is_empty() {
            return;
        }
        let line = Line::Stored { ids: ids.to_vec() };
        let mut buf = Vec::with_capacity(48 * ids.len() + 32);
        let mut state = self.state();
        if encode(&line, &mut buf).is_ok()
            && let Err(e) = self.write(&mut state, &buf, 1)
        {
            // They are in the store; at worst the next start writes them again (duplicates).
            tracing::warn!(error = %e, "usage log: stored records not logged");
        }
        state.apply(line);
    }

    /// Records the caller could not write to the store: they wait for the writer.
    pub fn requeue(&self, ids: &[RequestId]) {
        let mut state = self.state();
        for id in ids {
            if state.records.get(id).is_some_and(|l| !l.stored) && !state.waiting.contains(id) {
                state.waiting.push_back(*id);
            }
        }
        super::metrics::set_spool_pending(state.waiting.len());
    }

    /// A settlement of this process the ledger refused, for the writer to retry.
    pub fn resettle(
        &self,
        org: OrgId,
        id: RequestId,
        budgets: Vec<BudgetId>,
        amount: Money,
        at: DateTime<Utc>,
    ) {
        self.state().resettle.push(Resettle {
            org,
            id,
            budgets,
            amount,
            at,
        });
    }

    /// Takes up to `max` waiting records (give back those not written with
    /// [`requeue`](Self::requeue)).
    pub fn take_waiting(&self, max: usize) -> Vec<SpoolEntry> {
        let mut state = self.state();
        let mut out = Vec::new();
        while out.len() < max {
            let Some(id) = state.waiting.pop_front() else {
                break;
            };
            if let Some(l) = state.records.get(&id).filter(|l| !l.stored) {
                out.push(l.entry.clone());
            }
        }
        out
    }

    /// Writes every waiting record to `usage`, retries refused settlements and settles the
    /// previous process's reservations from their records through `ledger` (the shared one,
    /// journaled: see [`JournaledLedger`]), then compacts the file. Stops at the first store
    /// failure (what is left waits for the next pass).
    pub async fn recover(
        &self,
        ledger: &dyn BudgetLedger,
        usage: &dyn stratai_core::ports::UsageStore,
        raised: &mut Raised,
    ) -> Result<ReplayReport, StoreError> {
        let mut report = ReplayReport {
            rejected: self.rejected,
            ..ReplayReport::default()
        };
        let result = self.recover_inner(ledger, usage, raised, &mut report).await;
        report.remaining = self.pending();
        if let Err(e) = self.compact() {
            tracing::warn!(error = %e, "usage log not compacted");
        }
        result.map(|()| report)
    }

    async fn recover_inner(
        &self,
        ledger: &dyn BudgetLedger,
        usage: &dyn stratai_core::ports::UsageStore,
        raised: &mut Raised,
        report: &mut ReplayReport,
    ) -> Result<(), StoreError> {
        loop {
            let batch = self.take_waiting(super::batch::MAX_BATCH);
            if batch.is_empty() {
                break;
            }
            let mut by_org: std::collections::BTreeMap<OrgId, Vec<SpoolEntry>> =
                std::collections::BTreeMap::new();
            for e in batch {
                by_org.entry(e.record.org_id).or_default().push(e);
            }
            let mut failed: Option<StoreError> = None;
            for (org, entries) in by_org {
                let ids: Vec<RequestId> = entries.iter().map(|e| e.record.request_id).collect();
                if failed.is_some() {
                    self.requeue(&ids);
                    continue;
                }
                let records: Vec<UsageRecord> = entries.iter().map(|e| e.record.clone()).collect();
                match usage.append(org, &records).await {
                    Ok(outcome) => {
                        report.inserted += outcome.inserted;
                        report.duplicates += outcome.duplicates;
                        self.stored(&ids);
                        for e in &entries {
                            super::metrics::record_usage_write_lag_since(e.logged_at);
                        }
                    }
                    Err(e) => {
                        self.requeue(&ids);
                        super::metrics::record_spooled();
                        failed = Some(e);
                    }
                }
            }
            if let Some(e) = failed {
                return Err(e);
            }
        }
        let resettle = std::mem::take(&mut self.state().resettle);
        let mut resettle = resettle.into_iter();
        while let Some(r) = resettle.next() {
            match ledger.settle(r.org, r.id, &r.budgets, r.amount, r.at).await {
                Ok(outcome) => raised.alerts.extend(outcome.alerts),
                Err(e) => {
                    let mut state = self.state();
                    state.resettle.push(r);
                    state.resettle.extend(resettle);
                    return Err(e);
                }
            }
        }
        let orphans: Vec<(RequestId, Open, Money, u64)> = {
            let state = self.state();
            state
                .open
                .iter()
                .filter(|(_, o)| o.orphan)
                .map(|(id, o)| {
                    let under = state.under.get(id).map(Vec::as_slice).unwrap_or_default();
                    let (charged, records) = under
                        .iter()
                        .filter_map(|rid| state.records.get(rid))
                        .fold((Money::ZERO, 0), |(sum, n), l| {
                            (sum + l.entry.record.charged(), n + 1)
                        });
                    (*id, o.clone(), charged, records)
                })
                .collect()
        };
        let now = Utc::now();
        for (id, open, charged, records) in orphans {
            match settle_from_records(ledger, open.org, id, &open.budgets, charged, records, now)
                .await?
            {
                Some(outcome) => {
                    raised.alerts.extend(outcome.alerts);
                    report.settled += 1;
                    if outcome.applied {
                        raised
                            .late_overage
                            .extend(over_limit(ledger, open.org, &open.budgets, now).await);
                    }
                }
                None => report.released += 1,
            }
            // The journaled ledger logged it closed; a bare one did not.
            self.closed(id);
            tracing::info!(reservation = %id, charged = %charged, records, "reservation of a previous process settled from its usage records");
        }
        Ok(())
    }

    /// Truncates the file when nothing in it is live any more, or rewrites it with the live
    /// lines when the dead ones are the most.
    pub fn compact(&self) -> Result<(), SpoolError> {
        let mut state = self.state();
        let live = state.live() as u64;
        if state.lines == 0 || (live > 0 && state.lines < 4 * live + 4096) {
            return Ok(());
        }
        self.rewrite(&mut state)
    }

    fn rewrite(&self, state: &mut State) -> Result<(), SpoolError> {
        if state.live() == 0 {
            state.file.set_len(0).map_err(io_err(&self.path))?;
            state.file.sync_all().map_err(io_err(&self.path))?;
            state.lines = 0;
            state.dirty = false;
            return Ok(());
        }
        let mut buf = Vec::new();
        let mut lines = 0u64;
        let mut reservations: Vec<(&RequestId, &Open)> = state.open.iter().collect();
        reservations.sort_by_key(|(id, _)| **id);
        for (id, o) in reservations {
            encode(
                &Line::Reserve {
                    id: *id,
                    org: o.org,
                    budgets: o.budgets.clone(),
                },
                &mut buf,
            )?;
            lines += 1;
        }
        let mut records: Vec<&Logged> = state.records.values().collect();
        records.sort_by_key(|l| (l.entry.logged_at, l.entry.record.request_id));
        let mut stored = Vec::new();
        for l in records {
            encode(
                &Line::Usage {
                    record: l.entry.record.clone(),
                    under: l.entry.under,
                    at: l.entry.logged_at,
                },
                &mut buf,
            )?;
            lines += 1;
            if l.stored {
                stored.push(l.entry.record.request_id);
            }
        }
        if !stored.is_empty() {
            encode(&Line::Stored { ids: stored }, &mut buf)?;
            lines += 1;
        }
        let tmp = self.path.with_extension("tmp");
        {
            let mut out = File::create(&tmp).map_err(io_err(&tmp))?;
            out.write_all(&buf).map_err(io_err(&tmp))?;
            out.sync_all().map_err(io_err(&tmp))?;
        }
        std::fs::rename(&tmp, &self.path).map_err(io_err(&self.path))?;
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty())
            && let Ok(d) = File::open(dir)
        {
            // Makes the rename itself durable.
            let _ = d.sync_all();
        }
        state.file = open_append(&self.path)?;
        state.lines = lines;
        state.dirty = false;
        Ok(())
    }

    /// Makes what was written so far durable against power loss (`fsync`), if anything was.
    pub fn sync(&self) -> Result<(), SpoolError> {
        let file = {
            let mut state = self.state();
            if !state.dirty {
                return Ok(());
            }
            state.dirty = false;
            state.file.try_clone().map_err(io_err(&self.path))?
        };
        file.sync_data().map_err(io_err(&self.path))
    }

    /// `fsync`s what was written every `every` (see the module docs) until aborted.
    pub fn spawn_syncer(self: Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let log = self.clone();
                match tokio::task::spawn_blocking(move || log.sync()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::error!(error = %e, "usage log not synced"),
                    Err(e) => tracing::error!(error = %e, "usage log sync task failed"),
                }
            }
        })
    }
}

/// Settles reservation `id` from the records written under it: with `charged`, what its
/// `records` records charge in all ([`UsageRecord::charged`]), through
/// [`BudgetLedger::settle_total`] (once across instances; what an earlier settlement by
/// another instance did not count is charged after the fact), or released when no record
/// was written under it (nothing spent). `None` when released. What a restart does for the
/// reservations its log holds open, and another instance for the leases of a dead holder.
pub(crate) async fn settle_from_records(
    ledger: &dyn BudgetLedger,
    org: OrgId,
    id: RequestId,
    budgets: &[BudgetId],
    charged: Money,
    records: u64,
    now: DateTime<Utc>,
) -> Result<Option<SettleOutcome>, StoreError> {
    if records == 0 {
        ledger.release(org, id).await?;
        return Ok(None);
    }
    ledger
        .settle_total(org, id, budgets, charged, now)
        .await
        .map(Some)
}

/// The hard budgets among `budgets` whose spend is past their limit: after a settlement
/// from records, those that records charged after the fact (their reservation was settled by
/// another instance before they reached the store) took past it, as overage.
async fn over_limit(
    ledger: &dyn BudgetLedger,
    org: OrgId,
    budgets: &[BudgetId],
    now: DateTime<Utc>,
) -> Vec<BudgetState> {
    match ledger.states(org, budgets, now).await {
        Ok(states) => states
            .into_iter()
            .filter(|s| s.budget.hard_limit && s.spent > s.budget.limit)
            .collect(),
        Err(e) => {
            tracing::warn!(error = %e, org = %org, "budgets not read after a settlement from records; a late overage may go unalerted");
            Vec::new()
        }
    }
}

/// What a recovery pass ([`UsageLog::recover`]) raised, for the alert sink.
#[derive(Clone, Debug, Default)]
pub struct Raised {
    /// Threshold alerts of the settlements.
    pub alerts: Vec<stratai_core::budget::BudgetAlert>,
    /// Hard budgets that records charged after the fact took past their limit
    /// ([`super::alerts::AlertSink::late_overage`]).
    pub late_overage: Vec<BudgetState>,
}

/// The shared [`BudgetLedger`] with every reservation journaled in the [`UsageLog`]: logged
/// before it is made, logged closed once settled or released (or refused), so that a
/// restart settles what a killed process held (see the module docs).
pub struct JournaledLedger {
    inner: Arc<dyn BudgetLedger>,
    log: Arc<UsageLog>,
}

impl std::fmt::Debug for JournaledLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JournaledLedger").finish_non_exhaustive()
    }
}

impl JournaledLedger {
    /// `inner`, journaled in `log`.
    #[must_use]
    pub fn new(inner: Arc<dyn BudgetLedger>, log: Arc<UsageLog>) -> Self {
        Self { inner, log }
    }
}

#[async_trait]
impl BudgetLedger for JournaledLedger {
    async fn create_budget(&self, org: OrgId, budget: &Budget) -> Result<(), StoreError> {
        self.inner.create_budget(org, budget).await
    }
    async fn get_budget(&self, org: OrgId, budget: BudgetId) -> Result<Budget, StoreError> {
        self.inner.get_budget(org, budget).await
    }
    async fn list_budgets(&self, org: OrgId) -> Result<Vec<Budget>, StoreError> {
        self.inner.list_budgets(org).await
    }
    async fn update_budget(&self, org: OrgId, budget: &Budget) -> Result<(), StoreError> {
        self.inner.update_budget(org, budget).await
    }
    async fn delete_budget(&self, org: OrgId, budget: BudgetId) -> Result<(), StoreError> {
        self.inner.delete_budget(org, budget).await
    }
    async fn states(
        &self,
        org: OrgId,
        budgets: &[BudgetId],
        now: DateTime<Utc>,
    ) -> Result<Vec<BudgetState>, StoreError> {
        self.inner.states(org, budgets, now).await
    }

    async fn reserve(
        &self,
        org: OrgId,
        request: &ReserveRequest,
    ) -> Result<ReserveOutcome, StoreError> {
        if request.budgets.is_empty() {
            return self.inner.reserve(org, request).await;
        }
        // No reservation the log does not know of: refuse rather than hold one blind.
        self.log
            .reserving(org, request.request_id, &request.budgets)
            .map_err(|e| StoreError::Backend(e.to_string()))?;
        let outcome = self.inner.reserve(org, request).await?;
        if matches!(outcome, ReserveOutcome::Refused(_)) {
            self.log.closed(request.request_id);
        }
        Ok(outcome)
    }

    async fn settle(
        &self,
        org: OrgId,
        request_id: RequestId,
        budgets: &[BudgetId],
        actual: Money,
        now: DateTime<Utc>,
    ) -> Result<SettleOutcome, StoreError> {
        let outcome = self
            .inner
            .settle(org, request_id, budgets, actual, now)
            .await?;
        self.log.closed(request_id);
        Ok(outcome)
    }

    async fn release(&self, org: OrgId, request_id: RequestId) -> Result<(), StoreError> {
        self.inner.release(org, request_id).await?;
        self.log.closed(request_id);
        Ok(())
    }

    async fn reclaim_expired(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        self.inner.reclaim_expired(now).await
    }

    async fn settle_total(
        &self,
        org: OrgId,
        request_id: RequestId,
        budgets: &[BudgetId],
        total: Money,
        now: DateTime<Utc>,
    ) -> Result<SettleOutcome, StoreError> {
        let outcome = self
            .inner
            .settle_total(org, request_id, budgets, total, now)
            .await?;
        self.log.closed(request_id);
        Ok(outcome)
    }

    async fn beat(&self, instance: InstanceId, now: DateTime<Utc>) -> Result<(), StoreError> {
        self.inner.beat(instance, now).await
    }

    async fn retire_instance(&self, instance: InstanceId) -> Result<(), StoreError> {
        self.inner.retire_instance(instance).await
    }

    async fn abandoned_leases(
        &self,
        dead_before: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<HeldReservation>, StoreError> {
        self.inner.abandoned_leases(dead_before, limit).await
    }
}
