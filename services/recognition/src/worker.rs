//! The samples consumer: samples in, raw results out.
//!
//! It reads up to `concurrency` entries at a time from the `samples` queue
//! and matches them in parallel on the blocking pool. For each sample it
//! writes the raw result (keyed by the sample, so a redelivered sample
//! replaces its result rather than adding one), queues it for the filter,
//! and only then acknowledges the entry: a crash at any point leaves the
//! entry to be delivered again, never a sample without a result.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hendu_fingerprint::blocks::block_of;
use hendu_fingerprint::packed::unpack;
use hendu_fingerprint::{SearchOptions, Searcher};
use hendu_service::{Application, Heartbeat};
use hendu_storage::model::{RawMatch, RawResult};
use hendu_storage::queue::{Delivery, RawResultQueued, SampleQueued};
use hendu_storage::{Queue, Storage, StorageError};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use tokio_util::sync::CancellationToken;

use crate::Config;
use crate::catalogue::LiveCatalogue;

/// The consumer beats at least this often when idle; `/healthz` fails after
/// this allowance without a beat.
pub const ALLOWANCE: Duration = Duration::from_secs(60);
/// How long one read waits for work.
const WAIT: Duration = Duration::from_secs(2);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    /// `match`, `no_match`, `rejected` (unusable entry) or `failed` (retried).
    outcome: &'static str,
}

#[derive(Debug, Clone)]
struct Meters {
    samples: Family<Outcome, Counter>,
    search_seconds: Histogram,
    waiting: Gauge,
    pending: Gauge,
}

/// What one sample came to.
enum Done {
    Matched,
    NoMatch,
    /// The entry cannot be processed, ever: acknowledged and counted.
    Rejected(String),
}

#[derive(Debug)]
pub struct Consumer {
    storage: Storage,
    live: Arc<LiveCatalogue>,
    name: String,
    concurrency: usize,
    min_confidence: f32,
    options: Arc<SearchOptions>,
    meters: Meters,
}

impl Consumer {
    pub fn new(app: &Application, live: Arc<LiveCatalogue>, config: &Config) -> Self {
        let meters = Meters {
            samples: Family::default(),
            search_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 12)),
            waiting: Gauge::default(),
            pending: Gauge::default(),
        };
        let m = &app.ops.metrics;
        m.register(
            "samples",
            "Samples processed, by outcome",
            meters.samples.clone(),
        );
        m.register(
            "search_seconds",
            "Time to match one sample against the index",
            meters.search_seconds.clone(),
        );
        m.register(
            "samples_queue_waiting",
            "Samples queued and not yet delivered",
            meters.waiting.clone(),
        );
        m.register(
            "samples_queue_pending",
            "Samples delivered and not yet acknowledged",
            meters.pending.clone(),
        );
        Self {
            storage: app.storage.clone(),
            live,
            name: config.replica.clone(),
            concurrency: config.concurrency,
            min_confidence: config.min_confidence,
            options: Arc::new(SearchOptions::default()),
            meters,
        }
    }

    fn count(&self, outcome: &'static str) {
        self.meters
            .samples
            .get_or_create(&Outcome { outcome })
            .inc();
    }

    /// Consumes until `stop`; entries in hand when it comes are finished first.
    pub async fn run(&self, beat: Heartbeat, stop: CancellationToken) {
        let mut searchers: Vec<Searcher> =
            (0..self.concurrency).map(|_| Searcher::default()).collect();
        let mut last_backlog = Instant::now() - Duration::from_secs(60);
        while !stop.is_cancelled() {
            beat.beat();
            if last_backlog.elapsed() > Duration::from_secs(5) {
                last_backlog = Instant::now();
                if let Ok(b) = self.storage.queue.backlog(Queue::Samples).await {
                    self.meters.waiting.set(b.waiting as i64);
                    self.meters.pending.set(b.pending as i64);
                }
            }
            if !self.live.is_loaded() {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_millis(100)) => continue,
                }
            }
            let read = tokio::select! {
                () = stop.cancelled() => return,
                read = self.storage.queue.read(Queue::Samples, &self.name, self.concurrency, WAIT) => read,
            };
            let deliveries = match read {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the samples queue; retrying");
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
            };
            let work = deliveries
                .into_iter()
                .zip(std::mem::take(&mut searchers))
                .map(|(d, s)| self.handle(d, s));
            searchers = futures_util::future::join_all(work).await;
            searchers.resize_with(self.concurrency, Searcher::default);
        }
    }

    async fn handle(&self, delivery: Delivery, searcher: Searcher) -> Searcher {
        let (searcher, done) = self.recognise(&delivery, searcher).await;
        match done {
            Ok(done) => {
                match &done {
                    Done::Matched => self.count("match"),
                    Done::NoMatch => self.count("no_match"),
                    Done::Rejected(why) => {
                        tracing::error!(entry = %delivery.id, reason = %why, "sample rejected");
                        self.count("rejected");
                    }
                }
                if let Err(e) = self.storage.queue.ack(Queue::Samples, &delivery.id).await {
                    // Redelivered later; the result is idempotent.
                    tracing::warn!(error = %e, entry = %delivery.id, "cannot acknowledge a sample");
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, entry = %delivery.id, "sample failed; it will be retried");
                self.count("failed");
            }
        }
        searcher
    }

    async fn recognise(
        &self,
        delivery: &Delivery,
        searcher: Searcher,
    ) -> (Searcher, Result<Done, StorageError>) {
        let queued: SampleQueued = match serde_json::from_slice(&delivery.payload) {
            Ok(q) => q,
            Err(e) => {
                return (
                    searcher,
                    Ok(Done::Rejected(format!("malformed entry: {e}"))),
                );
            }
        };
        let sample = match self.storage.documents.sample(&queued.sample_id).await {
            Ok(Some(s)) => s,
            Ok(None) => {
                let why = format!("sample {} is not stored", queued.sample_id);
                return (searcher, Ok(Done::Rejected(why)));
            }
            Err(e) => return (searcher, Err(e)),
        };
        let peaks = match unpack(&sample.peaks) {
            Ok(p) => p,
            Err(e) => {
                let why = format!("sample {}: {e}", sample.id);
                return (searcher, Ok(Done::Rejected(why)));
            }
        };
        let Some(catalogue) = self.live.current() else {
            let e = StorageError::Io(std::io::Error::other("the catalogue is not loaded"));
            return (searcher, Err(e));
        };
        let options = self.options.clone();
        let started = Instant::now();
        let searched = tokio::task::spawn_blocking(move || {
            let mut searcher = searcher;
            let found = catalogue.index.search(&peaks, &options, &mut searcher);
            let matched = found.map(|c| {
                let music = &catalogue.musics[c.track as usize];
                let (a, b) = c.track_span_s();
                (
                    c.confidence,
                    RawMatch {
                        music_id: music.id,
                        block: block_of(a, b, f64::from(music.duration_ms) / 1000.0),
                        offset_s: c.offset_s,
                        score: f64::from(c.score),
                        confidence: f64::from(c.confidence),
                    },
                )
            });
            (searcher, matched)
        })
        .await;
        let (searcher, matched) = match searched {
            Ok(r) => r,
            Err(e) => {
                let why = format!("matching panicked: {e}");
                return (Searcher::default(), Ok(Done::Rejected(why)));
            }
        };
        self.meters
            .search_seconds
            .observe(started.elapsed().as_secs_f64());
        let matched = matched
            .filter(|(confidence, _)| *confidence >= self.min_confidence)
            .map(|(_, m)| m);
        let done = if matched.is_some() {
            Done::Matched
        } else {
            Done::NoMatch
        };
        let result = RawResult {
            sample_id: sample.id.clone(),
            source: sample.source,
            captured_at: sample.captured_at,
            duration_ms: sample.duration_ms,
            location: sample.location,
            matched,
            stored_at: None,
        };
        (searcher, self.forward(&result).await.map(|()| done))
    }

    /// Stores the raw result and queues it for the filter.
    async fn forward(&self, result: &RawResult) -> Result<(), StorageError> {
        self.storage.documents.put_raw_result(result).await?;
        let entry = RawResultQueued {
            sample_id: result.sample_id.clone(),
            source: result.source,
        };
        let payload =
            serde_json::to_vec(&entry).map_err(|e| StorageError::Corrupt(e.to_string()))?;
        self.storage.queue.push(Queue::RawResults, &payload).await?;
        Ok(())
    }
}
