//! The low band's gate: low-band query peaks only where the main band is noise.
//!
//! Bass lines are less specific than the main band: tracks by one composer
//! share bass figures, and a never-indexed track was matched to an indexed
//! one through its bass alone. But where broadband noise drowns the main band,
//! the bass is often all that still stands out. So a query keeps its low-band
//! peaks only where the main band's spectrum is as flat as noise.
//!
//! Flatness is measured per frame as the mean, over the main band, of the log
//! of each bin's power relative to the mean power of the bins around it
//! (`±`[`FLATNESS_HALF_WIDTH`]): a local spectral flatness, which the slope of
//! pink noise does not disturb. Noise of any colour gives about -0.52 (the
//! mean log of an exponential variable relative to its mean, a little
//! softened by the window's leakage); music, whose energy sits in partials,
//! gives -1 to -4. The gate opens when the average over about 1.5 s
//! (the block of the peak and one either side) is above
//! [`crate::params::PeakProfile::QUERY`]'s `low_gate`.

use std::collections::VecDeque;

use crate::params::{BAND_HI, BAND_LO};

/// Bins either side that make a bin's local mean.
pub const FLATNESS_HALF_WIDTH: usize = 8;

/// Frames per gate block (0.512 s).
const BLOCK_FRAMES: u32 = 32;

/// Flatness is measured on every fourth frame: frames that far apart do not
/// overlap, and the ones between would tell nothing new.
const FRAME_STRIDE: u32 = 4;

/// Local spectral flatness of one main-band frame of log power.
pub fn frame_flatness(frame: &[f32], power: &mut Vec<f32>) -> f32 {
    power.clear();
    power.extend(frame[BAND_LO..BAND_HI].iter().map(|&v| v.exp()));
    let n = power.len();
    let w = FLATNESS_HALF_WIDTH;
    // A direct sum per window: a running sum would cancel catastrophically
    // across the spectrum's dynamic range.
    let total: f32 = (0..n)
        .map(|i| {
            let window = &power[i.saturating_sub(w)..(i + w + 1).min(n)];
            let mean = window.iter().sum::<f32>() / window.len() as f32;
            frame[BAND_LO + i] - mean.max(f32::MIN_POSITIVE).ln()
        })
        .sum();
    total / n as f32
}

/// Per-block flatness of the main band, kept for the blocks that low-band
/// peaks may still ask about.
#[derive(Debug)]
pub struct LowGate {
    threshold: f32,
    blocks: VecDeque<(u32, f32, u32)>,
    frames: u32,
    power: Vec<f32>,
}

impl LowGate {
    /// A gate that opens where the flatness is above `threshold`.
    pub fn new(threshold: f32) -> Self {
        Self {
            threshold,
            blocks: VecDeque::new(),
            frames: 0,
            power: Vec::new(),
        }
    }

    /// Feeds the next main-band frame of log power.
    pub fn push_frame(&mut self, frame: &[f32]) {
        let index = self.frames;
        self.frames += 1;
        if !index.is_multiple_of(FRAME_STRIDE) {
            return;
        }
        let block = index / BLOCK_FRAMES;
        let f = frame_flatness(frame, &mut self.power);
        match self.blocks.back_mut() {
            Some((b, sum, n)) if *b == block => {
                *sum += f;
                *n += 1;
            }
            _ => self.blocks.push_back((block, f, 1)),
        }
    }

    /// Low-band peaks before this main-band frame can be judged: the blocks
    /// they are judged by (their own and one either side) are complete, so
    /// the verdict does not depend on how the stream was cut into chunks.
    pub fn judged_before(&self) -> u32 {
        (self.frames / BLOCK_FRAMES).saturating_sub(1) * BLOCK_FRAMES
    }

    /// Forgets what only peaks before `frame` could need: the caller will ask
    /// about none of them again. (Keeps memory bounded on a long stream whose
    /// low band is silent, where [`LowGate::passes`] is never called.)
    pub fn forget_before(&mut self, frame: u32) {
        let needed = (frame / BLOCK_FRAMES).saturating_sub(1);
        while self.blocks.front().is_some_and(|&(b, _, _)| b < needed) {
            self.blocks.pop_front();
        }
    }

    /// Whether a low-band peak at main-band `frame` passes: the main band's
    /// flatness around it is that of noise. Forgets the blocks before the
    /// one before `frame`'s (peaks are asked about in time order).
    pub fn passes(&mut self, frame: u32) -> bool {
        let block = frame / BLOCK_FRAMES;
        while self.blocks.front().is_some_and(|&(b, _, _)| b + 1 < block) {
            self.blocks.pop_front();
        }
        let (sum, n) = self
            .blocks
            .iter()
            .take_while(|&&(b, _, _)| b <= block + 1)
            .fold((0.0, 0), |(s, n), &(_, sum, count)| (s + sum, n + count));
        // No main-band frame there (the stream's very end): nothing to judge by.
        n > 0 && sum / n as f32 > self.threshold
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spectrogram::{BINS, Stft};
    use crate::synth;

    fn mean_flatness(samples: &[f32]) -> f32 {
        let mut stft = Stft::new();
        let (mut total, mut n, mut power) = (0.0, 0, Vec::new());
        stft.push(samples, |frame| {
            assert_eq!(frame.len(), BINS);
            total += frame_flatness(frame, &mut power);
            n += 1;
        });
        total / n as f32
    }

    #[test]
    fn noise_is_flat_and_music_is_not() {
        let noise = synth::white_noise(7, 8_000 * 5);
        let music = synth::music(3, 5.0, 8_000);
        let (noise, music) = (mean_flatness(&noise), mean_flatness(&music));
        assert!((-0.65..-0.45).contains(&noise), "noise: {noise}");
        assert!(music < -1.0, "music: {music}");
    }

    #[test]
    fn the_gate_opens_in_noise_only() {
        let mut stft = Stft::new();
        let mut gate = LowGate::new(-0.8);
        let mut signal = synth::music(3, 6.0, 8_000);
        signal.extend(synth::white_noise(7, 8_000 * 6));
        stft.push(&signal, |frame| gate.push_frame(frame));
        assert!(!gate.passes(3 * 62));
        assert!(gate.passes(9 * 62));
    }

    #[test]
    fn judgement_waits_for_complete_blocks_and_memory_stays_bounded() {
        let mut stft = Stft::new();
        let mut gate = LowGate::new(-0.8);
        let noise = synth::white_noise(7, 8_000 * 60);
        let mut most = 0;
        stft.push(&noise, |frame| {
            gate.push_frame(frame);
            // A peak before `judged_before` has its own block and the next one
            // complete.
            let judged = gate.judged_before();
            assert!(
                judged + 2 * BLOCK_FRAMES > gate.frames
                    && judged + BLOCK_FRAMES <= gate.frames.max(BLOCK_FRAMES)
            );
            gate.forget_before(judged);
            most = most.max(gate.blocks.len());
        });
        assert!(most <= 4, "blocks held: {most}");
        assert!(gate.passes(gate.judged_before() - 1));
    }
}
