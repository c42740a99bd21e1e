//! The live catalogue index.
//!
//! The tracks are kept as loaded from the store; the searchable index is
//! rebuilt from them (off the async threads) after every change and swapped
//! in whole, so a search always sees one consistent catalogue. Rebuilding
//! the development corpus (6 h of audio) takes about 60 ms.
//!
//! Changes arrive as events: `MusicAdded` loads that music's blocks (if it
//! is still ready), `MusicRemoved` drops it; events that arrive together are
//! applied with one rebuild. Events are fire and forget, so the catalogue is
//! also compared with the store's list of ready musics every resync period
//! and after every reconnection of the subscription.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use hendu_service::{Heartbeat, Metrics};
use hendu_storage::catalogue::{CatalogueIndex, LoadedTrack, join_blocks};
use hendu_storage::model::{MusicId, MusicState};
use hendu_storage::{Event, Storage, StorageError};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio_util::sync::CancellationToken;

/// The keeper beats at least this often.
pub const BEAT_EVERY: Duration = Duration::from_secs(5);
/// Events arriving within this time of each other share one rebuild.
const SETTLE: Duration = Duration::from_millis(50);

#[derive(Debug)]
pub struct LiveCatalogue {
    storage: Storage,
    tracks: Mutex<BTreeMap<MusicId, Arc<LoadedTrack>>>,
    current: RwLock<Option<Arc<CatalogueIndex>>>,
    loaded: AtomicBool,
    size: Gauge,
    rebuilds: Counter,
}

impl LiveCatalogue {
    pub fn new(storage: Storage, metrics: &Metrics) -> Self {
        let size = Gauge::default();
        let rebuilds = Counter::default();
        metrics.register(
            "catalogue_tracks",
            "Tracks in this replica's index",
            size.clone(),
        );
        metrics.register(
            "catalogue_rebuilds",
            "Times the index was rebuilt after a catalogue change",
            rebuilds.clone(),
        );
        Self {
            storage,
            tracks: Mutex::new(BTreeMap::new()),
            current: RwLock::new(None),
            loaded: AtomicBool::new(false),
            size,
            rebuilds,
        }
    }

    /// The index to search, once the first load is done.
    pub fn current(&self) -> Option<Arc<CatalogueIndex>> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub fn is_loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    fn held(&self) -> std::sync::MutexGuard<'_, BTreeMap<MusicId, Arc<LoadedTrack>>> {
        self.tracks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Loads everything, then follows the events until `stop`.
    pub async fn keep_current(&self, resync: Duration, beat: Heartbeat, stop: CancellationToken) {
        let mut backoff = Duration::from_millis(200);
        while !stop.is_cancelled() {
            beat.pace().await;
            beat.beat();
            // Subscribe first, then sync: nothing published in between is missed.
            let mut events = match self.storage.events.subscribe().await {
                Ok(events) => events,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot subscribe to catalogue events; retrying");
                    pause(&stop, backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            // Loading everything takes long with a large catalogue: keep beating.
            if let Err(e) = beating(&beat, BEAT_EVERY, self.resync()).await {
                tracing::warn!(error = %e, "cannot load the catalogue; retrying");
                pause(&stop, backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
            backoff = Duration::from_millis(200);
            let mut last_sync = Instant::now();
            let mut ticks = tokio::time::interval(BEAT_EVERY);
            loop {
                beat.pace().await;
                beat.beat();
                tokio::select! {
                    () = stop.cancelled() => return,
                    event = events.next() => {
                        let Some(event) = event else {
                            tracing::warn!("catalogue events ended; subscribing again");
                            break;
                        };
                        let mut batch = vec![event];
                        while let Ok(Some(more)) = tokio::time::timeout(SETTLE, events.next()).await {
                            batch.push(more);
                        }
                        if let Err(e) = beating(&beat, BEAT_EVERY, self.apply(&batch)).await {
                            tracing::warn!(error = %e, "cannot apply catalogue events; resyncing");
                            break;
                        }
                    }
                    _ = ticks.tick() => {
                        if last_sync.elapsed() >= resync {
                            last_sync = Instant::now();
                            if let Err(e) = beating(&beat, BEAT_EVERY, self.resync()).await {
                                tracing::warn!(error = %e, "catalogue resync failed");
                            }
                        }
                    }
                }
            }
        }
    }

    /// Applies catalogue events, then rebuilds once.
    ///
    /// # Errors
    /// [`StorageError`] when an added music cannot be read.
    pub async fn apply(&self, events: &[Event]) -> Result<(), StorageError> {
        let mut changed = false;
        for event in events {
            match *event {
                Event::MusicAdded { music_id } => {
                    let track = self.load_one(music_id).await?;
                    let mut held = self.held();
                    changed |= match track {
                        Some(t) => held.insert(music_id, Arc::new(t)).is_none(),
                        None => held.remove(&music_id).is_some(),
                    };
                }
                Event::MusicRemoved { music_id } => {
                    changed |= self.held().remove(&music_id).is_some();
                }
                Event::PlayRecognised { .. }
                | Event::StationDown { .. }
                | Event::StationSilent { .. }
                | Event::StationBack { .. } => {}
            }
        }
        if changed {
            self.rebuild().await;
        }
        Ok(())
    }

    /// Makes the held tracks those the store has ready: the whole catalogue
    /// in one pass the first time, then only the differences.
    ///
    /// # Errors
    /// [`StorageError`] from the store.
    pub async fn resync(&self) -> Result<(), StorageError> {
        if !self.is_loaded() {
            let started = Instant::now();
            let loaded = self.storage.load_catalogue().await?;
            for (music, why) in &loaded.damaged {
                tracing::error!(music = music.id, reason = %why, "a catalogue track cannot be loaded; it will not be matched");
            }
            *self.held() = loaded
                .tracks
                .into_iter()
                .map(|t| (t.music.id, Arc::new(t)))
                .collect();
            self.rebuild().await;
            self.loaded.store(true, Ordering::Release);
            tracing::info!(
                tracks = self.held().len(),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "catalogue loaded"
            );
            return Ok(());
        }
        let ready = self.storage.all_musics(MusicState::Ready).await?;
        let (missing, extra) = {
            let held = self.held();
            let ready_ids: std::collections::BTreeSet<MusicId> =
                ready.iter().map(|m| m.id).collect();
            let missing: Vec<MusicId> = ready_ids
                .iter()
                .filter(|id| !held.contains_key(id))
                .copied()
                .collect();
            let extra: Vec<MusicId> = held
                .keys()
                .filter(|id| !ready_ids.contains(id))
                .copied()
                .collect();
            (missing, extra)
        };
        if missing.is_empty() && extra.is_empty() {
            return Ok(());
        }
        tracing::info!(
            added = missing.len(),
            removed = extra.len(),
            "resync found catalogue changes the events did not bring"
        );
        let events: Vec<Event> = missing
            .into_iter()
            .map(|music_id| Event::MusicAdded { music_id })
            .chain(
                extra
                    .into_iter()
                    .map(|music_id| Event::MusicRemoved { music_id }),
            )
            .collect();
        self.apply(&events).await
    }

    /// One music's track, if it is ready and whole.
    async fn load_one(&self, id: MusicId) -> Result<Option<LoadedTrack>, StorageError> {
        let Some(music) = self
            .storage
            .relational
            .music(id)
            .await?
            .filter(|m| m.state == MusicState::Ready)
        else {
            return Ok(None);
        };
        let blocks = self.storage.documents.blocks(id).await?;
        if blocks.len() != music.blocks as usize {
            tracing::error!(
                music = id,
                stored = blocks.len(),
                expected = music.blocks,
                "a catalogue track's blocks are missing; it will not be matched"
            );
            return Ok(None);
        }
        let (peaks, frames) = match join_blocks(&blocks) {
            Ok(joined) => joined,
            Err(e) => {
                // Damaged data is not a reason to stop following the catalogue.
                tracing::error!(music = id, error = %e, "a catalogue track is damaged; it will not be matched");
                return Ok(None);
            }
        };
        Ok(Some(LoadedTrack {
            music,
            peaks,
            frames,
        }))
    }

    async fn rebuild(&self) {
        let tracks: Vec<Arc<LoadedTrack>> = self.held().values().cloned().collect();
        let started = Instant::now();
        let built =
            tokio::task::spawn_blocking(move || CatalogueIndex::build(tracks.iter().map(|t| &**t)))
                .await;
        let built = match built {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "rebuilding the index failed");
                return;
            }
        };
        for (music, why) in &built.refused {
            tracing::error!(music = music.id, reason = %why, "the index cannot take a track");
        }
        self.size.set(built.musics.len() as i64);
        self.rebuilds.inc();
        tracing::debug!(
            tracks = built.musics.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "index rebuilt"
        );
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Arc::new(built));
    }
}

/// Runs `work`, beating `beat` every `every` meanwhile: loading or
/// rebuilding a large catalogue takes longer than the heartbeat's allowance,
/// and a liveness probe must not kill a replica for it. The beats come from a
/// task of their own, so they go on even while `work` holds its thread.
pub async fn beating<F: Future>(beat: &Heartbeat, every: Duration, work: F) -> F::Output {
    let ticking = beat.clone();
    let ticker = Ticker(tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        loop {
            ticks.tick().await;
            ticking.beat();
        }
    }));
    let out = work.await;
    drop(ticker);
    beat.beat();
    out
}

/// Stops the ticker when the work ends, or is dropped half-way.
struct Ticker(tokio::task::JoinHandle<()>);

impl Drop for Ticker {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn pause(stop: &CancellationToken, time: Duration) {
    tokio::select! {
        () = stop.cancelled() => {}
        () = tokio::time::sleep(time) => {}
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use hendu_service::Health;

    use super::*;

    /// Work like a rebuild: on the blocking pool, then holding the async
    /// thread itself (the worst case), each for four allowances.
    async fn slow_rebuild(allowance: Duration) {
        let long = allowance * 4;
        tokio::task::spawn_blocking(move || std::thread::sleep(long))
            .await
            .unwrap();
        std::thread::sleep(long);
    }

    /// Whether `health` reported a stuck worker while `work` ran.
    async fn stuck_during(health: &Health, work: impl Future<Output = ()>) -> bool {
        let seen = Arc::new(AtomicBool::new(false));
        let watching = CancellationToken::new();
        let watcher = {
            let (health, seen, watching) = (health.clone(), seen.clone(), watching.clone());
            tokio::spawn(async move {
                while !watching.is_cancelled() {
                    if !health.stuck().is_empty() {
                        seen.store(true, Ordering::Relaxed);
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        };
        work.await;
        if !health.stuck().is_empty() {
            seen.store(true, Ordering::Relaxed);
        }
        watching.cancel();
        watcher.await.unwrap();
        seen.load(Ordering::Relaxed)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_slow_rebuild_does_not_make_the_keeper_look_stuck() {
        let allowance = Duration::from_millis(100);
        let health = Health::default();
        let beat = health.worker("catalogue", allowance);
        beat.beat();
        let every = allowance / 5;
        assert!(
            !stuck_during(&health, beating(&beat, every, slow_rebuild(allowance))).await,
            "the keeper was reported stuck while it rebuilt"
        );

        // The same work without the ticker is reported stuck: the probe is real.
        let silent = Health::default();
        silent.worker("catalogue", allowance).beat();
        assert!(stuck_during(&silent, slow_rebuild(allowance)).await);
    }
}
