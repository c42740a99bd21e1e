//! Deterministic synthetic signals for tests, examples and benchmarks.
//!
//! "Music" here is a sequence of short chords of harmonic tones with
//! decaying envelopes: a spectrogram with the onsets and partials that real
//! music has, reproducible from a seed, and free of any rights.

/// A small, fast, seedable generator (xorshift64*), good enough for signals.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator; every seed (even 0) gives a usable sequence.
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// Next value, uniform in `[0, 1)`.
    pub fn next_f32(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        (x >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Uniform in `[lo, hi)`.
    pub fn range(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.next_f32()
    }
}

/// `seconds` of synthetic music at `rate` Hz, different for every seed.
pub fn music(seed: u64, seconds: f32, rate: u32) -> Vec<f32> {
    music_warped(seed, seconds, rate, crate::Warp::NONE)
}

/// [`music`] of the same seed under `warp`: played `warp.time` times as
/// fast (a DJ's tempo, key kept) with every frequency `warp.freq` times as
/// high (a key shift); [`crate::Warp::speed`] is a turntable's speed.
/// `seconds` is the warped music's length.
pub fn music_warped(seed: u64, seconds: f32, rate: u32, warp: crate::Warp) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    let n = (seconds * rate as f32) as usize;
    let mut out = vec![0.0f32; n];
    let mut start = 0usize;
    while start < n {
        let len = (rng.range(0.12, 0.45) / warp.time * rate as f32) as usize;
        let voices: Vec<(f32, f32)> = (0..3)
            .map(|_| (rng.range(250.0, 1800.0) * warp.freq, rng.range(0.2, 1.0)))
            .collect();
        let end = (start + len).min(n);
        for (i, sample) in out[start..end].iter_mut().enumerate() {
            let t = i as f32 / rate as f32;
            let tt = t * warp.time;
            let envelope = (-tt * 6.0).exp() * (tt * 200.0).min(1.0);
            let mut v = 0.0;
            for &(freq, amp) in &voices {
                for harmonic in 1..=3 {
                    let f = freq * harmonic as f32;
                    if f < rate as f32 / 2.0 {
                        v += amp / harmonic as f32 * (2.0 * std::f32::consts::PI * f * t).sin();
                    }
                }
            }
            *sample = 0.15 * envelope * v;
        }
        start = end;
    }
    out
}

/// `seconds` of a synthetic sub-bass line at `rate` Hz: pure notes of
/// 25-70 Hz, 0.2-0.6 s each, different for every seed.
pub fn bass_line(seed: u64, seconds: f32, rate: u32) -> Vec<f32> {
    let mut rng = Rng::new(seed ^ 0xba55);
    let n = (seconds * rate as f32) as usize;
    let mut out = vec![0.0f32; n];
    let mut start = 0usize;
    while start < n {
        let len = (rng.range(0.2, 0.6) * rate as f32) as usize;
        let freq = rng.range(25.0, 70.0);
        let end = (start + len).min(n);
        for (i, sample) in out[start..end].iter_mut().enumerate() {
            let t = i as f32 / rate as f32;
            let envelope = (-t * 2.0).exp() * (t * 100.0).min(1.0);
            *sample = 0.5 * envelope * (2.0 * std::f32::consts::PI * freq * t).sin();
        }
        start = end;
    }
    out
}

/// White noise in `[-1, 1)`.
pub fn white_noise(seed: u64, len: usize) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..len).map(|_| rng.range(-1.0, 1.0)).collect()
}

/// Root mean square of a signal.
pub fn rms(signal: &[f32]) -> f32 {
    if signal.is_empty() {
        return 0.0;
    }
    (signal.iter().map(|x| x * x).sum::<f32>() / signal.len() as f32).sqrt()
}

/// `signal + noise`, the noise scaled so that the signal-to-noise ratio is
/// `snr_db` (both measured as RMS over the whole signal).
pub fn mix_at_snr(signal: &[f32], noise: &[f32], snr_db: f32) -> Vec<f32> {
    let gain = rms(signal) / (rms(noise).max(1e-12) * 10f32.powf(snr_db / 20.0));
    signal
        .iter()
        .zip(noise.iter().cycle())
        .map(|(s, n)| s + gain * n)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noise_is_mixed_at_the_requested_snr() {
        let signal = music(1, 5.0, 8000);
        let noise = white_noise(2, signal.len());
        for snr in [-5.0f32, 0.0, 5.0, 20.0] {
            let mixed = mix_at_snr(&signal, &noise, snr);
            let added: Vec<f32> = mixed.iter().zip(&signal).map(|(m, s)| m - s).collect();
            let measured = 20.0 * (rms(&signal) / rms(&added)).log10();
            assert!((measured - snr).abs() < 0.01, "{measured} vs {snr}");
        }
    }

    #[test]
    fn seeds_give_different_music_and_the_same_seed_the_same() {
        assert_eq!(music(7, 1.0, 8000), music(7, 1.0, 8000));
        assert_ne!(music(7, 1.0, 8000), music(8, 1.0, 8000));
    }
}
