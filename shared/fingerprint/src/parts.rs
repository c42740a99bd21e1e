//! The parts an [`Index`] is made of, and how tracks come and go without
//! rebuilding it.
//!
//! A [`Part`] is immutable: a run of tracks on the index's global timeline,
//! with their postings (sorted by hash behind a dense offsets table), their
//! triplets and their packed peaks. An index is a list of parts, in timeline
//! order, and a sorted list of *removed* track ids (tombstones):
//!
//! - **adding** tracks builds a small part for them alone
//!   ([`Index::builder`], [`Index::with_added`]); the parts already built are
//!   shared, not copied;
//! - **removing** a track only records its id ([`Index::without`]): voting
//!   and the triplets skip its alignments, so its answers are gone at once;
//! - **merging** ([`Index::merge`], [`Index::with_merged`]) rebuilds a run of
//!   parts as one, without the removed tracks, off to one side while the
//!   index goes on serving (and taking changes); putting the result in place
//!   keeps every track's id and place on the timeline, so the changes made
//!   meanwhile stay valid on top of it.
//!
//! A merged part is built from the parts' own peaks (whole bins, as the
//! store keeps them, see [`IndexBuilder::add`]): the catalogue's fingerprints
//! exist once in memory, in the index.

use std::sync::Arc;

use crate::buckets::BucketCounts;
use crate::hashes::{Landmark, catalogue_landmarks};
use crate::index::{Index, IndexError, TRACK_GAP_FRAMES, TrackId};
use crate::params::{BIN_LIMIT, CATALOGUE_FAN_OUT, HASH_BITS};
use crate::peaks::Peak;
use crate::triplets::{
    self, TRACK_ALIGN_FRAMES, TRIPLET_BITS, Triplet, TripletIndex, catalogue_triplets,
};

/// A catalogue peak packed as `frame << PEAK_BIN_BITS | bin`.
pub(crate) type PackedPeak = u32;

/// Bits of a [`PackedPeak`] that hold the bin; the frame has the rest.
pub(crate) const PEAK_BIN_BITS: u32 = 9;

/// The bin of a [`PackedPeak`].
pub(crate) const BIN_MASK: u32 = (1 << PEAK_BIN_BITS) - 1;

const _: () = assert!(BIN_LIMIT <= 1 << PEAK_BIN_BITS);

fn pack_peak(p: &Peak) -> PackedPeak {
    (p.frame << PEAK_BIN_BITS) | p.bin as u32
}

fn unpack_peak(p: PackedPeak) -> Peak {
    Peak {
        frame: p >> PEAK_BIN_BITS,
        bin: (p & BIN_MASK) as f32,
    }
}

/// A track's place on the global timeline and its peaks in its part.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TrackSpan {
    pub id: TrackId,
    pub start: u32,
    pub frames: u32,
    /// Range of this track's peaks in [`Part::peaks`].
    pub peaks_from: u32,
    pub peaks_to: u32,
}

/// An immutable run of tracks, see the module documentation.
#[derive(Debug)]
pub(crate) struct Part {
    pub offsets: Vec<u32>,
    /// Global frames of the landmarks' anchors, sorted by hash.
    pub postings: Vec<u32>,
    /// In id order, which is also timeline order.
    pub tracks: Vec<TrackSpan>,
    pub peaks: Vec<PackedPeak>,
    pub triplets: TripletIndex,
    /// The part owns the global frames `origin..end` ...
    pub origin: u32,
    pub end: u32,
    /// ... and the track ids `first_id..next_id` (some may be gone).
    pub first_id: TrackId,
    pub next_id: TrackId,
}

impl Part {
    pub fn span(&self, id: TrackId) -> Option<&TrackSpan> {
        let i = self.tracks.binary_search_by_key(&id, |t| t.id).ok()?;
        Some(&self.tracks[i])
    }

    pub fn peaks_of(&self, t: &TrackSpan) -> &[PackedPeak] {
        &self.peaks[t.peaks_from as usize..t.peaks_to as usize]
    }

    /// The track whose stretch of timeline (with the gap before it, where
    /// a query may start) holds `offset`.
    pub fn track_at(&self, offset: u32) -> Option<TrackId> {
        let after = self
            .tracks
            .partition_point(|t| t.start - TRACK_GAP_FRAMES <= offset);
        let t = self.tracks.get(after.checked_sub(1)?)?;
        (offset < t.start + t.frames).then_some(t.id)
    }

    /// Bytes held (what `/metrics` and the benchmarks report).
    pub fn bytes(&self) -> usize {
        4 * (self.offsets.len() + self.postings.len() + self.peaks.len())
            + std::mem::size_of::<TrackSpan>() * self.tracks.len()
            + self.triplets.bytes()
    }
}

/// Collects catalogue fingerprints, then builds an [`Index`] (or a part of
/// one: [`Index::builder`]).
///
/// It keeps only the tracks' peaks (4 bytes each) and counts their
/// landmarks and triplets per hash as they arrive; [`IndexBuilder::build`]
/// makes them again from the peaks to put each in its place. Building
/// thus never holds a catalogue's postings twice, for the price of making
/// them twice (measured in `docs/benchmarks.md`, "Catalogue scale").
#[derive(Debug)]
pub struct IndexBuilder {
    tracks: Vec<TrackSpan>,
    peaks: Vec<PackedPeak>,
    landmark_counts: BucketCounts,
    triplet_counts: BucketCounts,
    scratch: Scratch,
    origin: u32,
    end: u32,
    first_id: TrackId,
    next_id: TrackId,
}

/// Buffers reused from track to track.
#[derive(Debug, Default)]
struct Scratch {
    whole: Vec<Peak>,
    landmarks: Vec<Landmark>,
    triplets: Vec<Triplet>,
}

impl Scratch {
    /// `peaks` (whole bins, in time order) as landmarks and triplets.
    fn make(&mut self, peaks: &[Peak]) {
        self.landmarks.clear();
        catalogue_landmarks(peaks, CATALOGUE_FAN_OUT, &mut self.landmarks);
        self.triplets.clear();
        catalogue_triplets(peaks, &mut self.triplets);
    }

    /// A track's packed peaks, unpacked into `whole`, as landmarks and triplets.
    fn make_packed(&mut self, packed: &[PackedPeak]) {
        let mut whole = std::mem::take(&mut self.whole);
        whole.clear();
        whole.extend(packed.iter().map(|&p| unpack_peak(p)));
        self.make(&whole);
        self.whole = whole;
    }
}

impl Default for IndexBuilder {
    fn default() -> Self {
        Self::following(0, 0)
    }
}

impl IndexBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        Self::default()
    }

    /// A builder whose tracks go after global frame `origin`, with ids from `first_id`.
    pub(crate) fn following(origin: u32, first_id: TrackId) -> Self {
        Self {
            tracks: Vec::new(),
            peaks: Vec::new(),
            landmark_counts: BucketCounts::new(1 << HASH_BITS),
            triplet_counts: BucketCounts::new(1 << TRIPLET_BITS),
            scratch: Scratch::default(),
            origin,
            end: origin,
            first_id,
            next_id: first_id,
        }
    }

    /// Where the timeline of the builder's tracks starts, and their first id.
    pub(crate) fn origin(&self) -> (u32, TrackId) {
        (self.origin, self.first_id)
    }

    /// Where the next builder's timeline would start, and its first id.
    pub(crate) fn ending(&self) -> (u32, TrackId) {
        (self.end, self.next_id)
    }

    /// Adds a track from its catalogue peaks (see
    /// [`crate::params::PeakProfile::CATALOGUE`], in time order) and its
    /// length in frames. Peaks at or after `frames` are left out, and bins
    /// are rounded to whole bins as the store keeps them, so an index built
    /// from a fingerprint and one built from its stored form are the same.
    ///
    /// # Errors
    /// [`IndexError::Full`] when the timeline, or one part's postings,
    /// cannot take the track; [`IndexError::TrackTooLong`] for a track of
    /// more than about 37 hours.
    pub fn add(&mut self, peaks: &[Peak], frames: u32) -> Result<TrackId, IndexError> {
        let id = self.next_id;
        let start = (u64::from(self.end) + u64::from(TRACK_GAP_FRAMES))
            .next_multiple_of(u64::from(TRACK_ALIGN_FRAMES));
        self.place(id, start, peaks, frames)?;
        Ok(id)
    }

    /// Adds track `id` at global frame `start` (ids and starts increasing).
    fn place(
        &mut self,
        id: TrackId,
        start: u64,
        peaks: &[Peak],
        frames: u32,
    ) -> Result<(), IndexError> {
        if frames >= 1 << (32 - PEAK_BIN_BITS) {
            return Err(IndexError::TrackTooLong);
        }
        let end = start + u64::from(frames) + u64::from(TRACK_GAP_FRAMES);
        if end > u64::from(u32::MAX) {
            return Err(IndexError::Full);
        }
        let start = start as u32;
        let mut whole = std::mem::take(&mut self.scratch.whole);
        whole.clear();
        whole.extend(peaks.iter().filter(|p| p.frame < frames).map(|p| Peak {
            frame: p.frame,
            bin: p.bin.round().clamp(0.0, (BIN_LIMIT - 1) as f32),
        }));
        self.scratch.make(&whole);
        let fits = |had: u64, more: usize| had + more as u64 <= u64::from(u32::MAX);
        if !fits(self.landmark_counts.total(), self.scratch.landmarks.len())
            || !fits(self.triplet_counts.total(), self.scratch.triplets.len())
            || !fits(self.peaks.len() as u64, whole.len())
        {
            self.scratch.whole = whole;
            return Err(IndexError::Full);
        }
        for l in &self.scratch.landmarks {
            self.landmark_counts.add(l.hash);
        }
        for t in &self.scratch.triplets {
            self.triplet_counts.add(t.hash);
        }
        let peaks_from = self.peaks.len() as u32;
        self.peaks.extend(whole.iter().map(pack_peak));
        self.scratch.whole = whole;
        self.tracks.push(TrackSpan {
            id,
            start,
            frames,
            peaks_from,
            peaks_to: self.peaks.len() as u32,
        });
        self.end = start + frames;
        self.next_id = id + 1;
        Ok(())
    }

    /// Number of tracks added so far.
    pub fn len(&self) -> usize {
        self.tracks.len()
    }

    /// True when no track was added.
    pub fn is_empty(&self) -> bool {
        self.tracks.is_empty()
    }

    /// Sorts the postings by hash (a counting sort: linear time).
    pub fn build(self) -> Index {
        Index::from_parts(Vec::new(), self.origin, self.first_id).with_added(self)
    }

    /// The part of the tracks added, or nothing when there are none: each
    /// track's landmarks and triplets made again from its peaks, and put in
    /// their buckets.
    pub(crate) fn into_part(self) -> Option<Part> {
        if self.tracks.is_empty() {
            return None;
        }
        let mut scratch = self.scratch;
        let (offsets, mut cursor) = self.landmark_counts.into_offsets();
        let mut postings = vec![0u32; offsets[offsets.len() - 1] as usize];
        let (triplet_offsets, mut triplet_cursor) = self.triplet_counts.into_offsets();
        let triplets = triplet_offsets[triplet_offsets.len() - 1] as usize;
        let (mut frames, mut shapes) = (vec![0u32; triplets], vec![0u16; triplets]);
        for t in &self.tracks {
            scratch.make_packed(&self.peaks[t.peaks_from as usize..t.peaks_to as usize]);
            for l in &scratch.landmarks {
                let slot = &mut cursor[l.hash as usize];
                postings[*slot as usize] = t.start + l.frame;
                *slot += 1;
            }
            for tr in &scratch.triplets {
                let (hash, frame, shape) = triplets::entry(tr, t.start + tr.frame);
                let slot = &mut triplet_cursor[hash as usize];
                frames[*slot as usize] = frame;
                shapes[*slot as usize] = shape;
                *slot += 1;
            }
        }
        Some(Part {
            offsets,
            postings,
            tracks: self.tracks,
            peaks: self.peaks,
            triplets: TripletIndex::from_sorted(triplet_offsets, frames, shapes),
            origin: self.origin,
            end: self.end,
            first_id: self.first_id,
            next_id: self.next_id,
        })
    }
}

/// A run of an index's parts rebuilt as one, without its removed tracks
/// ([`Index::merge`]); put in place with [`Index::with_merged`].
#[derive(Debug)]
pub struct Merged {
    pub(crate) part: Option<Arc<Part>>,
    /// The parts it replaces, by address: the very parts, not others that
    /// happen to sit at the same place of the timeline.
    pub(crate) sources: Vec<usize>,
    /// The removed tracks it no longer holds.
    pub(crate) dropped: Vec<TrackId>,
}

impl Merged {
    /// Number of parts it replaces.
    pub fn parts(&self) -> usize {
        self.sources.len()
    }
}

/// Rebuilds `parts` as one part, leaving out the tracks in `removed` (sorted).
pub(crate) fn merge(parts: &[Arc<Part>], removed: &[TrackId]) -> Result<Merged, IndexError> {
    let sources = parts.iter().map(|p| Arc::as_ptr(p) as usize).collect();
    let (Some(first), Some(last)) = (parts.first(), parts.last()) else {
        return Ok(Merged {
            part: None,
            sources,
            dropped: Vec::new(),
        });
    };
    let mut builder = IndexBuilder::following(first.origin, first.first_id);
    let mut dropped = Vec::new();
    let mut peaks = Vec::new();
    for part in parts {
        for t in &part.tracks {
            if removed.binary_search(&t.id).is_ok() {
                dropped.push(t.id);
                continue;
            }
            peaks.clear();
            peaks.extend(part.peaks_of(t).iter().map(|&p| unpack_peak(p)));
            // The timeline fitted these tracks; one part's postings may not.
            builder.place(t.id, u64::from(t.start), &peaks, t.frames)?;
        }
    }
    // The merged part keeps the whole stretch of timeline and ids of the
    // parts it replaces, so that what follows them stays where it is.
    builder.end = last.end;
    builder.next_id = last.next_id;
    Ok(Merged {
        part: builder.into_part().map(Arc::new),
        sources,
        dropped,
    })
}
