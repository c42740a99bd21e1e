//! Streaming short-time Fourier transform: samples in, log-power frames out.

use std::sync::Arc;

use realfft::{RealFftPlanner, RealToComplex, num_complex::Complex};

use crate::params::{FFT_SIZE, HOP};

/// Number of frequency bins per frame (`FFT_SIZE / 2 + 1`).
pub const BINS: usize = FFT_SIZE / 2 + 1;

/// Log-power floor: about -100 dB below a full-scale sine, where silence and
/// dither live. Keeps `ln` finite and makes digital silence a flat plane.
const POWER_FLOOR: f32 = 1e-10;

/// Turns a stream of samples into frames of natural-log power, one every hop,
/// with a Hann window. [`Stft::new`] is the main band's geometry
/// ([`FFT_SIZE`] at [`crate::params::SAMPLE_RATE`], [`HOP`]).
pub struct Stft {
    fft: Arc<dyn RealToComplex<f32>>,
    size: usize,
    hop: usize,
    window: Vec<f32>,
    pending: Vec<f32>,
    start: usize,
    input: Vec<f32>,
    spectrum: Vec<Complex<f32>>,
    scratch: Vec<Complex<f32>>,
    frame: Vec<f32>,
}

impl std::fmt::Debug for Stft {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stft").finish_non_exhaustive()
    }
}

impl Default for Stft {
    fn default() -> Self {
        Self::new()
    }
}

impl Stft {
    /// The main band's STFT, every bin.
    pub fn new() -> Self {
        Self::with_geometry(FFT_SIZE, HOP, BINS)
    }

    /// An STFT of `size` samples every `hop` samples, whose frames hold the
    /// log power of the lowest `bins` bins only. Plans the FFT once; every
    /// frame reuses the plan and the buffers.
    ///
    /// # Panics
    /// If `bins` is more than `size / 2 + 1`.
    pub fn with_geometry(size: usize, hop: usize, bins: usize) -> Self {
        assert!(
            bins <= size / 2 + 1,
            "an STFT of {size} has {} bins",
            size / 2 + 1
        );
        let fft = RealFftPlanner::<f32>::new().plan_fft_forward(size);
        let window = (0..size)
            .map(|i| {
                let x = std::f32::consts::PI * 2.0 * i as f32 / size as f32;
                0.5 - 0.5 * x.cos()
            })
            .collect();
        let input = fft.make_input_vec();
        let spectrum = fft.make_output_vec();
        let scratch = fft.make_scratch_vec();
        Self {
            fft,
            size,
            hop,
            window,
            pending: Vec::with_capacity(size * 4),
            start: 0,
            input,
            spectrum,
            scratch,
            frame: vec![0.0; bins],
        }
    }

    /// Feeds samples and calls `on_frame` with each completed frame's log power.
    pub fn push(&mut self, samples: &[f32], mut on_frame: impl FnMut(&[f32])) {
        self.pending.extend_from_slice(samples);
        while self.pending.len() - self.start >= self.size {
            let block = &self.pending[self.start..self.start + self.size];
            for ((dst, &x), &w) in self.input.iter_mut().zip(block).zip(&self.window) {
                *dst = x * w;
            }
            // Buffer sizes come from the plan itself, so the transform cannot fail.
            #[allow(clippy::unwrap_used)]
            self.fft
                .process_with_scratch(&mut self.input, &mut self.spectrum, &mut self.scratch)
                .unwrap();
            for (dst, c) in self.frame.iter_mut().zip(&self.spectrum) {
                *dst = (c.norm_sqr() + POWER_FLOOR).ln();
            }
            on_frame(&self.frame);
            self.start += self.hop;
        }
        // Compact rarely: keeps the buffer bounded without a copy per frame.
        if self.start > self.size * 8 {
            self.pending.drain(..self.start);
            self.start = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::SAMPLE_RATE;

    #[test]
    fn a_tone_peaks_at_its_bin() {
        let freq = 1_000.0;
        let samples: Vec<f32> = (0..SAMPLE_RATE as usize)
            .map(|i| (2.0 * std::f32::consts::PI * freq * i as f32 / SAMPLE_RATE as f32).sin())
            .collect();
        let mut stft = Stft::new();
        let mut frames = 0;
        stft.push(&samples, |frame| {
            frames += 1;
            let argmax = frame
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map(|(i, _)| i)
                .unwrap_or_default();
            assert_eq!(argmax, 64, "1 kHz is bin 64 at 15.625 Hz per bin");
        });
        assert_eq!(frames, (SAMPLE_RATE as usize - FFT_SIZE) / HOP + 1);
    }
}
