//! The filter's loop: queue entries wake sources up, leases keep each source
//! with one replica, the store holds every source's undecided results.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hendu_service::{Application, Heartbeat};
use hendu_storage::model::{MusicId, NewPlay, Source};
use hendu_storage::queue::RawResultQueued;
use hendu_storage::{Event, Queue, Storage, StorageError};
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
    failures: Counter,
    waiting: Gauge,
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
}

impl Filter {
    pub fn new(app: &Application, config: Config) -> Self {
        let meters = Meters::default();
        let m = &app.ops.metrics;
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
        Self {
            storage: app.storage.clone(),
            config,
            tracks: Mutex::new(HashMap::new()),
            meters,
        }
    }

    fn lease_name(source: Source) -> String {
        format!("filter:{source}")
    }

    /// Consumes until `stop`, sweeping quiet sources between reads.
    pub async fn run(&self, beat: Heartbeat, stop: CancellationToken) {
        let mut last_sweep = Instant::now();
        while !stop.is_cancelled() {
            beat.beat();
            if last_sweep.elapsed() >= self.config.sweep_every {
                last_sweep = Instant::now();
                if let Err(e) = self.sweep().await {
                    tracing::warn!(error = %e, "sweep of quiet sources failed");
                }
                if let Ok(b) = self.storage.queue.backlog(Queue::RawResults).await {
                    self.meters.waiting.set(b.waiting as i64);
                }
            }
            let read = tokio::select! {
                () = stop.cancelled() => return,
                read = self.storage.queue.read(Queue::RawResults, &self.config.replica, BATCH, WAIT) => read,
            };
            let deliveries = match read {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the raw results queue; retrying");
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
            };
            // One pass per source, however many of its entries came together.
            let mut by_source: BTreeMap<(&'static str, i64), (Source, Vec<String>)> =
                BTreeMap::new();
            for d in deliveries {
                match serde_json::from_slice::<RawResultQueued>(&d.payload) {
                    Ok(q) => {
                        by_source
                            .entry((q.source.kind(), q.source.id()))
                            .or_insert_with(|| (q.source, Vec::new()))
                            .1
                            .push(d.id);
                    }
                    Err(e) => {
                        tracing::error!(entry = %d.id, error = %e, "malformed raw result entry dropped");
                        let _ = self.storage.queue.ack(Queue::RawResults, &d.id).await;
                    }
                }
            }
            for (source, entries) in by_source.into_values() {
                beat.beat();
                match self.handle_waiting(source, &stop).await {
                    Ok(()) => {
                        for id in entries {
                            if let Err(e) = self.storage.queue.ack(Queue::RawResults, &id).await {
                                tracing::warn!(error = %e, "cannot acknowledge a raw result entry");
                            }
                        }
                    }
                    Err(e) => {
                        self.meters.failures.inc();
                        tracing::warn!(%source, error = %e, "source failed; its entries will be redelivered");
                    }
                }
            }
        }
    }

    /// Processes `source`, waiting for its lease if another replica holds
    /// it: that replica may have read the source before the newest result
    /// was stored, so the entry is only done once someone has read after it.
    async fn handle_waiting(
        &self,
        source: Source,
        stop: &CancellationToken,
    ) -> Result<(), StorageError> {
        let deadline = Instant::now() + self.config.lease * 2;
        loop {
            if self.process(source, false).await? == Handled::Done {
                return Ok(());
            }
            if Instant::now() > deadline || stop.is_cancelled() {
                return Err(StorageError::Conflict(format!(
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
            if now - latest >= self.config.flush_after
                && let Err(e) = self.process(source, true).await
            {
                // The other quiet sources still get their last plays.
                self.meters.failures.inc();
                tracing::warn!(%source, error = %e, "a quiet source failed; the next sweep retries it");
            }
        }
        Ok(())
    }

    /// Under the source's lease: its results through the block algorithm,
    /// plays recorded, decided results deleted.
    async fn process(&self, source: Source, quiet: bool) -> Result<Handled, StorageError> {
        let lease = Self::lease_name(source);
        let me = &self.config.replica;
        if !self
            .storage
            .leases
            .acquire(&lease, me, self.config.lease)
            .await?
        {
            return Ok(Handled::Busy);
        }
        let outcome = self.process_leased(source, quiet, &lease).await;
        if let Err(e) = self.storage.leases.release(&lease, me).await {
            tracing::warn!(error = %e, %source, "cannot release a lease; it will expire");
        }
        outcome.map(|()| Handled::Done)
    }

    async fn process_leased(
        &self,
        source: Source,
        quiet: bool,
        lease: &str,
    ) -> Result<(), StorageError> {
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
                self.renew(source, lease).await?;
                if self.already_heard(source, play).await? {
                    self.meters
                        .plays
                        .get_or_create(&Outcome { outcome: "merged" })
                        .inc();
                    tracing::info!(%source, music = play.music_id, "late results of a recorded play");
                    continue;
                }
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
                )?;
                let recorded = self.storage.relational.record_play(&new).await?;
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
            self.renew(source, lease).await?;
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
    async fn renew(&self, source: Source, lease: &str) -> Result<(), StorageError> {
        if self
            .storage
            .leases
            .acquire(lease, &self.config.replica, self.config.lease)
            .await?
        {
            Ok(())
        } else {
            Err(StorageError::Conflict(format!(
                "lost the lease on {source}"
            )))
        }
    }

    /// True when a play of the same music from this source, recorded under
    /// another key, covers part of `play`: results that arrived late (a
    /// recogniser died with them in hand and they were redelivered) after
    /// their neighbours had made the play.
    async fn already_heard(
        &self,
        source: Source,
        play: &crate::plays::FoundPlay,
    ) -> Result<bool, StorageError> {
        let longest = self
            .tracks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&play.music_id)
            .map_or(0.0, |t| t.duration_s);
        let from = play.started_at
            - time::Duration::seconds_f64(longest + self.config.thresholds.alignment_s);
        let nearby = self
            .storage
            .relational
            .plays_of_source(source, from, play.ended_at)
            .await?;
        Ok(nearby.iter().any(|p| {
            p.music_id == play.music_id
                && p.idempotency_key != play.key
                && p.started_at < play.ended_at
                && play.started_at < p.ended_at
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
