//! The catalogue in memory: the store's tracks loaded into a searchable index.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use hendu_fingerprint::{Index, IndexBuilder, TrackId};

use crate::storage::Opened;

/// What the commands show of a track.
#[derive(Debug, Clone, PartialEq)]
pub struct TrackMeta {
    /// The audio file's path as it was given to `hendu index` (or the upload's name).
    pub source: String,
    pub title: String,
    pub duration_s: f64,
}

/// The searchable index and what it knows of each track.
#[derive(Debug)]
pub struct Catalog {
    pub index: Index,
    /// Indexed by [`TrackId`].
    pub tracks: Vec<TrackMeta>,
    /// Tracks that could not be loaded, and why (reported, then skipped).
    pub damaged: Vec<(String, String)>,
    /// Reading the fingerprints from the store.
    pub fetch_time: Duration,
    /// Fetching plus building the index.
    pub load_time: Duration,
}

impl Catalog {
    /// Loads every ready track of the store.
    ///
    /// # Errors
    /// When the store cannot be read.
    pub fn load(store: &Opened) -> Result<Self> {
        let started = Instant::now();
        let loaded = store
            .block_on(store.storage.load_catalogue())
            .context("cannot load the catalogue")?;
        let fetch_time = started.elapsed();
        let mut builder = IndexBuilder::new();
        let mut tracks = Vec::with_capacity(loaded.tracks.len());
        let mut damaged: Vec<(String, String)> = loaded
            .damaged
            .into_iter()
            .map(|(m, why)| (m.source, why))
            .collect();
        for t in loaded.tracks {
            match builder.add(&t.peaks, t.frames) {
                Ok(_) => tracks.push(TrackMeta {
                    source: t.music.source,
                    title: t.music.title,
                    duration_s: f64::from(t.music.duration_ms) / 1000.0,
                }),
                Err(e) => damaged.push((t.music.source, e.to_string())),
            }
        }
        Ok(Self {
            index: builder.build(),
            tracks,
            damaged,
            fetch_time,
            load_time: started.elapsed(),
        })
    }

    pub fn track(&self, id: TrackId) -> &TrackMeta {
        &self.tracks[id as usize]
    }
}
