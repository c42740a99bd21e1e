//! Spectral peak picking: the sparse constellation that the hashes are built on.
//!
//! A peak is a bin that is the maximum of a rectangle of the log-power
//! spectrogram around it (`±time_radius` frames, `±freq_radius` bins),
//! restricted to the telephone band. Per half-second block only the loudest
//! peaks are kept: loud components are the ones that additive noise leaves in
//! place. (Ranking by height above the surrounding bins' mean instead, which
//! favours tonal peaks over loud broad ones, was measured to lose 2 points of
//! recall under pink noise.) Frequencies are refined to a fraction of a bin by
//! parabolic interpolation; queries need that precision to undo speed changes.

use crate::params::{
    BAND_HI, BAND_LO, BandProfile, LOW_BAND_HI, LOW_BAND_LO, LOW_BIN_BASE, LOW_LAG_FRAMES,
};

/// A spectral peak: STFT frame and (fractional) FFT bin.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Peak {
    /// Frame index from the start of the stream.
    pub frame: u32,
    /// Frequency in FFT bins, refined to a fraction of a bin.
    pub bin: f32,
}

/// Which spectrogram a picker reads and how it numbers the peaks it finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Band {
    /// Bins of each spectrogram frame the picker reads: the band and enough
    /// above it for the widest neighbourhood (the rest is never computed).
    pub bins: usize,
    /// Lowest bin a peak may sit in (at least 1) ...
    pub lo: usize,
    /// ... and one past the highest (below `bins`).
    pub hi: usize,
    /// Added to a peak's bin: where the band sits in the peak numbering.
    pub bin_base: usize,
    /// Added to a peak's frame: aligns the band's frames with the main band's.
    pub frame_lag: u32,
}

impl Band {
    /// The main band: 78-3400 Hz of the 512-point spectrogram at 8 kHz.
    pub const MAIN: Band = Band {
        bins: BAND_HI + 12,
        lo: BAND_LO,
        hi: BAND_HI,
        bin_base: 0,
        frame_lag: 0,
    };

    /// The low band: 20-301 Hz of the 256-point spectrogram at 1 kHz.
    pub const LOW: Band = Band {
        bins: LOW_BAND_HI + 6,
        lo: LOW_BAND_LO,
        hi: LOW_BAND_HI,
        bin_base: LOW_BIN_BASE,
        frame_lag: LOW_LAG_FRAMES,
    };
}

/// Frames per density block (0.512 s).
const BLOCK_FRAMES: u32 = 32;

/// Log power below which nothing is a peak: about 80 dB under a full-scale
/// sine. Keeps silence and dither from producing constellations.
const MIN_LOG_POWER: f32 = -9.0;

/// Picks peaks from a stream of log-power frames with bounded memory
/// (`2 * time_radius + 1` frames plus one density block of peaks).
#[derive(Debug)]
pub struct PeakPicker {
    profile: BandProfile,
    band: Band,
    keep_per_block: usize,
    mags: Vec<Vec<f32>>,
    fmax: Vec<Vec<f32>>,
    pushed: u32,
    next_center: u32,
    block: u32,
    candidates: Vec<(f32, Peak)>,
    scratch: SlidingMax,
    /// Ring slots of the frames around the one examined, and whether each
    /// comes before it.
    neighbours: Vec<(usize, bool)>,
}

/// Buffers of [`sliding_max`].
#[derive(Debug, Default)]
struct SlidingMax {
    padded: Vec<f32>,
    prefix: Vec<f32>,
    suffix: Vec<f32>,
}

/// `out[i]` = the maximum of `x[i - r..=i + r]` (clipped to `x`), in three
/// passes whatever `r` (van Herk / Gil-Werman): the input, padded with `r`
/// minus infinities each side, is cut into blocks of `2r + 1`; each window
/// spans the end of one block and the start of the next, so its maximum is
/// one block suffix maximum and one prefix maximum.
fn sliding_max(x: &[f32], r: usize, buf: &mut SlidingMax, out: &mut [f32]) {
    let w = 2 * r + 1;
    let SlidingMax {
        padded,
        prefix,
        suffix,
    } = buf;
    padded.clear();
    padded.resize(r, f32::NEG_INFINITY);
    padded.extend_from_slice(x);
    padded.resize(x.len() + 2 * r, f32::NEG_INFINITY);
    prefix.resize(padded.len(), 0.0);
    suffix.resize(padded.len(), 0.0);
    let blocks = padded
        .chunks(w)
        .zip(prefix.chunks_mut(w))
        .zip(suffix.chunks_mut(w));
    for ((block, pre), suf) in blocks {
        let mut m = f32::NEG_INFINITY;
        for (dst, &v) in pre.iter_mut().zip(block) {
            m = m.max(v);
            *dst = m;
        }
        let mut m = f32::NEG_INFINITY;
        for (dst, &v) in suf.iter_mut().zip(block).rev() {
            m = m.max(v);
            *dst = m;
        }
    }
    // Window of output i in padded coordinates: [i, i + 2r].
    for ((dst, &s), &p) in out.iter_mut().zip(suffix.iter()).zip(&prefix[w - 1..]) {
        *dst = s.max(p);
    }
}

impl PeakPicker {
    /// A picker of `band` with the given density profile.
    ///
    /// # Panics
    /// If the profile's neighbourhood reaches past the band's bins.
    pub fn new(profile: BandProfile, band: Band) -> Self {
        assert!(
            band.lo >= 1 && band.hi + profile.freq_radius < band.bins,
            "the neighbourhood must fit in the analysed bins"
        );
        let window = 2 * profile.time_radius + 1;
        let block_seconds = BLOCK_FRAMES as f64 * crate::params::FRAME_SECONDS;
        let keep_per_block = (f64::from(profile.max_per_second) * block_seconds).round() as usize;
        Self {
            profile,
            band,
            keep_per_block: keep_per_block.max(1),
            mags: vec![vec![0.0; band.bins]; window],
            fmax: vec![vec![0.0; band.bins]; window],
            pushed: 0,
            next_center: 0,
            block: 0,
            candidates: Vec::new(),
            scratch: SlidingMax::default(),
            neighbours: Vec::with_capacity(window),
        }
    }

    fn slot(&self, frame: u32) -> usize {
        frame as usize % self.mags.len()
    }

    /// Every peak before this frame (in the emitted numbering) has been emitted.
    pub fn emitted_before(&self) -> u32 {
        self.block * BLOCK_FRAMES + self.band.frame_lag
    }

    /// Feeds one log-power frame (as produced by [`crate::spectrogram::Stft`]).
    /// Peaks are appended to `out` in time order, about half a second late.
    pub fn push_frame(&mut self, frame: &[f32], out: &mut Vec<Peak>) {
        let slot = self.slot(self.pushed);
        let bins = self.band.bins;
        self.mags[slot].copy_from_slice(&frame[..bins]);
        sliding_max(
            &frame[..bins],
            self.profile.freq_radius,
            &mut self.scratch,
            &mut self.fmax[slot],
        );
        self.pushed += 1;
        let t = self.profile.time_radius as u32;
        while self.next_center + t < self.pushed {
            self.examine(self.next_center, out);
            self.next_center += 1;
        }
    }

    /// Flushes the peaks still held back at the end of the stream.
    pub fn finish(&mut self, out: &mut Vec<Peak>) {
        while self.next_center < self.pushed {
            self.examine(self.next_center, out);
            self.next_center += 1;
        }
        self.flush_block(out);
    }

    fn examine(&mut self, center: u32, out: &mut Vec<Peak>) {
        if center / BLOCK_FRAMES != self.block {
            self.flush_block(out);
            self.block = center / BLOCK_FRAMES;
        }
        let t = self.profile.time_radius as u32;
        let first = center.saturating_sub(t);
        let last = (center + t).min(self.pushed - 1);
        let c = self.slot(center);
        let ring = self.mags.len();
        self.neighbours.clear();
        self.neighbours.extend(
            (first..=last)
                .filter(|&k| k != center)
                .map(|k| (k as usize % ring, k < center)),
        );
        let mags = &self.mags[c];
        let fmax = &self.fmax[c];
        for f in self.band.lo..self.band.hi {
            let v = mags[f];
            if v < MIN_LOG_POWER || v < fmax[f] || v <= mags[f - 1] {
                continue;
            }
            // Strictly above earlier frames, at least equal to later ones: a
            // stationary plateau yields one peak, at its start.
            let is_peak = self.neighbours.iter().all(|&(slot, before)| {
                let other = self.fmax[slot][f];
                if before { other < v } else { other <= v }
            });
            if !is_peak {
                continue;
            }
            let (a, b, cc) = (mags[f - 1], v, mags[f + 1]);
            let curvature = a - 2.0 * b + cc;
            let delta = if curvature < 0.0 {
                (0.5 * (a - cc) / curvature).clamp(-0.5, 0.5)
            } else {
                0.0
            };
            self.candidates.push((
                v,
                Peak {
                    frame: center + self.band.frame_lag,
                    bin: (f + self.band.bin_base) as f32 + delta,
                },
            ));
        }
    }

    fn flush_block(&mut self, out: &mut Vec<Peak>) {
        if self.candidates.len() > self.keep_per_block {
            self.candidates
                .select_nth_unstable_by(self.keep_per_block - 1, |a, b| b.0.total_cmp(&a.0));
            self.candidates.truncate(self.keep_per_block);
        }
        self.candidates
            .sort_unstable_by(|a, b| a.1.frame.cmp(&b.1.frame).then(a.1.bin.total_cmp(&b.1.bin)));
        out.extend(self.candidates.drain(..).map(|(_, p)| p));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::PeakProfile;

    fn frame_with(peaks: &[(usize, f32)]) -> Vec<f32> {
        let mut frame = vec![-20.0; Band::MAIN.bins];
        for &(bin, level) in peaks {
            frame[bin] = level;
        }
        frame
    }

    proptest::proptest! {
        #[test]
        fn sliding_max_is_the_maximum_of_each_window(
            x in proptest::collection::vec(-50f32..50.0, 1..300),
            r in 0usize..12,
        ) {
            let mut out = vec![0.0; x.len()];
            sliding_max(&x, r, &mut SlidingMax::default(), &mut out);
            for (i, &got) in out.iter().enumerate() {
                let lo = i.saturating_sub(r);
                let hi = (i + r + 1).min(x.len());
                let want = x[lo..hi].iter().copied().fold(f32::NEG_INFINITY, f32::max);
                proptest::prop_assert_eq!(got, want);
            }
        }
    }

    #[test]
    fn an_isolated_maximum_is_a_peak_and_its_neighbours_are_not() {
        let mut picker = PeakPicker::new(PeakProfile::QUERY.main, Band::MAIN);
        let mut out = Vec::new();
        for i in 0..40 {
            let frame = if i == 20 {
                frame_with(&[(100, 5.0), (103, 4.0)])
            } else {
                frame_with(&[])
            };
            picker.push_frame(&frame, &mut out);
        }
        picker.finish(&mut out);
        assert_eq!(
            out,
            vec![Peak {
                frame: 20,
                bin: 100.0
            }]
        );
    }

    #[test]
    fn a_stationary_tone_gives_one_peak_not_one_per_frame() {
        let mut picker = PeakPicker::new(PeakProfile::CATALOGUE.main, Band::MAIN);
        let mut out = Vec::new();
        for _ in 0..30 {
            picker.push_frame(&frame_with(&[(50, 3.0)]), &mut out);
        }
        picker.finish(&mut out);
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn peaks_outside_the_band_are_ignored() {
        let mut picker = PeakPicker::new(PeakProfile::QUERY.main, Band::MAIN);
        let mut out = Vec::new();
        picker.push_frame(
            &frame_with(&[(BAND_LO - 5, 5.0), (BAND_HI + 5, 5.0)]),
            &mut out,
        );
        picker.finish(&mut out);
        assert!(out.is_empty());
    }
}
