//! Peak pairs ("landmarks"): the hashes the index is keyed by.
//!
//! Each anchor peak is paired with later peaks in its target zone (up to
//! [`PAIR_MAX_DT`] frames ahead, within [`PAIR_MAX_DF`] bins). A hash packs the
//! anchor's band-relative bin, the frequency step and the time step into
//! [`HASH_BITS`] bits; the anchor's frame travels beside it.
//!
//! Speed changes (a radio playing 2% fast) scale every frequency up and every
//! time step down by the same factor. A query is therefore hashed once per
//! speed hypothesis after *warping* its peaks back (`bin / speed`,
//! `frame * speed`): the peak positions are the same physical features, so
//! no new spectrogram is needed. A [`Warp`] scales time and frequency
//! separately: a DJ's key-lock changes the tempo alone, a key shift the
//! pitch alone.

use crate::params::{
    BAND_LO, HASH_BITS, LOW_BIN_BASE, PAIR_MAX_DF, PAIR_MAX_DT, PAIR_MIN_DT,
    QUERY_MAX_PAIRS_PER_ANCHOR, band_bins, is_low_bin,
};
use crate::peaks::Peak;

/// A hash and the frame of its anchor peak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Landmark {
    /// The packed hash, below `1 << HASH_BITS`.
    pub hash: u32,
    /// Frame of the anchor peak.
    pub frame: u32,
}

/// How a query's audio relates to the track's: `time` track frames pass per
/// query frame (1.02: the query plays 2% fast), and its frequencies are
/// `freq` times the track's (1.0595: a semitone up). A turntable played fast
/// changes both alike; a key-lock changes `time` alone, a key shift `freq`
/// alone.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Warp {
    /// Track frames per query frame.
    pub time: f32,
    /// Query frequency over track frequency.
    pub freq: f32,
}

impl Warp {
    /// As indexed.
    pub const NONE: Warp = Warp {
        time: 1.0,
        freq: 1.0,
    };

    /// Pitch and tempo together, as a turntable or a resampling radio.
    pub fn speed(speed: f32) -> Self {
        Self {
            time: speed,
            freq: speed,
        }
    }

    /// True when time and frequency scale alike.
    pub fn is_speed(self) -> bool {
        self.time == self.freq
    }
}

impl From<f32> for Warp {
    fn from(speed: f32) -> Self {
        Self::speed(speed)
    }
}

/// A peak's bin as it would be in the track, for a query whose frequencies
/// are `freq` times the track's: each band's frequencies scale about its own
/// zero.
pub(crate) fn warp_bin(bin: f32, freq: f32) -> f32 {
    if is_low_bin(bin) {
        LOW_BIN_BASE as f32 + (bin - LOW_BIN_BASE as f32) / freq
    } else {
        bin / freq
    }
}

/// Time and frequency of a peak, quantised, on the analysis grid.
#[derive(Debug, Clone, Copy)]
struct GridPeak {
    frame: i64,
    bin: i32,
    low: bool,
}

impl GridPeak {
    fn new(frame: i64, bin: f32, freq: f32) -> Self {
        Self {
            frame,
            bin: warp_bin(bin, freq).round() as i32,
            low: is_low_bin(bin),
        }
    }

    /// Whether the peak may anchor a pair: inside its band.
    fn in_band(self) -> bool {
        usize::try_from(self.bin).is_ok_and(|b| band_bins(self.low).contains(&b))
    }
}

/// Pairs never cross bands: the low band's frames lag and its bins are
/// spaced differently, so a cross pair would describe no physical interval.
fn pack(anchor: GridPeak, target: GridPeak) -> Option<u32> {
    let df = target.bin - anchor.bin;
    let dt = target.frame - anchor.frame;
    if dt < i64::from(PAIR_MIN_DT) || dt > i64::from(PAIR_MAX_DT) || df.abs() > PAIR_MAX_DF {
        return None;
    }
    if anchor.low != target.low || !anchor.in_band() {
        return None;
    }
    let f1 = (anchor.bin - BAND_LO as i32) as u32;
    let df = (df + PAIR_MAX_DF) as u32;
    let hash = (f1 << 13) | (df << 6) | dt as u32;
    debug_assert!(hash < 1 << HASH_BITS);
    Some(hash)
}

/// Catalogue landmarks: each anchor paired with its first `fan_out` targets.
/// `peaks` must be in time order (as the picker emits them).
pub fn catalogue_landmarks(peaks: &[Peak], fan_out: usize, out: &mut Vec<Landmark>) {
    let grid: Vec<GridPeak> = peaks
        .iter()
        .map(|p| GridPeak::new(i64::from(p.frame), p.bin, 1.0))
        .collect();
    pair_up(&grid, fan_out, out);
}

/// Query landmarks under a warp hypothesis (a speed `s` > 1: the query plays
/// fast). Every anchor is paired with the targets in its zone, the first
/// [`QUERY_MAX_PAIRS_PER_ANCHOR`] of them in time order: more than the
/// engine's own peaks can put in a zone, so only a forged peak list is cut.
pub fn query_landmarks(peaks: &[Peak], warp: impl Into<Warp>, out: &mut Vec<Landmark>) {
    pair_up(
        &query_grid(peaks, warp.into()),
        QUERY_MAX_PAIRS_PER_ANCHOR,
        out,
    );
}

fn query_grid(peaks: &[Peak], warp: Warp) -> Vec<GridPeak> {
    peaks
        .iter()
        .map(|p| {
            GridPeak::new(
                (p.frame as f32 * warp.time).round() as i64,
                p.bin,
                warp.freq,
            )
        })
        .collect()
}

/// How many targets each anchor of a query has in its zone under a speed
/// hypothesis, before the [`QUERY_MAX_PAIRS_PER_ANCHOR`] cap (one count per
/// peak that may anchor a pair): what the cap is measured against.
pub fn query_zone_sizes(peaks: &[Peak], warp: impl Into<Warp>) -> Vec<usize> {
    let grid = query_grid(peaks, warp.into());
    let mut sizes = Vec::with_capacity(grid.len());
    let mut one = Vec::new();
    for i in 0..grid.len() {
        one.clear();
        // Only anchor `i`'s pairs: pair it with the peaks after it.
        let zone_end = grid[i..]
            .iter()
            .position(|t| t.frame - grid[i].frame > i64::from(PAIR_MAX_DT))
            .map_or(grid.len(), |n| i + n);
        pair_up_anchor(grid[i], &grid[i + 1..zone_end], usize::MAX, &mut one);
        if grid[i].in_band() {
            sizes.push(one.len());
        }
    }
    sizes
}

fn pair_up(grid: &[GridPeak], fan_out: usize, out: &mut Vec<Landmark>) {
    for (i, &anchor) in grid.iter().enumerate() {
        pair_up_anchor(anchor, &grid[i + 1..], fan_out, out);
    }
}

/// Pairs `anchor` with the first `fan_out` of the `later` peaks in its zone.
fn pair_up_anchor(anchor: GridPeak, later: &[GridPeak], fan_out: usize, out: &mut Vec<Landmark>) {
    let mut paired = 0;
    for &target in later {
        if target.frame - anchor.frame > i64::from(PAIR_MAX_DT) {
            break;
        }
        if let Some(hash) = pack(anchor, target) {
            out.push(Landmark {
                hash,
                frame: anchor.frame.max(0) as u32,
            });
            paired += 1;
            if paired == fan_out {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn peaks(raw: &[(u32, f32)]) -> Vec<Peak> {
        raw.iter()
            .map(|&(frame, bin)| Peak { frame, bin })
            .collect()
    }

    proptest! {
        #[test]
        fn a_time_shift_moves_landmarks_but_keeps_their_hashes(
            raw in prop::collection::vec((0u32..2000, 20f32..217.0), 1..200),
            shift in 0u32..100_000,
        ) {
            let mut raw = raw;
            raw.sort_by_key(|p| p.0);
            let original = peaks(&raw);
            let shifted: Vec<Peak> = original.iter().map(|p| Peak { frame: p.frame + shift, ..*p }).collect();
            let (mut a, mut b) = (Vec::new(), Vec::new());
            catalogue_landmarks(&original, 5, &mut a);
            catalogue_landmarks(&shifted, 5, &mut b);
            prop_assert_eq!(a.len(), b.len());
            for (x, y) in a.iter().zip(&b) {
                prop_assert_eq!(x.hash, y.hash);
                prop_assert_eq!(x.frame + shift, y.frame);
            }
        }

        #[test]
        fn catalogue_pairs_are_a_subset_of_query_pairs(
            raw in prop::collection::vec((0u32..500, 20f32..217.0), 1..100),
        ) {
            let mut raw = raw;
            raw.sort_by_key(|p| p.0);
            let p = peaks(&raw);
            let (mut cat, mut query) = (Vec::new(), Vec::new());
            catalogue_landmarks(&p, 5, &mut cat);
            query_landmarks(&p, 1.0, &mut query);
            let query: std::collections::HashSet<_> = query.into_iter().collect();
            prop_assert!(cat.iter().all(|l| query.contains(l)));
        }
    }

    proptest! {
        #[test]
        fn pairs_never_cross_bands(
            main in prop::collection::vec((0u32..300, 5f32..217.0), 0..60),
            low in prop::collection::vec((0u32..300, 5f32..37.0), 0..30),
        ) {
            let shift = |raw: &[(u32, f32)], base: usize| {
                let mut v: Vec<Peak> = raw.iter().map(|&(frame, bin)| Peak { frame, bin: bin + base as f32 }).collect();
                v.sort_by_key(|p| p.frame);
                v
            };
            let (main, low) = (shift(&main, 0), shift(&low, LOW_BIN_BASE));
            let mut both: Vec<Peak> = main.iter().chain(&low).copied().collect();
            both.sort_by_key(|p| p.frame);
            let landmarks = |peaks: &[Peak]| {
                let mut out = Vec::new();
                query_landmarks(peaks, 1.0, &mut out);
                out.sort_unstable();
                out
            };
            let mut separate = landmarks(&main);
            separate.extend(landmarks(&low));
            separate.sort_unstable();
            prop_assert_eq!(landmarks(&both), separate);
        }
    }

    #[test]
    fn the_pair_cap_cuts_forged_zones_and_never_the_engines() {
        use crate::params::{PAIR_MAX_DT, QUERY_MAX_PAIRS_PER_ANCHOR};
        // White noise: the query profile's densest output.
        let clip = crate::Clip {
            sample_rate: 8_000,
            samples: crate::synth::white_noise(9, 8_000 * 20),
        };
        let noise = crate::fingerprint_clip(&clip, crate::PeakProfile::QUERY);
        for speed in [0.97, 1.0, 1.03] {
            let zones = query_zone_sizes(&noise, speed);
            assert!(zones.iter().all(|&z| z < QUERY_MAX_PAIRS_PER_ANCHOR));
            let mut out = Vec::new();
            query_landmarks(&noise, speed, &mut out);
            assert_eq!(out.len(), zones.iter().sum::<usize>());
        }
        // 64 peaks in each of 20 frames within 63 bins: hundreds of targets
        // per anchor, each cut to the cap.
        let forged: Vec<Peak> = (0..20 * 64)
            .map(|i| Peak {
                frame: (i / 64) as u32,
                bin: 60.0 + (i % 64) as f32 * 0.9,
            })
            .collect();
        let zones = query_zone_sizes(&forged, 1.0);
        assert!(zones[0] > 1000 && PAIR_MAX_DT > 20, "{}", zones[0]);
        let mut out = Vec::new();
        query_landmarks(&forged, 1.0, &mut out);
        let capped: usize = zones
            .iter()
            .map(|&z| z.min(QUERY_MAX_PAIRS_PER_ANCHOR))
            .sum();
        assert_eq!(out.len(), capped);
        assert!(out.len() <= forged.len() * QUERY_MAX_PAIRS_PER_ANCHOR);
    }

    #[test]
    fn each_band_is_warped_about_its_own_zero() {
        let low = (LOW_BIN_BASE + 20) as f32;
        let fast = LOW_BIN_BASE as f32 + 20.0 * 1.02;
        assert!((warp_bin(fast, 1.02) - low).abs() < 1e-4);
        assert!((warp_bin(102.0, 1.02) - 100.0).abs() < 1e-4);
    }

    #[test]
    fn warping_undoes_a_speed_change() {
        let original = peaks(&[(100, 60.0), (110, 80.0), (130, 70.0)]);
        let fast: Vec<Peak> = original
            .iter()
            .map(|p| Peak {
                frame: (p.frame as f32 / 1.02).round() as u32,
                bin: p.bin * 1.02,
            })
            .collect();
        let (mut a, mut b, mut naive) = (Vec::new(), Vec::new(), Vec::new());
        query_landmarks(&original, 1.0, &mut a);
        query_landmarks(&fast, 1.02, &mut b);
        query_landmarks(&fast, 1.0, &mut naive);
        let hashes = |v: &[Landmark]| v.iter().map(|l| l.hash).collect::<Vec<_>>();
        assert_eq!(hashes(&a), hashes(&b));
        assert!(hashes(&a).iter().all(|h| !hashes(&naive).contains(h)));
    }
}
