//! The catalogue's life cycle across the stores, written once for every backend.
//!
//! A music is matched only in state [`MusicState::Ready`], and the state moves
//! so that a crash at any point leaves nothing the recogniser would match:
//! - **add**: row in `ingesting` → fingerprint blocks → binary → `ready` →
//!   event. A crash leaves an `ingesting` row that the next upload of the same
//!   audio completes (every step is idempotent).
//! - **delete**: `deleting` → event (recognisers drop it) → blocks → binary →
//!   `deleted`. A crash leaves a `deleting` row, never loaded, that
//!   [`Storage::finish_deletions`] or a new delete completes. The row itself
//!   stays, as a tombstone, because plays refer to it.

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::TryStreamExt;
use hendu_fingerprint::packed::{BinPrecision, pack, unpack};
use hendu_fingerprint::params::FRAME_SECONDS;
use hendu_fingerprint::{Index, IndexBuilder, Merged, Peak, TrackId};

use crate::Storage;
use crate::error::{Result, StorageError};
use crate::events::Event;
use crate::model::{FingerprintBlock, Music, MusicId, MusicState, NewMusic};
use crate::repo::{Inserted, Reader};
use crate::shards::Shard;

/// First frame of block `index` (blocks start every 15 s).
fn block_start_frame(index: u32) -> u32 {
    (f64::from(index) * hendu_fingerprint::blocks::BLOCK_STEP_SECONDS / FRAME_SECONDS).round()
        as u32
}

/// Splits a track's peaks into its blocks' documents: block `i` owns the
/// frames from its start to block `i + 1`'s start; the last owns the rest.
pub fn split_blocks(music: &Music, peaks: &[Peak], frames: u32) -> Vec<FingerprintBlock> {
    let count = music.blocks.max(1);
    (0..count)
        .map(|i| {
            let start = block_start_frame(i);
            let end = if i + 1 == count {
                frames.max(start)
            } else {
                block_start_frame(i + 1)
            };
            let own: Vec<Peak> = peaks
                .iter()
                .filter(|p| p.frame >= start && (p.frame < end || i + 1 == count))
                .copied()
                .collect();
            FingerprintBlock {
                music_id: music.id,
                block: i,
                start_frame: start,
                end_frame: end,
                track_frames: frames,
                peaks: pack(&own, BinPrecision::Whole),
            }
        })
        .collect()
}

/// A catalogue track ready for the matcher.
#[derive(Debug, Clone)]
pub struct LoadedTrack {
    pub music: Music,
    pub peaks: Vec<Peak>,
    pub frames: u32,
}

/// The peaks of a track from its blocks (in block order).
///
/// # Errors
/// [`StorageError::Corrupt`] if a block's peaks do not unpack.
pub fn join_blocks(blocks: &[FingerprintBlock]) -> Result<(Vec<Peak>, u32)> {
    let mut peaks = Vec::new();
    let mut frames = 0;
    for b in blocks {
        let own = unpack(&b.peaks).map_err(|e| {
            StorageError::corrupt(format!("music {} block {}: {e}", b.music_id, b.block))
        })?;
        peaks.extend(own);
        frames = b.track_frames;
    }
    Ok((peaks, frames))
}

impl Storage {
    /// Adds a music with its fingerprint (and audio, if given). The same audio
    /// again returns the existing music with `created: false`.
    ///
    /// # Errors
    /// [`StorageError`] from the stores; nothing is matched until all is stored.
    pub async fn add_music(
        &self,
        new: &NewMusic,
        peaks: &[Peak],
        frames: u32,
        audio: Option<Reader<'_>>,
    ) -> Result<Inserted<Music>> {
        let mut upserted = self.relational.upsert_music(new).await?;
        if upserted.record.state == MusicState::Deleting {
            // A deletion was cut short: finish it, then add afresh.
            self.delete_music(upserted.record.id).await?;
            upserted = self.relational.upsert_music(new).await?;
        }
        let music = upserted.record;
        if music.state == MusicState::Ready {
            return Ok(Inserted {
                record: music,
                created: false,
            });
        }
        self.documents
            .put_blocks(&split_blocks(&music, peaks, frames))
            .await?;
        if let Some(audio) = audio {
            self.documents
                .put_binary(music.id, &music.source, audio)
                .await?;
        }
        self.relational
            .set_music_state(music.id, MusicState::Ingesting, MusicState::Ready)
            .await?;
        self.events
            .publish(&Event::MusicAdded { music_id: music.id })
            .await?;
        let record = self
            .relational
            .music(music.id)
            .await?
            .ok_or_else(|| StorageError::not_found("music", music.id))?;
        Ok(Inserted {
            record,
            created: true,
        })
    }

    /// Removes a music from the catalogue: fingerprints, binary, entry.
    ///
    /// # Errors
    /// [`StorageError::NotFound`] if there is no such music (or it is deleted).
    pub async fn delete_music(&self, id: MusicId) -> Result<()> {
        let music = self
            .relational
            .music(id)
            .await?
            .filter(|m| m.state != MusicState::Deleted)
            .ok_or_else(|| StorageError::not_found("music", id))?;
        if music.state != MusicState::Deleting {
            let moved = self
                .relational
                .set_music_state(id, music.state, MusicState::Deleting)
                .await?;
            if !moved {
                // Its state changed under us (another replica): look again.
                return Box::pin(self.delete_music(id)).await;
            }
        }
        self.events
            .publish(&Event::MusicRemoved { music_id: id })
            .await?;
        self.documents.delete_blocks(id).await?;
        self.documents.delete_binary(id).await?;
        self.relational
            .set_music_state(id, MusicState::Deleting, MusicState::Deleted)
            .await?;
        Ok(())
    }

    /// Completes deletions a crash cut short. Returns how many.
    ///
    /// # Errors
    /// [`StorageError`] from the stores.
    pub async fn finish_deletions(&self) -> Result<usize> {
        let pending = self.all_musics(MusicState::Deleting).await?;
        for m in &pending {
            self.delete_music(m.id).await?;
        }
        Ok(pending.len())
    }

    /// Removes what uploads that died mid-way left: musics still
    /// `ingesting` whose row has not changed for `older_than` (their blocks
    /// and binary, which may be partial, go; the row becomes `deleted`, so
    /// uploading the same audio again restores it). Returns how many.
    ///
    /// # Errors
    /// [`StorageError`] from the stores.
    pub async fn abandon_stale_ingests(&self, older_than: std::time::Duration) -> Result<usize> {
        let cutoff = time::OffsetDateTime::now_utc() - older_than;
        let stale: Vec<Music> = self
            .all_musics(MusicState::Ingesting)
            .await?
            .into_iter()
            .filter(|m| m.updated_at < cutoff)
            .collect();
        for m in &stale {
            tracing::warn!(music = m.id, since = %m.updated_at, "removing an upload that did not finish");
            match self.delete_music(m.id).await {
                Ok(()) | Err(StorageError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(stale.len())
    }

    /// Every music in `state`, by id.
    ///
    /// # Errors
    /// [`StorageError`] from the relational store.
    pub async fn all_musics(&self, state: MusicState) -> Result<Vec<Music>> {
        let mut all = Vec::new();
        loop {
            let after = all.last().map_or(0, |m: &Music| m.id);
            let page = self.relational.musics(state, after, 1000).await?;
            let done = page.len() < 1000;
            all.extend(page);
            if done {
                return Ok(all);
            }
        }
    }

    /// The catalogue as the matcher needs it: every `ready` music with its
    /// peaks, in id order. Blocks of musics that are not ready (being added or
    /// deleted) are skipped; a music whose blocks are damaged is reported in
    /// [`LoadedCatalogue::damaged`] and left out.
    ///
    /// # Errors
    /// [`StorageError`] from the stores.
    pub async fn load_catalogue(&self) -> Result<LoadedCatalogue> {
        let (tx, mut rx) = tokio::sync::mpsc::channel(64);
        let mut tracks = Vec::new();
        let collect = async {
            while let Some(track) = rx.recv().await {
                tracks.push(track);
            }
        };
        let (damaged, ()) = tokio::join!(self.send_catalogue(Shard::WHOLE, tx), collect);
        Ok(LoadedCatalogue {
            tracks,
            damaged: damaged?,
        })
    }

    /// [`Storage::load_catalogue`] a track at a time, of `shard`'s musics
    /// only: every `ready` music with its peaks goes to `out`, in id order, as soon as its blocks are
    /// read, so that a caller building an index never holds the whole
    /// catalogue twice (and reading waits while `out` is full). Returns the
    /// ready musics that could not be loaded, and why. Stops early, without
    /// an error, when `out`'s receiver is gone.
    ///
    /// # Errors
    /// [`StorageError`] from the stores.
    pub async fn send_catalogue(
        &self,
        shard: Shard,
        out: tokio::sync::mpsc::Sender<LoadedTrack>,
    ) -> Result<Vec<(Music, String)>> {
        let mut ready = self.all_musics(MusicState::Ready).await?;
        ready.retain(|m| shard.owns(m.id));
        let mut damaged = Vec::new();
        let mut musics = ready.into_iter().peekable();
        let mut blocks = self.documents.all_blocks();
        let mut held: Vec<FingerprintBlock> = Vec::new();
        let mut done = Vec::new();
        // Blocks come in music id order, as the musics do: a music is
        // joined as soon as a block of a later one (or the end) arrives.
        loop {
            let block = blocks.try_next().await?;
            let next = block.as_ref().map_or(MusicId::MAX, |b| b.music_id);
            while let Some(music) = musics.next_if(|m| m.id < next) {
                done.push((music, std::mem::take(&mut held)));
            }
            for (music, own) in done.drain(..) {
                if let Some(track) = joined(music, &own, &mut damaged)
                    && out.send(track).await.is_err()
                {
                    return Ok(damaged);
                }
            }
            let Some(block) = block else {
                return Ok(damaged);
            };
            if musics.peek().is_some_and(|m| m.id == block.music_id) {
                held.push(block);
            }
        }
    }
}

/// A music's track from all its blocks; when they do not make one, the
/// music and why go to `damaged`.
fn joined(
    music: Music,
    blocks: &[FingerprintBlock],
    damaged: &mut Vec<(Music, String)>,
) -> Option<LoadedTrack> {
    if blocks.len() != music.blocks as usize {
        let why = format!("{} of its {} blocks are stored", blocks.len(), music.blocks);
        damaged.push((music, why));
        return None;
    }
    match join_blocks(blocks) {
        Ok((peaks, frames)) => Some(LoadedTrack {
            music,
            peaks,
            frames,
        }),
        Err(e) => {
            damaged.push((music, e.to_string()));
            None
        }
    }
}

/// What [`Storage::load_catalogue`] found.
#[derive(Debug, Clone, Default)]
pub struct LoadedCatalogue {
    pub tracks: Vec<LoadedTrack>,
    /// Ready musics that could not be loaded, and why.
    pub damaged: Vec<(Music, String)>,
}

/// A searchable index of loaded tracks, and which music each track id is.
/// Cloning shares the index's parts; changes make a new value
/// ([`CatalogueIndex::with_added`], [`CatalogueIndex::without`]) and leave
/// this one as it is, for the searches that hold it.
#[derive(Debug, Clone, Default)]
pub struct CatalogueIndex {
    pub index: Index,
    /// By [`TrackId`]; `None` for a track removed.
    musics: Vec<Option<Arc<Music>>>,
    tracks: HashMap<MusicId, TrackId>,
}

impl CatalogueIndex {
    /// Builds the index (CPU work: call it off the async threads). Returns
    /// it with the tracks it could not take, and why.
    pub fn build<'a>(
        tracks: impl IntoIterator<Item = &'a LoadedTrack>,
    ) -> (Self, Vec<(Music, String)>) {
        Self::default().with_added(tracks)
    }

    /// This catalogue with `tracks` added (those it holds already are left
    /// as they are), as one new part of the index. Returns it with the
    /// tracks it could not take, and why.
    pub fn with_added<'a>(
        &self,
        tracks: impl IntoIterator<Item = &'a LoadedTrack>,
    ) -> (Self, Vec<(Music, String)>) {
        let mut builder = self.index.builder();
        let mut next = self.clone();
        let mut refused = Vec::new();
        for t in tracks {
            if next.tracks.contains_key(&t.music.id) {
                continue;
            }
            match builder.add(&t.peaks, t.frames) {
                Ok(id) => next.insert(id, t.music.clone()),
                Err(e) => refused.push((t.music.clone(), e.to_string())),
            }
        }
        next.index = self.index.with_added(builder);
        (next, refused)
    }

    /// Builds the index from a stream of tracks, a track at a time (see
    /// [`Storage::send_catalogue`]).
    pub fn builder() -> CatalogueBuilder {
        CatalogueBuilder::default()
    }

    fn insert(&mut self, id: TrackId, music: Music) {
        let slot = id as usize;
        if self.musics.len() <= slot {
            self.musics.resize(slot + 1, None);
        }
        self.tracks.insert(music.id, id);
        self.musics[slot] = Some(Arc::new(music));
    }

    /// This catalogue without the given musics (those it does not hold are
    /// ignored).
    pub fn without(&self, musics: &[MusicId]) -> Self {
        let mut next = self.clone();
        let mut gone = Vec::new();
        for id in musics {
            if let Some(track) = next.tracks.remove(id) {
                next.musics[track as usize] = None;
                gone.push(track);
            }
        }
        next.index = self.index.without(&gone);
        next
    }

    /// This catalogue with a merge of its index in place (see
    /// [`Index::merge`]; the merge may have been taken from an earlier
    /// state of this catalogue).
    pub fn with_merged(&self, merged: Merged) -> Self {
        let mut next = self.clone();
        next.index = self.index.with_merged(merged);
        next
    }

    /// The music of a track of the index.
    pub fn music(&self, track: TrackId) -> Option<&Music> {
        self.musics.get(track as usize)?.as_deref()
    }

    /// Whether the catalogue holds this music.
    pub fn contains(&self, music: MusicId) -> bool {
        self.tracks.contains_key(&music)
    }

    /// The musics held, in no particular order.
    pub fn music_ids(&self) -> impl Iterator<Item = MusicId> + '_ {
        self.tracks.keys().copied()
    }

    /// Number of musics held.
    pub fn len(&self) -> usize {
        self.tracks.len()
    }

    /// True when no music is held.
    pub fn is_empty(&self) -> bool {
        self.tracks.is_empty()
    }
}

/// Builds a [`CatalogueIndex`] a track at a time.
#[derive(Debug, Default)]
pub struct CatalogueBuilder {
    builder: IndexBuilder,
    catalogue: CatalogueIndex,
    refused: Vec<(Music, String)>,
}

impl CatalogueBuilder {
    /// Adds a track (CPU work: fingerprints to landmarks and triplets).
    pub fn add(&mut self, track: &LoadedTrack) {
        if self.catalogue.contains(track.music.id) {
            return;
        }
        match self.builder.add(&track.peaks, track.frames) {
            Ok(id) => self.catalogue.insert(id, track.music.clone()),
            Err(e) => self.refused.push((track.music.clone(), e.to_string())),
        }
    }

    /// The catalogue (CPU work: sorts the postings), with the tracks it
    /// could not take, and why.
    pub fn build(self) -> (CatalogueIndex, Vec<(Music, String)>) {
        let mut catalogue = self.catalogue;
        catalogue.index = self.builder.build();
        (catalogue, self.refused)
    }
}
