//! The inverted index and the matcher.
//!
//! Layout: every catalogue track is placed on one global timeline of STFT
//! frames, tracks separated by [`TRACK_GAP_FRAMES`]. A posting is then a
//! single `u32` (the anchor's global frame), and the postings of all hashes
//! sit in one array sorted by hash, addressed through a dense offsets table
//! (`1 << HASH_BITS` + 1 entries): a lookup costs two reads of the offsets
//! table and one contiguous run of postings, i.e. about two cache misses.
//! That is 4 bytes per landmark plus a fixed 8 MiB table.
//!
//! Matching votes in the offset histogram: a query landmark at query frame
//! `q` that hits a posting at global frame `g` votes for `g - q`, the global
//! position of the query's first frame. The true track piles its votes into
//! one offset (±1 frame); chance hits spread over the whole timeline.
//! Since the gap between tracks is longer than any query, an offset names
//! exactly one track.

use crate::hashes::{Landmark, catalogue_landmarks, query_landmarks};
use crate::params::{CATALOGUE_FAN_OUT, FRAME_SECONDS, HASH_BITS};
use crate::peaks::Peak;

/// Dense id of a track inside one [`Index`], in insertion order.
pub type TrackId = u32;

/// Frames between two tracks on the global timeline (65 s). Also the longest
/// stretch of a query that is matched at once.
pub const TRACK_GAP_FRAMES: u32 = 4096;

/// Errors when building an index.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IndexError {
    /// The global timeline (`u32` frames, about 2 years of audio) is full.
    #[error("the index is full: at most about two years of audio fit in one index")]
    Full,
}

#[derive(Debug, Clone, Copy)]
struct TrackSpan {
    start: u32,
    frames: u32,
}

/// Collects catalogue fingerprints, then builds an [`Index`].
#[derive(Debug, Default)]
pub struct IndexBuilder {
    landmarks: Vec<Landmark>,
    tracks: Vec<TrackSpan>,
    scratch: Vec<Landmark>,
}

impl IndexBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a track from its catalogue peaks (see
    /// [`crate::params::PeakProfile::CATALOGUE`]) and its length in frames.
    ///
    /// # Errors
    /// [`IndexError::Full`] when the timeline cannot take the track.
    pub fn add(&mut self, peaks: &[Peak], frames: u32) -> Result<TrackId, IndexError> {
        let start = self.tracks.last().map_or(u64::from(TRACK_GAP_FRAMES), |t| {
            u64::from(t.start) + u64::from(t.frames) + u64::from(TRACK_GAP_FRAMES)
        });
        let end = start + u64::from(frames) + u64::from(TRACK_GAP_FRAMES);
        if end > u64::from(u32::MAX) {
            return Err(IndexError::Full);
        }
        let start = start as u32;
        self.scratch.clear();
        catalogue_landmarks(peaks, CATALOGUE_FAN_OUT, &mut self.scratch);
        self.landmarks.extend(self.scratch.iter().map(|l| Landmark {
            hash: l.hash,
            frame: start + l.frame.min(frames),
        }));
        self.tracks.push(TrackSpan { start, frames });
        Ok((self.tracks.len() - 1) as TrackId)
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
        let buckets = 1usize << HASH_BITS;
        let mut offsets = vec![0u32; buckets + 1];
        for l in &self.landmarks {
            offsets[l.hash as usize + 1] += 1;
        }
        for i in 0..buckets {
            offsets[i + 1] += offsets[i];
        }
        let mut cursor = offsets.clone();
        let mut postings = vec![0u32; self.landmarks.len()];
        for l in &self.landmarks {
            let slot = &mut cursor[l.hash as usize];
            postings[*slot as usize] = l.frame;
            *slot += 1;
        }
        Index {
            offsets,
            postings,
            tracks: self.tracks,
        }
    }
}

/// The searchable catalogue.
#[derive(Debug)]
pub struct Index {
    offsets: Vec<u32>,
    postings: Vec<u32>,
    tracks: Vec<TrackSpan>,
}

/// How [`Index::search`] explores speed changes and when it stops.
#[derive(Debug, Clone)]
pub struct SearchOptions {
    /// Speed hypotheses, tried in this order (1.0 = as indexed, 1.02 = 2% fast).
    pub speeds: Vec<f32>,
    /// Stop trying further speeds once a candidate is this confident ...
    pub stop_confidence: f32,
    /// ... except those this close to the confident one.
    pub refine_radius: f32,
}

impl SearchOptions {
    /// Speeds from `1 - max_deviation` to `1 + max_deviation` in `step`s,
    /// nearest to 1.0 first.
    pub fn with_speed_range(max_deviation: f32, step: f32) -> Self {
        let mut speeds = vec![1.0];
        let steps = (max_deviation / step).round() as i32;
        for i in 1..=steps {
            speeds.push(1.0 + i as f32 * step);
            speeds.push(1.0 - i as f32 * step);
        }
        Self {
            speeds,
            stop_confidence: 0.99,
            refine_radius: 2.01 * step,
        }
    }
}

impl Default for SearchOptions {
    /// ±3% in 0.25% steps: a residual error of at most 0.125% moves a peak at
    /// the top of the band by a quarter of a bin, which rounding absorbs.
    fn default() -> Self {
        Self::with_speed_range(0.03, 0.0025)
    }
}

/// The best explanation of a query found in the index.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// The track.
    pub track: TrackId,
    /// Position in the track (seconds) of the query's first frame; negative
    /// when the query starts before the track does.
    pub offset_s: f64,
    /// Playback speed of the query relative to the track (1.02 = 2% fast).
    pub speed: f32,
    /// Landmarks agreeing on this track and offset.
    pub score: u32,
    /// Score that the best chance alignment is expected to reach.
    pub background: f32,
    /// Probability-like confidence in `[0, 1]` that the query is this track.
    pub confidence: f32,
    /// Start and end (seconds, query time) of the stretch of the query that matched.
    pub query_span_s: (f64, f64),
}

impl Candidate {
    /// Start and end (seconds, track time) of the matched stretch.
    pub fn track_span_s(&self) -> (f64, f64) {
        let s = f64::from(self.speed);
        (
            self.offset_s + self.query_span_s.0 * s,
            self.offset_s + self.query_span_s.1 * s,
        )
    }
}

/// One offset bin of the vote histogram.
#[derive(Debug, Clone, Copy)]
struct Bin {
    offset: u32,
    votes: u32,
    first: u32,
    last: u32,
}

/// Reusable buffers of one search; keep one per thread.
#[derive(Debug, Default)]
pub struct Searcher {
    landmarks: Vec<Landmark>,
    hits: Vec<u64>,
    bins: Vec<Bin>,
    per_track: Vec<(TrackId, u32)>,
}

/// Distinct tracks whose best score is kept to estimate the chance level.
const RIVALS: usize = 8;

impl Index {
    /// Number of tracks.
    pub fn len(&self) -> usize {
        self.tracks.len()
    }

    /// True when the index holds no track.
    pub fn is_empty(&self) -> bool {
        self.tracks.is_empty()
    }

    /// Number of postings (landmarks) stored.
    pub fn postings(&self) -> usize {
        self.postings.len()
    }

    /// Bytes of memory held by the index's arrays.
    pub fn heap_bytes(&self) -> usize {
        self.offsets.len() * 4 + self.postings.len() * 4 + self.tracks.len() * 8
    }

    fn track_of(&self, offset: u32) -> Option<TrackId> {
        let after = self
            .tracks
            .partition_point(|t| t.start - TRACK_GAP_FRAMES <= offset);
        let i = after.checked_sub(1)?;
        let t = self.tracks[i];
        (offset < t.start + t.frames).then_some(i as TrackId)
    }

    /// Finds the best candidate for a query's peaks (picked with
    /// [`crate::params::PeakProfile::QUERY`]), whatever its confidence; the
    /// caller decides what confidence is enough. Only the first
    /// [`TRACK_GAP_FRAMES`] frames of the query are used.
    pub fn search(
        &self,
        peaks: &[Peak],
        options: &SearchOptions,
        searcher: &mut Searcher,
    ) -> Option<Candidate> {
        let mut best: Option<Candidate> = None;
        // Once a speed is confident, its neighbours are still tried: the
        // first confident speed is often one step off the true one.
        let mut settled: Option<f32> = None;
        for &speed in &options.speeds {
            if let Some(at) = settled {
                if (speed - 1.0).abs() > (at - 1.0).abs() + options.refine_radius {
                    break;
                }
                if (speed - at).abs() > options.refine_radius {
                    continue;
                }
            }
            let Some(found) = self.search_at_speed(peaks, speed, searcher) else {
                continue;
            };
            if best.as_ref().is_none_or(|b| found.score > b.score) {
                best = Some(found);
            }
            if settled.is_none() {
                settled = best
                    .as_ref()
                    .filter(|b| b.confidence >= options.stop_confidence)
                    .map(|b| b.speed);
            }
        }
        best
    }

    fn search_at_speed(&self, peaks: &[Peak], speed: f32, s: &mut Searcher) -> Option<Candidate> {
        s.landmarks.clear();
        query_landmarks(peaks, speed, &mut s.landmarks);
        s.hits.clear();
        for l in &s.landmarks {
            if l.frame >= TRACK_GAP_FRAMES {
                continue;
            }
            let h = l.hash as usize;
            let run = &self.postings[self.offsets[h] as usize..self.offsets[h + 1] as usize];
            s.hits.extend(
                run.iter()
                    .map(|&g| (u64::from(g - l.frame) << 32) | u64::from(l.frame)),
            );
        }
        if s.hits.is_empty() {
            return None;
        }
        s.hits.sort_unstable();
        s.bins.clear();
        for &hit in &s.hits {
            let offset = (hit >> 32) as u32;
            let frame = hit as u32;
            match s.bins.last_mut() {
                Some(bin) if bin.offset == offset => {
                    bin.votes += 1;
                    bin.last = frame;
                }
                _ => s.bins.push(Bin {
                    offset,
                    votes: 1,
                    first: frame,
                    last: frame,
                }),
            }
        }
        // Votes within ±1 frame count together: rounding of warped times
        // spreads a true alignment over neighbouring offsets.
        s.per_track.clear();
        let mut best: Option<(u32, usize)> = None;
        let mut floor = 2;
        for i in 0..s.bins.len() {
            let b = s.bins[i];
            let mut votes = b.votes;
            if i > 0 && s.bins[i - 1].offset + 1 == b.offset {
                votes += s.bins[i - 1].votes;
            }
            if i + 1 < s.bins.len() && s.bins[i + 1].offset == b.offset + 1 {
                votes += s.bins[i + 1].votes;
            }
            if votes <= floor {
                continue;
            }
            let Some(track) = self.track_of(b.offset) else {
                continue;
            };
            if best.is_none_or(|(v, _)| votes > v) {
                best = Some((votes, i));
            }
            match s.per_track.iter_mut().find(|(t, _)| *t == track) {
                Some(entry) => entry.1 = entry.1.max(votes),
                None => s.per_track.push((track, votes)),
            }
            if s.per_track.len() > 4 * RIVALS {
                s.per_track.sort_unstable_by_key(|r| std::cmp::Reverse(r.1));
                s.per_track.truncate(RIVALS);
                floor = s.per_track[RIVALS - 1].1;
            }
        }
        let (score, i) = best?;
        let bin = s.bins[i];
        let track = self.track_of(bin.offset)?;
        s.per_track.sort_unstable_by_key(|r| std::cmp::Reverse(r.1));
        let (first, last) = [i.checked_sub(1), Some(i), Some(i + 1)]
            .into_iter()
            .flatten()
            .filter_map(|j| s.bins.get(j))
            .filter(|b| b.offset.abs_diff(bin.offset) <= 1)
            .fold((u32::MAX, 0), |(f, l), b| (f.min(b.first), l.max(b.last)));
        let background = self.chance_level(s.hits.len(), &s.per_track);
        let confidence = confidence(score, background);
        let start = self.tracks[track as usize].start;
        Some(Candidate {
            track,
            offset_s: (f64::from(bin.offset) - f64::from(start)) * FRAME_SECONDS,
            speed,
            score,
            background,
            confidence,
            query_span_s: (
                f64::from(first) * FRAME_SECONDS / f64::from(speed),
                f64::from(last) * FRAME_SECONDS / f64::from(speed),
            ),
        })
    }

    /// The score chance alone would reach: the larger of the Poisson
    /// expectation for the best of all offsets, and the score of the 4th best
    /// distinct track (real music is not random: repeated chords and shared
    /// instruments make chance alignments cluster, and the runner-up tracks
    /// measure that directly, while tolerating a few true duplicates).
    fn chance_level(&self, hits: usize, per_track: &[(TrackId, u32)]) -> f32 {
        let timeline = self
            .tracks
            .last()
            .map_or(1.0, |t| f64::from(t.start + t.frames));
        let lambda = 3.0 * hits as f64 / timeline;
        let poisson = poisson_expected_max(lambda, timeline);
        let rival = per_track.get(3).map_or(0, |r| r.1);
        poisson.max(f64::from(rival)) as f32
    }
}

/// Smallest `k` such that, among `bins` Poisson(`lambda`) counts, one reaching
/// `k` is expected less than once.
fn poisson_expected_max(lambda: f64, bins: f64) -> f64 {
    // P(X >= k) by summing the pmf upwards.
    let mut pmf = (-lambda).exp();
    let mut tail = 1.0;
    let mut k = 0u32;
    while k < 1000 {
        if tail * bins < 1.0 {
            return f64::from(k);
        }
        tail -= pmf;
        k += 1;
        pmf *= lambda / f64::from(k);
    }
    f64::from(k)
}

/// Maps a score and the chance level to a confidence in `[0, 1]`.
///
/// The margin over the chance level is measured in its Poisson standard
/// deviations (`z`); `CONFIDENCE_Z_MID` is where confidence crosses one half.
fn confidence(score: u32, background: f32) -> f32 {
    let excess = score as f32 - background;
    let z = excess / (background + 1.0).sqrt();
    1.0 / (1.0 + (-(z - CONFIDENCE_Z_MID) / CONFIDENCE_Z_SCALE).exp())
}

/// See [`confidence`].
const CONFIDENCE_Z_MID: f32 = 4.0;
/// See [`confidence`].
const CONFIDENCE_Z_SCALE: f32 = 1.0;
