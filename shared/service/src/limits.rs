//! Limits on what clients can make a service do: failed credential checks
//! per key, and CPU-heavy work behind a bounded queue.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use crate::error::{ApiError, busy};

/// Failures allowed per key within [`WINDOW`] before the key is refused
/// until the window ends.
pub const MAX_FAILURES: u32 = 10;
pub const WINDOW: Duration = Duration::from_secs(60);
/// Keys remembered at most (a flood of distinct keys cannot grow memory
/// past this; expired keys are forgotten first).
const MAX_KEYS: usize = 100_000;

/// Counts failed attempts per key (an address, an e-mail, a device) in
/// fixed windows. Kept per replica: with N replicas behind a balancer a
/// client gets at most N times the limit.
#[derive(Debug)]
pub struct FailureLimiter {
    max: u32,
    window: Duration,
    keys: Mutex<HashMap<String, (Instant, u32)>>,
}

impl Default for FailureLimiter {
    fn default() -> Self {
        Self::new(MAX_FAILURES, WINDOW)
    }
}

impl FailureLimiter {
    pub fn new(max: u32, window: Duration) -> Self {
        Self {
            max,
            window,
            keys: Mutex::new(HashMap::new()),
        }
    }

    /// How long `key` stays refused, if it is.
    pub fn blocked_for(&self, key: &str) -> Option<Duration> {
        let keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        let (since, count) = keys.get(key)?;
        let left = self.window.checked_sub(since.elapsed())?;
        (*count >= self.max).then_some(left)
    }

    /// Records a failure for `key`.
    pub fn fail(&self, key: &str) {
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        if keys.len() >= MAX_KEYS && !keys.contains_key(key) {
            let window = self.window;
            keys.retain(|_, (since, _)| since.elapsed() < window);
            if keys.len() >= MAX_KEYS {
                keys.clear();
            }
        }
        let now = Instant::now();
        let entry = keys.entry(key.to_owned()).or_insert((now, 0));
        if entry.0.elapsed() >= self.window {
            *entry = (now, 0);
        }
        entry.1 = entry.1.saturating_add(1);
    }
}

/// CPU-heavy work (decoding, fingerprinting, matching) of one service:
/// `workers` jobs run at once on the blocking pool, up to `waiting` more
/// wait for a turn, and beyond that a request is answered 503 `busy` with
/// `Retry-After` instead of joining an ever-growing backlog.
#[derive(Debug, Clone)]
pub struct CpuQueue {
    admitted: Arc<Semaphore>,
    running: Arc<Semaphore>,
}

impl CpuQueue {
    pub fn new(workers: usize, waiting: usize) -> Self {
        let workers = workers.max(1);
        Self {
            admitted: Arc::new(Semaphore::new(workers + waiting)),
            running: Arc::new(Semaphore::new(workers)),
        }
    }

    /// One worker per core, and four jobs waiting per core.
    pub fn per_core() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        Self::new(cores, 4 * cores)
    }

    /// Runs `work` on the blocking pool when its turn comes.
    ///
    /// # Errors
    /// 503 `busy` when the queue is full; 500 if the work panicked.
    pub async fn run<T, F>(&self, work: F) -> Result<T, ApiError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let Ok(_admitted) = self.admitted.clone().try_acquire_owned() else {
            return Err(busy(Duration::from_secs(2)));
        };
        let running = self
            .running
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| ApiError::internal(&e))?;
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || {
            let _running = running;
            span.in_scope(work)
        })
        .await
        .map_err(|e| ApiError::internal(&e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_refused_after_its_failures_until_the_window_ends() {
        let limiter = FailureLimiter::new(3, Duration::from_millis(200));
        for _ in 0..2 {
            limiter.fail("addr:1");
        }
        assert!(limiter.blocked_for("addr:1").is_none());
        limiter.fail("addr:1");
        assert!(limiter.blocked_for("addr:1").is_some());
        assert!(
            limiter.blocked_for("addr:2").is_none(),
            "other keys are not"
        );
        std::thread::sleep(Duration::from_millis(220));
        assert!(limiter.blocked_for("addr:1").is_none());
    }

    #[tokio::test]
    async fn a_full_queue_answers_busy_instead_of_waiting() {
        let queue = CpuQueue::new(1, 1);
        let (release, hold) = std::sync::mpsc::channel::<()>();
        let hold = Arc::new(Mutex::new(hold));
        let first = {
            let (q, hold) = (queue.clone(), hold.clone());
            tokio::spawn(async move {
                q.run(move || {
                    let _ = hold.lock().map(|h| h.recv());
                })
                .await
            })
        };
        let second = {
            let (q, hold) = (queue.clone(), hold.clone());
            tokio::spawn(async move {
                q.run(move || {
                    let _ = hold.lock().map(|h| h.recv());
                })
                .await
            })
        };
        // Let both be admitted (one running, one waiting).
        tokio::time::sleep(Duration::from_millis(100)).await;
        let third = queue.run(|| ()).await;
        let refused = third.unwrap_err();
        assert_eq!((refused.status.as_u16(), refused.code), (503, "busy"));
        assert!(refused.retry_after.is_some());
        release.send(()).unwrap();
        release.send(()).unwrap();
        assert!(first.await.unwrap().is_ok());
        assert!(second.await.unwrap().is_ok());
        assert!(queue.run(|| 7).await.is_ok_and(|v| v == 7), "free again");
    }
}
