//! Liveness and readiness.
//!
//! - Liveness (`/healthz`): the process works. Each worker loop holds a
//!   [`Heartbeat`] and beats once per iteration; a loop that has not beaten
//!   within its allowance is reported stuck, so a live HTTP thread in front of
//!   a dead worker still fails the probe and the orchestrator restarts it.
//! - Readiness (`/readyz`): every registered check passes (databases answer,
//!   the recogniser's index is loaded); otherwise the names of what is missing.

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
}

impl Heartbeat {
    /// Records that the loop is making progress.
    pub fn beat(&self) {
        self.last
            .store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
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
}
