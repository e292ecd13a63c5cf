//! [`LeasedLedger`]: budget reservations in blocks, so most requests reserve and settle in
//! memory instead of making two round trips to the shared ledger.
//!
//! An instance reserves a *lease* — a block worth `block_requests` times the request's
//! worst case — against the same budgets in the shared ledger, as one ordinary reservation.
//! Requests of that budget set are then admitted locally while the block has room, and
//! settled locally. When the lease is older than `max_age` (or cannot hold the next request)
//! it stops admitting; once its last request is settled, it is settled in the shared ledger
//! with the sum of its requests' actual costs, which releases the unused rest.
//!
//! Why a hard limit is still never overspent, across any number of instances: every local
//! admission fits inside a block that the shared ledger reserved atomically, and the shared
//! ledger never reserves past a hard limit. Actual costs never exceed a request's worst case
//! (the Gatekeeper reserves the clamped request's maximum), so a lease's settled spend never
//! exceeds its block.
//!
//! The price, documented where it is configured:
//! - spend reaches the shared ledger when a lease closes (after at most `max_age` plus the
//!   longest request of the lease); until then other readers see the block as *reserved*;
//! - room held by one instance's lease is not usable by another until the lease closes, so
//!   near exhaustion a lease is refused and the request falls back to an exact reservation
//!   (after closing this instance's idle leases of the organization); a request is refused
//!   only when the exact reservation is refused too;
//! - if the process dies, its open leases are reclaimed when their reservation expires, and
//!   the spend of requests served under them is missing from the *ledger* (their usage
//!   records, the billing source, are not affected by this).
//!
//! Threshold alerts come from the shared ledger when a lease is settled; they are handed
//! out by the next [`BudgetLedger::settle`] or [`LeasedLedger::flush`].

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use rust_decimal::prelude::ToPrimitive;
use stratai_core::budget::{Budget, BudgetAlert, BudgetState};
use stratai_core::ids::{BudgetId, OrgId, RequestId};
use stratai_core::ports::{BudgetLedger, ReserveOutcome, ReserveRequest, SettleOutcome};
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
}

impl Default for LeaseConfig {
    fn default() -> Self {
        Self {
            max_age: Duration::from_secs(1),
            block_requests: 32,
            reservation_ttl: ChronoDuration::minutes(15),
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
}

impl Lease {
    fn room(&self) -> Money {
        self.block.saturating_sub(self.committed)
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
    /// Leases whose settlement failed; retried by the next flush.
    unsettled: Vec<Closing>,
    /// Leases taken for settlement whose settlement has not finished yet.
    settling: usize,
    alerts: Vec<BudgetAlert>,
    /// Requests admitted per budget set, for [`LeasedLedger::refill`]'s rate estimate.
    rates: HashMap<LeaseKey, KeyRate>,
}

/// Admissions of one budget set, counted since [`LeasedLedger::refill`] last looked.
struct KeyRate {
    admitted: u64,
    since: Instant,
}

impl State {
    fn count_admission(&mut self, key: &LeaseKey) {
        match self.rates.get_mut(key) {
            Some(r) => r.admitted += 1,
            None => {
                self.rates.insert(
                    key.clone(),
                    KeyRate {
                        admitted: 1,
                        since: Instant::now(),
                    },
                );
            }
        }
    }

    /// Admissions per second of `key` since the last call (at least 10 ms are assumed), and
    /// a new count from now.
    fn take_rate(&mut self, key: &LeaseKey) -> f64 {
        let Some(r) = self.rates.get_mut(key) else {
            return 0.0;
        };
        let elapsed = r.since.elapsed().max(Duration::from_millis(10));
        #[allow(clippy::cast_precision_loss)] // counts far below 2^52
        let rate = r.admitted as f64 / elapsed.as_secs_f64();
        r.admitted = 0;
        r.since = Instant::now();
        rate
    }
}

impl State {
    /// Takes the leases whose settlement failed earlier, to retry.
    fn take_unsettled(&mut self) -> Vec<Closing> {
        let retry = std::mem::take(&mut self.unsettled);
        // They count as being settled again until the retry ends.
        self.settling += retry.len();
        retry
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
        Self {
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

    /// Leases currently open (admitting or waiting for their last request).
    #[must_use]
    pub fn open_leases(&self) -> usize {
        self.state().leases.len()
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
            let mut closing = state.take_unsettled();
            closing.extend(state.take_closable(self.config.max_age, None));
            closing
        };
        self.settle_leases(closing, now).await?;
        Ok(std::mem::take(&mut self.state().alerts))
    }

    /// Stops every lease from admitting and settles those whose requests have ended;
    /// returns how many leases are not settled yet (waiting for requests in flight, or being
    /// settled by another task) with the alerts that fired.
    pub async fn close_all(
        &self,
        now: DateTime<Utc>,
    ) -> Result<(usize, Vec<BudgetAlert>), StoreError> {
        let closing = {
            let mut state = self.state();
            for lease in state.leases.values_mut() {
                lease.closing = true;
            }
            let mut closing = state.take_unsettled();
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
            match self
                .inner
                .settle(c.org, c.id, &c.budgets, c.settled, now)
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
        let view = lease.view();
        state.count_admission(key);
        state.held.insert(
            request,
            Held {
                lease: id,
                reserved: amount,
            },
        );
        Some(view)
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
            },
        )))
    }

    /// Opens successor leases, off the request path, for the budget sets whose newest lease
    /// will run out of room or age out before the next refill (`horizon` from now), sized for
    /// the rate of admissions since the previous refill, over two horizons (at least `block_requests`, at most
    /// [`MAX_BLOCK_REQUESTS`] worst cases). A refused reservation opens nothing (requests then
    /// fall back as usual). Returns how many leases it opened.
    pub async fn refill(&self, horizon: Duration, now: DateTime<Utc>) -> Result<usize, StoreError> {
        let wanted: Vec<(LeaseKey, Money, Money)> = {
            let mut state = self.state();
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
                    if newest.admitted == 0 {
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
                    // Never prefetch more than a quarter of what any of the budgets had left
                    // when the newest lease was taken: near exhaustion, requests reserve for
                    // themselves instead of an instance holding the rest idle.
                    let left = newest
                        .states
                        .iter()
                        .map(|s| s.budget.limit.saturating_sub(s.spent + s.reserved).amount())
                        .min()?;
                    let cap = left / rust_decimal::Decimal::from(4);
                    let floor = unit.checked_mul(rust_decimal::Decimal::from(
                        self.config.block_requests.max(1),
                    ))?;
                    let block = block.min(cap);
                    if block < floor {
                        return None;
                    }
                    Some((key.clone(), Money::new(block).ok()?, newest.unit))
                })
                .collect()
        };
        let mut opened = 0;
        for (key, block, unit) in wanted {
            if let Ok((id, mut lease)) = self.reserve_block(&key, block, now).await? {
                lease.unit = unit;
                let mut state = self.state();
                state.leases.insert(id, lease);
                state.by_key.entry(key).or_default().push(id);
                opened += 1;
            }
        }
        Ok(opened)
    }

    /// Ends a held request: its lease keeps `actual` (zero when released).
    fn end_request(&self, held: &Held, actual: Money) -> Option<Closing> {
        let mut state = self.state();
        let max_age = self.config.max_age;
        let lease = state.leases.get_mut(&held.lease)?;
        lease.committed = lease.committed.saturating_sub(held.reserved) + actual;
        lease.settled = lease.settled + actual;
        lease.in_flight = lease.in_flight.saturating_sub(1);
        if lease.opened.elapsed() >= max_age {
            lease.closing = true;
        }
        if lease.in_flight == 0 && lease.closing {
            return state.take(held.lease);
        }
        None
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
        let block = request
            .amount
            .amount()
            .checked_mul(rust_decimal::Decimal::from(
                self.config.block_requests.max(1),
            ))
            .and_then(|d| Money::new(d).ok())
            .unwrap_or(request.amount);
        if block > request.amount {
            match self.open(&key, request, block).await? {
                ReserveOutcome::Reserved(view) => return Ok(ReserveOutcome::Reserved(view)),
                ReserveOutcome::Refused(_) => {}
            }
            // Near exhaustion: give back this instance's idle room of the organization,
            // then ask for exactly this request's worst case.
            let idle = self.state().take_closable(self.config.max_age, Some(org));
            self.settle_leases(idle, request.now).await?;
        }
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
        if let Some(closing) = self.end_request(&held, actual) {
            // The lease's spend is safe in memory until it is settled; a failure here is
            // retried by the next flush, so this request's settlement stands.
            let _ = self.settle_leases(vec![closing], now).await;
        }
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
        if let Some(closing) = self.end_request(&held, Money::ZERO) {
            let _ = self.settle_leases(vec![closing], Utc::now()).await;
        }
        Ok(())
    }

    async fn reclaim_expired(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        self.inner.reclaim_expired(now).await
    }
}
