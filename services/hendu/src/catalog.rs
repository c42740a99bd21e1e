//! The catalogue in memory: the store's tracks loaded into a searchable index.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use hendu_fingerprint::{Index, TrackId};
use hendu_storage::catalogue::CatalogueIndex;

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
        let (built, refused) = CatalogueIndex::build(&loaded.tracks);
        let damaged = loaded
            .damaged
            .into_iter()
            .chain(refused)
            .map(|(m, why)| (m.source, why))
            .collect();
        // A fresh build numbers its tracks from 0 without gaps.
        let tracks = built
            .index
            .tracks()
            .filter_map(|t| built.music(t))
            .map(|m| TrackMeta {
                source: m.source.clone(),
                title: m.title.clone(),
                duration_s: f64::from(m.duration_ms) / 1000.0,
            })
            .collect();
        Ok(Self {
            index: built.index,
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
