//! The engine's fixed analysis parameters and the tunable peak profiles.
//!
//! Everything that must agree between the catalogue and the queries lives
//! here: the analysis rate, the STFT geometry, the frequency band, and the
//! hash layout. The crate docs explain how each value was chosen.

/// Internal sample rate in Hz. 8 kHz keeps the whole telephone band
/// (300-3400 Hz) with room for the resampler's transition band, and makes the
/// STFT four to five times cheaper than at CD rates.
pub const SAMPLE_RATE: u32 = 8_000;

/// STFT window length in samples (64 ms, 15.6 Hz bins).
pub const FFT_SIZE: usize = 512;

/// STFT hop in samples (16 ms): the time resolution of peaks, offsets and hashes.
pub const HOP: usize = 128;

/// Seconds per STFT frame.
pub const FRAME_SECONDS: f64 = HOP as f64 / SAMPLE_RATE as f64;

/// Lowest FFT bin a peak may sit in (78 Hz). Much music has most of its
/// energy in the bass, and there it stands above broadband noise when the
/// rest of the band does not: moving this edge down from 312 Hz raised recall
/// on 10 s clips in pink noise from 88.1% to 92.5% at 0 dB SNR (95.6 to 96.5%
/// at 5 dB) on the development corpus, at the same threshold. A telephone channel loses the peaks below
/// 300 Hz; its clips keep enough above (still 100% recall).
pub const BAND_LO: usize = 5;

/// One past the highest FFT bin a peak may sit in (3.4 kHz, telephone band edge).
pub const BAND_HI: usize = 218;

/// Bits of a hash: 9 for the anchor's frequency (both bands' bins, see
/// [`BIN_LIMIT`]), 7 for the frequency step to the target, 6 for the time step.
pub const HASH_BITS: u32 = 22;

/// Largest frequency step (in bins) between an anchor and its targets.
pub const PAIR_MAX_DF: i32 = 63;

/// Smallest and largest time step (in frames) between an anchor and its targets.
pub const PAIR_MIN_DT: u32 = 1;
/// See [`PAIR_MIN_DT`].
pub const PAIR_MAX_DT: u32 = 63;

/// Rate of the low band's analysis in Hz: the 8 kHz signal resampled once more.
pub const LOW_SAMPLE_RATE: u32 = 1_000;

/// The low band's STFT window (256 ms, 3.9 Hz bins): fine enough to tell bass
/// notes apart, which the main band's 15.6 Hz bins cannot below 150 Hz.
pub const LOW_FFT_SIZE: usize = 256;

/// The low band's hop: 16 ms, the same frame grid as the main band.
pub const LOW_HOP: usize = 16;

/// Lowest and one past the highest low-band bin a peak may sit in (20-301 Hz).
/// The band overlaps the main band's lowest 15 bins on purpose: a bass line
/// between 150 and 300 Hz is resolved to a quarter tone here and not there.
/// On the development corpus (10 s clips in pink noise, recall at 5 / 0 dB
/// SNR, no never-indexed query answered in any row):
///
/// | low band | peaks per second, catalogue / query | 5 dB | 0 dB |
/// | --- | --- | --- | --- |
/// | 20-148 Hz | 8 / 20 | 97.3% | 96.9% |
/// | 20-301 Hz | 8 / 20 | 97.8% | 98.2% |
/// | 20-301 Hz | 12 / 30 | 98.2% | 98.2% |
/// | 20-301 Hz | 16 / 40 | 98.7% | 98.2% |
pub const LOW_BAND_LO: usize = 5;
/// See [`LOW_BAND_LO`].
pub const LOW_BAND_HI: usize = 77;

/// Low-band peaks are numbered after the main band: low bin `b` is peak bin
/// `LOW_BIN_BASE + b`, so that one peak list, one hash layout and one packed
/// form carry both bands. (Main-band bins end at [`BAND_HI`]; the gap keeps a
/// fractional main bin from touching the low band.)
pub const LOW_BIN_BASE: usize = BAND_HI + 2 - LOW_BAND_LO;

/// One past the largest whole bin a peak or its neighbour can have: the top
/// of the low band, plus one for rounding and one for the neighbour.
pub const BIN_LIMIT: usize = LOW_BIN_BASE + LOW_BAND_HI + 2;

const _: () = assert!(BIN_LIMIT - BAND_LO <= 1 << (HASH_BITS - 13));

/// Frames by which a low-band frame trails the main-band frame centred on the
/// same instant: the windows are centred 128 ms and 32 ms after their start.
pub const LOW_LAG_FRAMES: u32 = ((LOW_FFT_SIZE / 2) as u32 * SAMPLE_RATE / LOW_SAMPLE_RATE
    - (FFT_SIZE / 2) as u32)
    / HOP as u32;

/// The whole bins a band's peaks may sit in, in the peak numbering (the low
/// band's after [`LOW_BIN_BASE`]).
pub fn band_bins(low: bool) -> std::ops::Range<usize> {
    if low {
        LOW_BIN_BASE + LOW_BAND_LO..LOW_BIN_BASE + LOW_BAND_HI
    } else {
        BAND_LO..BAND_HI
    }
}

/// True when a peak bin (as emitted, before any warping) is in the low band.
pub fn is_low_bin(bin: f32) -> bool {
    bin >= (LOW_BIN_BASE + LOW_BAND_LO) as f32 - 0.5
}

/// How densely peaks are picked in one band.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BandProfile {
    /// A peak is the maximum of `±time_radius` frames around it ...
    pub time_radius: usize,
    /// ... and of `±freq_radius` bins around it.
    pub freq_radius: usize,
    /// At most this many peaks per second are kept (the strongest).
    pub max_per_second: f32,
}

/// How densely peaks are picked, per band. The catalogue uses a sparse
/// profile (small index); queries use a denser one, so that the catalogue's
/// peaks survive in a noisy query even when noise adds peaks of its own.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PeakProfile {
    /// The main band, 78-3400 Hz.
    pub main: BandProfile,
    /// The low band, 20-301 Hz.
    pub low: BandProfile,
    /// Low-band peaks are kept only where the main band's local spectral
    /// flatness is above this (see [`crate::gate`]); `None` keeps them all.
    pub low_gate: Option<f32>,
}

impl PeakProfile {
    /// The catalogue's profile.
    pub const CATALOGUE: PeakProfile = PeakProfile {
        main: BandProfile {
            time_radius: 8,
            freq_radius: 10,
            max_per_second: 24.0,
        },
        low: BandProfile {
            time_radius: 8,
            freq_radius: 4,
            max_per_second: 16.0,
        },
        low_gate: None,
    };

    /// The queries' profile: every catalogue peak is also a query peak when the
    /// audio is the same, because a maximum over a large neighbourhood is also
    /// one over a smaller neighbourhood.
    pub const QUERY: PeakProfile = PeakProfile {
        main: BandProfile {
            time_radius: 5,
            freq_radius: 6,
            max_per_second: 60.0,
        },
        low: BandProfile {
            time_radius: 5,
            freq_radius: 2,
            max_per_second: 40.0,
        },
        low_gate: Some(-0.8),
    };
}

/// Targets paired with each anchor in the catalogue (the query pairs every
/// anchor with all peaks in its target zone, up to
/// [`QUERY_MAX_PAIRS_PER_ANCHOR`], so the catalogue's pairs are a subset of
/// the query's).
pub const CATALOGUE_FAN_OUT: usize = 5;

/// Most targets a query anchor is paired with (the first in time order).
///
/// A zone spans 63 frames after its anchor, which touch at most 4 of the
/// peak picker's 32-frame blocks even at 3% slow, and a block keeps at most
/// 31 main-band or 20 low-band peaks of the query profile: no query the
/// engine fingerprints can put more than 124 targets in a zone, so this cap
/// changes nothing for them. It bounds what a forged peak list costs:
/// without it, every peak of a dense sample fingerprint pairs with every
/// peak in reach. (Measured, `examples/density.rs`: over 1.18 million
/// anchors of synthetic music, clean and in white noise down to -5 dB SNR,
/// and of pure noise, at all 13 speeds the matcher tries, the largest zone
/// held 50 targets; none reached the cap.)
pub const QUERY_MAX_PAIRS_PER_ANCHOR: usize = 128;
