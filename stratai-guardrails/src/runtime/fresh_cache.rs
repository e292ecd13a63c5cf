//! [`FreshCache`]: a cache whose entries are never served older than its time to live, that
//! refreshes a busy entry ahead of its expiry and lets one caller per key load a missing one.
//!
//! A plain expiring cache stalls a busy gateway at every expiry: all the requests of the
//! moment miss together and each loads the same thing from the database (a "thundering
//! herd"). Here an entry past half its life is handed out as usual while *one* background
//! refresh replaces it; when an entry is missing or expired, one caller loads it while the
//! others of that key wait for its result. The bound stays exact: an entry is served for at
//! most `ttl` after its load *began*.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Entries above this count are dropped at the next insert (a bound on memory, not an LRU).
const MAX_ENTRIES: usize = 100_000;

struct Entry<V> {
    /// When the load that produced the value began.
    loaded: Instant,
    value: V,
    /// A refresh ahead of expiry is under way.
    refreshing: bool,
}

/// What [`FreshCache::lookup`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup<V> {
    /// A value younger than half the time to live.
    Fresh(V),
    /// A value past half its life: serve it, and refresh it (this caller is the only one
    /// told so until the refresh ends).
    Refresh(V),
    /// No value, or an expired one: load it with [`FreshCache::load`].
    Miss,
}

/// See the module docs.
pub struct FreshCache<K, V> {
    ttl: Duration,
    entries: Mutex<HashMap<K, Entry<V>>>,
    /// One loader per key: the holder of a key's gate loads, the others wait for it.
    gates: Mutex<HashMap<K, Arc<tokio::sync::Mutex<()>>>>,
    /// When [`FreshCache::forget_where`] last ran: a value whose load began earlier may be
    /// what was forgotten, so it is not inserted.
    forgotten: Mutex<Option<Instant>>,
}

impl<K, V> std::fmt::Debug for FreshCache<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FreshCache")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

/// Locks `m`, poisoned or not: for maps that hold no invariant a panic could break halfway.
pub fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<K: Eq + Hash + Clone, V: Clone> FreshCache<K, V> {
    /// A cache serving values for at most `ttl` (zero: nothing is ever cached).
    #[must_use]
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: Mutex::new(HashMap::new()),
            gates: Mutex::new(HashMap::new()),
            forgotten: Mutex::new(None),
        }
    }

    /// The time to live.
    #[must_use]
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The value of `key` if it may still be served; [`Lookup::Refresh`] once per entry
    /// when it is past half its life (the caller then calls [`refresh`](Self::refresh)).
    pub fn lookup(&self, key: &K) -> Lookup<V> {
        if self.ttl.is_zero() {
            return Lookup::Miss;
        }
        let mut entries = locked(&self.entries);
        let Some(entry) = entries.get_mut(key) else {
            return Lookup::Miss;
        };
        let age = entry.loaded.elapsed();
        if age >= self.ttl {
            return Lookup::Miss;
        }
        if age >= self.ttl / 2 && !entry.refreshing {
            entry.refreshing = true;
            return Lookup::Refresh(entry.value.clone());
        }
        Lookup::Fresh(entry.value.clone())
    }

    fn peek(&self, key: &K) -> Option<V> {
        let entries = locked(&self.entries);
        let entry = entries.get(key)?;
        (entry.loaded.elapsed() < self.ttl).then(|| entry.value.clone())
    }

    fn gate(&self, key: &K) -> Arc<tokio::sync::Mutex<()>> {
        let mut gates = locked(&self.gates);
        if gates.len() >= MAX_ENTRIES && !gates.contains_key(key) {
            gates.clear();
        }
        gates.entry(key.clone()).or_default().clone()
    }

    fn insert(&self, key: K, loaded: Instant, value: V) {
        let mut entries = locked(&self.entries);
        if locked(&self.forgotten).is_some_and(|at| loaded <= at) {
            return;
        }
        if entries.len() >= MAX_ENTRIES && !entries.contains_key(&key) {
            entries.clear();
        }
        entries.insert(
            key,
            Entry {
                loaded,
                value,
                refreshing: false,
            },
        );
    }

    /// Drops every entry whose value `stale` picks (e.g. a deactivated user's principal), so
    /// the next lookup loads it afresh. A load under way keeps its answer for its own caller
    /// but does not insert it: it may have read the state before the change.
    pub fn forget_where(&self, stale: impl Fn(&V) -> bool) {
        let mut entries = locked(&self.entries);
        *locked(&self.forgotten) = Some(Instant::now());
        entries.retain(|_, entry| !stale(&entry.value));
    }

    /// The value of `key`, loaded by `load` unless another caller is loading it (then its
    /// result is used when it succeeds). Errors are not cached.
    pub async fn load<E, F, Fut>(&self, key: K, load: F) -> Result<V, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
    {
        if self.ttl.is_zero() {
            return load().await;
        }
        let gate = self.gate(&key);
        let _turn = gate.lock().await;
        if let Some(value) = self.peek(&key) {
            return Ok(value);
        }
        let began = Instant::now();
        let value = load().await?;
        self.insert(key, began, value.clone());
        Ok(value)
    }

    /// Replaces the value of `key` with what `load` gives (callers that miss meanwhile wait
    /// for it). When `load` fails the entry keeps its value, still bounded by its age, and
    /// the next lookup past half its life refreshes again.
    pub async fn refresh<E, F, Fut>(&self, key: K, load: F) -> Result<(), E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
    {
        let gate = self.gate(&key);
        let _turn = gate.lock().await;
        let began = Instant::now();
        match load().await {
            Ok(value) => {
                self.insert(key, began, value);
                Ok(())
            }
            Err(e) => {
                if let Some(entry) = locked(&self.entries).get_mut(&key) {
                    entry.refreshing = false;
                }
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[tokio::test]
    async fn forgotten_values_are_loaded_afresh_and_a_load_under_way_is_not_kept() {
        let cache = Arc::new(FreshCache::<u32, (u32, bool)>::new(Duration::from_secs(60)));
        cache
            .load(1, || async { Ok::<_, ()>((1, true)) })
            .await
            .unwrap();
        cache
            .load(2, || async { Ok::<_, ()>((2, true)) })
            .await
            .unwrap();
        // A load that read the old state and finishes after the change.
        let (read, release) = (
            Arc::new(tokio::sync::Notify::new()),
            Arc::new(tokio::sync::Notify::new()),
        );
        let slow = {
            let (cache, read, release) = (cache.clone(), read.clone(), release.clone());
            tokio::spawn(async move {
                cache
                    .load(3, || async move {
                        read.notify_one();
                        release.notified().await;
                        Ok::<_, ()>((3, true))
                    })
                    .await
            })
        };
        read.notified().await;
        cache.forget_where(|(id, _)| *id == 1 || *id == 3);
        release.notify_one();
        assert_eq!(slow.await.unwrap(), Ok((3, true)), "its own caller gets it");
        assert_eq!(cache.lookup(&1), Lookup::Miss, "forgotten");
        assert_eq!(
            cache.lookup(&3),
            Lookup::Miss,
            "not inserted after the change"
        );
        assert_eq!(cache.lookup(&2), Lookup::Fresh((2, true)), "others stay");
        // Loads that begin after the change are cached again.
        tokio::time::sleep(Duration::from_millis(2)).await;
        cache
            .load(1, || async { Ok::<_, ()>((1, false)) })
            .await
            .unwrap();
        assert_eq!(cache.lookup(&1), Lookup::Fresh((1, false)));
    }

    #[tokio::test]
    async fn concurrent_misses_load_once() {
        let cache = Arc::new(FreshCache::<u32, u32>::new(Duration::from_secs(60)));
        let loads = Arc::new(AtomicU32::new(0));
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let (cache, loads) = (cache.clone(), loads.clone());
            tasks.push(tokio::spawn(async move {
                cache
                    .load(7, || async {
                        loads.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        Ok::<_, ()>(42)
                    })
                    .await
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap(), Ok(42));
        }
        assert_eq!(loads.load(Ordering::SeqCst), 1);
        assert_eq!(cache.lookup(&7), Lookup::Fresh(42));
        assert_eq!(cache.lookup(&8), Lookup::Miss);
    }

    #[tokio::test]
    async fn errors_are_not_cached() {
        let cache = FreshCache::<u32, u32>::new(Duration::from_secs(60));
        assert_eq!(cache.load(1, || async { Err("down") }).await, Err("down"));
        assert_eq!(cache.lookup(&1), Lookup::Miss);
        assert_eq!(cache.load(1, || async { Ok::<_, &str>(5) }).await, Ok(5));
        // Cached now: a failing loader is not even called.
        assert_eq!(cache.load(1, || async { Err("unused") }).await, Ok(5));
    }

    #[tokio::test]
    async fn past_half_life_one_caller_refreshes_and_expiry_is_exact() {
        let ttl = Duration::from_secs(1);
        let cache = FreshCache::<u32, u32>::new(ttl);
        cache.load(1, || async { Ok::<_, ()>(1) }).await.unwrap();
        assert_eq!(cache.lookup(&1), Lookup::Fresh(1));
        tokio::time::sleep(ttl / 2).await;
        // Past half its life: the first caller is told to refresh, the others are served.
        assert_eq!(cache.lookup(&1), Lookup::Refresh(1));
        assert_eq!(cache.lookup(&1), Lookup::Fresh(1));
        // A failed refresh keeps the value and lets the next caller try again.
        assert_eq!(
            cache.refresh(1, || async { Err("down") }).await,
            Err("down")
        );
        assert_eq!(cache.lookup(&1), Lookup::Refresh(1));
        cache.refresh(1, || async { Ok::<_, ()>(2) }).await.unwrap();
        assert_eq!(cache.lookup(&1), Lookup::Fresh(2));
        // Never served past its time to live.
        tokio::time::sleep(ttl).await;
        assert_eq!(cache.lookup(&1), Lookup::Miss);
    }

    #[tokio::test]
    async fn zero_ttl_caches_nothing() {
        let cache = FreshCache::<u32, u32>::new(Duration::ZERO);
        let loads = AtomicU32::new(0);
        for _ in 0..3 {
            cache
                .load(1, || async {
                    loads.fetch_add(1, Ordering::SeqCst);
                    Ok::<_, ()>(1)
                })
                .await
                .unwrap();
        }
        assert_eq!(loads.load(Ordering::SeqCst), 3);
        assert_eq!(cache.lookup(&1), Lookup::Miss);
    }
}
