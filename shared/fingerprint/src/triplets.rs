//! Triplets of peaks whose shape survives speed, tempo and key changes: they
//! propose the [`Warp`] under which the pair hashes are then matched.
//!
//! The pair hashes ([`crate::hashes`]) pin exact bins and frame steps, so a
//! query matches them only once warped back to within about 0.25% of its true
//! speed; trying every warp of a DJ's range (±8% speed, ±8% tempo with the key
//! kept, ±1 semitone with the tempo kept) that way would cost some ninety
//! hypotheses per query. Three peaks `a`, `b`, `c` (in time order) have a
//! shape that none of these changes alter (the idea of Panako's triplets and
//! of Sonnleitner and Widmer's quads):
//!
//! - the ratio of time steps `(t_b - t_a) / (t_c - t_a)`: a tempo change
//!   scales both steps alike;
//! - the frequency ratios `f_b / f_a` and `f_c / f_a` (as octaves): a pitch
//!   change scales all three frequencies alike;
//! - and, coarsely, the anchor's own octave (half-octave cells: a shift of a
//!   semitone or 8% crosses a cell edge for a fifth of the anchors, and the
//!   query looks on both sides of an edge it is near).
//!
//! Each quantity is cut into cells; the query also probes the neighbouring
//! cell of every quantity it is near the edge of, so that rounding never
//! separates a query triplet from its catalogue twin. A hit then says which
//! track, where, and under which warp: the anchor frequencies' ratio is the
//! pitch factor, and the track frames per query frame, the tempo factor, come
//! from the hits' offsets (a Hough transform over tempo: the true tempo lines
//! the hits up on one offset).
//!
//! Triplets are built from the catalogue profile's main-band peaks on both
//! sides (a query's are picked beside its denser query peaks, from the same
//! spectrogram, see [`crate::Fingerprinter::keep_sparse`]): with the query
//! profile's density every anchor would have dozens of targets and thousands
//! of triplets.

#[cfg(test)]
use crate::buckets::BucketCounts;
use crate::hashes::Warp;
use crate::params::is_low_bin;
use crate::peaks::Peak;

/// Bits of a triplet hash: 4 for the anchor's octave, 6 and 6 for the two
/// frequency ratios, 3 for the time ratio.
pub const TRIPLET_BITS: u32 = 19;
/// Each anchor makes a triplet with every pair of its first this many
/// targets (in time order).
pub const TRIPLET_TARGETS: usize = 4;
/// Longest anchor-to-last-target step, in catalogue frames (1 s).
pub const TRIPLET_MAX_DT: u32 = 63;
/// Shortest anchor-to-last-target step: over fewer frames, rounding blurs
/// the time ratio by more than a cell.
pub const TRIPLET_MIN_DT: u32 = 8;
/// Lowest bin a triplet's peak may sit at (187 Hz): below it a catalogue
/// bin's rounding is more than 4% of its frequency.
pub const TRIPLET_MIN_BIN: f32 = 12.0;
/// Widest warp the triplets look for, either way, in time and in frequency.
pub const MAX_WARP: f32 = 0.10;

/// Most sparse peaks of a query its triplets are made from: twice the
/// catalogue profile's 24 a second over the 59 s of a query the triplets
/// look at (a catalogue span of [`crate::index::TRACK_GAP_FRAMES`] at 10%
/// slower). The engine's own lists stay well
/// below; a forged one costs no more than this.
pub const MAX_QUERY_PEAKS: usize = 2 * 24 * 59;

/// Most triplet hits one query collects (12 bytes each): tens of times what a
/// 10 s query finds in a catalogue of a few hundred hours, so that a query's
/// time and memory stay bounded whatever the catalogue's hash buckets hold.
pub const MAX_TRIPLET_HITS: usize = 1 << 20;

/// Cells of the time ratio over `(0, 1)`.
const TIME_CELLS: f32 = 8.0;
/// Cells per octave of the frequency ratios ...
const RATIO_CELLS_PER_OCTAVE: f32 = 6.0;
/// ... and how many either side of 1:1 (the band spans 4.2 octaves above
/// [`TRIPLET_MIN_BIN`]).
const RATIO_CELLS_EACH_WAY: i32 = 26;
/// Cells per octave of the anchor's frequency, from [`TRIPLET_MIN_BIN`].
const ANCHOR_CELLS_PER_OCTAVE: f32 = 2.0;

/// How near a cell's edge (in cells) a query's quantity must be for the
/// query to probe the neighbouring cell too: frame rounding moves the time
/// ratio by up to 0.05 (0.4 cells) over spans of 20 frames or more (by
/// more over the shortest, see [`TRIPLET_MIN_DT`]), bin rounding the
/// frequency ratios by up to 0.04 octaves (0.25 cells) above bin 36 (by
/// more below), and a warp of [`MAX_WARP`] the anchor by 0.14 octaves (0.28
/// cells). Rounding beyond the margins loses a triplet, not a match: the
/// invariance test asks for 90% of them.
const TIME_MARGIN: f32 = 0.4;
const RATIO_MARGIN: f32 = 0.25;
const ANCHOR_MARGIN: f32 = 0.3;

/// One triplet: its hash, its anchor's frame and bin, and its span in frames.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Triplet {
    pub hash: u32,
    pub frame: u32,
    pub bin: f32,
    pub span: u32,
}

/// The continuous cell coordinates of a triplet's four quantities.
fn coordinates(a: Peak, b: Peak, c: Peak) -> [f32; 4] {
    let ratio = |x: f32| (x / a.bin).log2() * RATIO_CELLS_PER_OCTAVE + RATIO_CELLS_EACH_WAY as f32;
    [
        (a.bin / TRIPLET_MIN_BIN).log2() * ANCHOR_CELLS_PER_OCTAVE,
        ratio(b.bin),
        ratio(c.bin),
        (b.frame - a.frame) as f32 / (c.frame - a.frame) as f32 * TIME_CELLS,
    ]
}

/// Cell limits of each quantity, in the order of [`coordinates`].
const CELLS: [u32; 4] = [16, 64, 64, 8];

fn pack(cells: [u32; 4]) -> u32 {
    ((cells[0] * CELLS[1] + cells[1]) * CELLS[2] + cells[2]) * CELLS[3] + cells[3]
}

fn cell(x: f32, limit: u32) -> Option<u32> {
    (x >= 0.0 && x < limit as f32).then_some(x as u32)
}

/// The peaks a triplet may use: main band, above [`TRIPLET_MIN_BIN`].
fn usable(p: &Peak) -> bool {
    !is_low_bin(p.bin) && p.bin >= TRIPLET_MIN_BIN
}

/// Most peaks of one frame a triplet may use: the catalogue profile keeps a
/// peak only as the maximum of ±10 bins, so the main band's 213 bins hold at
/// most 20 per frame; a list with more is not the engine's (a forged blob),
/// and the rest of the frame is dropped.
const MAX_PEAKS_PER_FRAME: usize = 20;

/// Calls `f(a, b, c)` for the triplets of `peaks` (in time order) whose span
/// lies within `min_dt..=max_dt` frames; with `whole_bins`, as stores keep
/// catalogue peaks. Linear in the peaks: each anchor takes its first
/// [`TRIPLET_TARGETS`] later peaks, found from a cursor that only moves on.
fn each_triplet(
    peaks: &[Peak],
    min_dt: u32,
    max_dt: u32,
    whole_bins: bool,
    mut f: impl FnMut(Peak, Peak, Peak),
) {
    let mut kept: Vec<Peak> = Vec::with_capacity(peaks.len());
    let mut in_frame = 0;
    for p in peaks {
        let p = Peak {
            bin: if whole_bins { p.bin.round() } else { p.bin },
            ..*p
        };
        if !usable(&p) {
            continue;
        }
        in_frame = match kept.last() {
            Some(last) if last.frame == p.frame => in_frame + 1,
            _ => 1,
        };
        if in_frame <= MAX_PEAKS_PER_FRAME {
            kept.push(p);
        }
    }
    let peaks = kept;
    // First peak of a later frame than the anchor's.
    let mut later = 0;
    for (i, &a) in peaks.iter().enumerate() {
        later = later.max(i + 1);
        while later < peaks.len() && peaks[later].frame <= a.frame {
            later += 1;
        }
        let targets = &peaks[later..];
        // Saturating: a list out of time order makes odd triplets, never a
        // panic.
        let count = targets
            .iter()
            .take(TRIPLET_TARGETS)
            .take_while(|t| t.frame.saturating_sub(a.frame) <= max_dt)
            .count();
        let targets = &targets[..count];
        for (j, &b) in targets.iter().enumerate() {
            for &c in &targets[j + 1..] {
                if c.frame > b.frame && c.frame.saturating_sub(a.frame) >= min_dt {
                    f(a, b, c);
                }
            }
        }
    }
}

/// The catalogue's triplets of a track's peaks (in time order), from whole
/// bins: the store keeps no more, so a fresh index and one loaded from the
/// store hold the same triplets.
pub fn catalogue_triplets(peaks: &[Peak], out: &mut Vec<Triplet>) {
    each_triplet(peaks, TRIPLET_MIN_DT, TRIPLET_MAX_DT, true, |a, b, c| {
        let x = coordinates(a, b, c);
        let cells = [
            cell(x[0], CELLS[0]),
            cell(x[1], CELLS[1]),
            cell(x[2], CELLS[2]),
            cell(x[3], CELLS[3]),
        ];
        if let [Some(c0), Some(c1), Some(c2), Some(c3)] = cells {
            out.push(Triplet {
                hash: pack([c0, c1, c2, c3]),
                frame: a.frame,
                bin: a.bin,
                span: c.frame - a.frame,
            });
        }
    });
}

/// A query's triplets, each under every hash its catalogue twin may have
/// (see the margins): catalogue spans of up to [`TRIPLET_MAX_DT`] frames are
/// query spans of up to `1 / (1 - MAX_WARP)` times that.
///
/// Only the first [`MAX_QUERY_PEAKS`] peaks are used.
pub fn query_triplets(peaks: &[Peak], out: &mut Vec<Triplet>) {
    let peaks = &peaks[..peaks.len().min(MAX_QUERY_PEAKS)];
    let max_dt = (TRIPLET_MAX_DT as f32 / (1.0 - MAX_WARP)).ceil() as u32;
    let min_dt = (TRIPLET_MIN_DT as f32 / (1.0 + MAX_WARP)).floor() as u32;
    each_triplet(peaks, min_dt, max_dt, false, |a, b, c| {
        let x = coordinates(a, b, c);
        let margins = [ANCHOR_MARGIN, RATIO_MARGIN, RATIO_MARGIN, TIME_MARGIN];
        let mut options = [[u32::MAX; 2]; 4];
        for d in 0..4 {
            let Some(base) = cell(x[d], CELLS[d]) else {
                // Outside the cells, as the catalogue would be: perhaps just.
                let near = if x[d] < 0.0 { 0 } else { CELLS[d] - 1 };
                let edge = if x[d] < 0.0 {
                    -x[d]
                } else {
                    x[d] - CELLS[d] as f32
                };
                if edge >= margins[d] {
                    return;
                }
                options[d] = [near, u32::MAX];
                continue;
            };
            let frac = x[d] - base as f32;
            options[d][0] = base;
            if frac < margins[d] && base > 0 {
                options[d][1] = base - 1;
            } else if frac > 1.0 - margins[d] && base + 1 < CELLS[d] {
                options[d][1] = base + 1;
            }
        }
        for &c0 in options[0].iter().filter(|&&v| v != u32::MAX) {
            for &c1 in options[1].iter().filter(|&&v| v != u32::MAX) {
                for &c2 in options[2].iter().filter(|&&v| v != u32::MAX) {
                    for &c3 in options[3].iter().filter(|&&v| v != u32::MAX) {
                        out.push(Triplet {
                            hash: pack([c0, c1, c2, c3]),
                            frame: a.frame,
                            bin: a.bin,
                            span: c.frame - a.frame,
                        });
                    }
                }
            }
        }
    });
}

/// Catalogue triplets by hash: the anchor's global frame, and its bin and
/// the triplet's span packed into a `u16` (for the hit's warp estimate).
#[derive(Debug, Default)]
pub(crate) struct TripletIndex {
    offsets: Vec<u32>,
    frames: Vec<u32>,
    shapes: Vec<u16>,
}

/// One query triplet's catalogue twin: where, and under which warp.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TripletHit {
    /// Global frame of the catalogue anchor.
    pub global: u32,
    /// Query frame of the query anchor.
    pub frame: u32,
    /// Query anchor frequency over catalogue anchor frequency.
    pub freq: f32,
}

impl TripletIndex {
    /// From entries sorted into buckets: `frames` and `shapes` (see
    /// [`entry`]) in the order of `offsets`.
    pub(crate) fn from_sorted(offsets: Vec<u32>, frames: Vec<u32>, shapes: Vec<u16>) -> Self {
        Self {
            offsets,
            frames,
            shapes,
        }
    }

    /// Counting sort of `(hash, global frame, bin, span)` entries (the
    /// index's builder sorts its own as it makes them).
    #[cfg(test)]
    pub(crate) fn build(entries: &[(u32, u32, u16)]) -> Self {
        let mut counts = BucketCounts::new(1 << TRIPLET_BITS);
        for e in entries {
            counts.add(e.0);
        }
        let (offsets, mut cursor) = counts.into_offsets();
        let mut frames = vec![0u32; entries.len()];
        let mut shapes = vec![0u16; entries.len()];
        for &(hash, frame, shape) in entries {
            let slot = &mut cursor[hash as usize];
            frames[*slot as usize] = frame;
            shapes[*slot as usize] = shape;
            *slot += 1;
        }
        Self::from_sorted(offsets, frames, shapes)
    }

    /// Bytes held.
    pub(crate) fn bytes(&self) -> usize {
        4 * (self.offsets.len() + self.frames.len()) + 2 * self.shapes.len()
    }

    /// Number of triplets held.
    pub(crate) fn len(&self) -> usize {
        self.frames.len()
    }
}

/// The catalogue twins of `query`'s triplets in `tables` (an index's parts)
/// whose warp is within [`MAX_WARP`] (with room for the catalogue's
/// rounding: ±15% in frequency, ±20% in time) and whose anchor `live` keeps
/// (a removed track's do not count), into `out`, at most about
/// [`MAX_TRIPLET_HITS`]: query triplet by query triplet, each in every
/// table, so that a full list favours no part.
pub(crate) fn hits(
    tables: &[&TripletIndex],
    query: &[Triplet],
    live: impl Fn(u32) -> bool,
    out: &mut Vec<TripletHit>,
) {
    out.clear();
    let (lo, hi) = (1.0 - MAX_WARP - 0.05, 1.0 + MAX_WARP + 0.05);
    for t in query {
        if out.len() >= MAX_TRIPLET_HITS {
            break;
        }
        let h = t.hash as usize;
        for table in tables {
            let (from, to) = (table.offsets[h] as usize, table.offsets[h + 1] as usize);
            for (&global, &shape) in table.frames[from..to].iter().zip(&table.shapes[from..to]) {
                let (bin, span) = (f32::from(shape >> 8), f32::from(shape & 0xff));
                let freq = t.bin / bin;
                let time = span / t.span as f32;
                if freq > lo && freq < hi && time > lo - 0.05 && time < hi + 0.05 && live(global) {
                    out.push(TripletHit {
                        global,
                        frame: t.frame,
                        freq,
                    });
                }
            }
        }
    }
}

/// A catalogue triplet's entry for [`TripletIndex::build`], its anchor placed
/// at global frame `global`.
pub(crate) fn entry(t: &Triplet, global: u32) -> (u32, u32, u16) {
    let bin = t.bin.round().clamp(0.0, 255.0) as u16;
    (t.hash, global, (bin << 8) | t.span.min(255) as u16)
}

/// Tempo factors the Hough transform tries, from `1 - MAX_WARP` up.
const TEMPO_STEP: f32 = 0.004;

/// Hits within this many frames of each other agree on an offset.
const OFFSET_SLACK: i64 = 2;

/// The warp and alignment the hits of one track agree on most: for each
/// tempo factor of a grid, the offsets `global - frame * tempo` of agreeing
/// hits coincide; the frequency factor is the median of the agreeing hits'.
/// Returns `(agreeing hits, warp)`.
fn best_warp(hits: &[TripletHit], scratch: &mut Vec<(i64, f32)>) -> (usize, Warp) {
    let mut best = (0, Warp::NONE, 0i64);
    let steps = (2.0 * MAX_WARP / TEMPO_STEP).round() as i32;
    for k in 0..=steps {
        let tempo = 1.0 - MAX_WARP + k as f32 * TEMPO_STEP;
        scratch.clear();
        scratch.extend(hits.iter().map(|h| {
            (
                i64::from(h.global) - (h.frame as f32 * tempo).round() as i64,
                h.freq,
            )
        }));
        scratch.sort_unstable_by_key(|x| x.0);
        let mut from = 0;
        for to in 0..scratch.len() {
            while scratch[to].0 - scratch[from].0 > 2 * OFFSET_SLACK {
                from += 1;
            }
            if to + 1 - from > best.0 {
                best = (
                    to + 1 - from,
                    Warp {
                        time: tempo,
                        freq: 1.0,
                    },
                    scratch[from].0,
                );
            }
        }
    }
    if best.0 == 0 {
        return (0, Warp::NONE);
    }
    let (count, warp, offset) = best;
    let mut freqs: Vec<f32> = hits
        .iter()
        .filter(|h| {
            let o = i64::from(h.global) - (h.frame as f32 * warp.time).round() as i64;
            (offset..=offset + 2 * OFFSET_SLACK).contains(&o)
        })
        .map(|h| h.freq)
        .collect();
    freqs.sort_unstable_by(f32::total_cmp);
    let freq = freqs.get(freqs.len() / 2).copied().unwrap_or(1.0);
    (
        count,
        Warp {
            time: warp.time,
            freq,
        },
    )
}

/// Fewest hits agreeing on a warp for it to be proposed.
const MIN_AGREEING: usize = 4;

/// Windows of offsets whose hits are searched for a warp: those with the
/// most hits.
const HOUGH_WINDOWS: usize = 8;

/// A coarse offset spans `1 << COARSE_OFFSET_BITS` frames (2 s); a window,
/// two coarse offsets. Tracks start on the timeline at a multiple of it
/// ([`TRACK_ALIGN_FRAMES`]), so the cells fall at the same places of a
/// track whatever the index's layout.
const COARSE_OFFSET_BITS: u32 = 7;

/// Track starts on the global timeline are multiples of this.
pub(crate) const TRACK_ALIGN_FRAMES: u32 = 1 << COARSE_OFFSET_BITS;

/// The warps `hits` agree on, in `out` as `(agreeing hits, warp)`, one per
/// window of offsets searched (unsorted; `hits` is reordered).
///
/// A true alignment piles its hits into a few hundred frames of
/// `global - frame` (a tempo of ±10% drifts a 10 s query's offsets by 62
/// frames); chance hits spread over every track's length. So the Hough
/// transform ([`best_warp`]) looks only at the densest windows of two
/// coarse offsets, not at the tracks with the most hits (long tracks collect
/// the most chance ones).
pub(crate) fn proposals(
    hits: &mut [TripletHit],
    scratch: &mut Vec<(i64, f32)>,
    out: &mut Vec<(usize, Warp)>,
) {
    out.clear();
    let coarse = |h: &TripletHit| (h.global - h.frame.min(h.global)) >> COARSE_OFFSET_BITS;
    hits.sort_unstable_by_key(coarse);
    // Runs of one coarse offset, as (offset, from, to).
    let mut runs: Vec<(u32, usize, usize)> = Vec::new();
    for (i, h) in hits.iter().enumerate() {
        let key = coarse(h);
        match runs.last_mut() {
            Some(run) if run.0 == key => run.2 = i + 1,
            _ => runs.push((key, i, i + 1)),
        }
    }
    let mut windows: Vec<(usize, usize)> = runs
        .iter()
        .enumerate()
        .map(|(i, &(key, from, to))| match runs.get(i + 1) {
            Some(&(next, _, end)) if next == key + 1 => (from, end),
            _ => (from, to),
        })
        .filter(|&(from, to)| to - from >= MIN_AGREEING)
        .collect();
    // Stable: between equal windows, the earlier track's comes first.
    windows.sort_by_key(|&(from, to)| std::cmp::Reverse(to - from));
    let mut taken: Vec<(usize, usize)> = Vec::with_capacity(HOUGH_WINDOWS);
    for (from, to) in windows {
        if taken.len() == HOUGH_WINDOWS {
            break;
        }
        if taken.iter().any(|&(a, b)| from < b && a < to) {
            continue;
        }
        taken.push((from, to));
        let (count, warp) = best_warp(&hits[from..to], scratch);
        if count >= MIN_AGREEING {
            out.push((count, warp));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn constellation(raw: &[(u32, f32)]) -> Vec<Peak> {
        let mut peaks: Vec<Peak> = raw
            .iter()
            .map(|&(frame, bin)| Peak { frame, bin })
            .collect();
        peaks.sort_by(|a, b| a.frame.cmp(&b.frame).then(a.bin.total_cmp(&b.bin)));
        peaks.dedup_by_key(|p| p.frame);
        peaks
    }

    fn warped(peaks: &[Peak], warp: Warp) -> Vec<Peak> {
        peaks
            .iter()
            .map(|p| Peak {
                frame: (p.frame as f32 / warp.time).round() as u32,
                bin: p.bin * warp.freq,
            })
            .collect()
    }

    proptest! {
        /// The invariance itself: a constellation sped up, slowed down,
        /// key-locked or key-shifted makes query triplets among which every
        /// catalogue triplet's hash is found, as long as frames do not
        /// collide.
        #[test]
        fn a_warped_constellation_keeps_its_triplet_hashes(
            raw in prop::collection::vec((0u32..200, 14f32..190.0), 80..160),
            time in 0.92f32..1.08,
            freq in 0.943f32..1.06,
        ) {
            // One peak per 12 frames at most, so that rounding never swaps or
            // merges two peaks' frames.
            let raw: Vec<(u32, f32)> = raw.iter().map(|&(f, b)| (f * 12, b)).collect();
            let peaks = constellation(&raw);
            prop_assume!(peaks.len() >= 50);
            let warp = Warp { time, freq };
            let query = warped(&peaks, warp);
            let (mut cat, mut q) = (Vec::new(), Vec::new());
            catalogue_triplets(&peaks, &mut cat);
            query_triplets(&query, &mut q);
            // A case of few triplets would prove little.
            prop_assume!(cat.len() >= 100);
            let found: std::collections::HashSet<u32> = q.iter().map(|t| t.hash).collect();
            let kept = cat.iter().filter(|t| found.contains(&t.hash)).count();
            // Integer catalogue bins and frames: a few edge cases slip.
            prop_assert!(kept * 10 >= cat.len() * 9, "{} of {}", kept, cat.len());
        }
    }

    #[test]
    fn the_hough_transform_finds_tempo_and_pitch() {
        let raw: Vec<(u32, f32)> = (0..400u32)
            .map(|i| (i * 9 + (i * 7919) % 5, 20.0 + ((i * 104_729) % 170) as f32))
            .collect();
        let peaks = constellation(&raw);
        for warp in [
            Warp::speed(1.08),
            Warp {
                time: 0.92,
                freq: 1.0,
            },
            Warp {
                time: 1.0,
                freq: 1.0595,
            },
        ] {
            let query = warped(&peaks, warp);
            let (mut cat, mut q) = (Vec::new(), Vec::new());
            catalogue_triplets(&peaks, &mut cat);
            let entries: Vec<_> = cat.iter().map(|t| entry(t, t.frame + 5000)).collect();
            let index = TripletIndex::build(&entries);
            query_triplets(&query, &mut q);
            let mut found_hits = Vec::new();
            hits(&[&index], &q, |_| true, &mut found_hits);
            let mut found = Vec::new();
            proposals(&mut found_hits, &mut Vec::new(), &mut found);
            let &(count, found) = found.iter().max_by_key(|p| p.0).expect("a proposal");
            assert!(count > 100, "{warp:?}: {count} agreeing hits");
            assert!(
                (found.time - warp.time).abs() < 0.005,
                "{warp:?}: {found:?}"
            );
            assert!(
                (found.freq - warp.freq).abs() < 0.005,
                "{warp:?}: {found:?}"
            );
        }
    }

    #[test]
    fn a_forged_list_is_cut_to_the_engines_density() {
        let bin = |i: u32| 20.0 + ((i * 104_729) % 170) as f32;
        // A frame with a peak in every bin, then four lone peaks: every
        // anchor of the crowded frame would make six triplets.
        let mut crowded: Vec<Peak> = (12..218)
            .map(|b| Peak {
                frame: 0,
                bin: b as f32,
            })
            .collect();
        crowded.extend((1..=4).map(|i| Peak {
            frame: 10 * i,
            bin: bin(i),
        }));
        let mut q = Vec::new();
        query_triplets(&crowded, &mut q);
        let anchors: std::collections::HashSet<u32> = q
            .iter()
            .filter(|t| t.frame == 0)
            .map(|t| t.bin.to_bits())
            .collect();
        assert_eq!(anchors.len(), MAX_PEAKS_PER_FRAME);
        // A list far longer than a query: only its first peaks are anchors.
        let long: Vec<Peak> = (0..20_000u32)
            .map(|i| Peak {
                frame: 3 * i,
                bin: bin(i),
            })
            .collect();
        q.clear();
        query_triplets(&long, &mut q);
        let last = q.iter().map(|t| t.frame).max().expect("triplets");
        assert!(last > 3 * (MAX_QUERY_PEAKS as u32 - 10), "{last}");
        assert!(last < 3 * MAX_QUERY_PEAKS as u32, "{last}");
    }
}
