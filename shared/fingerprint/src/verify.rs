//! Verification of a candidate alignment, peak by peak, against decoys.
//!
//! Voting counts agreeing peak *pairs*; a pair survives noise only if both of
//! its peaks do, so in heavy noise a true match and the best chance alignment
//! collect similar vote counts. Verification looks again at the winning
//! alignments with single peaks: how many of the catalogue's peaks in the
//! aligned stretch have a query peak within ±1 frame and ±1 bin. The same
//! count at [`DECOYS`] decoy alignments, the same track shifted by 0.13 to
//! 1.1 s either way, tells what near-misses give for this very query: music
//! that merely shares a key and instruments with the query coincides about as
//! well when shifted, a true alignment does not. (Decoys taken from other
//! tracks were tried first: they let such related music through, because they
//! share nothing with the query at all.) The verdict is how many decoy
//! spreads the candidate stands above the decoys' median.

use crate::hashes::{Warp, warp_bin};
use crate::index::{Index, TRACK_GAP_FRAMES, TrackId};
use crate::params::{BIN_LIMIT, band_bins, is_low_bin};
use crate::parts::{BIN_MASK, PEAK_BIN_BITS};
use crate::peaks::Peak;

/// Decoy alignments per verification.
pub const DECOYS: usize = 16;

/// Shifts (frames) of the decoy alignments, both ways.
const DECOY_SHIFTS: [i64; DECOYS / 2] = [8, 13, 21, 29, 37, 47, 59, 71];

/// The query's peaks as a bitmap over (warped frame, bin), for ±1 look-ups.
#[derive(Debug, Default)]
pub(crate) struct QueryGrid {
    words: Vec<u64>,
    frames: usize,
    /// Which bands the query has peaks in: only those are verified.
    main: bool,
    low: bool,
}

const WORDS_PER_FRAME: usize = BIN_LIMIT.div_ceil(64);

impl QueryGrid {
    /// Rebuilds the grid from the query's peaks under `warp`.
    pub(crate) fn fill(&mut self, peaks: &[Peak], warp: Warp) {
        let limit = TRACK_GAP_FRAMES as usize;
        let frames = peaks
            .iter()
            .map(|p| (p.frame as f32 * warp.time).round() as usize + 1)
            .max()
            .unwrap_or(0)
            .min(limit);
        self.frames = frames;
        self.words.clear();
        self.words.resize(frames * WORDS_PER_FRAME, 0);
        self.main = false;
        self.low = false;
        for p in peaks {
            let t = (p.frame as f32 * warp.time).round() as usize;
            let low = is_low_bin(p.bin);
            let b = warp_bin(p.bin, warp.freq).round().max(0.0) as usize;
            // A peak warped out of its band could pose as one of the other
            // band, or leave the grid.
            if t >= frames || !grid_span(low).contains(&b) {
                continue;
            }
            self.main |= !low;
            self.low |= low;
            self.words[t * WORDS_PER_FRAME + b / 64] |= 1 << (b % 64);
        }
    }

    /// Whether a catalogue peak's band is one the query has peaks in.
    fn covers(&self, bin: u32) -> bool {
        if is_low_bin(bin as f32) {
            self.low
        } else {
            self.main
        }
    }

    /// Length of the warped query in frames.
    pub(crate) fn frames(&self) -> usize {
        self.frames
    }

    fn near(&self, t: i64, bin: u32) -> bool {
        let bin = bin as usize;
        // The neighbours in the catalogue peak's own band only: the bands'
        // edge bins (218 and 219) are adjacent in the numbering, not in Hz.
        let span = grid_span(is_low_bin(bin as f32));
        let (lo, hi) = ((bin - 1).max(*span.start()), (bin + 1).min(*span.end()));
        (t - 1..=t + 1).any(|row| {
            if row < 0 || row as usize >= self.frames {
                return false;
            }
            let base = row as usize * WORDS_PER_FRAME;
            (lo..=hi).any(|b| self.words[base + b / 64] & (1 << (b % 64)) != 0)
        })
    }
}

/// Grid bins a band's query peaks are kept in: the band's bins and one
/// either side, where a warped peak rounds to (never the other band's).
fn grid_span(low: bool) -> std::ops::RangeInclusive<usize> {
    let bins = band_bins(low);
    bins.start - 1..=bins.end
}

/// The outcome of a verification.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Verdict {
    /// Catalogue peaks of the candidate alignment found in the query.
    pub verified: u32,
    /// Median of the same count over the decoys.
    pub expected: f32,
    /// `(verified - expected) / spread`.
    pub z: f32,
}

/// Catalogue peaks of `track` in the query's stretch starting at track frame
/// `offset` that have a query peak next to them.
fn coincidences(index: &Index, track: TrackId, offset: i64, grid: &QueryGrid) -> u32 {
    let to = offset + grid.frames() as i64;
    index
        .track_peaks_between(track, offset - 1, to + 1)
        .iter()
        .filter(|&&p| {
            grid.covers(p & BIN_MASK)
                && grid.near(i64::from(p >> PEAK_BIN_BITS) - offset, p & BIN_MASK)
        })
        .count() as u32
}

/// Verifies `track` at track frame `offset` (where the query's first frame
/// falls) and at the frames either side, and returns the best of the three
/// with its verdict. (Votes within a frame of each other count together, so
/// the voted offset may be one frame off the truest one; a decoy a frame
/// further away would be no different, so the decoys are counted once.)
pub(crate) fn verify(
    index: &Index,
    track: TrackId,
    offset: i64,
    grid: &QueryGrid,
) -> (i64, Verdict) {
    let mut best = (offset, coincidences(index, track, offset, grid));
    for o in [offset - 1, offset + 1] {
        let count = coincidences(index, track, o, grid);
        if count > best.1 {
            best = (o, count);
        }
    }
    let verified = best.1;
    let mut decoys = [0u32; DECOYS];
    for (slot, shift) in decoys
        .iter_mut()
        .zip(DECOY_SHIFTS.iter().flat_map(|&s| [s, -s]))
    {
        *slot = coincidences(index, track, offset + shift, grid);
    }
    decoys.sort_unstable();
    let median = (decoys[DECOYS / 2 - 1] + decoys[DECOYS / 2]) as f32 / 2.0;
    let mut deviations = decoys.map(|d| (d as f32 - median).abs());
    deviations.sort_unstable_by(f32::total_cmp);
    let mad = (deviations[DECOYS / 2 - 1] + deviations[DECOYS / 2]) / 2.0;
    let spread = (1.4826 * mad).max(median.sqrt()).max(1.0);
    (
        best.0,
        Verdict {
            verified,
            expected: median,
            z: (verified as f32 - median) / spread,
        },
    )
}
