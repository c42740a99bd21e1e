//! Liveness and readiness.
//!
//! - Liveness (`/healthz`): the process works. Each worker loop holds a
//!   [`Heartbeat`] and beats once per iteration; a loop that has not beaten
//!   within its allowance is reported stuck, so a live HTTP thread in front of
//!   a dead worker still fails the probe and the orchestrator restarts it.
//! - Readiness (`/readyz`): every registered check passes (databases answer,
//!   the recogniser's index is loaded); otherwise the names of what is missing.
//! - Stalls (fault injection, [`crate::faults`]): a stalled worker's beats do
//!   not count, and its loop waits in [`Heartbeat::pace`] until the stall ends
//!   (or shutdown begins), so it really stops making progress.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;

type Check = Arc<dyn Fn() -> BoxFuture<'static, Vec<(String, Option<String>)>> + Send + Sync>;

#[derive(Clone, Default)]
pub struct Health {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    heartbeats: Mutex<Vec<Heartbeat>>,
    checks: Mutex<Vec<Check>>,
    /// Set when shutdown begins: readiness fails at once, so the balancer
    /// stops sending work before the listener closes.
    draining: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Health").finish_non_exhaustive()
    }
}

/// A worker loop's sign of life.
#[derive(Debug, Clone)]
pub struct Heartbeat {
    name: Arc<str>,
    allowance: Duration,
    started: Instant,
    /// Milliseconds since `started` at the last beat.
    last: Arc<AtomicU64>,
    stall: Arc<Stall>,
}

/// Whether a worker is held by a fault, and the wake-up when that ends.
#[derive(Debug, Default)]
struct Stall {
    held: std::sync::atomic::AtomicBool,
    released: tokio::sync::Notify,
}

impl Heartbeat {
    /// Records that the loop is making progress (not while it is stalled).
    pub fn beat(&self) {
        if self.stall.held.load(Ordering::Relaxed) {
            return;
        }
        self.last
            .store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Where a loop may be held: returns at once unless a fault stalls this
    /// worker, then when the stall ends. Loops await it next to their beat.
    pub async fn pace(&self) {
        loop {
            let released = self.stall.released.notified();
            let mut released = std::pin::pin!(released);
            // Registered before the check, so a release in between is not missed.
            released.as_mut().enable();
            if !self.stall.held.load(Ordering::Acquire) {
                return;
            }
            released.await;
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn hold(&self, held: bool) {
        let was = self.stall.held.swap(held, Ordering::AcqRel);
        if was && !held {
            // Progress resumes now: the silence was the fault's, not the loop's.
            self.last
                .store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
            self.stall.released.notify_waiters();
        }
    }

    fn silent_for(&self) -> Duration {
        let now = self.started.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last.load(Ordering::Relaxed)))
    }
}

impl Health {
    /// From now on `/readyz` answers 503 `shutting_down`.
    pub fn set_draining(&self) {
        self.inner.draining.store(true, Ordering::Release);
        // A stalled loop must still see the shutdown and hand its work back.
        self.stall(&[]);
    }

    /// Stalls the workers named in `names` and releases every other one
    /// (while draining, none is stalled). Returns how many loops are held.
    pub fn stall(&self, names: &[&str]) -> usize {
        let draining = self.is_draining();
        let beats = self.beats();
        let mut held = 0;
        for b in &beats {
            let hold = !draining && names.contains(&&*b.name);
            b.hold(hold);
            held += usize::from(hold);
        }
        held
    }

    /// The names of the registered worker loops (each once, sorted).
    pub fn workers(&self) -> Vec<String> {
        let mut names: Vec<String> = self.beats().iter().map(|b| b.name.to_string()).collect();
        names.sort();
        names.dedup();
        names
    }

    fn beats(&self) -> Vec<Heartbeat> {
        self.inner
            .heartbeats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn is_draining(&self) -> bool {
        self.inner.draining.load(Ordering::Acquire)
    }

    /// Registers a worker loop that must beat at least every `allowance`.
    pub fn worker(&self, name: &str, allowance: Duration) -> Heartbeat {
        let beat = Heartbeat {
            name: name.into(),
            allowance,
            started: Instant::now(),
            last: Arc::new(AtomicU64::new(0)),
            stall: Arc::default(),
        };
        self.inner
            .heartbeats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(beat.clone());
        beat
    }

    /// Adds a readiness check: it returns `(name, None)` for each thing that is
    /// there, `(name, Some(reason))` for each that is missing. The reason is a
    /// stable code (`unreachable`, `loading`, ...), never a driver's message:
    /// `/readyz` is open to anyone who can reach the port.
    pub fn check<F>(&self, check: F)
    where
        F: Fn() -> BoxFuture<'static, Vec<(String, Option<String>)>> + Send + Sync + 'static,
    {
        self.inner
            .checks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Arc::new(check));
    }

    /// Workers that have been silent beyond their allowance, with for how long.
    pub fn stuck(&self) -> Vec<(String, Duration)> {
        self.inner
            .heartbeats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter_map(|b| {
                let silent = b.silent_for();
                (silent > b.allowance).then(|| (b.name.to_string(), silent))
            })
            .collect()
    }

    /// What readiness is missing (empty: ready).
    pub async fn missing(&self) -> Vec<(String, String)> {
        let checks: Vec<Check> = self
            .inner
            .checks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let results = futures_util::future::join_all(checks.iter().map(|c| c())).await;
        results
            .into_iter()
            .flatten()
            .filter_map(|(name, why)| why.map(|w| (name, w)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_that_stops_beating_is_reported_stuck() {
        let health = Health::default();
        let beat = health.worker("consumer", Duration::from_millis(50));
        beat.beat();
        assert!(health.stuck().is_empty());
        std::thread::sleep(Duration::from_millis(80));
        let stuck = health.stuck();
        assert_eq!(stuck.len(), 1);
        assert_eq!(stuck[0].0, "consumer");
        beat.beat();
        assert!(health.stuck().is_empty());
    }

    #[tokio::test]
    async fn a_stalled_worker_waits_and_looks_stuck_until_released() {
        let health = Health::default();
        let beat = health.worker("consumer", Duration::from_millis(30));
        beat.beat();
        assert_eq!(health.stall(&["consumer"]), 1);
        let waiting = tokio::spawn({
            let beat = beat.clone();
            async move { beat.pace().await }
        });
        tokio::time::sleep(Duration::from_millis(60)).await;
        beat.beat(); // does not count while stalled
        assert!(!waiting.is_finished(), "pace returned during the stall");
        assert_eq!(health.stuck().len(), 1);
        assert_eq!(health.stall(&[]), 0);
        tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .expect("pace returns once released")
            .unwrap();
        assert!(health.stuck().is_empty());
        health.stall(&["consumer"]);
        health.set_draining();
        tokio::time::timeout(Duration::from_secs(1), beat.pace())
            .await
            .expect("shutdown releases a stall");
    }
}
