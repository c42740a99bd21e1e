//! Streaming conversion of mono audio at any rate to the engine's rate.
//!
//! Uses rubato's synchronous FFT resampler: band-limited (a proper
//! anti-aliasing low-pass, not decimation by dropping samples), exact for any
//! integer rate pair, and cheap because the work is a pair of FFTs per chunk.

use audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Indexing, Resampler as _};

/// Input frames handed to the FFT resampler per call. Rounded up by rubato to a
/// multiple of the rate pair's minimum block.
const CHUNK_FRAMES: usize = 2048;

/// Converts a stream of mono samples from `input_rate` to `output_rate`.
pub struct Resampler {
    inner: Option<Fft<f32>>,
    pending: Vec<f32>,
    out_buf: Vec<f32>,
    /// Output frames still to drop: the resampler's start-up delay.
    skip: usize,
    /// Output frames the whole input is worth; emitted output never exceeds it.
    expected_out: f64,
    ratio: f64,
    emitted: u64,
}

impl std::fmt::Debug for Resampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resampler")
            .field("ratio", &self.ratio)
            .field("emitted", &self.emitted)
            .finish_non_exhaustive()
    }
}

impl Resampler {
    /// A resampler from `input_rate` to `output_rate` (both in Hz, both > 0).
    ///
    /// # Panics
    /// If either rate is zero (callers validate rates coming from files).
    pub fn new(input_rate: u32, output_rate: u32) -> Self {
        assert!(
            input_rate > 0 && output_rate > 0,
            "sample rates must be > 0"
        );
        let ratio = f64::from(output_rate) / f64::from(input_rate);
        if input_rate == output_rate {
            return Self {
                inner: None,
                pending: Vec::new(),
                out_buf: Vec::new(),
                skip: 0,
                expected_out: 0.0,
                ratio,
                emitted: 0,
            };
        }
        // Both rates are validated non-zero and bounded, which is all rubato checks.
        #[allow(clippy::unwrap_used)]
        let inner = Fft::<f32>::new(
            input_rate as usize,
            output_rate as usize,
            CHUNK_FRAMES,
            1,
            FixedSync::Input,
        )
        .unwrap();
        let skip = inner.output_delay();
        let out_buf = vec![0.0; inner.output_frames_max()];
        Self {
            inner: Some(inner),
            pending: Vec::with_capacity(CHUNK_FRAMES * 2),
            out_buf,
            skip,
            expected_out: 0.0,
            ratio,
            emitted: 0,
        }
    }

    /// Feeds samples; appends every output sample that is ready to `out`.
    pub fn push(&mut self, input: &[f32], out: &mut Vec<f32>) {
        self.expected_out += input.len() as f64 * self.ratio;
        if self.inner.is_none() {
            out.extend_from_slice(input);
            self.emitted += input.len() as u64;
            return;
        }
        self.pending.extend_from_slice(input);
        self.drain(out, false);
    }

    /// Flushes what the resampler still holds at the end of the stream.
    pub fn finish(&mut self, out: &mut Vec<f32>) {
        if self.inner.is_some() {
            self.drain(out, true);
        }
    }

    fn drain(&mut self, out: &mut Vec<f32>, flush: bool) {
        let Some(inner) = self.inner.as_mut() else {
            return;
        };
        let wanted = self.expected_out.round() as u64;
        let mut consumed = 0;
        loop {
            let need = inner.input_frames_next();
            let available = self.pending.len() - consumed;
            // At the end of the stream, the last partial chunk (then silence) is
            // fed until the delayed output has caught up with the input.
            let take = if available >= need {
                need
            } else if flush && self.emitted < wanted {
                available
            } else {
                break;
            };
            let input = &self.pending[consumed..consumed + take];
            let indexing = (take < need).then(|| Indexing::new().partial_len(take));
            // Adapter sizes come from rubato's own frame counts; they cannot mismatch.
            #[allow(clippy::unwrap_used)]
            let produced = {
                let adapter_in = InterleavedSlice::new(input, 1, take).unwrap();
                let frames_out = self.out_buf.len();
                let mut adapter_out =
                    InterleavedSlice::new_mut(&mut self.out_buf[..], 1, frames_out).unwrap();
                inner
                    .process_into_buffer(&adapter_in, &mut adapter_out, indexing.as_ref())
                    .unwrap()
                    .1
            };
            consumed += take;
            let fresh = &self.out_buf[..produced];
            let dropped = self.skip.min(fresh.len());
            self.skip -= dropped;
            let fresh = &fresh[dropped..];
            let room = wanted.saturating_sub(self.emitted) as usize;
            let keep = fresh.len().min(room);
            out.extend_from_slice(&fresh[..keep]);
            self.emitted += keep as u64;
        }
        self.pending.drain(..consumed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(rate: u32, freq: f32, seconds: f32) -> Vec<f32> {
        let n = (rate as f32 * seconds) as usize;
        (0..n)
            .map(|i| (2.0 * std::f32::consts::PI * freq * i as f32 / rate as f32).sin())
            .collect()
    }

    fn run(input: &[f32], from: u32, to: u32, chunk: usize) -> Vec<f32> {
        let mut r = Resampler::new(from, to);
        let mut out = Vec::new();
        for c in input.chunks(chunk) {
            r.push(c, &mut out);
        }
        r.finish(&mut out);
        out
    }

    #[test]
    fn output_length_follows_the_rate_ratio_whatever_the_chunking() {
        let input = tone(44_100, 440.0, 3.0);
        for chunk in [1, 17, 1000, 100_000] {
            let out = run(&input, 44_100, 8_000, chunk);
            assert_eq!(out.len(), 24_000, "chunk {chunk}");
        }
    }

    #[test]
    fn removes_content_above_the_new_nyquist() {
        // 6 kHz cannot exist at 8 kHz: it must be filtered, not folded to 2 kHz.
        let out = run(&tone(44_100, 6_000.0, 2.0), 44_100, 8_000, 4096);
        let rms = (out[4000..12000].iter().map(|x| x * x).sum::<f32>() / 8000.0).sqrt();
        assert!(rms < 0.01, "aliased energy left: rms {rms}");
    }

    #[test]
    fn keeps_the_passband_and_its_timing() {
        let out = run(&tone(48_000, 1_000.0, 2.0), 48_000, 8_000, 999);
        let rms = (out[4000..12000].iter().map(|x| x * x).sum::<f32>() / 8000.0).sqrt();
        assert!(
            (rms - std::f32::consts::FRAC_1_SQRT_2).abs() < 0.02,
            "rms {rms}"
        );
        // Delay compensated: the output lines up with the input within a
        // frame (measured by cross-correlation).
        let reference = tone(8_000, 1_000.0, 2.0);
        let lag_error = |lag: i32| -> f32 {
            (4000..12000)
                .map(|i| (out[i] - reference[(i as i32 + lag) as usize]).powi(2))
                .sum()
        };
        let best = (-4..=4).min_by(|a, b| lag_error(*a).total_cmp(&lag_error(*b)));
        // rubato reports its delay in whole output frames: one frame (0.125 ms)
        // is far below the engine's 16 ms time resolution.
        assert!(best.is_some_and(|lag| lag.abs() <= 1), "lag {best:?}");
    }
}
