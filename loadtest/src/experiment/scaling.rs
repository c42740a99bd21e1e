//! A scaling policy for the local target: the replicas of one service follow
//! a metric within bounds, with a cooldown between changes, so that
//! policies can be compared on one machine.
//!
//! - `lag`: the backlog of the queue the service consumes (samples for
//!   recognition, raw results for the filter): waiting plus unacknowledged
//!   entries. The domain metric the HENDU paper left as future work; on
//!   Kubernetes it is KEDA's `redis-streams` scaler (`k8s/base`).
//! - `cpu`: the replicas' mean CPU use, in cores (0.7 is 70 % of one core),
//!   as the Horizontal Pod Autoscaler's utilisation target.
//! - `p99`: the service's own p99 request latency over the interval (ms),
//!   from the replicas' latency histograms.
//! - `busy`: the requests its replicas refused as busy (503) per second,
//!   per replica: the service shedding load.
//!
//! Like the Horizontal Pod Autoscaler, the wanted count is
//! `ceil(replicas * value / target)` for `cpu`, `p99` and `busy`, and `ceil(value / target)`
//! for `lag` (the backlog a replica may hold); a scale-up happens at once
//! after the cooldown since the last change, a scale-down one replica at a
//! time, so a short dip does not throw capacity away.

use std::time::Duration;

use anyhow::{Result, ensure};
use serde::Deserialize;

use crate::arrival::parse_duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    Lag,
    Cpu,
    /// The service's own p99 request latency over the interval, in ms
    /// (from its latency histogram).
    P99,
    /// Requests the service refused as busy (503), per second per replica.
    Busy,
}

/// The `[scaling]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scaling {
    pub service: String,
    pub metric: Metric,
    /// Per replica: backlog entries (`lag`) or cores (`cpu`).
    pub target: f64,
    pub min: usize,
    pub max: usize,
    /// Least time between two changes (default 30 s).
    #[serde(default)]
    pub cooldown: Option<String>,
    /// How often the metric is read (default 5 s).
    #[serde(default)]
    pub interval: Option<String>,
}

impl Scaling {
    /// # Errors
    /// What is wrong, named.
    pub fn check(&self) -> Result<()> {
        ensure!(
            self.target.is_finite() && self.target > 0.0,
            "scaling: the target is a positive number"
        );
        ensure!(
            1 <= self.min && self.min <= self.max && self.max <= 16,
            "scaling: 1 <= min <= max <= 16"
        );
        if self.metric == Metric::Lag {
            ensure!(
                matches!(self.service.as_str(), "recognition" | "filter"),
                "scaling: lag is the backlog of a queue, which only recognition and the filter consume"
            );
        }
        self.cooldown()?;
        self.interval()?;
        Ok(())
    }

    pub fn cooldown(&self) -> Result<Duration> {
        self.cooldown
            .as_deref()
            .map_or(Ok(Duration::from_secs(30)), parse_duration)
    }

    pub fn interval(&self) -> Result<Duration> {
        let d = self
            .interval
            .as_deref()
            .map_or(Ok(Duration::from_secs(5)), parse_duration)?;
        ensure!(
            d >= Duration::from_millis(500),
            "scaling: the interval is at least 500 ms"
        );
        Ok(d)
    }

    /// The replicas the metric asks for, within the bounds.
    pub fn wanted(&self, replicas: usize, value: f64) -> usize {
        let exact = match self.metric {
            Metric::Lag => value / self.target,
            Metric::Cpu | Metric::P99 | Metric::Busy => replicas as f64 * value / self.target,
        };
        // Rounding must not turn exactly three replicas' worth into four.
        let raw = (exact - 1e-9).ceil();
        (raw.max(0.0) as usize).clamp(self.min, self.max)
    }

    /// The next count, given the current one, the metric, and the time
    /// since the last change (None: no change yet).
    pub fn decide(
        &self,
        replicas: usize,
        value: f64,
        since_change: Option<Duration>,
    ) -> Option<usize> {
        let cooled = since_change.is_none_or(|s| s >= self.cooldown().unwrap_or_default());
        let wanted = self.wanted(replicas, value);
        if !cooled || wanted == replicas {
            return None;
        }
        Some(if wanted > replicas {
            wanted
        } else {
            replicas - 1
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lag() -> Scaling {
        Scaling {
            service: "recognition".into(),
            metric: Metric::Lag,
            target: 100.0,
            min: 1,
            max: 4,
            cooldown: Some("30s".into()),
            interval: None,
        }
    }

    #[test]
    fn the_backlog_asks_for_replicas_within_bounds() {
        let s = lag();
        assert_eq!(s.wanted(1, 0.0), 1);
        assert_eq!(s.wanted(1, 250.0), 3);
        assert_eq!(s.wanted(1, 10_000.0), 4);
        let cpu = Scaling {
            metric: Metric::Cpu,
            target: 0.7,
            ..lag()
        };
        // Two replicas at 1.05 cores each, aiming at 0.7: three.
        assert_eq!(cpu.wanted(2, 1.05), 3);
    }

    #[test]
    fn up_at_once_down_one_at_a_time_never_within_the_cooldown() {
        let s = lag();
        assert_eq!(s.decide(1, 350.0, None), Some(4));
        assert_eq!(s.decide(1, 350.0, Some(Duration::from_secs(10))), None);
        assert_eq!(s.decide(4, 0.0, Some(Duration::from_secs(31))), Some(3));
        assert_eq!(s.decide(2, 150.0, Some(Duration::from_secs(60))), None);
    }

    #[test]
    fn a_policy_that_cannot_work_is_refused() {
        assert!(
            Scaling {
                service: "communication".into(),
                ..lag()
            }
            .check()
            .is_err()
        );
        assert!(
            Scaling {
                min: 3,
                max: 2,
                ..lag()
            }
            .check()
            .is_err()
        );
        assert!(
            Scaling {
                target: 0.0,
                ..lag()
            }
            .check()
            .is_err()
        );
        assert!(lag().check().is_ok());
    }
}
