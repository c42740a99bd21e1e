//! The open loop: every request goes out at its due time, in its own task,
//! whatever the earlier ones are doing.
//!
//! The only thing that can hold a request back is the generator's own
//! bound on requests in flight (memory and sockets are finite): a request
//! due while the bound is reached is not sent and is counted as the error
//! `not_sent`, never delayed, so the bound can only show up as errors,
//! not hide as lower latency. After the schedule, requests still in flight
//! get `drain` to answer; those that do not are counted as `unanswered`.

use std::sync::Arc;
use std::time::Duration;

use indicatif::ProgressBar;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::arrival::Arrivals;
use crate::recorder::Recorder;
use crate::scenario::{Delivered, Scenario};

/// Bounds of the generator itself.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// Requests in flight at most.
    pub in_flight: usize,
    /// How long requests may still answer after the last one is due.
    pub drain: Duration,
}

/// A successful request's device and when it was answered, for the
/// end-to-end measure.
pub type Answered = (Delivered, Duration);

/// Runs the schedule; returns when every request has answered or the drain
/// is over. `answered` receives each success (device, time from start).
pub async fn run(
    arrivals: &Arrivals,
    scenario: Arc<dyn Scenario>,
    recorder: Arc<Recorder>,
    bounds: Bounds,
    start: Instant,
    progress: &ProgressBar,
    answered: Option<tokio::sync::mpsc::UnboundedSender<Answered>>,
) {
    let slots = Arc::new(Semaphore::new(bounds.in_flight.max(1)));
    let tasks = TaskTracker::new();
    let give_up = CancellationToken::new();
    for (k, due) in arrivals.schedule().enumerate() {
        tokio::time::sleep_until(start + due).await;
        progress.set_position(due.as_secs());
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            recorder.due(due, Duration::ZERO, false);
            continue;
        };
        recorder.due(due, start.elapsed().saturating_sub(due), true);
        let scenario = scenario.clone();
        let recorder = recorder.clone();
        let give_up = give_up.clone();
        let answered = answered.clone();
        tasks.spawn(async move {
            let _slot = slot;
            tokio::select! {
                result = scenario.fire(k as u64) => {
                    let at = start.elapsed();
                    match result {
                        Ok(delivered) => {
                            recorder.answered(due, at, None);
                            if let Some(tx) = answered {
                                let _ = tx.send((delivered, at));
                            }
                        }
                        Err(kind) => recorder.answered(due, at, Some(&kind)),
                    }
                }
                () = give_up.cancelled() => recorder.answered(due, start.elapsed(), Some("unanswered")),
            }
        });
    }
    tasks.close();
    if tokio::time::timeout(bounds.drain, tasks.wait())
        .await
        .is_err()
    {
        give_up.cancel();
        tasks.wait().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::future::BoxFuture;

    /// A server that answers one request at a time, each in 100 ms.
    #[derive(Debug)]
    struct OneAtATime(tokio::sync::Mutex<()>);

    impl Scenario for OneAtATime {
        fn fire(&self, _k: u64) -> BoxFuture<'_, Result<Delivered, String>> {
            Box::pin(async move {
                let _one = self.0.lock().await;
                tokio::time::sleep(Duration::from_millis(100)).await;
                Ok(Delivered { sample: None })
            })
        }
        fn describe(&self) -> serde_json::Value {
            serde_json::Value::Null
        }
    }

    /// 20 requests a second for 2 s against [`OneAtATime`], with at most `in_flight` in flight and `drain` after.
    async fn twenty_a_second_for_2_s(in_flight: usize, drain: Duration) -> crate::recorder::Totals {
        let arrivals =
            Arrivals::rate("20", Some(2.0), crate::arrival::Process::Uniform, 0).unwrap();
        let recorder = Arc::new(Recorder::new(2.0));
        run(
            &arrivals,
            Arc::new(OneAtATime(tokio::sync::Mutex::new(()))),
            recorder.clone(),
            Bounds { in_flight, drain },
            Instant::now(),
            &ProgressBar::hidden(),
            None,
        )
        .await;
        recorder.totals()
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_server_is_charged_for_the_queue_it_makes() {
        // 20 per second for 2 s against a server that does 10 per second:
        // a closed loop would see 100 ms each; the open loop sees the queue
        // grow to about 2 s by the last request.
        let t = twenty_a_second_for_2_s(1000, Duration::from_secs(60)).await;
        assert_eq!(t.ok, 40);
        let p50 = t.latency.value_at_quantile(0.5);
        let max = t.latency.max();
        assert!((1_000_000..1_100_000).contains(&p50), "p50 {p50} us");
        assert!((2_000_000..2_100_000).contains(&max), "max {max} us");
        assert_eq!(t.latency.min(), t.latency.lowest_equivalent(100_000));
    }

    #[tokio::test(start_paused = true)]
    async fn past_the_in_flight_bound_requests_are_counted_not_delayed() {
        let t = twenty_a_second_for_2_s(5, Duration::from_millis(250)).await;
        let not_sent = t.errors.get("not_sent").copied().unwrap_or(0);
        let unanswered = t.errors.get("unanswered").copied().unwrap_or(0);
        assert!(not_sent > 10, "{t:?}");
        assert!(unanswered > 0, "{t:?}");
        assert_eq!(t.ok + not_sent + unanswered, 40);
    }
}
