//! The filter's loop: queue entries wake sources up, leases keep each source
//! with one replica, the store holds every source's undecided results.
//!
//! Failures: a store that does not answer is retried in place with a capped
//! backoff (the source's entries held meanwhile, so their delivery counts do
//! not grow), for up to two minutes, then left for redelivery. A source held
//! by another replica is left for redelivery. A play that can never be
//! recorded (its results make an invalid play, or the store refuses it as
//! invalid or damaged) no longer blocks its source: its raw results are *set
//! aside* (logged in full at error level, then deleted from the undecided
//! results; their samples stay stored), the source is processed again without
//! them, and the entries that brought them go to the dead letters with the
//! reason. When the failing results cannot be told (a stored result that does
//! not read), the source's entries go to the dead letters and its results stay.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hendu_service::{Application, Heartbeat, Ops};
use hendu_storage::model::{MusicId, NewPlay, Play, RawResult, Source};
use hendu_storage::queue::{Delivery, RawResultQueued, ReadStatus};
use hendu_storage::{Event, Fence, Queue, Storage, StorageError};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use crate::Config;
use crate::plays::{Track, decide};

/// `/healthz` fails when the loop has not turned for this long.
pub const ALLOWANCE: Duration = Duration::from_secs(60);
const WAIT: Duration = Duration::from_secs(1);
const BATCH: usize = 32;
const PAGE: u32 = 1000;
/// Transient failures are retried after this, doubling up to [`RETRY_MAX`],
/// for up to [`RETRY_FOR`].
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);
const RETRY_FOR: Duration = Duration::from_secs(120);
/// Plays set aside in one handling of a source before its entries all go to
/// the dead letters (it keeps failing).
const SET_ASIDE_ROUNDS: usize = 8;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    /// `recorded`, `already_recorded` (a retry) or `merged` (late results of
    /// a recorded play).
    outcome: &'static str,
}

#[derive(Debug, Clone, Default)]
struct Meters {
    plays: Family<Outcome, Counter>,
    results_decided: Counter,
    results_set_aside: Counter,
    failures: Counter,
    waiting: Gauge,
    dead: Gauge,
}

/// An entry that wakes a source, with the sample whose result it brought.
type Woken = (Delivery, String);

/// Why a source's results were not processed.
#[derive(Debug)]
enum SourceError {
    /// Another replica holds the source, or took it over: its entries are
    /// left for redelivery.
    Leased(String),
    /// The store did not answer: retried.
    Transient(StorageError),
    /// Will fail the same way every time. `results`: the raw results it
    /// comes from, when known (set aside, and the rest goes on).
    Permanent {
        error: StorageError,
        results: Vec<RawResult>,
    },
}

impl From<StorageError> for SourceError {
    fn from(e: StorageError) -> Self {
        Self::of(e, Vec::new())
    }
}

impl SourceError {
    /// `e`, caused by `results` if it is permanent.
    fn of(e: StorageError, results: Vec<RawResult>) -> Self {
        if transient(&e) {
            Self::Transient(e)
        } else if matches!(e, StorageError::Fenced(_)) {
            // Another replica holds the source now: nothing wrong with the results.
            Self::Leased(e.to_string())
        } else {
            Self::Permanent { error: e, results }
        }
    }
}

impl std::fmt::Display for SourceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Leased(why) => f.write_str(why),
            Self::Transient(e) | Self::Permanent { error: e, .. } => e.fmt(f),
        }
    }
}

/// A failure of a server or of the connection to it, that may pass.
fn transient(e: &StorageError) -> bool {
    matches!(
        e,
        StorageError::Sql(_)
            | StorageError::Mongo(_)
            | StorageError::Redis(_)
            | StorageError::Io(_)
    )
}

/// Whether a source's lease was held and its results processed.
#[derive(Debug, PartialEq, Eq)]
enum Handled {
    Done,
    /// Another replica holds the source.
    Busy,
}

#[derive(Debug)]
pub struct Filter {
    storage: Storage,
    config: Config,
    tracks: Mutex<HashMap<MusicId, Track>>,
    meters: Meters,
    readable: ReadStatus,
}

impl Filter {
    pub fn new(app: &Application, config: Config) -> Self {
        Self::with(&app.storage, &app.ops, config)
    }

    /// Registers its metrics and its readiness check (whether it can read
    /// the queue) in `ops`.
    pub fn with(storage: &Storage, ops: &Ops, config: Config) -> Self {
        let meters = Meters::default();
        let m = &ops.metrics;
        m.register("plays", "Plays found, by outcome", meters.plays.clone());
        m.register(
            "raw_results_decided",
            "Raw results decided (part of a play or dropped)",
            meters.results_decided.clone(),
        );
        m.register(
            "filter_failures",
            "Sources whose processing failed (retried)",
            meters.failures.clone(),
        );
        m.register(
            "raw_results_queue_waiting",
            "Raw result entries queued and not yet delivered",
            meters.waiting.clone(),
        );
        m.register(
            "raw_results_set_aside",
            "Raw results that could never be decided, set aside (deleted) so that their source goes on",
            meters.results_set_aside.clone(),
        );
        m.register(
            "raw_results_queue_dead",
            "Raw result entries in the dead letters, waiting for an administrator",
            meters.dead.clone(),
        );
        m.register(
            "raw_results_queue_dead_letters",
            "Raw result entries this process moved to the dead letters, by reason",
            hendu_service::dead_letters::DeadLettered {
                counts: storage.queue.dead_counts(),
                queue: Queue::RawResults,
            },
        );
        let readable = ReadStatus::default();
        let status = readable.clone();
        ops.health.check(move || {
            let why = status.problem();
            Box::pin(async move { vec![("raw results queue".to_owned(), why)] })
        });
        Self {
            storage: storage.clone(),
            config,
            tracks: Mutex::new(HashMap::new()),
            meters,
            readable,
        }
    }

    fn lease_name(source: Source) -> String {
        format!("filter:{source}")
    }

    /// Consumes until `stop`, sweeping quiet sources between reads.
    pub async fn run(&self, beat: Heartbeat, stop: CancellationToken) {
        let mut last_sweep = Instant::now();
        let mut backoff = RETRY_FIRST;
        while !stop.is_cancelled() {
            beat.pace().await;
            beat.beat();
            if last_sweep.elapsed() >= self.config.sweep_every {
                last_sweep = Instant::now();
                if let Err(e) = self.sweep().await {
                    tracing::warn!(error = %e, "sweep of quiet sources failed");
                }
                if let Ok(b) = self.storage.queue.backlog(Queue::RawResults).await {
                    self.meters.waiting.set(b.waiting as i64);
                    self.meters.dead.set(b.dead as i64);
                }
            }
            let read = tokio::select! {
                () = stop.cancelled() => return,
                read = self.storage.queue.read(Queue::RawResults, &self.config.replica, BATCH, WAIT) => read,
            };
            let deliveries = match read {
                Ok(d) => {
                    self.readable.succeeded();
                    backoff = RETRY_FIRST;
                    d
                }
                Err(e) => {
                    self.readable.failed();
                    tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "cannot read the raw results queue; retrying");
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(RETRY_MAX);
                    continue;
                }
            };
            // One pass per source, however many of its entries came together.
            let mut by_source: BTreeMap<(&'static str, i64), (Source, Vec<Woken>)> =
                BTreeMap::new();
            for d in deliveries {
                match serde_json::from_slice::<RawResultQueued>(&d.payload) {
                    Ok(q) => {
                        by_source
                            .entry((q.source.kind(), q.source.id()))
                            .or_insert_with(|| (q.source, Vec::new()))
                            .1
                            .push((d, q.sample_id));
                    }
                    Err(e) => {
                        self.bury(&d, &format!("malformed entry: {e}")).await;
                    }
                }
            }
            for (source, entries) in by_source.into_values() {
                beat.beat();
                self.handle_entries(source, &entries, &beat, &stop).await;
            }
        }
    }

    /// A source woken by `entries`, to their end: acknowledged once the
    /// source is processed; retried in place while the store does not
    /// answer; plays that can never be recorded set aside (see the module).
    async fn handle_entries(
        &self,
        source: Source,
        entries: &[Woken],
        beat: &Heartbeat,
        stop: &CancellationToken,
    ) {
        let started = Instant::now();
        let mut backoff = RETRY_FIRST;
        // Samples whose results were set aside, and why.
        let mut set_aside: Vec<(String, String)> = Vec::new();
        let mut rounds = 0;
        loop {
            let error = match self.handle_waiting(source, stop).await {
                Ok(()) => break,
                Err(e) => e,
            };
            self.meters.failures.inc();
            match error {
                SourceError::Leased(why) => {
                    tracing::warn!(%source, reason = %why, "source busy; its entries will be redelivered");
                    return;
                }
                SourceError::Transient(e) => {
                    if stop.is_cancelled() || started.elapsed() >= RETRY_FOR {
                        tracing::warn!(%source, error = %e, "source failed; its entries will be redelivered");
                        return;
                    }
                    tracing::warn!(%source, error = %e, retry_in_ms = backoff.as_millis() as u64, "source failed; retrying");
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    beat.beat();
                    backoff = (backoff * 2).min(RETRY_MAX);
                    for (d, _) in entries {
                        // A failure here is the same blip; the next attempt tells.
                        let _ = self
                            .storage
                            .queue
                            .hold(Queue::RawResults, &self.config.replica, &d.id)
                            .await;
                    }
                }
                SourceError::Permanent { error, results } => {
                    rounds += 1;
                    if results.is_empty() || rounds > SET_ASIDE_ROUNDS {
                        // The failing results cannot be told, or keep coming.
                        let reason = format!("{source} cannot be processed: {error}");
                        tracing::error!(%source, %error, "source cannot be processed; its entries go to the dead letters");
                        for (d, sample) in entries {
                            let why = set_aside
                                .iter()
                                .find(|(s, _)| s == sample)
                                .map_or(reason.as_str(), |(_, w)| w.as_str());
                            self.bury(d, why).await;
                        }
                        return;
                    }
                    if let Err(e) = self.set_aside(source, &results, &error).await {
                        tracing::warn!(%source, error = %e, "cannot set results aside; the entries will be redelivered");
                        return;
                    }
                    // Round again: the source's other results can now be decided.
                    let reason = format!("raw result set aside: {error}");
                    set_aside.extend(results.into_iter().map(|r| (r.sample_id, reason.clone())));
                }
            }
        }
        for (d, sample) in entries {
            match set_aside.iter().find(|(s, _)| s == sample) {
                Some((_, why)) => self.bury(d, why).await,
                None => {
                    if let Err(e) = self.storage.queue.ack(Queue::RawResults, &d.id).await {
                        tracing::warn!(error = %e, "cannot acknowledge a raw result entry");
                    }
                }
            }
        }
    }

    /// Moves an entry to the dead letters (it can never succeed).
    async fn bury(&self, delivery: &Delivery, reason: &str) {
        tracing::error!(entry = %delivery.id, %reason, "raw result entry moved to the dead letters");
        if let Err(e) = self
            .storage
            .queue
            .dead_letter(Queue::RawResults, delivery, reason)
            .await
        {
            tracing::warn!(error = %e, entry = %delivery.id, "cannot move an entry to the dead letters; it will be redelivered");
        }
    }

    /// Raw results that can never be decided: logged in full (nothing is lost
    /// but the undecided copy; their samples stay stored), then deleted, so
    /// that the source's other results are decided.
    async fn set_aside(
        &self,
        source: Source,
        results: &[RawResult],
        error: &StorageError,
    ) -> Result<(), StorageError> {
        let shown = serde_json::to_string(results).unwrap_or_default();
        tracing::error!(%source, %error, results = %shown, "raw results that can never be decided set aside");
        let ids: Vec<String> = results.iter().map(|r| r.sample_id.clone()).collect();
        self.storage.documents.delete_raw_results(&ids).await?;
        self.meters.results_set_aside.inc_by(ids.len() as u64);
        Ok(())
    }

    /// Processes `source`, waiting for its lease if another replica holds
    /// it: that replica may have read the source before the newest result
    /// was stored, so the entry is only done once someone has read after it.
    async fn handle_waiting(
        &self,
        source: Source,
        stop: &CancellationToken,
    ) -> Result<(), SourceError> {
        let deadline = Instant::now() + self.config.lease * 2;
        loop {
            if self.process(source, false).await? == Handled::Done {
                return Ok(());
            }
            if Instant::now() > deadline || stop.is_cancelled() {
                return Err(SourceError::Leased(format!(
                    "{source} stayed leased to another replica"
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Decides the waiting results of sources that have been quiet for the
    /// flush time.
    async fn sweep(&self) -> Result<(), StorageError> {
        let now = OffsetDateTime::now_utc();
        for (source, latest) in self.storage.documents.raw_result_sources().await? {
            if now - latest < self.config.flush_after {
                continue;
            }
            match self.process(source, true).await {
                Ok(_) => {}
                Err(SourceError::Permanent { error, results }) if !results.is_empty() => {
                    // The next sweep decides the rest.
                    self.meters.failures.inc();
                    if let Err(e) = self.set_aside(source, &results, &error).await {
                        tracing::warn!(%source, error = %e, "cannot set results aside");
                    }
                }
                Err(e) => {
                    // The other quiet sources still get their last plays.
                    self.meters.failures.inc();
                    tracing::warn!(%source, error = %e, "a quiet source failed; the next sweep retries it");
                }
            }
        }
        Ok(())
    }

    /// Under the source's lease: its results through the block algorithm,
    /// plays recorded, decided results deleted.
    async fn process(&self, source: Source, quiet: bool) -> Result<Handled, SourceError> {
        let lease = Self::lease_name(source);
        let me = &self.config.replica;
        let Some(fence) = self
            .storage
            .leases
            .acquire_fenced(&lease, me, self.config.lease)
            .await?
        else {
            return Ok(Handled::Busy);
        };
        let outcome = self.process_leased(source, quiet, &fence).await;
        if let Err(e) = self.storage.leases.release(&lease, me).await {
            tracing::warn!(error = %e, %source, "cannot release a lease; it will expire");
        }
        outcome.map(|()| Handled::Done)
    }

    /// Every write here carries the lease's fencing token: a replica that
    /// paused past its lease (and lost it) has its writes refused by the
    /// store, whatever it believes.
    async fn process_leased(
        &self,
        source: Source,
        quiet: bool,
        fence: &Fence,
    ) -> Result<(), SourceError> {
        loop {
            let results = self
                .storage
                .documents
                .raw_results(source, OffsetDateTime::UNIX_EPOCH, PAGE)
                .await?;
            if results.is_empty() {
                return Ok(());
            }
            for r in &results {
                if let Some(m) = &r.matched {
                    self.learn(m.music_id).await?;
                }
            }
            let full_page = results.len() == PAGE as usize;
            // Quiet as of these results: one stored since the sweep looked is news.
            let newest = results.iter().filter_map(|r| r.stored_at).max();
            let quiet = quiet
                && newest
                    .is_none_or(|at| OffsetDateTime::now_utc() - at >= self.config.flush_after);
            let decision = {
                let tracks = self.tracks.lock().unwrap_or_else(|e| e.into_inner());
                decide(
                    &results,
                    |id| tracks.get(&id).copied(),
                    &self.config.thresholds,
                    quiet && !full_page,
                    OffsetDateTime::now_utc(),
                )
            };
            for play in &decision.plays {
                self.renew(source, fence).await?;
                if let Some(heard) = self.already_heard(source, play).await? {
                    let widened = self
                        .storage
                        .relational
                        .extend_play_fenced(heard.id, play.started_at, play.ended_at, fence)
                        .await?;
                    self.meters
                        .plays
                        .get_or_create(&Outcome { outcome: "merged" })
                        .inc();
                    tracing::info!(
                        %source,
                        music = play.music_id,
                        play = heard.id,
                        started_at = %widened.started_at,
                        ended_at = %widened.ended_at,
                        "late results joined a recorded play"
                    );
                    continue;
                }
                // A play that cannot be recorded is these results' fault.
                let cause = || -> Vec<RawResult> {
                    results
                        .iter()
                        .filter(|r| play.samples.contains(&r.sample_id))
                        .cloned()
                        .collect()
                };
                let new = NewPlay::new(
                    play.music_id,
                    source,
                    results
                        .iter()
                        .find(|r| r.sample_id == play.samples[0])
                        .and_then(|r| r.location.as_deref()),
                    play.started_at,
                    play.ended_at,
                    play.score,
                    &play.key,
                )
                .map_err(|e| SourceError::of(e.into(), cause()))?;
                let recorded = self
                    .storage
                    .relational
                    .record_play_fenced(&new, fence)
                    .await
                    .map_err(|e| SourceError::of(e, cause()))?;
                let outcome = if recorded.created {
                    tracing::info!(
                        %source,
                        music = play.music_id,
                        play = recorded.record.id,
                        started_at = %play.started_at,
                        ended_at = %play.ended_at,
                        "play recorded"
                    );
                    "recorded"
                } else {
                    "already_recorded"
                };
                self.meters.plays.get_or_create(&Outcome { outcome }).inc();
                // Announced on a retry too: a crash may have come between the
                // write and the event (subscribers know plays by id).
                let event = Event::PlayRecognised {
                    play_id: recorded.record.id,
                    music_id: play.music_id,
                    source,
                };
                if let Err(e) = self.storage.events.publish(&event).await {
                    tracing::warn!(error = %e, "cannot publish a play event");
                }
            }
            if decision.consumed == 0 {
                return Ok(());
            }
            self.renew(source, fence).await?;
            // The raw results live in another store: the fence is checked
            // (and raised) just before they go.
            self.storage.relational.check_fence(fence).await?;
            let decided: Vec<String> = results[..decision.consumed]
                .iter()
                .map(|r| r.sample_id.clone())
                .collect();
            self.storage.documents.delete_raw_results(&decided).await?;
            self.meters.results_decided.inc_by(decided.len() as u64);
            if !full_page {
                return Ok(());
            }
        }
    }

    /// Extends the lease before each write: a replica that lost it (it
    /// stalled past the lease time) stops rather than race the new holder.
    async fn renew(&self, source: Source, fence: &Fence) -> Result<(), SourceError> {
        let renewed = self
            .storage
            .leases
            .acquire_fenced(&fence.name, &self.config.replica, self.config.lease)
            .await?;
        if renewed.as_ref() == Some(fence) {
            Ok(())
        } else {
            Err(SourceError::Leased(format!("lost the lease on {source}")))
        }
    }

    /// The play of the same music from this source, recorded under another
    /// key, that `play` belongs to: results that arrived late (a recogniser
    /// died with them in hand, or they came after the quiet-source sweep had
    /// closed the play) after their neighbours had made it. They belong to
    /// it when the two overlap or touch (within a sample's gap) and together
    /// span no more than the track: a track played twice in a row spans two.
    async fn already_heard(
        &self,
        source: Source,
        play: &crate::plays::FoundPlay,
    ) -> Result<Option<Play>, StorageError> {
        let duration_s = self
            .tracks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&play.music_id)
            .map_or(0.0, |t| t.duration_s);
        let slack = time::Duration::seconds_f64(self.config.thresholds.alignment_s);
        let gap = time::Duration::seconds_f64(crate::plays::CONTIGUOUS_S);
        let from = play.started_at - time::Duration::seconds_f64(duration_s) - slack;
        let nearby = self
            .storage
            .relational
            .plays_of_source(source, from, play.ended_at + gap)
            .await?;
        let longest = time::Duration::seconds_f64(duration_s) + slack;
        Ok(nearby.into_iter().find(|p| {
            p.music_id == play.music_id
                && p.idempotency_key != play.key
                && p.started_at <= play.ended_at + gap
                && play.started_at <= p.ended_at + gap
                && p.ended_at.max(play.ended_at) - p.started_at.min(play.started_at) <= longest
        }))
    }

    /// Remembers a music's blocks and duration (they never change).
    async fn learn(&self, id: MusicId) -> Result<(), StorageError> {
        if self
            .tracks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&id)
        {
            return Ok(());
        }
        if let Some(m) = self.storage.relational.music(id).await? {
            self.tracks
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(
                    id,
                    Track {
                        blocks: m.blocks,
                        duration_s: f64::from(m.duration_ms) / 1000.0,
                    },
                );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use hendu_storage::QueueConfig;
    use hendu_storage::model::{ContentHash, MusicState, NewMusic, NewRadio, RawMatch};

    use super::*;
    use crate::Thresholds;

    /// A private directory, removed at the end.
    struct Scratch(std::path::PathBuf);

    impl Scratch {
        fn new() -> Self {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            let dir =
                std::env::temp_dir().join(format!("hendu-filter-{}-{nanos}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    async fn music(storage: &Storage, title: &str, duration_ms: u32) -> MusicId {
        let new = NewMusic::new(
            title,
            None,
            duration_ms,
            ContentHash::of(title.as_bytes()),
            title,
        )
        .unwrap();
        let id = storage
            .relational
            .upsert_music(&new)
            .await
            .unwrap()
            .record
            .id;
        assert!(
            storage
                .relational
                .set_music_state(id, MusicState::Ingesting, MusicState::Ready)
                .await
                .unwrap()
        );
        id
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_play_that_can_never_be_recorded_is_set_aside_and_its_source_goes_on() {
        let scratch = Scratch::new();
        let storage = Storage::embedded(&scratch.0.join("hendu.db"), QueueConfig::default())
            .await
            .unwrap();
        let ops = Ops::new("filter");
        let filter = std::sync::Arc::new(Filter::with(
            &storage,
            &ops,
            Config {
                thresholds: Thresholds::default(),
                flush_after: Duration::from_secs(60),
                lease: Duration::from_secs(10),
                sweep_every: Duration::from_secs(60),
                replica: "test".into(),
            },
        ));
        let first = music(&storage, "First", 150_000).await;
        let second = music(&storage, "Second", 100_000).await;
        let radio = storage
            .relational
            .add_radio(&NewRadio::new("Radio Test", "http://radio.example/live", None).unwrap())
            .await
            .unwrap()
            .record;
        let source = Source::Radio(radio.id);
        // The first track, then the second, then silence (as in the block
        // algorithm's own tests); the first track's results carry a location
        // no play can have (a control character), so its play is refused.
        let t0 = OffsetDateTime::from_unix_timestamp(1_790_000_000).unwrap();
        let played = [
            (first, -10.0),
            (first, 20.0),
            (first, 50.0),
            (first, 80.0),
            (first, 110.0),
            (second, -10.0),
            (second, 20.0),
            (second, 50.0),
            (second, 80.0),
        ];
        let results: Vec<RawResult> = (0..13)
            .map(|k| RawResult {
                sample_id: format!("radio-{}-{k}", radio.id),
                source,
                captured_at: t0 + time::Duration::seconds(30 * k),
                duration_ms: 30_000,
                location: Some(if k < 5 { "Luque\u{7}" } else { "Luque" }.to_owned()),
                stored_at: None,
                matched: played
                    .get(k as usize)
                    .map(|&(music_id, offset_s)| RawMatch {
                        music_id,
                        block: 0,
                        offset_s,
                        score: 50.0,
                        confidence: 0.99,
                    }),
            })
            .collect();
        let q = &storage.queue;
        for r in &results {
            storage.documents.put_raw_result(r).await.unwrap();
            let entry = RawResultQueued {
                sample_id: r.sample_id.clone(),
                source,
            };
            q.push(Queue::RawResults, &serde_json::to_vec(&entry).unwrap())
                .await
                .unwrap();
        }

        let stop = CancellationToken::new();
        let beat = ops.health.worker("raw results consumer", ALLOWANCE);
        let running = {
            let (filter, stop) = (filter.clone(), stop.clone());
            tokio::spawn(async move { filter.run(beat, stop).await })
        };
        let started = Instant::now();
        loop {
            let b = q.backlog(Queue::RawResults).await.unwrap();
            if b.waiting + b.pending == 0 {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(20), "{b:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stop.cancel();
        running.await.unwrap();

        // The second track's play is recorded: the source is not blocked.
        let plays = storage
            .relational
            .plays_of_source(source, t0, t0 + time::Duration::hours(1))
            .await
            .unwrap();
        assert_eq!(plays.len(), 1, "{plays:?}");
        assert_eq!(plays[0].music_id, second);
        // The first track's results are set aside, their entries dead.
        let dead = q.dead_letters(Queue::RawResults, None, 100).await.unwrap();
        let dead_samples: Vec<String> = dead
            .iter()
            .map(|d| {
                serde_json::from_slice::<RawResultQueued>(&d.payload)
                    .unwrap()
                    .sample_id
            })
            .collect();
        assert_eq!(
            dead_samples,
            results[..5]
                .iter()
                .map(|r| r.sample_id.clone())
                .collect::<Vec<_>>()
        );
        assert!(
            dead.iter()
                .all(|d| d.reason.starts_with("raw result set aside: location")),
            "{dead:?}"
        );
        let left = storage
            .documents
            .raw_results(source, t0, 100)
            .await
            .unwrap();
        assert_eq!(
            left.iter().map(|r| r.sample_id.clone()).collect::<Vec<_>>(),
            [results[12].sample_id.clone()],
            "only the last result, waiting for its successor"
        );
        let metrics = ops.metrics.encode();
        assert!(
            metrics.contains(r#"hendu_raw_results_set_aside_total{service="filter"} 5"#),
            "{metrics}"
        );
        assert!(
            metrics.contains(
                r#"hendu_raw_results_queue_dead_letters_total{service="filter",reason="refused"} 5"#
            ),
            "{metrics}"
        );
    }

    /// A filter on a fresh embedded store, deciding quiet sources at once.
    async fn quick_filter(scratch: &Scratch) -> (Storage, Ops, Filter) {
        let storage = Storage::embedded(&scratch.0.join("hendu.db"), QueueConfig::default())
            .await
            .unwrap();
        let ops = Ops::new("filter");
        let filter = Filter::with(
            &storage,
            &ops,
            Config {
                thresholds: Thresholds::default(),
                flush_after: Duration::ZERO,
                lease: Duration::from_secs(10),
                sweep_every: Duration::from_secs(60),
                replica: "test".into(),
            },
        );
        (storage, ops, filter)
    }

    async fn radio(storage: &Storage) -> Source {
        let radio = storage
            .relational
            .add_radio(&NewRadio::new("Radio Test", "http://radio.example/live", None).unwrap())
            .await
            .unwrap()
            .record;
        Source::Radio(radio.id)
    }

    /// Stores the raw results of consecutive 30 s samples `k` (from `t0`),
    /// each matching the given music at the given offset, or nothing.
    async fn heard(
        storage: &Storage,
        source: Source,
        t0: OffsetDateTime,
        samples: &[(i64, Option<(MusicId, f64)>)],
    ) {
        for &(k, matched) in samples {
            let captured_at = t0 + time::Duration::seconds(30 * k);
            let r = RawResult {
                sample_id: format!("{source}-{}", captured_at.unix_timestamp()),
                source,
                captured_at,
                duration_ms: 30_000,
                location: None,
                stored_at: None,
                matched: matched.map(|(music_id, offset_s)| RawMatch {
                    music_id,
                    block: 0,
                    offset_s,
                    score: 50.0,
                    confidence: 0.99,
                }),
            };
            storage.documents.put_raw_result(&r).await.unwrap();
        }
    }

    async fn plays(storage: &Storage, source: Source, t0: OffsetDateTime) -> Vec<Play> {
        storage
            .relational
            .plays_of_source(
                source,
                t0 - time::Duration::hours(1),
                t0 + time::Duration::hours(1),
            )
            .await
            .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_filter_whose_lease_was_taken_over_records_no_play_and_keeps_the_results() {
        let scratch = Scratch::new();
        let (storage, _ops, filter) = quick_filter(&scratch).await;
        let track = music(&storage, "Track", 150_000).await;
        let source = radio(&storage).await;
        let t0 = OffsetDateTime::from_unix_timestamp(1_790_000_000).unwrap();
        let mut samples: Vec<_> = (0..5)
            .map(|k| (k, Some((track, -10.0 + 30.0 * k as f64))))
            .collect();
        samples.extend((5..8).map(|k| (k, None)));
        heard(&storage, source, t0, &samples).await;

        // This replica held the source, then paused past its lease; another
        // took the source over (and, in the second round, let it go again).
        let name = Filter::lease_name(source);
        let leases = &storage.leases;
        let stale = leases
            .acquire_fenced(&name, "test", Duration::from_millis(50))
            .await
            .unwrap()
            .unwrap();
        tokio::time::sleep(Duration::from_millis(120)).await;
        let other = leases
            .acquire_fenced(&name, "other", Duration::from_secs(10))
            .await
            .unwrap()
            .unwrap();
        assert!(other.token > stale.token);
        for round in ["held by the other", "released by the other"] {
            let refused = filter.process_leased(source, true, &stale).await;
            assert!(
                matches!(refused, Err(SourceError::Leased(_))),
                "{round}: {refused:?}"
            );
            assert_eq!(plays(&storage, source, t0).await, [], "{round}");
            let left = storage
                .documents
                .raw_results(source, OffsetDateTime::UNIX_EPOCH, 100)
                .await
                .unwrap();
            assert_eq!(left.len(), samples.len(), "{round}: no result deleted");
            leases.release(&name, "other").await.unwrap();
        }

        // With a lease of its own, the same filter records the play.
        assert_eq!(filter.process(source, true).await.unwrap(), Handled::Done);
        let recorded = plays(&storage, source, t0).await;
        assert_eq!(recorded.len(), 1, "{recorded:?}");
        assert_eq!(recorded[0].music_id, track);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn late_results_that_touch_a_recorded_play_widen_it_and_a_replay_stays_a_second_play() {
        let scratch = Scratch::new();
        let (storage, ops, filter) = quick_filter(&scratch).await;
        let track = music(&storage, "Track", 150_000).await;
        let other = music(&storage, "Other", 100_000).await;
        let source = radio(&storage).await;
        let t0 = OffsetDateTime::from_unix_timestamp(1_790_000_000).unwrap();
        let at = |k: i64| (k, Some((track, -10.0 + 30.0 * k as f64)));

        // The quiet-source sweep closes the play on the first three samples;
        // the last two were in the hands of a recogniser that died.
        heard(&storage, source, t0, &[at(0), at(1), at(2)]).await;
        filter.process(source, true).await.unwrap();
        let first = plays(&storage, source, t0).await;
        assert_eq!(first.len(), 1, "{first:?}");
        let (started, ended) = (first[0].started_at, first[0].ended_at);

        // They come back, touching the play: it is widened, not doubled.
        heard(&storage, source, t0, &[at(3), at(4), (5, None), (6, None)]).await;
        filter.process(source, true).await.unwrap();
        let widened = plays(&storage, source, t0).await;
        assert_eq!(widened.len(), 1, "{widened:?}");
        assert_eq!(widened[0].id, first[0].id);
        assert_eq!(widened[0].started_at, started);
        assert!(
            widened[0].ended_at >= ended + time::Duration::seconds(55),
            "{ended} -> {}",
            widened[0].ended_at
        );
        let metrics = ops.metrics.encode();
        assert!(
            metrics.contains(r#"hendu_plays_total{service="filter",outcome="merged"} 1"#),
            "{metrics}"
        );

        // Later, the track is played twice in a row, and the second play's
        // results come after the first was recorded: they touch it, but
        // together they span twice the track, so it is a play of its own.
        let t1 = t0 + time::Duration::minutes(20);
        let twice: Vec<_> = (0..10)
            .map(|k| (k, Some((track, -10.0 + 30.0 * (k % 5) as f64))))
            .collect();
        heard(&storage, source, t1, &twice[..5]).await;
        filter.process(source, true).await.unwrap();
        heard(&storage, source, t1, &twice[5..]).await;
        heard(
            &storage,
            source,
            t1,
            &[
                (10, Some((other, -10.0))),
                (11, Some((other, 20.0))),
                (12, None),
            ],
        )
        .await;
        filter.process(source, true).await.unwrap();
        let all = plays(&storage, source, t0).await;
        let later: Vec<_> = all
            .iter()
            .filter(|p| p.started_at >= t1)
            .map(|p| (p.music_id, p.started_at - t1))
            .collect();
        assert_eq!(
            later,
            [
                (track, time::Duration::seconds(10)),
                (track, time::Duration::seconds(160)),
                (other, time::Duration::seconds(310)),
            ],
            "{all:?}"
        );
    }
}
