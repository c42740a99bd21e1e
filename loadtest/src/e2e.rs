//! The end-to-end latency: from a device's sample being taken to the play
//! it decided being recorded, read from the stores' own event bus (the
//! play events the filter publishes).
//!
//! A play event is charged to the latest sample its device had delivered
//! before it (the deciding sample). A device's last play is decided by the
//! filter's quiet-source flush after the device stops sending; that is the
//! flush time, not the pipeline's latency, so events after a device's last
//! sample are counted apart.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use futures_util::StreamExt;
use hendu_storage::events::Event;
use hendu_storage::model::Source;
use hendu_storage::{Storage, StorageConfig};
use tokio::time::Instant;

use crate::recorder::{histogram, ms};

/// Play events heard during a run, per device of the run.
#[derive(Debug)]
pub struct Watch {
    heard: Arc<Mutex<Vec<(usize, Duration)>>>,
    task: tokio::task::JoinHandle<()>,
    storage: Storage,
}

/// The stores the services use, from the environment (`HENDU_MYSQL_URL`,
/// `HENDU_MONGO_URL`, `HENDU_REDIS_URL`, `HENDU_REDIS_PREFIX`).
///
/// # Errors
/// A malformed or partial setting.
pub fn stores_from_env() -> Result<StorageConfig> {
    Ok(StorageConfig::from_env("unused.db".into())?)
}

/// Connects to `config` (the services' stores) and listens for the plays
/// of `devices` (device id to the run's device number).
///
/// # Errors
/// No servers configured (the embedded store's events stay in its
/// process), or a store that does not answer.
pub async fn watch(
    config: &StorageConfig,
    devices: HashMap<i64, usize>,
    start: Instant,
) -> Result<Watch> {
    if matches!(config, StorageConfig::Embedded { .. }) {
        anyhow::bail!(
            "the end-to-end latency needs the services' stores: set HENDU_MYSQL_URL, HENDU_MONGO_URL and HENDU_REDIS_URL as the services have them"
        );
    }
    let storage = Storage::connect(config)
        .await
        .context("cannot connect to the services' stores")?;
    let mut events = storage.events.subscribe().await?;
    let heard = Arc::new(Mutex::new(Vec::new()));
    let sink = heard.clone();
    let task = tokio::spawn(async move {
        while let Some(e) = events.next().await {
            if let Event::PlayRecognised {
                source: Source::Device(id),
                ..
            } = e
                && let Some(&d) = devices.get(&id)
            {
                sink.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((d, start.elapsed()));
            }
        }
    });
    Ok(Watch {
        heard,
        task,
        storage,
    })
}

/// What the play events say.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Latency {
    /// Play events of the run's devices.
    pub plays: usize,
    /// Of those, decided by the flush after a device's last sample.
    pub flushed: usize,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Per second of the run (by the play event's time): plays, p50, p99 (ms).
    #[serde(skip)]
    pub seconds: Vec<(u64, u64, f64, f64)>,
}

impl Watch {
    /// Stops listening; `delivered[d]` are device `d`'s delivery instants
    /// (from the start, in any order).
    pub async fn finish(self, mut delivered: Vec<Vec<Duration>>) -> Latency {
        self.task.abort();
        self.storage.close().await;
        let heard = self.heard.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for d in &mut delivered {
            d.sort();
        }
        let mut h = histogram();
        let mut per: std::collections::BTreeMap<u64, hdrhistogram::Histogram<u64>> =
            std::collections::BTreeMap::new();
        let mut flushed = 0;
        for (d, at) in &heard {
            let Some(times) = delivered.get(*d) else {
                continue;
            };
            if times.last().is_none_or(|last| at > last) {
                flushed += 1;
                continue;
            }
            if let Some(deciding) = times.iter().rev().find(|t| *t <= at) {
                let us = (at.saturating_sub(*deciding).as_micros() as u64).max(1);
                let _ = h.record(us);
                let _ = per.entry(at.as_secs()).or_insert_with(histogram).record(us);
            }
        }
        Latency {
            plays: heard.len(),
            flushed,
            p50_ms: ms(&h, 0.5),
            p90_ms: ms(&h, 0.9),
            p99_ms: ms(&h, 0.99),
            max_ms: ms(&h, 1.0),
            seconds: per
                .iter()
                .map(|(s, h)| (*s, h.len(), ms(h, 0.5), ms(h, 0.99)))
                .collect(),
        }
    }
}
