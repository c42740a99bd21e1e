//! The inverted index and the matcher.
//!
//! Layout: every catalogue track is placed on one global timeline of STFT
//! frames, tracks separated by [`TRACK_GAP_FRAMES`]. A posting is then a
//! single `u32` (the anchor's global frame), and the postings of all hashes
//! sit in one array sorted by hash, addressed through a dense offsets table
//! (`1 << HASH_BITS` + 1 entries): a lookup costs two reads of the offsets
//! table and one contiguous run of postings, i.e. about two cache misses.
//! That is 4 bytes per landmark plus a fixed 8 MiB table. The catalogue's
//! peaks are kept too (4 bytes each, a fifth of the landmarks) for the
//! verification step.
//!
//! Matching has two stages:
//! 1. **Voting.** A query landmark at query frame `q` that hits a posting at
//!    global frame `g` votes for `g - q`, the global position of the query's
//!    first frame. The true track piles its votes into one offset (±1 frame);
//!    chance hits spread over the whole timeline. Since the gap between tracks
//!    is longer than any query, an offset names exactly one track. The best
//!    few tracks go on to
//! 2. **Verification** ([`crate::verify`]): the catalogue's peaks at the
//!    candidate alignment are compared one by one with the query's peaks, and
//!    the number that coincide is set against the same count at decoy
//!    alignments (the same track shifted by a fraction of a second).
//! 3. **Strength and confidence** ([`strength`], [`confidence`]): the vote
//!    margin over the best other track, plus half the verification z-score.

use std::sync::Arc;

use crate::hashes::{Landmark, Warp, query_landmarks};
use crate::params::{FRAME_SECONDS, PAIR_MAX_DT};
use crate::parts::{self, Merged, PEAK_BIN_BITS, PackedPeak, Part};
use crate::peaks::Peak;
use crate::triplets::{self, MAX_WARP, Triplet, TripletHit, TripletIndex, query_triplets};
use crate::verify::{QueryGrid, Verdict, verify};

use crate::parts::IndexBuilder;

/// Dense id of a track inside one [`Index`], in insertion order.
pub type TrackId = u32;

/// Frames between two tracks on the global timeline (65 s). Also the longest
/// stretch of a query that is matched at once.
pub const TRACK_GAP_FRAMES: u32 = 4096;

/// The peaks of a query (in time order) that can make a landmark anchored
/// before [`TRACK_GAP_FRAMES`] at `speed`: a target lies at most
/// [`PAIR_MAX_DT`] frames after its anchor, so later peaks are not paired at
/// all. The landmarks kept are the same, and a long query (a forged sample
/// of an hour) costs what its first 65 s do.
fn pairable(peaks: &[Peak], time: f32) -> &[Peak] {
    let reach = i64::from(TRACK_GAP_FRAMES) + i64::from(PAIR_MAX_DT);
    // Warped frames are rounded as `query_landmarks` rounds them.
    let used = peaks.partition_point(|p| ((p.frame as f32 * time).round() as i64) < reach);
    &peaks[..used]
}

/// Errors when building an index.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IndexError {
    /// The global timeline (`u32` frames, about 2 years of audio, gaps
    /// and removed tracks included) or one part's postings (`u32` offsets,
    /// about a year of audio) are full: the catalogue needs sharding.
    #[error("the index is full: one index holds about a year of audio; shard the catalogue")]
    Full,
    /// One track longer than an index can address (about 37 hours).
    #[error("the track is too long to index (more than about 37 hours)")]
    TrackTooLong,
}

/// The searchable catalogue: parts on one global timeline, and the ids of
/// removed tracks (see [`crate::parts`]). Cloning shares the parts.
#[derive(Debug, Clone, Default)]
pub struct Index {
    parts: Vec<Arc<Part>>,
    /// Sorted.
    removed: Arc<Vec<TrackId>>,
    /// Where the next part's timeline starts, and its first id.
    end: u32,
    next_id: TrackId,
    live: usize,
}

/// How [`Index::search`] explores speed changes and when it stops.
#[derive(Debug, Clone)]
pub struct SearchOptions {
    /// Coarse speed hypotheses, tried in this order (1.0 = as indexed,
    /// 1.02 = 2% fast) until one is confident ...
    pub speeds: Vec<f32>,
    /// ... then speeds this far apart are tried from the best one outwards,
    /// for as long as they improve on it.
    pub refine_step: f32,
    /// No speed further than this from 1.0 is tried.
    pub max_deviation: f32,
    /// Confidence at which the coarse search stops.
    pub stop_confidence: f32,
    /// Tracks per speed that go on from voting to verification.
    pub verify_top: usize,
    /// When the speeds found nothing confident: how many warps the
    /// triplets propose ([`Index::search_wide`]) are tried, at most.
    pub proposals: usize,
}

impl SearchOptions {
    /// Speeds from `1 - max_deviation` to `1 + max_deviation` in `step`s,
    /// nearest to 1.0 first, refined by half a step.
    pub fn with_speed_range(max_deviation: f32, step: f32) -> Self {
        let mut speeds = vec![1.0];
        let steps = (max_deviation / step).round() as i32;
        for i in 1..=steps {
            speeds.push(1.0 + i as f32 * step);
            speeds.push(1.0 - i as f32 * step);
        }
        Self {
            speeds,
            refine_step: step / 2.0,
            max_deviation,
            stop_confidence: 0.999,
            verify_top: 4,
            proposals: 2,
        }
    }
}

impl Default for SearchOptions {
    /// ±3% in 0.5% steps, refined to 0.25%: a residual error of at most
    /// 0.125% moves a peak at the top of the band by a quarter of a bin, which
    /// rounding absorbs; a coarse step's residual of 0.25% still leaves
    /// enough agreeing landmarks to find the track and refine.
    fn default() -> Self {
        Self::with_speed_range(0.03, 0.005)
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
    /// Playback speed of the query relative to the track (1.02 = 2% fast):
    /// track seconds per query second.
    pub speed: f32,
    /// The query's frequencies over the track's: the same as `speed` when
    /// pitch and tempo changed together, 1.0 under a key-lock, 1.0595 for a
    /// key a semitone up at the same tempo.
    pub pitch: f32,
    /// Landmarks agreeing on this track and offset.
    pub score: u32,
    /// Landmarks agreeing on the best alignment of any other track at this speed.
    pub rival_score: u32,
    /// Verification: catalogue peaks at this alignment found in the query ...
    pub verified: u32,
    /// ... and what chance gives (median over decoy alignments).
    pub expected: f32,
    /// How far `verified` stands above chance, in units of the decoys' spread.
    pub z: f32,
    /// The evidence the confidence is made of (see [`strength`]).
    pub strength: f32,
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

/// A track's best alignment after voting.
#[derive(Debug, Clone, Copy)]
struct Voted {
    track: TrackId,
    votes: u32,
    /// Global frame of the query's first frame.
    offset: u32,
    first: u32,
    last: u32,
}

/// Reusable buffers of one search; keep one per thread.
#[derive(Debug, Default)]
pub struct Searcher {
    landmarks: Vec<Landmark>,
    runs: Vec<(u32, u32)>,
    hits: Vec<u64>,
    counts: OffsetCounts,
    voted: Vec<Voted>,
    frames: Vec<u32>,
    grid: QueryGrid,
    triplets: Vec<Triplet>,
    triplet_hits: Vec<TripletHit>,
    hough: Vec<(i64, f32)>,
    proposals: Vec<(usize, Warp)>,
    warps: Vec<(usize, Warp)>,
}

/// How strongly a candidate stands out, from two independent views:
/// - the vote margin over the best *other* track at the same speed, in
///   Poisson standard deviations of that rival (chance alignments have rivals
///   of similar strength, a true one does not);
/// - half the verification z-score (single peaks that coincide at the exact
///   alignment, against the same track shifted by a fraction of a second).
pub fn strength(votes: u32, rival_votes: u32, z: f32) -> f32 {
    let rival = rival_votes as f32;
    (votes as f32 - rival) / (rival + 1.0).sqrt() + z / 2.0
}

/// Confidence is one half at this [`strength`] (see `docs/recognition.md`) ...
pub const CONFIDENCE_MID: f32 = 6.5;
/// ... and rises from 0.12 to 0.88 over twice this many units.
pub const CONFIDENCE_SCALE: f32 = 0.5;

/// Maps a candidate's [`strength`] to a confidence in `[0, 1]`.
pub fn confidence(strength: f32) -> f32 {
    1.0 / (1.0 + (-(strength - CONFIDENCE_MID) / CONFIDENCE_SCALE).exp())
}

/// What a catalogue shard's best candidate weighs when a query's answer is
/// decided across shards (each shard searched its own tracks only).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Evidence {
    /// Landmarks agreeing on the candidate.
    pub votes: u32,
    /// The best other track of its own shard at the same warp.
    pub rival_votes: u32,
    /// The verification z-score.
    pub z: f32,
    /// Deducted for a warp found off the grid.
    pub penalty: f32,
}

impl Candidate {
    /// The evidence behind this candidate.
    pub fn evidence(&self) -> Evidence {
        Evidence {
            votes: self.score,
            rival_votes: self.rival_score,
            z: self.z,
            penalty: (strength(self.score, self.rival_score, self.z) - self.strength).max(0.0),
        }
    }
}

/// The winner among the shards' best candidates (`None` for a shard with
/// none), and its strength. Each candidate's rival is the stronger of its
/// own shard's and the other shards' best candidates: close to the best
/// other track one index holding every track would have found, though the
/// other shards' best are at their own warps, not at the candidate's.
pub fn strongest_across_shards(bests: &[Option<Evidence>]) -> Option<(usize, f32)> {
    let mut winner: Option<(usize, f32)> = None;
    for (i, e) in bests.iter().enumerate() {
        let Some(e) = e else { continue };
        let others = bests
            .iter()
            .enumerate()
            .filter(|&(j, _)| j != i)
            .filter_map(|(_, o)| o.map(|o| o.votes))
            .max()
            .unwrap_or(0);
        let rival = e.rival_votes.max(others);
        let s = strength(e.votes, rival, e.z) - e.penalty;
        if winner.is_none_or(|(_, best)| s > best) {
            winner = Some((i, s));
        }
    }
    winner
}

impl Index {
    pub(crate) fn from_parts(parts: Vec<Arc<Part>>, end: u32, next_id: TrackId) -> Self {
        let live = parts.iter().map(|p| p.tracks.len()).sum();
        Self {
            parts,
            removed: Arc::default(),
            end,
            next_id,
            live,
        }
    }

    /// Number of tracks (removed ones not counted).
    pub fn len(&self) -> usize {
        self.live
    }

    /// True when the index holds no track.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Number of postings (landmarks) stored, removed tracks' included.
    pub fn postings(&self) -> usize {
        self.parts.iter().map(|p| p.postings.len()).sum()
    }

    /// Number of parts: one after a build or a full merge, one more for
    /// every [`Index::with_added`] since.
    pub fn parts(&self) -> usize {
        self.parts.len()
    }

    /// Removed tracks still held until a merge.
    pub fn removed(&self) -> usize {
        self.removed.len()
    }

    /// Bytes of memory the index holds.
    pub fn bytes(&self) -> usize {
        self.parts.iter().map(|p| p.bytes()).sum::<usize>() + 4 * self.removed.len()
    }

    /// Whether `track` is in the index (added and not removed).
    pub fn contains(&self, track: TrackId) -> bool {
        self.span(track).is_some()
    }

    /// The ids of the tracks, in order.
    pub fn tracks(&self) -> impl Iterator<Item = TrackId> + '_ {
        self.parts
            .iter()
            .flat_map(|p| p.tracks.iter().map(|t| t.id))
            .filter(|&id| !self.is_removed(id))
    }

    /// Length of `track` in frames.
    pub fn frames(&self, track: TrackId) -> Option<u32> {
        self.span(track).map(|(_, t)| t.frames)
    }

    /// A builder for tracks to add to this index: their ids and their place
    /// on the timeline follow its own ([`Index::with_added`]).
    pub fn builder(&self) -> IndexBuilder {
        IndexBuilder::following(self.end, self.next_id)
    }

    /// This index with the tracks of `added` too, as a part of their own;
    /// the parts already built are shared.
    ///
    /// # Panics
    /// When `added` does not follow this index (it came from
    /// [`Index::builder`] of another index, or of an earlier state of this
    /// one that something was added to since).
    pub fn with_added(&self, added: IndexBuilder) -> Self {
        assert_eq!(
            added.origin(),
            (self.end, self.next_id),
            "the tracks added must follow the index they are added to"
        );
        let (end, next_id) = added.ending();
        let mut parts = self.parts.clone();
        parts.extend(added.into_part().map(Arc::new));
        Self {
            live: self.live
                + parts[self.parts.len()..]
                    .iter()
                    .map(|p| p.tracks.len())
                    .sum::<usize>(),
            parts,
            removed: self.removed.clone(),
            end,
            next_id,
        }
    }

    /// This index without `tracks` (ids not in it are ignored). Their
    /// postings stay until a merge; searches skip them from now on.
    pub fn without(&self, tracks: &[TrackId]) -> Self {
        let mut removed = (*self.removed).clone();
        for &id in tracks {
            if self.contains(id) && !removed.contains(&id) {
                removed.push(id);
            }
        }
        removed.sort_unstable();
        Self {
            live: self.live - (removed.len() - self.removed.len()),
            removed: Arc::new(removed),
            parts: self.parts.clone(),
            end: self.end,
            next_id: self.next_id,
        }
    }

    /// Whether a merge is due, and of which parts (pass it to
    /// [`Index::merge`]): every part once removed tracks make up an eighth
    /// of the index or more; otherwise, once there are more than
    /// [`MAX_PARTS`] parts, the latest ones, as far back as no earlier part
    /// outweighs them four to one. Small new parts are then merged with each
    /// other often and cheaply, and into the large ones rarely, so that
    /// every posting is rebuilt a few times over its life rather than once
    /// per change. The run starts later when the merged part would exceed
    /// one part's limits, and no merge is due when the run would neither
    /// join parts nor drop a removed track.
    pub fn merge_due(&self) -> Option<usize> {
        let n = self.parts.len();
        let wanted = if !self.removed.is_empty() && self.removed.len() * 8 >= self.live.max(8) {
            0
        } else if n <= MAX_PARTS {
            return None;
        } else {
            let mut from = n - 1;
            let mut tail = self.parts[from].postings.len();
            while from > 0 && (from == n - 1 || self.parts[from - 1].postings.len() <= 4 * tail) {
                from -= 1;
                tail += self.parts[from].postings.len();
            }
            from
        };
        let limit = u32::MAX as usize;
        let fits = |run: &[Arc<Part>]| {
            let sum = |f: fn(&Part) -> usize| run.iter().map(|p| f(p)).sum::<usize>();
            sum(|p| p.postings.len()) <= limit
                && sum(|p| p.triplets.len()) <= limit
                && sum(|p| p.peaks.len()) <= limit
        };
        let from = (wanted..n).find(|&from| fits(&self.parts[from..]))?;
        let run = &self.parts[from..];
        let drops = self
            .removed
            .iter()
            .any(|&id| run.iter().any(|p| p.first_id <= id && id < p.next_id));
        (run.len() >= 2 || drops).then_some(from)
    }

    /// Rebuilds the parts from the `from`th on as one part, without the
    /// removed tracks: CPU work of the order of a build of those tracks, to
    /// run off to one side. The index this is called on is not changed; put
    /// the result in place with [`Index::with_merged`].
    ///
    /// # Errors
    /// [`IndexError::Full`] when the tracks of those parts do not fit one
    /// part ([`Index::merge_due`] never proposes such a run).
    pub fn merge(&self, from: usize) -> Result<Merged, IndexError> {
        parts::merge(&self.parts[from.min(self.parts.len())..], &self.removed)
    }

    /// This index with `merged` (of this index, or of an earlier state of
    /// it: tracks added and removed since stay so) in place of the parts it
    /// was made from.
    ///
    /// # Panics
    /// When the parts `merged` was made from are not all in this index
    /// (it was merged from another index, or is put in place twice).
    pub fn with_merged(&self, merged: Merged) -> Self {
        if merged.sources.is_empty() {
            return self.clone();
        }
        let address = |p: &Arc<Part>| Arc::as_ptr(p) as usize;
        let from = self
            .parts
            .iter()
            .position(|p| address(p) == merged.sources[0]);
        let covers = from.is_some_and(|from| {
            self.parts[from..].len() >= merged.sources.len()
                && self.parts[from..]
                    .iter()
                    .map(address)
                    .take(merged.sources.len())
                    .eq(merged.sources.iter().copied())
        });
        assert!(
            covers,
            "a merge goes in place of the parts it was made from"
        );
        let from = from.unwrap_or_default();
        let to = from + merged.sources.len();
        let mut parts = self.parts[..from].to_vec();
        parts.extend(merged.part);
        parts.extend_from_slice(&self.parts[to..]);
        let removed: Vec<TrackId> = self
            .removed
            .iter()
            .copied()
            .filter(|id| merged.dropped.binary_search(id).is_err())
            .collect();
        Self {
            parts,
            removed: Arc::new(removed),
            end: self.end,
            next_id: self.next_id,
            live: self.live,
        }
    }

    fn is_removed(&self, track: TrackId) -> bool {
        !self.removed.is_empty() && self.removed.binary_search(&track).is_ok()
    }

    /// The part holding `track` and its span there, unless it is removed.
    fn span(&self, track: TrackId) -> Option<(&Part, &parts::TrackSpan)> {
        let i = self
            .parts
            .partition_point(|p| p.first_id <= track)
            .checked_sub(1)?;
        let part = &self.parts[i];
        let span = part.span(track)?;
        (!self.is_removed(track)).then_some((&**part, span))
    }

    /// Catalogue peaks of `track` with `from <= frame < to`.
    pub(crate) fn track_peaks_between(&self, track: TrackId, from: i64, to: i64) -> &[PackedPeak] {
        let Some((part, t)) = self.span(track) else {
            return &[];
        };
        let all = part.peaks_of(t);
        let lo = all.partition_point(|&p| i64::from(p >> PEAK_BIN_BITS) < from);
        let hi = all.partition_point(|&p| i64::from(p >> PEAK_BIN_BITS) < to);
        &all[lo..hi.max(lo)]
    }

    /// The track a global frame (a vote's offset, a triplet's anchor) falls
    /// in, or in the gap before; none when it is removed.
    fn track_of(&self, offset: u32) -> Option<TrackId> {
        let i = self
            .parts
            .partition_point(|p| p.origin <= offset)
            .checked_sub(1)?;
        self.parts[i]
            .track_at(offset)
            .filter(|&t| !self.is_removed(t))
    }

    /// Finds the best candidate for a query's peaks (picked with
    /// [`crate::params::PeakProfile::QUERY`]), whatever its confidence; the
    /// caller decides what confidence is enough. Only the first
    /// [`TRACK_GAP_FRAMES`] frames of the query are used. Speed changes are
    /// searched within [`SearchOptions::speeds`]; [`Index::search_wide`]
    /// reaches further.
    pub fn search(
        &self,
        peaks: &[Peak],
        options: &SearchOptions,
        searcher: &mut Searcher,
    ) -> Option<Candidate> {
        self.search_wide(peaks, &[], options, searcher)
    }

    /// [`Index::search`], and when no speed of the grid gives a confident
    /// answer, the warps that the query's triplets propose (up to
    /// [`MAX_WARP`] in time and frequency, each on its own: a DJ's tempo with
    /// the key kept, a key shift): `sparse` holds the query's main-band peaks
    /// picked with the catalogue's profile
    /// ([`crate::fingerprint_clip_sparse`]); empty, no warp is proposed.
    pub fn search_wide(
        &self,
        peaks: &[Peak],
        sparse: &[Peak],
        options: &SearchOptions,
        searcher: &mut Searcher,
    ) -> Option<Candidate> {
        let mut best: Option<Candidate> = None;
        let confident = |b: &Option<Candidate>| {
            b.as_ref()
                .is_some_and(|b| b.confidence >= options.stop_confidence)
        };
        for &speed in &options.speeds {
            self.try_warp(peaks, Warp::speed(speed), options, searcher, &mut best);
            if confident(&best) {
                break;
            }
        }
        if !confident(&best) && !sparse.is_empty() && options.proposals > 0 {
            self.propose(sparse, options, searcher);
            let proposals = std::mem::take(&mut searcher.proposals);
            for &(_, warp) in &proposals {
                self.try_warp(peaks, warp, options, searcher, &mut best);
                if confident(&best) {
                    break;
                }
            }
            searcher.proposals = proposals;
        }
        // The coarse grid leaves up to half a coarse step of error, and the
        // first confident speed may be further off still: climb from the best
        // warp in fine steps, each way, for as long as it improves. A speed
        // is climbed along speeds; a proposed warp along time, then frequency.
        let Some(found) = best.as_ref() else {
            return best;
        };
        let step = options.refine_step;
        let (axes, reach): (&[Warp], f32) = if found.speed == found.pitch {
            let reach = if (found.speed - 1.0).abs() > options.max_deviation + 1e-6 {
                MAX_WARP
            } else {
                options.max_deviation
            };
            (
                &[Warp {
                    time: step,
                    freq: step,
                }],
                reach,
            )
        } else {
            (
                &[
                    Warp {
                        time: step,
                        freq: 0.0,
                    },
                    Warp {
                        time: 0.0,
                        freq: step,
                    },
                ],
                MAX_WARP,
            )
        };
        for axis in axes {
            for direction in [1.0f32, -1.0] {
                while let Some(at) = best.as_ref().map(|b| Warp {
                    time: b.speed,
                    freq: b.pitch,
                }) {
                    let next = Warp {
                        time: at.time + direction * axis.time,
                        freq: at.freq + direction * axis.freq,
                    };
                    if (next.time - 1.0).abs() > reach + 1e-6
                        || (next.freq - 1.0).abs() > reach + 1e-6
                    {
                        break;
                    }
                    self.try_warp(peaks, next, options, searcher, &mut best);
                    if best
                        .as_ref()
                        .is_none_or(|b| b.speed != next.time || b.pitch != next.freq)
                    {
                        break;
                    }
                }
            }
        }
        best
    }

    /// The warps the query's triplets agree on most, best first, in
    /// `searcher.proposals`: per track among the few with the most triplet
    /// hits, the warp and alignment most hits agree on. Warps the speed grid
    /// has tried already are left out.
    fn propose(&self, sparse: &[Peak], options: &SearchOptions, s: &mut Searcher) {
        s.proposals.clear();
        s.triplets.clear();
        let reach = (TRACK_GAP_FRAMES as f32 * (1.0 - MAX_WARP)) as u32;
        let used = sparse.partition_point(|p| p.frame < reach);
        query_triplets(&sparse[..used], &mut s.triplets);
        let tables: Vec<&TripletIndex> = self.parts.iter().map(|p| &p.triplets).collect();
        let live = |global: u32| self.removed.is_empty() || self.track_of(global).is_some();
        triplets::hits(&tables, &s.triplets, live, &mut s.triplet_hits);
        triplets::proposals(&mut s.triplet_hits, &mut s.hough, &mut s.warps);
        for &(count, warp) in &s.warps {
            let tried = (warp.time - warp.freq).abs() < options.refine_step
                && (warp.time - 1.0).abs() <= options.max_deviation + options.refine_step;
            let again = s.proposals.iter().any(|p| {
                (p.1.time - warp.time).abs() < options.refine_step
                    && (p.1.freq - warp.freq).abs() < options.refine_step
            });
            if !tried && !again {
                s.proposals.push((count, warp));
            }
        }
        s.proposals.sort_unstable_by_key(|p| std::cmp::Reverse(p.0));
        s.proposals.truncate(options.proposals);
    }

    /// Votes and verifies under one warp; keeps the better of `best` and what it finds.
    fn try_warp(
        &self,
        peaks: &[Peak],
        warp: Warp,
        options: &SearchOptions,
        searcher: &mut Searcher,
        best: &mut Option<Candidate>,
    ) {
        self.vote(peaks, warp, options.verify_top, searcher);
        if searcher.voted.is_empty() {
            return;
        }
        searcher.grid.fill(peaks, warp);
        for v in &searcher.voted {
            let rival = searcher
                .voted
                .iter()
                .filter(|r| r.track != v.track)
                .map(|r| r.votes)
                .max()
                // Rivals below the voting floor were not recorded: at most that.
                .unwrap_or(0)
                .max(MIN_VOTES - 1);
            let penalty = if on_grid(warp, options) {
                0.0
            } else {
                PROPOSED_WARP_PENALTY
            };
            let mut found = self.candidate(*v, rival, warp, penalty, &searcher.grid);
            let refines = best.as_ref().is_some_and(|b| {
                same_alignment(b, &found)
                    && on_grid(
                        Warp {
                            time: b.speed,
                            freq: b.pitch,
                        },
                        options,
                    )
            });
            if penalty > 0.0 && refines {
                // The grid found this track here already: the proposed warp
                // only sharpens it, it is no look elsewhere.
                found = self.candidate(*v, rival, warp, 0.0, &searcher.grid);
            }
            // Between tracks the stronger evidence wins; between warps of
            // one track, the most agreeing landmarks (the truest warp).
            let better = best.as_ref().is_none_or(|b| {
                if same_alignment(b, &found) {
                    found.score > b.score
                } else {
                    found.strength > b.strength
                }
            });
            if better {
                *best = Some(found);
            }
        }
    }

    fn candidate(
        &self,
        v: Voted,
        rival_score: u32,
        warp: Warp,
        penalty: f32,
        grid: &QueryGrid,
    ) -> Candidate {
        let start = self.span(v.track).map_or(0, |(_, t)| t.start);
        let (
            offset_frames,
            Verdict {
                verified,
                expected,
                z,
            },
        ) = verify(self, v.track, i64::from(v.offset) - i64::from(start), grid);
        Candidate {
            track: v.track,
            offset_s: offset_frames as f64 * FRAME_SECONDS,
            speed: warp.time,
            pitch: warp.freq,
            score: v.votes,
            rival_score,
            verified,
            expected,
            z,
            strength: strength(v.votes, rival_score, z) - penalty,
            confidence: confidence(strength(v.votes, rival_score, z) - penalty),
            query_span_s: (
                f64::from(v.first) * FRAME_SECONDS / f64::from(warp.time),
                f64::from(v.last) * FRAME_SECONDS / f64::from(warp.time),
            ),
        }
    }

    /// Offset-histogram voting under one warp; leaves the best alignment of
    /// each of the `top` best tracks in `s.voted`.
    fn vote(&self, peaks: &[Peak], warp: Warp, top: usize, s: &mut Searcher) {
        s.landmarks.clear();
        query_landmarks(pairable(peaks, warp.time), warp, &mut s.landmarks);
        s.landmarks.retain(|l| l.frame < TRACK_GAP_FRAMES);
        // Two passes per part, each of independent reads, so that the
        // processor has many cache misses in flight at once: first where each
        // hash's postings are, then the postings themselves.
        s.hits.clear();
        for part in &self.parts {
            s.runs.clear();
            s.runs.extend(s.landmarks.iter().map(|l| {
                let h = l.hash as usize;
                (part.offsets[h], part.offsets[h + 1])
            }));
            for (l, &(from, to)) in s.landmarks.iter().zip(&s.runs) {
                s.hits.extend(
                    part.postings[from as usize..to as usize]
                        .iter()
                        .map(|&g| (u64::from(g - l.frame) << 32) | u64::from(l.frame)),
                );
            }
        }
        s.voted.clear();
        if s.hits.is_empty() {
            return;
        }
        s.counts.reset(s.hits.len());
        for &hit in &s.hits {
            s.counts.add((hit >> 32) as u32);
        }
        let counts = &s.counts;
        // Votes within ±1 frame count together: rounding of warped times
        // spreads a true alignment over neighbouring offsets. An alignment
        // worth verifying has at least two votes in its central offset.
        let mut floor = MIN_VOTES - 1;
        for &offset in &counts.repeated {
            let count = counts.get(offset);
            // Ties with the floor go on, so that which of two equal tracks
            // is kept does not depend on the order of the hits (the index's
            // layout): the lower track id is.
            if count * 3 < floor {
                continue;
            }
            let votes = count + counts.get(offset - 1) + counts.get(offset + 1);
            if votes < floor {
                continue;
            }
            let Some(track) = self.track_of(offset) else {
                continue;
            };
            let entry = Voted {
                track,
                votes,
                offset,
                first: 0,
                last: 0,
            };
            match s.voted.iter_mut().find(|v| v.track == track) {
                // Between neighbouring offsets with the same votes, the one
                // with more of its own is the truer alignment.
                Some(v) if (v.votes, counts.get(v.offset)) < (votes, count) => *v = entry,
                Some(_) => {}
                None => s.voted.push(entry),
            }
            if s.voted.len() > top {
                s.voted
                    .sort_unstable_by_key(|v| (std::cmp::Reverse(v.votes), v.track));
                s.voted.truncate(top);
                floor = s.voted[top - 1].votes;
            }
        }
        s.voted
            .sort_unstable_by_key(|v| (std::cmp::Reverse(v.votes), v.track));
        for v in &mut s.voted {
            (v.first, v.last) = agreeing_span(&s.hits, v.offset, &mut s.frames);
        }
    }
}

/// Vote counts per offset: an open-addressing hash table sized to the hits,
/// so that counting is linear in the hits, whatever the catalogue's size.
/// Offsets that reach two votes are listed as they do: most offsets get one
/// chance vote, and only the listed ones can be worth verifying.
#[derive(Debug, Default)]
struct OffsetCounts {
    repeated: Vec<u32>,
    slots: Vec<(u32, u32)>,
    mask: usize,
    shift: u32,
}

const EMPTY: u32 = u32::MAX;

impl OffsetCounts {
    fn reset(&mut self, hits: usize) {
        let capacity = (hits * 2).next_power_of_two().max(64);
        self.repeated.clear();
        self.slots.clear();
        self.slots.resize(capacity, (EMPTY, 0));
        self.mask = capacity - 1;
        self.shift = 32 - capacity.trailing_zeros();
    }

    fn slot(&self, key: u32) -> usize {
        // Fibonacci hashing: the product's high bits mix all of the key's bits.
        (key.wrapping_mul(0x9E37_79B1) >> self.shift) as usize
    }

    fn add(&mut self, key: u32) {
        let mut i = self.slot(key);
        loop {
            let (k, c) = &mut self.slots[i];
            if *k == key {
                *c += 1;
                if *c == 2 {
                    self.repeated.push(key);
                }
                return;
            }
            if *k == EMPTY {
                *k = key;
                *c = 1;
                return;
            }
            i = (i + 1) & self.mask;
        }
    }

    fn get(&self, key: u32) -> u32 {
        let mut i = self.slot(key);
        loop {
            let (k, c) = self.slots[i];
            if k == key {
                return c;
            }
            if k == EMPTY {
                return 0;
            }
            i = (i + 1) & self.mask;
        }
    }
}

/// Parts an index may have before [`Index::merge_due`] asks for a merge.
pub const MAX_PARTS: usize = 4;

/// Fewest agreeing landmarks worth verifying.
const MIN_VOTES: u32 = 3;

/// The same track at nearly the same place: two warps of one answer.
fn same_alignment(a: &Candidate, b: &Candidate) -> bool {
    a.track == b.track && (a.offset_s - b.offset_s).abs() < 2.0
}

/// True when `warp` is a speed within the grid's reach: not one only the
/// triplets could propose.
fn on_grid(warp: Warp, options: &SearchOptions) -> bool {
    warp.is_speed() && (warp.time - 1.0).abs() <= options.max_deviation + 1e-6
}

/// Strength taken off a candidate found under a warp the triplets proposed
/// (off the speed grid): such a warp is fitted to the query, and the best
/// chance alignment over the grid and the proposals together stands higher
/// than over the grid alone. On the benchmark's tuning half, never-indexed
/// clips reached 6.58 under proposed warps against 5.81 on the grid.
const PROPOSED_WARP_PENALTY: f32 = 1.0;

/// A matched stretch starts (ends) at the first (last) agreeing landmark that
/// has `DENSE_HITS - 1` more within `DENSE_FRAMES` (2 s): a lone chance hit in
/// the noise before a track starts does not move its start.
const DENSE_HITS: usize = 3;
/// See [`DENSE_HITS`].
const DENSE_FRAMES: u32 = 125;

/// First and last query frames of the hits that agree with `offset` (±1),
/// trimmed to where they are dense (all of them when they never are).
fn agreeing_span(hits: &[u64], offset: u32, frames: &mut Vec<u32>) -> (u32, u32) {
    frames.clear();
    frames.extend(
        hits.iter()
            .filter(|&&h| ((h >> 32) as u32).abs_diff(offset) <= 1)
            .map(|&h| h as u32),
    );
    frames.sort_unstable();
    let dense = |w: &[u32]| w[DENSE_HITS - 1] - w[0] <= DENSE_FRAMES;
    let first = frames.windows(DENSE_HITS).find(|w| dense(w)).map(|w| w[0]);
    let last = frames
        .windows(DENSE_HITS)
        .rev()
        .find(|w| dense(w))
        .map(|w| w[DENSE_HITS - 1]);
    match (first, last) {
        (Some(first), Some(last)) => (first, last),
        _ => (
            frames.first().copied().unwrap_or(0),
            frames.last().copied().unwrap_or(0),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn across_shards_a_candidate_must_stand_out_from_every_shards_best() {
        let e = |votes, rival_votes, z| Evidence {
            votes,
            rival_votes,
            z,
            penalty: 0.0,
        };
        // Alone, a shard's candidate keeps its own strength.
        let only = [None, Some(e(40, 6, 8.0)), None];
        assert_eq!(
            strongest_across_shards(&only),
            Some((1, strength(40, 6, 8.0)))
        );
        // Another shard's better chance alignment is its rival, as it would
        // be in one index.
        let two = [Some(e(40, 6, 8.0)), Some(e(12, 5, 1.0))];
        assert_eq!(
            strongest_across_shards(&two),
            Some((0, strength(40, 12, 8.0)))
        );
        // Two chance alignments weaken each other; the stronger still wins.
        let (i, s) = strongest_across_shards(&[Some(e(11, 10, 1.0)), Some(e(13, 4, 2.0))]).unwrap();
        assert_eq!(i, 1);
        assert!(s < strength(13, 4, 2.0));
        assert_eq!(strongest_across_shards(&[None, None]), None);
        // The penalty of a warp found off the grid stays deducted.
        let mut off = e(40, 6, 8.0);
        off.penalty = 1.5;
        assert_eq!(
            strongest_across_shards(&[Some(off)]),
            Some((0, strength(40, 6, 8.0) - 1.5))
        );
    }

    proptest! {
        #[test]
        fn only_peaks_out_of_reach_of_every_kept_landmark_are_left_unpaired(
            raw in prop::collection::vec((0u32..30, 20f32..217.0), 1..400),
            speed in 0.97f32..1.03,
        ) {
            // Frame steps of up to 30 take the peaks across TRACK_GAP_FRAMES.
            let mut frame = 3900;
            let peaks: Vec<Peak> = raw
                .into_iter()
                .map(|(step, bin)| {
                    frame += step;
                    Peak { frame, bin }
                })
                .collect();
            let kept = |peaks: &[Peak]| {
                let mut out = Vec::new();
                query_landmarks(peaks, speed, &mut out);
                out.retain(|l| l.frame < TRACK_GAP_FRAMES);
                out
            };
            prop_assert_eq!(kept(pairable(&peaks, speed)), kept(&peaks));
        }
    }
}
