//! [`LeasedLedger`]: budget reservations in blocks, so most requests reserve and settle in
//! memory instead of making two round trips to the shared ledger.
//!
//! An instance reserves a *lease* — a block worth `block_requests` times the request's
//! worst case — against the same budgets in the shared ledger, as one ordinary reservation.
//! Requests of that budget set are then admitted locally while the block has room, and
//! settled locally. When the lease is older than `max_age` (or cannot hold the next request)
//! it stops admitting; once its last request is settled, the next [`LeasedLedger::flush`]
//! settles it in the shared ledger with the sum of its requests' actual costs, which
//! releases the unused rest.
//!
//! One background task keeps requests off the shared ledger: it waits on
//! [`LeasedLedger::refill_wanted`] and a periodic tick, and calls [`LeasedLedger::flush`]
//! (settles closed leases) and [`LeasedLedger::refill`] (opens successors before the
//! current lease runs out, sized for the traffic seen, and a small standby lease for a
//! budget set that paused, for `keep_warm`). A request waits for the shared ledger only when
//! no lease has room: the first request of a budget set, a burst beyond the refill's
//! estimate, or near exhaustion.
//!
//! Why a hard limit is still never overspent, across any number of instances: every local
//! admission fits inside a block that the shared ledger reserved atomically, and the shared
//! ledger never reserves past a hard limit. Actual costs never exceed a request's worst case
//! (the Gatekeeper reserves the clamped request's maximum), so a lease's settled spend never
//! exceeds its block.
//!
//! The price, documented where it is configured:
//! - spend reaches the shared ledger when a lease closes (after at most `max_age` plus the
//!   longest request of the lease, plus the flush's delay); until then other readers see
//!   the block as *reserved*;
//! - room held by one instance's lease is not usable by another until the lease closes, so
//!   near exhaustion a lease is refused and the request falls back to an exact reservation
//!   (after settling this instance's idle leases of the organization, and its closed leases
//!   still waiting for the background settlement); a request is refused only when the exact
//!   reservation is refused too;
//! - if the process dies, its open leases are settled with the sum of the records written
//!   under them (each request's record carries its lease's id, [`LeasedLedger::lease_of`]):
//!   by another instance once the holder's heartbeat is older than `dead_after`, from the
//!   records in the store ([`BudgetLedger::abandoned_leases`], the runtime's upkeep); and by
//!   the next start over the same usage log (`runtime::spool`, which journals every lease
//!   before it is reserved), from the records in the log, which charges after the fact what
//!   only the log held. Without a usage log leases name no holder: they are reclaimed when
//!   their reservation expires and their requests' spend is missing from the ledger.
//!
//! Threshold alerts come from the shared ledger when a lease is settled; they are handed
//! out by that [`LeasedLedger::flush`] (or the next [`BudgetLedger::settle`] when a request
//! settled leases on its own path).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use rust_decimal::prelude::ToPrimitive;
use stratai_core::budget::{Budget, BudgetAlert, BudgetState};
use stratai_core::ids::{BudgetId, InstanceId, OrgId, RequestId};
use stratai_core::ports::{
    BudgetLedger, HeldReservation, ReserveOutcome, ReserveRequest, SettleOutcome,
};
use stratai_core::{Money, StoreError};

/// How leases are sized and how long they live.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    /// A lease stops admitting after this long (then closes when its last request ends).
    pub max_age: Duration,
    /// A new lease reserves this many times the worst case of the request that opens it.
    pub block_requests: u32,
    /// How long the shared ledger keeps a lease's reservation if the lease is never closed
    /// (the process died).
    pub reservation_ttl: ChronoDuration,
    /// How long after a budget set's last admission [`LeasedLedger::refill`] keeps a small
    /// *standby* lease (`block_requests` worst cases) open for it, so that the first
    /// requests after a pause do not wait for the shared ledger. Zero: no standby leases.
    pub keep_warm: Duration,
    /// The instance holding the leases, named on their reservations (`None`: anonymous
    /// leases, reclaimed only when they expire). Name it only when a heartbeat of it is
    /// written ([`BudgetLedger::beat`]) and the records of leased requests carry their lease
    /// id (the runtime's usage log): another instance then settles the leases of a holder
    /// whose heartbeat stopped from their records ([`BudgetLedger::abandoned_leases`]).
    pub holder: Option<InstanceId>,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        Self {
            max_age: Duration::from_secs(1),
            block_requests: 32,
            reservation_ttl: ChronoDuration::minutes(15),
            keep_warm: Duration::from_secs(10),
            holder: None,
        }
    }
}

type LeaseKey = (OrgId, Vec<BudgetId>);

struct Lease {
    key: LeaseKey,
    block: Money,
    /// Worst cases of the requests in flight plus actual costs of the settled ones.
    committed: Money,
    /// Actual costs of the settled requests.
    settled: Money,
    in_flight: u32,
    opened: Instant,
    closing: bool,
    /// The shared ledger's states right after the block was reserved.
    states: Vec<BudgetState>,
    /// Worst case of the request the lease was sized for.
    unit: Money,
    /// Requests admitted under it so far.
    admitted: u32,
    /// Whether it already asked for a successor (see [`LeasedLedger::refill_wanted`]).
    asked_successor: bool,
    /// Opened by [`LeasedLedger::refill`] for a budget set that was pausing: its first
    /// admission asks for a successor sized for the traffic that resumed.
    standby: bool,
}

impl Lease {
    fn room(&self) -> Money {
        self.block.saturating_sub(self.committed)
    }

    /// The most a new lease of its budget set may hold: a quarter of what the tightest of its
    /// budgets had left when this lease was taken (near exhaustion, requests reserve for
    /// themselves instead of an instance holding the rest idle).
    fn prefetch_cap(&self) -> Option<Money> {
        let left = self
            .states
            .iter()
            .map(|s| s.budget.limit.saturating_sub(s.spent + s.reserved))
            .min()?;
        Money::new(left.amount() / rust_decimal::Decimal::from(4)).ok()
    }

    /// The states as a reader of this lease sees them: the block replaced by what the
    /// lease's requests hold and spent.
    fn view(&self) -> Vec<BudgetState> {
        self.states
            .iter()
            .map(|s| BudgetState {
                spent: s.spent + self.settled,
                reserved: s.reserved.saturating_sub(self.block)
                    + self.committed.saturating_sub(self.settled),
                ..s.clone()
            })
            .collect()
    }
}

struct Held {
    lease: RequestId,
    reserved: Money,
}

/// A lease to settle in the shared ledger.
struct Closing {
    id: RequestId,
    org: OrgId,
    budgets: Vec<BudgetId>,
    settled: Money,
}

/// Request ids settled or released here recently (idempotency of repeated calls).
struct Recent {
    order: VecDeque<RequestId>,
    set: HashSet<RequestId>,
}

const RECENT_CAP: usize = 200_000;

/// The largest lease [`LeasedLedger::refill`] opens, in worst cases.
pub const MAX_BLOCK_REQUESTS: u32 = 4096;

impl Recent {
    fn insert(&mut self, id: RequestId) {
        if self.set.insert(id) {
            self.order.push_back(id);
            if self.order.len() > RECENT_CAP
                && let Some(old) = self.order.pop_front()
            {
                self.set.remove(&old);
            }
        }
    }
}

#[derive(Default)]
struct State {
    leases: HashMap<RequestId, Lease>,
    by_key: HashMap<LeaseKey, Vec<RequestId>>,
    held: HashMap<RequestId, Held>,
    /// Leases closed and waiting for the next flush: their last request ended (settled by
    /// the flush, off that request's path), or their settlement failed (retried).
    unsettled: Vec<Closing>,
    /// Leases taken for settlement whose settlement has not finished yet.
    settling: usize,
    alerts: Vec<BudgetAlert>,
    /// Requests admitted per budget set, for [`LeasedLedger::refill`]'s rate estimate.
    rates: HashMap<LeaseKey, KeyRate>,
    /// Set by [`LeasedLedger::close_all`]: refill opens nothing more.
    shut: bool,
}

/// Admissions of one budget set, counted since [`LeasedLedger::refill`] last looked.
struct KeyRate {
    admitted: u64,
    /// The first admission counted (the window starts there, not at the last look, so that
    /// traffic resuming after a pause is measured at its own pace).
    since: Option<Instant>,
    last: Instant,
}

impl KeyRate {
    /// Admissions per second in the window (at least 10 ms long).
    fn rate(&self) -> f64 {
        let Some(since) = self.since else {
            return 0.0;
        };
        let elapsed = since.elapsed().max(Duration::from_millis(10));
        #[allow(clippy::cast_precision_loss)] // counts far below 2^52
        let rate = self.admitted as f64 / elapsed.as_secs_f64();
        rate
    }
}

impl State {
    fn count_admission(&mut self, key: &LeaseKey) {
        let now = Instant::now();
        match self.rates.get_mut(key) {
            Some(r) => {
                r.admitted += 1;
                r.since.get_or_insert(now);
                r.last = now;
            }
            None => {
                self.rates.insert(
                    key.clone(),
                    KeyRate {
                        admitted: 1,
                        since: Some(now),
                        last: now,
                    },
                );
            }
        }
    }

    /// Admissions per second of `key` since [`State::take_rate`] last looked, without
    /// starting a new count.
    fn peek_rate(&self, key: &LeaseKey) -> f64 {
        self.rates.get(key).map_or(0.0, KeyRate::rate)
    }

    /// Admissions per second of `key` since the last call, and a new count from the next
    /// admission.
    fn take_rate(&mut self, key: &LeaseKey) -> f64 {
        let Some(r) = self.rates.get_mut(key) else {
            return 0.0;
        };
        let rate = r.rate();
        r.admitted = 0;
        r.since = None;
        rate
    }

    /// Whether `key` admitted a request within `window`.
    fn active_within(&self, key: &LeaseKey, window: Duration) -> bool {
        self.rates
            .get(key)
            .is_some_and(|r| r.last.elapsed() < window)
    }
}

impl State {
    /// Takes the closed leases that wait for the background settlement (or for a retry of a
    /// failed one), all of them or `org`'s only, to settle them now.
    fn take_unsettled(&mut self, org: Option<OrgId>) -> Vec<Closing> {
        let (taken, rest): (Vec<Closing>, Vec<Closing>) = std::mem::take(&mut self.unsettled)
            .into_iter()
            .partition(|c| org.is_none_or(|o| c.org == o));
        self.unsettled = rest;
        // They count as being settled until the settlement ends.
        self.settling += taken.len();
        taken
    }

    /// Removes lease `id` (it has no request in flight) for settlement.
    fn take(&mut self, id: RequestId) -> Option<Closing> {
        let lease = self.leases.remove(&id)?;
        self.settling += 1;
        if let Some(ids) = self.by_key.get_mut(&lease.key) {
            ids.retain(|l| *l != id);
            if ids.is_empty() {
                self.by_key.remove(&lease.key);
            }
        }
        Some(Closing {
            id,
            org: lease.key.0,
            budgets: lease.key.1,
            settled: lease.settled,
        })
    }

    /// Marks old leases closing and takes those without requests in flight (of `org` only,
    /// or every organization); with `idle_of_org`, every idle lease of that organization
    /// is taken whatever its age.
    fn take_closable(&mut self, max_age: Duration, idle_of_org: Option<OrgId>) -> Vec<Closing> {
        let mut ids = Vec::new();
        for (id, lease) in &mut self.leases {
            if lease.opened.elapsed() >= max_age {
                lease.closing = true;
            }
            let forced = idle_of_org == Some(lease.key.0);
            if lease.in_flight == 0 && (lease.closing || forced) {
                ids.push(*id);
            }
        }
        ids.into_iter().filter_map(|id| self.take(id)).collect()
    }
}

/// A [`BudgetLedger`] that reserves budget in blocks from a shared ledger (see the module
/// docs). Budget definitions, states and reclamation pass through to the shared ledger.
pub struct LeasedLedger {
    inner: std::sync::Arc<dyn BudgetLedger>,
    config: LeaseConfig,
    state: Mutex<State>,
    recent: Mutex<Recent>,
    /// One opener per budget set: a request that finds no room waits for the lease another
    /// one is opening instead of reserving a block of its own.
    opening: Mutex<HashMap<LeaseKey, std::sync::Arc<futures::lock::Mutex<()>>>>,
    /// Wakes [`LeasedLedger::refill_wanted`]; `wake_pending` keeps at most one wake queued.
    wake: futures::channel::mpsc::UnboundedSender<()>,
    wake_pending: std::sync::atomic::AtomicBool,
    woken: futures::lock::Mutex<futures::channel::mpsc::UnboundedReceiver<()>>,
}

impl std::fmt::Debug for LeasedLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeasedLedger")
            .field("config", &self.config)
            .field("open_leases", &self.open_leases())
            .finish_non_exhaustive()
    }
}

impl LeasedLedger {
    /// Leases from `inner`.
    #[must_use]
    pub fn new(inner: std::sync::Arc<dyn BudgetLedger>, config: LeaseConfig) -> Self {
        let (wake, woken) = futures::channel::mpsc::unbounded();
        Self {
            wake,
            wake_pending: std::sync::atomic::AtomicBool::new(false),
            woken: futures::lock::Mutex::new(woken),
            inner,
            config,
            state: Mutex::new(State::default()),
            recent: Mutex::new(Recent {
                order: VecDeque::new(),
                set: HashSet::new(),
            }),
            opening: Mutex::new(HashMap::new()),
        }
    }

    fn opening_gate(&self, key: &LeaseKey) -> std::sync::Arc<futures::lock::Mutex<()>> {
        let mut gates = self
            .opening
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if gates.len() >= 10_000 && !gates.contains_key(key) {
            // A bound on memory; a gate in use stays alive with its holders.
            gates.clear();
        }
        gates.entry(key.clone()).or_default().clone()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the maps half-updated in a way that
        // breaks the budget invariant (each update is a few assignments); keep serving.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn recent(&self) -> MutexGuard<'_, Recent> {
        self.recent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Asks the task waiting in [`LeasedLedger::refill_wanted`] to refill now.
    fn ask_refill(&self) {
        if !self
            .wake_pending
            .swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            // The receiver lives as long as `self`: sending cannot fail.
            let _ = self.wake.unbounded_send(());
        }
    }

    /// Resolves when there is work for the background task: a budget set's lease has used
    /// half its block, or a standby lease its first (call [`LeasedLedger::refill`] now rather
    /// than at the next tick, so that a successor is open before requests run out of room),
    /// or a lease closed with its last request (call [`LeasedLedger::flush`] to settle it).
    /// Meant for one background task (`select` it with the periodic tick); it resolves at
    /// once when a wake arrived since the last call.
    pub async fn refill_wanted(&self) {
        let mut woken = self.woken.lock().await;
        if futures::StreamExt::next(&mut *woken).await.is_some() {
            self.wake_pending
                .store(false, std::sync::atomic::Ordering::Release);
        } else {
            // Unreachable while `self` holds the sender; never spin.
            futures::future::pending::<()>().await;
        }
    }

    /// Leases currently open (admitting or waiting for their last request).
    #[must_use]
    pub fn open_leases(&self) -> usize {
        self.state().leases.len()
    }

    /// The lease request `request` was admitted under, while it is in flight (the usage log
    /// writes it on the request's record, so a restart settles the lease from its records).
    #[must_use]
    pub fn lease_of(&self, request: RequestId) -> Option<RequestId> {
        self.state().held.get(&request).map(|h| h.lease)
    }

    /// Requests admitted under a lease and not yet settled or released.
    #[must_use]
    pub fn in_flight(&self) -> usize {
        self.state().held.len()
    }

    /// Settles, in the shared ledger, every lease older than `max_age` whose requests have
    /// all ended (and retries earlier failed settlements). Returns the threshold alerts that
    /// fired. Call it periodically (e.g. every `max_age / 4`), and [`close_all`] at shutdown.
    ///
    /// [`close_all`]: LeasedLedger::close_all
    pub async fn flush(&self, now: DateTime<Utc>) -> Result<Vec<BudgetAlert>, StoreError> {
        let closing = {
            let mut state = self.state();
            let mut closing = state.take_unsettled(None);
            closing.extend(state.take_closable(self.config.max_age, None));
            closing
        };
        self.settle_leases(closing, now).await?;
        Ok(std::mem::take(&mut self.state().alerts))
    }

    /// Stops every lease from admitting and settles those whose requests have ended (and
    /// [`LeasedLedger::refill`] from opening any more: this is for shutdown); returns how
    /// many leases are not settled yet (waiting for requests in flight, or being settled by
    /// another task) with the alerts that fired.
    pub async fn close_all(
        &self,
        now: DateTime<Utc>,
    ) -> Result<(usize, Vec<BudgetAlert>), StoreError> {
        let closing = {
            let mut state = self.state();
            state.shut = true;
            for lease in state.leases.values_mut() {
                lease.closing = true;
            }
            let mut closing = state.take_unsettled(None);
            closing.extend(state.take_closable(Duration::ZERO, None));
            closing
        };
        self.settle_leases(closing, now).await?;
        let mut state = self.state();
        let open = state.leases.len() + state.settling + state.unsettled.len();
        Ok((open, std::mem::take(&mut state.alerts)))
    }

    /// Settles leases in the shared ledger; a failure keeps the rest for the next flush.
    async fn settle_leases(
        &self,
        closing: Vec<Closing>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut iter = closing.into_iter();
        while let Some(c) = iter.next() {
            // From the total of its requests: if another instance settled the lease meanwhile
            // (this one's heartbeat was late), what it did not count is charged now.
            match self
                .inner
                .settle_total(c.org, c.id, &c.budgets, c.settled, now)
                .await
            {
                Ok(outcome) => {
                    let mut state = self.state();
                    state.settling = state.settling.saturating_sub(1);
                    state.alerts.extend(outcome.alerts);
                }
                Err(e) => {
                    let rest: Vec<Closing> = iter.collect();
                    let mut state = self.state();
                    state.settling = state.settling.saturating_sub(1 + rest.len());
                    state.unsettled.push(c);
                    state.unsettled.extend(rest);
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Takes `amount` from an open lease of `key`, if one has room.
    fn take_local(
        &self,
        key: &LeaseKey,
        request: RequestId,
        amount: Money,
    ) -> Option<Vec<BudgetState>> {
        let mut state = self.state();
        let state = &mut *state;
        let ids = state.by_key.get(key)?;
        let max_age = self.config.max_age;
        let id = ids.iter().copied().find(|id| {
            state
                .leases
                .get(id)
                .is_some_and(|l| !l.closing && l.opened.elapsed() < max_age && l.room() >= amount)
        })?;
        let lease = state.leases.get_mut(&id)?;
        lease.committed = lease.committed + amount;
        lease.in_flight += 1;
        lease.admitted += 1;
        // Half the block used, or a standby lease's first use: time to open the successor,
        // off the request path.
        let ask =
            !lease.asked_successor && (lease.standby || lease.room() + lease.room() < lease.block);
        if ask {
            lease.asked_successor = true;
        }
        let view = lease.view();
        state.count_admission(key);
        state.held.insert(
            request,
            Held {
                lease: id,
                reserved: amount,
            },
        );
        if ask {
            self.ask_refill();
        }
        Some(view)
    }

    /// The block a request that found no room opens for `key`: `block_requests` worst cases
    /// of `amount`, or as many as the budget set's recent admissions fill in half a lease's
    /// age (at most [`MAX_BLOCK_REQUESTS`], and never more than a quarter of what its
    /// budgets had left when its newest lease was taken, as [`LeasedLedger::refill`]).
    fn path_block(&self, key: &LeaseKey, amount: Money) -> Money {
        let floor_requests = self.config.block_requests.max(1);
        let times = |n: u32| {
            amount
                .amount()
                .checked_mul(rust_decimal::Decimal::from(n))
                .and_then(|d| Money::new(d).ok())
                .unwrap_or(amount)
        };
        let floor = times(floor_requests);
        let state = self.state();
        let rate = state.peek_rate(key);
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let by_rate = (rate * self.config.max_age.as_secs_f64() / 2.0).ceil() as u32;
        let requests = by_rate.clamp(floor_requests, MAX_BLOCK_REQUESTS);
        if requests == floor_requests {
            return floor;
        }
        let cap = state.by_key.get(key).and_then(|ids| {
            ids.iter()
                .filter_map(|id| state.leases.get(id))
                .max_by_key(|l| l.opened)?
                .prefetch_cap()
        });
        match cap {
            Some(cap) => times(requests).min(cap).max(floor),
            // Nothing known of the budgets' room: the configured size.
            None => floor,
        }
    }

    /// Reserves a new lease of `block` for `key` and takes `amount` from it.
    async fn open(
        &self,
        key: &LeaseKey,
        request: &ReserveRequest,
        block: Money,
    ) -> Result<ReserveOutcome, StoreError> {
        let (lease_id, mut lease) = match self.reserve_block(key, block, request.now).await? {
            Ok(opened) => opened,
            Err(refused) => return Ok(refused),
        };
        lease.committed = request.amount;
        lease.in_flight = 1;
        lease.admitted = 1;
        lease.unit = request.amount;
        let view = lease.view();
        let mut state = self.state();
        state.count_admission(key);
        state.leases.insert(lease_id, lease);
        state.by_key.entry(key.clone()).or_default().push(lease_id);
        state.held.insert(
            request.request_id,
            Held {
                lease: lease_id,
                reserved: request.amount,
            },
        );
        Ok(ReserveOutcome::Reserved(view))
    }

    /// Reserves `block` against `key`'s budgets in the shared ledger: an empty lease, or the
    /// shared ledger's refusal.
    async fn reserve_block(
        &self,
        key: &LeaseKey,
        block: Money,
        now: DateTime<Utc>,
    ) -> Result<Result<(RequestId, Lease), ReserveOutcome>, StoreError> {
        let lease_id = RequestId::new();
        let outcome = self
            .inner
            .reserve(
                key.0,
                &ReserveRequest {
                    request_id: lease_id,
                    budgets: key.1.clone(),
                    amount: block,
                    now,
                    expires_at: now + self.config.reservation_ttl,
                    holder: self.config.holder,
                },
            )
            .await?;
        let ReserveOutcome::Reserved(states) = outcome else {
            return Ok(Err(outcome));
        };
        Ok(Ok((
            lease_id,
            Lease {
                key: key.clone(),
                block,
                committed: Money::ZERO,
                settled: Money::ZERO,
                in_flight: 0,
                opened: Instant::now(),
                closing: false,
                states,
                unit: block,
                admitted: 0,
                asked_successor: false,
                standby: false,
            },
        )))
    }

    /// Opens successor leases, off the request path, for the budget sets whose newest lease
    /// will run out of room or age out before the next refill (`horizon` from now), sized for
    /// the rate of admissions since the previous refill, over two horizons (at least
    /// `block_requests`, at most [`MAX_BLOCK_REQUESTS`] worst cases). A budget set that
    /// admitted nothing under its newest lease keeps a standby lease of `block_requests`
    /// worst cases until `keep_warm` after its last admission. A refused reservation opens
    /// nothing (requests then fall back as usual); after [`LeasedLedger::close_all`] nothing
    /// opens. Returns how many leases it opened.
    pub async fn refill(&self, horizon: Duration, now: DateTime<Utc>) -> Result<usize, StoreError> {
        let wanted: Vec<(LeaseKey, Money, Money, bool)> = {
            let mut state = self.state();
            if state.shut {
                return Ok(0);
            }
            let keep_warm = self.config.keep_warm;
            let keys: Vec<LeaseKey> = state.by_key.keys().cloned().collect();
            let rates: HashMap<LeaseKey, f64> = keys
                .into_iter()
                .map(|k| {
                    let rate = state.take_rate(&k);
                    (k, rate)
                })
                .collect();
            // Budget sets without a lease start counting afresh when they get one.
            state.rates.retain(|k, _| rates.contains_key(k));
            let warm: HashSet<LeaseKey> = rates
                .keys()
                .filter(|k| state.active_within(k, keep_warm))
                .cloned()
                .collect();
            let state = &*state;
            let max_age = self.config.max_age;
            state
                .by_key
                .iter()
                .filter_map(|(key, ids)| {
                    let newest = ids
                        .iter()
                        .filter_map(|id| state.leases.get(id))
                        .filter(|l| !l.closing && l.opened.elapsed() < max_age)
                        .max_by_key(|l| l.opened)?;
                    let standby = newest.admitted == 0;
                    if standby && !warm.contains(key) {
                        return None;
                    }
                    let rate = rates.get(key).copied().unwrap_or(0.0);
                    let expected = rate * horizon.as_secs_f64();
                    let unit = newest.unit.amount();
                    let room_requests = if unit.is_zero() {
                        f64::MAX
                    } else {
                        (newest.room().amount() / unit)
                            .floor()
                            .to_f64()
                            .unwrap_or(0.0)
                    };
                    let ages_out = newest.opened.elapsed() + horizon >= max_age;
                    if room_requests >= expected && !ages_out {
                        return None;
                    }
                    // Enough for two horizons at the rate seen, within bounds.
                    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                    let requests = ((expected * 2.0).ceil() as u32)
                        .clamp(self.config.block_requests.max(1), MAX_BLOCK_REQUESTS);
                    let block = unit.checked_mul(rust_decimal::Decimal::from(requests))?;
                    let cap = newest.prefetch_cap()?.amount();
                    let floor = unit.checked_mul(rust_decimal::Decimal::from(
                        self.config.block_requests.max(1),
                    ))?;
                    let block = block.min(cap);
                    if block < floor {
                        return None;
                    }
                    Some((key.clone(), Money::new(block).ok()?, newest.unit, standby))
                })
                .collect()
        };
        let mut opened = 0;
        for (key, block, unit, standby) in wanted {
            if let Ok((id, mut lease)) = self.reserve_block(&key, block, now).await? {
                lease.unit = unit;
                lease.standby = standby;
                let closed = {
                    let mut state = self.state();
                    if state.shut {
                        // Closed while reserving: give the block back at once.
                        lease.closing = true;
                        state.leases.insert(id, lease);
                        state.take(id)
                    } else {
                        state.leases.insert(id, lease);
                        state.by_key.entry(key).or_default().push(id);
                        opened += 1;
                        None
                    }
                };
                if let Some(closing) = closed {
                    self.settle_leases(vec![closing], now).await?;
                }
            }
        }
        Ok(opened)
    }

    /// Ends a held request: its lease keeps `actual` (zero when released). A closing lease
    /// whose last request this was is queued for the next flush, which is woken (the
    /// request does not wait for the shared ledger).
    fn end_request(&self, held: &Held, actual: Money) {
        let closed = {
            let mut state = self.state();
            let max_age = self.config.max_age;
            let Some(lease) = state.leases.get_mut(&held.lease) else {
                return;
            };
            lease.committed = lease.committed.saturating_sub(held.reserved) + actual;
            lease.settled = lease.settled + actual;
            lease.in_flight = lease.in_flight.saturating_sub(1);
            if lease.opened.elapsed() >= max_age {
                lease.closing = true;
            }
            if lease.in_flight == 0 && lease.closing {
                match state.take(held.lease) {
                    Some(closing) => {
                        state.settling = state.settling.saturating_sub(1);
                        state.unsettled.push(closing);
                        true
                    }
                    None => false,
                }
            } else {
                false
            }
        };
        if closed {
            self.ask_refill();
        }
    }
}

#[async_trait]
impl BudgetLedger for LeasedLedger {
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

    /// The shared ledger's states: open leases count as reserved there.
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
        let again = {
            let state = self.state();
            state
                .held
                .get(&request.request_id)
                .and_then(|h| state.leases.get(&h.lease))
                .map(Lease::view)
        };
        if let Some(view) = again {
            // Reserving twice for a request returns the first reservation.
            return Ok(ReserveOutcome::Reserved(view));
        }
        let mut budgets = request.budgets.clone();
        budgets.sort_unstable();
        budgets.dedup();
        let key = (org, budgets);
        if let Some(view) = self.take_local(&key, request.request_id, request.amount) {
            return Ok(ReserveOutcome::Reserved(view));
        }
        // One request of the budget set opens the next lease; the others of the moment wait
        // for it and take their share (a burst would otherwise reserve a block each, all
        // queued on the same budget rows).
        let gate = self.opening_gate(&key);
        let _turn = gate.lock().await;
        if let Some(view) = self.take_local(&key, request.request_id, request.amount) {
            return Ok(ReserveOutcome::Reserved(view));
        }
        // Settle the leases that aged out and have no request left, then open a new one.
        let aged = self.state().take_closable(self.config.max_age, None);
        // A failure keeps them for the next flush; this request goes on.
        let _ = self.settle_leases(aged, request.now).await;
        let block = self.path_block(&key, request.amount);
        if block > request.amount {
            match self.open(&key, request, block).await? {
                ReserveOutcome::Reserved(view) => return Ok(ReserveOutcome::Reserved(view)),
                ReserveOutcome::Refused(_) => {}
            }
        }
        // Near exhaustion: give back this instance's room of the organization that no
        // request uses (idle aged leases, and closed leases still waiting for the background
        // settlement, whose unused remainder would otherwise refuse this request), then ask
        // for exactly this request's worst case.
        let idle = {
            let mut state = self.state();
            let mut idle = state.take_unsettled(Some(org));
            idle.extend(state.take_closable(self.config.max_age, Some(org)));
            idle
        };
        // A failure keeps them for the next flush; the exact reservation is still asked for.
        let _ = self.settle_leases(idle, request.now).await;
        self.open(&key, request, request.amount).await
    }

    async fn settle(
        &self,
        org: OrgId,
        request_id: RequestId,
        budgets: &[BudgetId],
        actual: Money,
        now: DateTime<Utc>,
    ) -> Result<SettleOutcome, StoreError> {
        let held = self.state().held.remove(&request_id);
        let Some(held) = held else {
            if self.recent().set.contains(&request_id) {
                return Ok(SettleOutcome {
                    applied: false,
                    alerts: Vec::new(),
                });
            }
            return self
                .inner
                .settle(org, request_id, budgets, actual, now)
                .await;
        };
        self.recent().insert(request_id);
        // The lease's spend is safe in memory until the flush settles it.
        self.end_request(&held, actual);
        Ok(SettleOutcome {
            applied: true,
            alerts: std::mem::take(&mut self.state().alerts),
        })
    }

    async fn release(&self, org: OrgId, request_id: RequestId) -> Result<(), StoreError> {
        let held = self.state().held.remove(&request_id);
        let Some(held) = held else {
            if self.recent().set.contains(&request_id) {
                return Ok(());
            }
            return self.inner.release(org, request_id).await;
        };
        self.recent().insert(request_id);
        self.end_request(&held, Money::ZERO);
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
        self.inner
            .settle_total(org, request_id, budgets, total, now)
            .await
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
