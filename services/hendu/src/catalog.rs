//! The catalogue in memory: the store's tracks loaded into a searchable index.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use hendu_fingerprint::{Index, IndexBuilder, TrackId};
use rayon::prelude::*;

use crate::store::{Store, StoreError, TrackMeta, read_track};

/// The searchable index and what it knows of each track.
#[derive(Debug)]
pub struct Catalog {
    pub index: Index,
    /// Indexed by [`TrackId`].
    pub tracks: Vec<TrackMeta>,
    /// Track files that could not be loaded, and why (reported, then skipped).
    pub damaged: Vec<(PathBuf, String)>,
    pub load_time: Duration,
}

impl Catalog {
    /// Loads every track of the store (files are read and decoded in parallel).
    ///
    /// # Errors
    /// [`StoreError`] if the store cannot be listed or is full.
    pub fn load(store: &Store) -> Result<Self, StoreError> {
        let started = Instant::now();
        let files = store.track_files()?;
        let loaded: Vec<_> = files
            .par_iter()
            .map(|path| (path.clone(), read_track(path)))
            .collect();
        let mut builder = IndexBuilder::new();
        let mut tracks = Vec::with_capacity(loaded.len());
        let mut damaged = Vec::new();
        for (path, track) in loaded {
            match track {
                Ok(track) => match builder.add(&track.peaks, track.meta.frames) {
                    Ok(_) => tracks.push(track.meta),
                    Err(e) => damaged.push((path, e.to_string())),
                },
                Err(e) => damaged.push((path, e.to_string())),
            }
        }
        Ok(Self {
            index: builder.build(),
            tracks,
            damaged,
            load_time: started.elapsed(),
        })
    }

    pub fn track(&self, id: TrackId) -> &TrackMeta {
        &self.tracks[id as usize]
    }
}
