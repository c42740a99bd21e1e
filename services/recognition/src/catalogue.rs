//! The live catalogue index.
//!
//! The index is loaded from the store at start-up, a track at a time as the
//! blocks arrive, and then changed in place of rebuilt: the tracks of a
//! `MusicAdded` event (events arriving together share one) become a small
//! new part of the index, searchable as soon as their fingerprints are read
//! (milliseconds); a `MusicRemoved` track is skipped by every search from
//! then on and dropped at the next merge. Merges run off to one side while
//! the index goes on serving and changing (`Index::merge_due` says when and
//! which parts), and each change swaps in a new value, so a search always
//! sees one consistent catalogue. The fingerprints are held once, in the
//! index.
//!
//! A replica of a shard (`HENDU_RECOGNITION_SHARD`) holds only the tracks of
//! its shard, and passes the others' events over.
//!
//! Events are fire and forget, so the catalogue is also compared with the
//! store's list of ready musics every resync period and after every
//! reconnection of the subscription.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use hendu_fingerprint::{IndexError, Merged};
use hendu_service::{Heartbeat, Metrics};
use hendu_storage::catalogue::{CatalogueIndex, LoadedTrack, join_blocks};
use hendu_storage::model::{Music, MusicId, MusicState};
use hendu_storage::{Event, Shard, Storage, StorageError};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The keeper beats at least this often.
pub const BEAT_EVERY: Duration = Duration::from_secs(5);
/// Events arriving within this time of each other share one part.
const SETTLE: Duration = Duration::from_millis(50);
/// How long after a failed merge the next is tried.
const MERGE_RETRY: Duration = Duration::from_secs(60);

#[derive(Debug)]
pub struct LiveCatalogue {
    storage: Storage,
    shard: Shard,
    current: RwLock<Option<Arc<CatalogueIndex>>>,
    /// One change at a time (the keeper's, and a test's).
    changing: tokio::sync::Mutex<()>,
    loaded: AtomicBool,
    size: Gauge,
    parts: Gauge,
    bytes: Gauge,
    merges: Counter,
}

impl LiveCatalogue {
    /// The tracks of `shard` ([`Shard::WHOLE`]: all of them).
    pub fn new(storage: Storage, metrics: &Metrics, shard: Shard) -> Self {
        let (size, parts, bytes, merges) = Default::default();
        metrics.register(
            "catalogue_tracks",
            "Tracks in this replica's index",
            Clone::clone(&size),
        );
        metrics.register(
            "catalogue_index_parts",
            "Parts this replica's index is made of (new tracks make one each, merges join them)",
            Clone::clone(&parts),
        );
        metrics.register(
            "catalogue_index_bytes",
            "Memory held by this replica's index",
            Clone::clone(&bytes),
        );
        metrics.register(
            "catalogue_merges",
            "Merges of the index's parts done",
            Clone::clone(&merges),
        );
        Self {
            storage,
            shard,
            current: RwLock::new(None),
            changing: tokio::sync::Mutex::new(()),
            loaded: AtomicBool::new(false),
            size,
            parts,
            bytes,
            merges,
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

    fn publish(&self, next: CatalogueIndex) {
        self.size.set(next.len() as i64);
        self.parts.set(next.index.parts() as i64);
        self.bytes.set(next.index.bytes() as i64);
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Arc::new(next));
    }

    /// Loads everything, then follows the events until `stop`; merges the
    /// index's parts when they are due.
    pub async fn keep_current(&self, resync: Duration, beat: Heartbeat, stop: CancellationToken) {
        let mut backoff = Duration::from_millis(200);
        let mut merging: Option<JoinHandle<Result<Merged, IndexError>>> = None;
        // After a failed merge, none is tried again before this.
        let mut merge_after = Instant::now();
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
                if merging.is_none() && Instant::now() >= merge_after {
                    merging = self.start_merge();
                }
                tokio::select! {
                    () = stop.cancelled() => return,
                    merged = async { merging.as_mut().expect("guarded").await }, if merging.is_some() => {
                        merging = None;
                        match merged {
                            Ok(Ok(merged)) => self.finish_merge(merged).await,
                            Ok(Err(e)) => {
                                tracing::error!(error = %e, "the index's parts cannot be merged; trying again later");
                                merge_after = Instant::now() + MERGE_RETRY;
                            }
                            Err(e) => {
                                tracing::error!(error = %e, "merging the index's parts failed; trying again later");
                                merge_after = Instant::now() + MERGE_RETRY;
                            }
                        }
                    }
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

    /// A merge of the parts that are due for one, started off the async threads.
    fn start_merge(&self) -> Option<JoinHandle<Result<Merged, IndexError>>> {
        let catalogue = self.current()?;
        let from = catalogue.index.merge_due()?;
        tracing::debug!(
            parts = catalogue.index.parts() - from,
            of = catalogue.index.parts(),
            "merging the index's parts"
        );
        Some(tokio::task::spawn_blocking(move || {
            catalogue.index.merge(from)
        }))
    }

    async fn finish_merge(&self, merged: Merged) {
        let _changing = self.changing.lock().await;
        let Some(catalogue) = self.current() else {
            return;
        };
        self.merges.inc();
        self.publish(catalogue.with_merged(merged));
    }

    /// Applies catalogue events: the musics added become one new part of
    /// the index, the musics removed are dropped.
    ///
    /// # Errors
    /// [`StorageError`] when an added music cannot be read.
    pub async fn apply(&self, events: &[Event]) -> Result<(), StorageError> {
        let _changing = self.changing.lock().await;
        let Some(catalogue) = self.current() else {
            // Not loaded yet: the load will read the store as it is.
            return Ok(());
        };
        let mut added = Vec::new();
        let mut removed = BTreeSet::new();
        for event in events {
            match *event {
                Event::MusicAdded { music_id } if !self.shard.owns(music_id) => {}
                Event::MusicAdded { music_id } => match self.load_one(music_id).await? {
                    Some(track) => {
                        removed.remove(&music_id);
                        added.retain(|t: &LoadedTrack| t.music.id != music_id);
                        added.push(track);
                    }
                    None => {
                        removed.insert(music_id);
                    }
                },
                Event::MusicRemoved { music_id } => {
                    added.retain(|t| t.music.id != music_id);
                    removed.insert(music_id);
                }
                Event::PlayRecognised { .. }
                | Event::StationDown { .. }
                | Event::StationSilent { .. }
                | Event::StationBack { .. } => {}
            }
        }
        let removed: Vec<MusicId> = removed
            .into_iter()
            .filter(|&id| catalogue.contains(id))
            .collect();
        added.retain(|t| !catalogue.contains(t.music.id));
        if added.is_empty() && removed.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        let changed = tokio::task::spawn_blocking(move || {
            let kept = catalogue.without(&removed);
            let (next, refused) = kept.with_added(&added);
            (next, refused, added.len(), removed.len())
        })
        .await;
        let (next, refused, added, removed) = match changed {
            Ok(changed) => changed,
            Err(e) => {
                tracing::error!(error = %e, "changing the index failed");
                return Ok(());
            }
        };
        log_refused(&refused);
        tracing::debug!(
            added,
            removed,
            tracks = next.len(),
            parts = next.index.parts(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "index changed"
        );
        self.publish(next);
        Ok(())
    }

    /// Makes the held tracks those the store has ready: the whole catalogue
    /// in one pass the first time, then only the differences.
    ///
    /// # Errors
    /// [`StorageError`] from the store.
    pub async fn resync(&self) -> Result<(), StorageError> {
        if !self.is_loaded() {
            return self.load().await;
        }
        let ready = self.storage.all_musics(MusicState::Ready).await?;
        let Some(catalogue) = self.current() else {
            return Ok(());
        };
        let ready_ids: BTreeSet<MusicId> = ready
            .iter()
            .map(|m| m.id)
            .filter(|&id| self.shard.owns(id))
            .collect();
        let missing = ready_ids.iter().filter(|&&id| !catalogue.contains(id));
        let extra = catalogue.music_ids().filter(|id| !ready_ids.contains(id));
        let events: Vec<Event> = missing
            .map(|&music_id| Event::MusicAdded { music_id })
            .chain(extra.map(|music_id| Event::MusicRemoved { music_id }))
            .collect();
        if events.is_empty() {
            return Ok(());
        }
        tracing::info!(
            changes = events.len(),
            "resync found catalogue changes the events did not bring"
        );
        self.apply(&events).await
    }

    /// The first load: the store's tracks, a track at a time, into one part
    /// built off the async threads.
    async fn load(&self) -> Result<(), StorageError> {
        let _changing = self.changing.lock().await;
        let started = Instant::now();
        let (tx, mut rx) = tokio::sync::mpsc::channel::<LoadedTrack>(64);
        let building = tokio::task::spawn_blocking(move || {
            let mut builder = CatalogueIndex::builder();
            while let Some(track) = rx.blocking_recv() {
                builder.add(&track);
            }
            builder.build()
        });
        let damaged = self.storage.send_catalogue(self.shard, tx).await;
        let built = building.await;
        for (music, why) in damaged? {
            tracing::error!(music = music.id, reason = %why, "a catalogue track cannot be loaded; it will not be matched");
        }
        let (catalogue, refused) = built.map_err(|e| {
            StorageError::Io(std::io::Error::other(format!(
                "building the index failed: {e}"
            )))
        })?;
        log_refused(&refused);
        tracing::info!(
            tracks = catalogue.len(),
            shard = %self.shard,
            mb = catalogue.index.bytes() / 1_000_000,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "catalogue loaded"
        );
        self.publish(catalogue);
        self.loaded.store(true, Ordering::Release);
        Ok(())
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
}

fn log_refused(refused: &[(Music, String)]) {
    for (music, why) in refused {
        tracing::error!(music = music.id, reason = %why, "the index cannot take a track");
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

    /// A catalogue music of 30 s of synthetic music, and a 6 s query of it.
    async fn a_music(storage: &Storage, seed: u64) -> (MusicId, Vec<hendu_fingerprint::Peak>) {
        use hendu_fingerprint::{Clip, fingerprint_clip_sparse};
        let rate = 8000;
        let (id, samples) = crate::testing::stored_music(storage, seed, 30, rate).await;
        let excerpt = Clip {
            sample_rate: rate,
            samples: samples[10 * rate as usize..16 * rate as usize].to_vec(),
        };
        (id, fingerprint_clip_sparse(&excerpt).0)
    }

    /// The music a query is recognised as, if any.
    fn recognised(live: &LiveCatalogue, query: &[hendu_fingerprint::Peak]) -> Option<MusicId> {
        use hendu_fingerprint::{SearchOptions, Searcher};
        let catalogue = live.current().expect("loaded");
        let found =
            catalogue
                .index
                .search(query, &SearchOptions::default(), &mut Searcher::default())?;
        (found.confidence > 0.5).then(|| catalogue.music(found.track).expect("held").id)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn musics_added_and_removed_are_searched_at_once_and_merged_later() {
        let scratch = crate::testing::Scratch::new();
        let storage = scratch.storage().await;
        let (first, first_query) = a_music(&storage, 1).await;
        let (second, second_query) = a_music(&storage, 2).await;
        let live = LiveCatalogue::new(storage.clone(), &Metrics::new("recognition"), Shard::WHOLE);
        live.resync().await.unwrap();
        let parts = |live: &LiveCatalogue| live.current().unwrap().index.parts();
        assert_eq!(parts(&live), 1);
        assert_eq!(recognised(&live, &first_query), Some(first));

        // A new music: one new part, found at once; the first is as it was.
        let (third, third_query) = a_music(&storage, 3).await;
        assert_eq!(recognised(&live, &third_query), None);
        live.apply(&[Event::MusicAdded { music_id: third }])
            .await
            .unwrap();
        assert_eq!(parts(&live), 2);
        assert_eq!(recognised(&live, &third_query), Some(third));
        assert_eq!(recognised(&live, &second_query), Some(second));

        // A deleted music is no longer found; its postings wait for a merge,
        // which removals of an eighth of the catalogue make due.
        storage.delete_music(first).await.unwrap();
        live.apply(&[Event::MusicRemoved { music_id: first }])
            .await
            .unwrap();
        assert_eq!(recognised(&live, &first_query), None);
        let before = live.current().unwrap();
        assert_eq!((before.len(), before.index.removed()), (2, 1));
        let merge = live.start_merge().expect("a merge is due");
        live.finish_merge(merge.await.unwrap().unwrap()).await;
        let after = live.current().unwrap();
        assert_eq!(
            (after.len(), after.index.removed(), after.index.parts()),
            (2, 0, 1)
        );
        assert!(after.index.bytes() < before.index.bytes());
        assert_eq!(recognised(&live, &second_query), Some(second));
        assert_eq!(recognised(&live, &third_query), Some(third));
        assert_eq!(recognised(&live, &first_query), None);
        assert!(live.start_merge().is_none());
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
