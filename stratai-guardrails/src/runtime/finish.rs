//! [`Finish`]: work that must complete even when the caller stops waiting for it.
//!
//! A non-streamed chat's upstream call and its settlement run inside the request's own task,
//! so the common case costs no task spawn and no cross-task wake-up. When the client goes
//! away before the answer (hyper then drops the request's future), the unfinished work is
//! handed to a task of its own and runs to the end: the reservation is settled or released
//! and the usage record written, exactly as if the client had stayed.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::runtime::Handle;

/// A future that, dropped before it is done, finishes in a task spawned on the runtime it
/// was created on (see the module docs). Polled after it returned `Ready`, it stays
/// `Pending`.
pub struct Finish<T: Send + 'static> {
    work: Option<Pin<Box<dyn Future<Output = T> + Send>>>,
    runtime: Handle,
}

impl<T: Send + 'static> Finish<T> {
    /// Wraps `work`. Must be called within a Tokio runtime (it remembers it).
    #[must_use]
    pub fn new(work: impl Future<Output = T> + Send + 'static) -> Self {
        Self {
            work: Some(Box::pin(work)),
            runtime: Handle::current(),
        }
    }
}

impl<T: Send + 'static> Future for Finish<T> {
    type Output = T;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let Some(work) = self.work.as_mut() else {
            return Poll::Pending;
        };
        let out = work.as_mut().poll(cx);
        if out.is_ready() {
            self.work = None;
        }
        out
    }
}

impl<T: Send + 'static> Drop for Finish<T> {
    fn drop(&mut self) {
        if let Some(rest) = self.work.take() {
            // On a runtime that is shutting down the task is dropped unrun, as a task
            // spawned a moment earlier would be.
            drop(self.runtime.spawn(async move {
                let _ = rest.await;
            }));
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::panic)]

    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn finished_work_returns_its_value_inline() {
        assert_eq!(Finish::new(async { 7 }).await, 7);
    }

    #[tokio::test]
    async fn work_abandoned_halfway_still_runs_to_the_end() {
        let done = Arc::new(AtomicBool::new(false));
        let flag = done.clone();
        let (started_tx, started_rx) = tokio::sync::oneshot::channel();
        let work = Finish::new(async move {
            let _ = started_tx.send(());
            tokio::time::sleep(Duration::from_millis(50)).await;
            flag.store(true, Ordering::SeqCst);
        });
        // The caller gives up once the work has started: the future is dropped mid-way.
        let caller = tokio::spawn(work);
        started_rx.await.unwrap_or(());
        caller.abort();
        assert!(caller.await.is_err_and(|e| e.is_cancelled()));
        assert!(!done.load(Ordering::SeqCst));
        for _ in 0..100 {
            if done.load(Ordering::SeqCst) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the abandoned work never finished");
    }
}
