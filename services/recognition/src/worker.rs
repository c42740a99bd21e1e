//! The samples consumer: samples in, raw results out.
//!
//! It reads up to `concurrency` entries at a time from the `samples` queue
//! and matches them in parallel on the blocking pool. For each sample it
//! writes the raw result (keyed by the sample, so a redelivered sample
//! replaces its result rather than adding one), queues it for the filter,
//! and only then acknowledges the entry: a crash at any point leaves the
//! entry to be delivered again, never a sample without a result.
//!
//! Failures are of two kinds. A store that does not answer (MySQL, MongoDB,
//! Redis, I/O) is retried in place with a capped exponential backoff, the
//! entry held meanwhile so that it is neither taken over nor counted as
//! delivered again; after two minutes it is left for redelivery. An entry that
//! can never succeed (malformed, its sample not stored, peaks that do not
//! unpack, matching that panicked) goes to the dead letters at once with the
//! reason, and its sample is marked set aside. An entry that crashes or hangs
//! every replica that takes it goes there by itself after the queue's
//! `HENDU_QUEUE_MAX_DELIVERIES`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hendu_fingerprint::blocks::block_of;
use hendu_fingerprint::packed::unpack_query;
use hendu_fingerprint::{SearchOptions, Searcher};
use hendu_service::{Heartbeat, Ops};
use hendu_storage::model::RawMatch;
use hendu_storage::queue::{Delivery, ReadStatus, SampleQueued};
use hendu_storage::shards::{ShardAnswer, ShardCandidate, ShardReply};
use hendu_storage::{Queue, Shard, Storage, StorageError};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use tokio_util::sync::CancellationToken;

use crate::Config;
use crate::catalogue::LiveCatalogue;
use crate::{results, shards};

/// The consumer beats at least this often when idle; `/healthz` fails after
/// this allowance without a beat.
pub const ALLOWANCE: Duration = Duration::from_secs(60);
/// How long one read waits for work.
const WAIT: Duration = Duration::from_secs(2);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    /// `match`, `no_match`, `dead_lettered` (can never succeed: moved to the
    /// dead letters) or `failed` (a transient failure, retried); for a
    /// shard, `answered` (its answer stored, others to come) and
    /// `decided_partial` (decided without a shard that timed out, counted
    /// besides the decision's own outcome).
    outcome: &'static str,
}

#[derive(Debug, Clone)]
struct Meters {
    samples: Family<Outcome, Counter>,
    search_seconds: Histogram,
    waiting: Gauge,
    pending: Gauge,
    dead: Gauge,
}

/// What one sample came to.
enum Done {
    Matched,
    NoMatch,
    /// A shard's answer stored; the other shards' are still to come.
    Answered,
}

/// Why a sample was not done.
enum Failure {
    /// The store did not answer (a database blip): retried.
    Transient(StorageError),
    /// The entry can never succeed (bad data): to the dead letters at once.
    Permanent {
        reason: String,
        sample_id: Option<String>,
    },
}

impl Failure {
    fn permanent(reason: String, sample_id: Option<&str>) -> Self {
        Self::Permanent {
            reason,
            sample_id: sample_id.map(str::to_owned),
        }
    }
}

impl From<StorageError> for Failure {
    fn from(e: StorageError) -> Self {
        if transient(&e) {
            Self::Transient(e)
        } else {
            Self::Permanent {
                reason: e.to_string(),
                sample_id: None,
            }
        }
    }
}

/// A failure of a server or of the connection to it, that may pass (as
/// opposed to data that will fail the same way every time).
pub fn transient(e: &StorageError) -> bool {
    matches!(
        e,
        StorageError::Sql(_)
            | StorageError::Mongo(_)
            | StorageError::Redis(_)
            | StorageError::Io(_)
    )
}

/// The first retry of a transient failure waits this long, doubling up to
/// [`RETRY_MAX`]; after [`RETRY_FOR`] the entry is left for redelivery.
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);
const RETRY_FOR: Duration = Duration::from_secs(120);

#[derive(Debug)]
pub struct Consumer {
    storage: Storage,
    live: Arc<LiveCatalogue>,
    name: String,
    concurrency: usize,
    min_confidence: f32,
    shard: Shard,
    /// The queue as this replica reads it: its shard's group.
    queue: Queue,
    options: Arc<SearchOptions>,
    meters: Meters,
    readable: ReadStatus,
}

impl Consumer {
    /// Registers its metrics and its readiness check (whether it can read
    /// the queue) in `ops`.
    pub fn new(storage: &Storage, ops: &Ops, live: Arc<LiveCatalogue>, config: &Config) -> Self {
        let meters = Meters {
            samples: Family::default(),
            search_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 12)),
            waiting: Gauge::default(),
            pending: Gauge::default(),
            dead: Gauge::default(),
        };
        let m = &ops.metrics;
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
        m.register(
            "samples_queue_dead",
            "Samples in the dead letters, waiting for an administrator",
            meters.dead.clone(),
        );
        m.register(
            "samples_queue_dead_letters",
            "Samples this process moved to the dead letters, by reason",
            hendu_service::dead_letters::DeadLettered {
                counts: storage.queue.dead_counts(),
                queue: Queue::Samples,
            },
        );
        let readable = ReadStatus::default();
        let status = readable.clone();
        ops.health.check(move || {
            let why = status.problem();
            Box::pin(async move { vec![("samples queue".to_owned(), why)] })
        });
        Self {
            storage: storage.clone(),
            live,
            name: config.replica.clone(),
            concurrency: config.concurrency,
            min_confidence: config.min_confidence,
            shard: config.shard,
            queue: Queue::samples(config.shard),
            options: Arc::new(SearchOptions::default()),
            meters,
            readable,
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
        let mut backoff = RETRY_FIRST;
        while !stop.is_cancelled() {
            beat.pace().await;
            beat.beat();
            if last_backlog.elapsed() > Duration::from_secs(5) {
                last_backlog = Instant::now();
                if let Ok(b) = self.storage.queue.backlog(self.queue).await {
                    self.meters.waiting.set(b.waiting as i64);
                    self.meters.pending.set(b.pending as i64);
                    self.meters.dead.set(b.dead as i64);
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
                read = self.storage.queue.read(self.queue, &self.name, self.concurrency, WAIT) => read,
            };
            let deliveries = match read {
                Ok(d) => {
                    self.readable.succeeded();
                    backoff = RETRY_FIRST;
                    d
                }
                Err(e) => {
                    self.readable.failed();
                    tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "cannot read the samples queue; retrying");
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(RETRY_MAX);
                    continue;
                }
            };
            let work = deliveries
                .into_iter()
                .zip(std::mem::take(&mut searchers))
                .map(|(d, s)| self.handle(d, s, &beat, &stop));
            searchers = futures_util::future::join_all(work).await;
            searchers.resize_with(self.concurrency, Searcher::default);
        }
    }

    /// One delivery to its end: acknowledged when done, moved to the dead
    /// letters when it can never succeed, retried in place with a capped
    /// backoff (holding it, so that no other replica takes it over and its
    /// delivery count does not grow) while the store does not answer.
    async fn handle(
        &self,
        delivery: Delivery,
        searcher: Searcher,
        beat: &Heartbeat,
        stop: &CancellationToken,
    ) -> Searcher {
        let started = Instant::now();
        let mut backoff = RETRY_FIRST;
        let mut searcher = searcher;
        loop {
            let (back, done) = self.recognise(&delivery, searcher).await;
            searcher = back;
            match done {
                Ok(done) => {
                    self.count(match done {
                        Done::Matched => "match",
                        Done::NoMatch => "no_match",
                        Done::Answered => "answered",
                    });
                    if let Err(e) = self.storage.queue.ack(self.queue, &delivery.id).await {
                        // Redelivered later; the result is idempotent.
                        tracing::warn!(error = %e, entry = %delivery.id, "cannot acknowledge a sample");
                    }
                    return searcher;
                }
                Err(Failure::Permanent { reason, sample_id }) => {
                    self.bury(&delivery, &reason, sample_id.as_deref()).await;
                    return searcher;
                }
                Err(Failure::Transient(e)) => {
                    self.count("failed");
                    if stop.is_cancelled() || started.elapsed() >= RETRY_FOR {
                        tracing::warn!(error = %e, entry = %delivery.id, "sample failed; left for redelivery");
                        return searcher;
                    }
                    tracing::warn!(error = %e, entry = %delivery.id, retry_in_ms = backoff.as_millis() as u64, "sample failed; retrying");
                    tokio::select! {
                        () = stop.cancelled() => return searcher,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    beat.beat();
                    backoff = (backoff * 2).min(RETRY_MAX);
                    match self
                        .storage
                        .queue
                        .hold(self.queue, &self.name, &delivery.id)
                        .await
                    {
                        Ok(true) | Err(_) => {}
                        Ok(false) => {
                            tracing::info!(entry = %delivery.id, "a sample being retried went to another replica");
                            return searcher;
                        }
                    }
                }
            }
        }
    }

    /// Moves an entry that can never succeed to the dead letters, and marks
    /// its sample so that reconciliation does not queue it again.
    async fn bury(&self, delivery: &Delivery, reason: &str, sample_id: Option<&str>) {
        tracing::error!(entry = %delivery.id, sample = sample_id.unwrap_or("-"), %reason, "sample moved to the dead letters");
        match self
            .storage
            .queue
            .dead_letter(self.queue, delivery, reason)
            .await
        {
            Ok(()) => self.count("dead_lettered"),
            // Delivered again later, and refused again.
            Err(e) => {
                tracing::warn!(error = %e, entry = %delivery.id, "cannot move a sample to the dead letters")
            }
        }
        if let Some(id) = sample_id
            && let Err(e) = self.storage.documents.set_sample_aside(id).await
        {
            tracing::warn!(error = %e, sample = id, "cannot mark a sample set aside");
        }
    }

    async fn recognise(
        &self,
        delivery: &Delivery,
        searcher: Searcher,
    ) -> (Searcher, Result<Done, Failure>) {
        let queued: SampleQueued = match serde_json::from_slice(&delivery.payload) {
            Ok(q) => q,
            Err(e) => {
                let why = format!("malformed entry: {e}");
                return (searcher, Err(Failure::permanent(why, None)));
            }
        };
        let id = Some(queued.sample_id.as_str());
        let sample = match self.storage.documents.sample(&queued.sample_id).await {
            Ok(Some(s)) => s,
            Ok(None) => {
                let why = format!("sample {} is not stored", queued.sample_id);
                return (searcher, Err(Failure::permanent(why, id)));
            }
            Err(e) => return (searcher, Err(with_sample(e.into(), id))),
        };
        let (peaks, sparse) = match unpack_query(&sample.peaks) {
            Ok(p) => p,
            Err(e) => {
                let why = format!("sample {}: {e}", sample.id);
                return (searcher, Err(Failure::permanent(why, id)));
            }
        };
        let Some(catalogue) = self.live.current() else {
            let e = StorageError::Io(std::io::Error::other("the catalogue is not loaded"));
            return (searcher, Err(Failure::Transient(e)));
        };
        let options = self.options.clone();
        let started = Instant::now();
        let searched = tokio::task::spawn_blocking(move || {
            let mut searcher = searcher;
            let found = catalogue
                .index
                .search_wide(&peaks, &sparse, &options, &mut searcher);
            let matched = found.and_then(|c| {
                // A candidate is a track the index holds, which has its music.
                let music = catalogue.music(c.track)?;
                let (a, b) = c.track_span_s();
                Some((
                    c.evidence(),
                    RawMatch {
                        music_id: music.id,
                        block: block_of(a, b, f64::from(music.duration_ms) / 1000.0),
                        offset_s: c.offset_s,
                        score: f64::from(c.score),
                        confidence: f64::from(c.confidence),
                    },
                ))
            });
            (searcher, matched)
        })
        .await;
        let (searcher, found) = match searched {
            Ok(r) => r,
            Err(e) => {
                let why = format!("matching panicked: {e}");
                return (Searcher::default(), Err(Failure::permanent(why, id)));
            }
        };
        self.meters
            .search_seconds
            .observe(started.elapsed().as_secs_f64());
        let matched = if self.shard.is_whole() {
            found
                .map(|(_, m)| m)
                .filter(|m| m.confidence >= f64::from(self.min_confidence))
        } else {
            let answer = ShardAnswer {
                sample_id: sample.id.clone(),
                shard: self.shard.index(),
                shards: self.shard.count(),
                reply: ShardReply::Best(found.map(|(e, matched)| ShardCandidate {
                    matched,
                    rival_votes: e.rival_votes,
                    z: f64::from(e.z),
                    penalty: f64::from(e.penalty),
                })),
                answered_at: time::OffsetDateTime::now_utc(),
            };
            let answers = match self.storage.documents.put_shard_answer(&answer).await {
                Ok(a) => a,
                Err(e) => return (searcher, Err(with_sample(e.into(), id))),
            };
            // The replica whose answer completes the set decides; one whose
            // slot reconciliation filled (it was too late) leaves it be.
            let mine_timed_out = answers
                .iter()
                .any(|a| a.shard == self.shard.index() && a.reply == ShardReply::TimedOut);
            if !shards::complete(&answers, self.shard.count()) || mine_timed_out {
                return (searcher, Ok(Done::Answered));
            }
            if shards::log_partial(&sample.id, &answers) == shards::Decision::Partial {
                self.count("decided_partial");
            }
            shards::decide(&answers, self.min_confidence)
        };
        let done = if matched.is_some() {
            Done::Matched
        } else {
            Done::NoMatch
        };
        let forwarded = results::forward(&self.storage, sample, matched).await;
        (
            searcher,
            forwarded
                .map(|()| done)
                .map_err(|e| with_sample(e.into(), id)),
        )
    }
}

/// A failure, with the sample it concerns when it is permanent.
fn with_sample(failure: Failure, id: Option<&str>) -> Failure {
    match failure {
        Failure::Permanent { reason, sample_id } => Failure::Permanent {
            reason,
            sample_id: sample_id.or_else(|| id.map(str::to_owned)),
        },
        transient => transient,
    }
}

#[cfg(test)]
mod tests {
    use hendu_fingerprint::packed::{BinPrecision, pack};
    use hendu_storage::QueueConfig;
    use hendu_storage::model::{NewSample, RawResult, Source};

    use super::*;
    use crate::testing::{Scratch, stored_music};

    fn config() -> Config {
        Config {
            concurrency: 2,
            min_confidence: 0.5,
            resync: Duration::from_secs(60),
            reconcile: Duration::from_secs(60),
            claim_after: Duration::from_secs(30),
            replica: "test".into(),
            shard: Shard::WHOLE,
            shard_wait: Duration::from_secs(120),
        }
    }

    /// A consumer of `storage`'s samples, its catalogue loaded.
    async fn loaded_consumer(storage: &Storage) -> (Ops, Arc<Consumer>) {
        let ops = Ops::new("recognition");
        let live = Arc::new(LiveCatalogue::new(
            storage.clone(),
            &ops.metrics,
            Shard::WHOLE,
        ));
        live.resync().await.unwrap();
        let consumer = Arc::new(Consumer::new(storage, &ops, live, &config()));
        (ops, consumer)
    }

    /// A capture instant, read from a result (this crate does not name the
    /// time crate).
    fn a_result() -> RawResult {
        serde_json::from_str(
            r#"{"sample_id":"x","source":{"kind":"device","id":1},"captured_at":"2026-03-01T12:00:00Z","matched":null}"#,
        )
        .unwrap()
    }

    /// Starts `consumer` and waits until the samples queue is worked off;
    /// cancel the token and await the handle to stop it.
    async fn work_off(
        storage: &Storage,
        ops: &Ops,
        consumer: &Arc<Consumer>,
    ) -> (CancellationToken, tokio::task::JoinHandle<()>) {
        let stop = CancellationToken::new();
        let beat = ops.health.worker("samples consumer", ALLOWANCE);
        let running = {
            let (consumer, stop) = (consumer.clone(), stop.clone());
            tokio::spawn(async move { consumer.run(beat, stop).await })
        };
        until("the samples are done with", async || {
            let b = storage.queue.backlog(Queue::Samples).await.unwrap();
            b.waiting + b.pending == 0
        })
        .await;
        (stop, running)
    }

    async fn until(what: &str, mut done: impl AsyncFnMut() -> bool) {
        let started = Instant::now();
        while !done().await {
            assert!(started.elapsed() < Duration::from_secs(20), "{what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn samples_that_can_never_succeed_go_to_the_dead_letters_and_the_rest_are_recognised() {
        let scratch = Scratch::new();
        let storage = Storage::embedded(&scratch.0.join("hendu.db"), QueueConfig::default())
            .await
            .unwrap();
        let (ops, consumer) = loaded_consumer(&storage).await;
        let captured_at = a_result().captured_at;
        let source = Source::Device(1);
        let good = NewSample::new(
            source,
            None,
            captured_at,
            30_000,
            pack(&[], BinPrecision::Fine),
        )
        .unwrap();
        let mut damaged = NewSample::new(source, None, captured_at, 30_000, vec![4, 100]).unwrap();
        damaged.id.push_str("-damaged");
        for s in [&good, &damaged] {
            storage.documents.put_sample(s).await.unwrap();
        }
        let entry = |id: &str| {
            serde_json::to_vec(&SampleQueued {
                sample_id: id.to_owned(),
                source,
            })
            .unwrap()
        };
        let q = &storage.queue;
        q.push(Queue::Samples, b"not json").await.unwrap();
        q.push(Queue::Samples, &entry("device-1-0")).await.unwrap();
        q.push(Queue::Samples, &entry(&damaged.id)).await.unwrap();
        q.push(Queue::Samples, &entry(&good.id)).await.unwrap();

        let (stop, running) = work_off(&storage, &ops, &consumer).await;

        // Entries are worked on concurrently, so they reach the dead letters
        // in no set order.
        let dead = q.dead_letters(Queue::Samples, None, 10).await.unwrap();
        let reasons: Vec<&str> = dead.iter().map(|d| d.reason.as_str()).collect();
        assert_eq!(reasons.len(), 3, "{reasons:?}");
        let dead_for = |prefix: &str| {
            let found: Vec<_> = dead
                .iter()
                .filter(|d| d.reason.starts_with(prefix))
                .collect();
            assert_eq!(found.len(), 1, "{prefix}: {reasons:?}");
            found[0]
        };
        assert_eq!(dead_for("malformed entry").payload, b"not json");
        assert_eq!(
            dead_for("sample device-1-0 is not stored").payload,
            entry("device-1-0")
        );
        assert_eq!(
            dead_for(&format!("sample {}: ", damaged.id)).payload,
            entry(&damaged.id)
        );
        // The good one went on to the filter.
        let forwarded = q.entries(Queue::RawResults, None, 10).await.unwrap();
        assert_eq!(forwarded.len(), 1);
        let r: hendu_storage::queue::RawResultQueued =
            serde_json::from_slice(&forwarded[0].1).unwrap();
        assert_eq!(r.sample_id, good.id);
        let results = storage
            .documents
            .raw_results(source, captured_at, 10)
            .await
            .unwrap();
        assert_eq!(results.len(), 1);
        assert_eq!(results[0].matched, None);
        // Nothing is left for reconciliation: one recognised (its result
        // waits for the filter), one set aside.
        let later = captured_at + Duration::from_secs(3600);
        let unsettled = storage
            .documents
            .unsettled_samples(later, 10)
            .await
            .unwrap();
        assert_eq!(unsettled, [(good.id.clone(), source)]);
        assert!(
            storage
                .documents
                .samples_with_raw_results(std::slice::from_ref(&good.id))
                .await
                .unwrap()
                .contains(&good.id)
        );
        let metrics = ops.metrics.encode();
        assert!(
            metrics.contains(r#"outcome="dead_lettered"} 3"#),
            "{metrics}"
        );
        assert!(metrics.contains(r#"outcome="no_match"} 1"#), "{metrics}");
        assert!(metrics.contains(r#"hendu_samples_queue_dead_letters_total{service="recognition",reason="refused"} 3"#), "{metrics}");
        assert!(ops.health.missing().await.is_empty());

        // A queue that cannot be read makes the replica unready, with a code.
        storage.close().await;
        until("readiness to notice", async || {
            ops.health
                .missing()
                .await
                .contains(&("samples queue".to_owned(), "queue_unreadable".to_owned()))
        })
        .await;
        stop.cancel();
        running.await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_key_locked_tempo_is_recognised_from_the_samples_sparse_peaks() {
        use hendu_fingerprint::packed::pack_query;
        use hendu_fingerprint::synth::music_warped;
        use hendu_fingerprint::{Clip, Warp, fingerprint_clip_sparse};

        let scratch = Scratch::new();
        let storage = scratch.storage().await;
        let rate = 22_050;
        let mut ids = Vec::new();
        for seed in [1u64, 2, 3] {
            ids.push(stored_music(&storage, seed, 60, rate).await.0);
        }
        let (ops, consumer) = loaded_consumer(&storage).await;

        // 8 s of track 2 with its tempo 8% slower and its key kept, as a
        // DJ's key-lock plays it: once with its sparse peaks (as the
        // communication service and the radio monitor store samples), once
        // without (as a sensor of wire version 1 sends them).
        let warped = music_warped(
            2,
            60.0,
            rate,
            Warp {
                time: 0.92,
                freq: 1.0,
            },
        );
        let clip = Clip {
            sample_rate: rate,
            samples: warped[12 * rate as usize..20 * rate as usize].to_vec(),
        };
        let (peaks, sparse) = fingerprint_clip_sparse(&clip);
        let captured_at = a_result().captured_at;
        let source = Source::Device(1);
        let wide = NewSample::new(
            source,
            None,
            captured_at,
            8_000,
            pack_query(&peaks, &sparse),
        )
        .unwrap();
        let narrow = NewSample::new(
            source,
            None,
            captured_at + Duration::from_secs(30),
            8_000,
            pack(&peaks, BinPrecision::Fine),
        )
        .unwrap();
        for s in [&wide, &narrow] {
            storage.documents.put_sample(s).await.unwrap();
            let entry = serde_json::to_vec(&SampleQueued {
                sample_id: s.id.clone(),
                source,
            })
            .unwrap();
            storage.queue.push(Queue::Samples, &entry).await.unwrap();
        }

        let (stop, running) = work_off(&storage, &ops, &consumer).await;
        let results = storage
            .documents
            .raw_results(source, captured_at, 10)
            .await
            .unwrap();
        let matched = |id: &str| {
            results
                .iter()
                .find(|r| r.sample_id == id)
                .unwrap_or_else(|| panic!("no result for {id}: {results:?}"))
                .matched
                .clone()
        };
        let found = matched(&wide.id).expect("the wide search finds it");
        assert_eq!(found.music_id, ids[1], "{found:?}");
        assert!(found.confidence > 0.9, "{found:?}");
        assert!(
            matched(&narrow.id).is_none_or(|m| m.music_id != ids[1] || m.confidence < 0.9),
            "the speed grid alone is not expected to reach 8%"
        );
        stop.cancel();
        running.await.unwrap();
    }
}
