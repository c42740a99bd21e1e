//! What a device sends: audio cut into contiguous samples.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use hendu_fingerprint::resample::Resampler;
use hendu_fingerprint::wire::SampleFingerprint;
use hendu_fingerprint::{AudioReader, Clip, DecodeLimits, fingerprint_clip_sparse};

/// The rate audio samples are sent at (the engine analyses at 8 kHz; 16
/// kHz keeps a margin and is what a cheap board's microphone gives).
pub const RATE: u32 = 16_000;
/// The longest file read (a folder of DJ sets would not fit in memory).
const MAX_FILE_S: f64 = 4.0 * 3600.0;

/// How a sample travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// 16-bit mono WAV at 16 kHz.
    Audio,
    /// The device fingerprint format, computed here as a device would.
    Fingerprint,
}

/// One sample, ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    pub captured_at_ms: i64,
    pub duration_ms: u32,
    pub body: Body,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// Audio in a format the engine decodes.
    Audio(Vec<u8>),
    /// Encoded [`SampleFingerprint`] (carries its capture instant).
    Fingerprint(Vec<u8>),
}

impl Body {
    pub fn len(&self) -> usize {
        match self {
            Self::Audio(b) | Self::Fingerprint(b) => b.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Mono audio at [`RATE`].
#[derive(Debug, Clone)]
pub struct Audio {
    pub name: String,
    pub samples: Vec<f32>,
}

/// The audio files to play: `path` itself, or the files of a folder (in
/// name order; files that do not decode are skipped with a warning).
///
/// # Errors
/// No file that decodes.
pub fn read(path: &Path) -> Result<Vec<Audio>> {
    let files: Vec<PathBuf> = if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .with_context(|| format!("cannot read the folder {}", path.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        files
    } else {
        vec![path.to_owned()]
    };
    let mut out = Vec::new();
    for file in &files {
        match decode(file) {
            Ok(samples) if !samples.is_empty() => out.push(Audio {
                name: file.display().to_string(),
                samples,
            }),
            Ok(_) => eprintln!("warning: {} holds no audio; skipped", file.display()),
            Err(e) => eprintln!("warning: {}: {e:#}; skipped", file.display()),
        }
    }
    if out.is_empty() {
        anyhow::bail!("no audio in {}", path.display());
    }
    Ok(out)
}

fn decode(path: &Path) -> Result<Vec<f32>> {
    let mut reader = AudioReader::open_with(path, DecodeLimits::new(MAX_FILE_S))?;
    let mut resampler: Option<(u32, Resampler)> = None;
    let mut out = Vec::new();
    while let Some(chunk) = reader.next_chunk()? {
        let rate = chunk.sample_rate;
        if resampler.as_ref().is_none_or(|(r, _)| *r != rate) {
            if let Some((_, mut old)) = resampler.take() {
                old.finish(&mut out);
            }
            resampler = Some((rate, Resampler::new(rate, RATE)));
        }
        if let Some((_, r)) = resampler.as_mut() {
            r.push(chunk.samples, &mut out);
        }
    }
    if let Some((_, mut r)) = resampler {
        r.finish(&mut out);
    }
    Ok(out)
}

/// 16-bit mono WAV at [`RATE`].
pub fn wav(samples: &[f32]) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: RATE,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    if let Ok(mut w) = hound::WavWriter::new(&mut out, spec) {
        for s in samples {
            let _ = w.write_sample((s.clamp(-1.0, 1.0) * 32767.0) as i16);
        }
        let _ = w.finalize();
    }
    out.into_inner()
}

/// The on-device fingerprint of a stretch of audio at [`RATE`].
pub fn fingerprint(samples: &[f32], captured_at_ms: i64) -> Vec<u8> {
    let (peaks, sparse) = fingerprint_clip_sparse(&Clip {
        sample_rate: RATE,
        samples: samples.to_vec(),
    });
    SampleFingerprint {
        captured_at_ms,
        duration_ms: (samples.len() as u64 * 1000 / u64::from(RATE)) as u32,
        peaks,
        sparse,
    }
    .encode()
}

/// The sample made of `audio` (at [`RATE`]) captured at `captured_at_ms`.
pub fn sample(audio: &[f32], captured_at_ms: i64, kind: Kind) -> Sample {
    Sample {
        captured_at_ms,
        duration_ms: (audio.len() as u64 * 1000 / u64::from(RATE)) as u32,
        body: match kind {
            Kind::Audio => Body::Audio(wav(audio)),
            Kind::Fingerprint => Body::Fingerprint(fingerprint(audio, captured_at_ms)),
        },
    }
}

/// A programme ready to send many times: each stretch's body made once
/// (for fingerprints, its peaks: only the capture instant changes).
#[derive(Debug, Clone)]
pub struct Prepared {
    stretches: Vec<Stretch>,
}

#[derive(Debug, Clone)]
struct Stretch {
    duration_ms: u32,
    body: Prebody,
}

#[derive(Debug, Clone)]
enum Prebody {
    Wav(Vec<u8>),
    /// The peaks and the sparse peaks.
    Peaks(Vec<hendu_fingerprint::Peak>, Vec<hendu_fingerprint::Peak>),
}

impl Prepared {
    /// The files cut into `seconds`-long samples, one after the other.
    pub fn new(audio: &[Audio], seconds: f64, kind: Kind) -> Self {
        let stretches = audio
            .iter()
            .flat_map(|a| cut(&a.samples, seconds))
            .map(|part| Stretch {
                duration_ms: (part.len() as u64 * 1000 / u64::from(RATE)) as u32,
                body: match kind {
                    Kind::Audio => Prebody::Wav(wav(part)),
                    Kind::Fingerprint => {
                        let (peaks, sparse) = fingerprint_clip_sparse(&Clip {
                            sample_rate: RATE,
                            samples: part.to_vec(),
                        });
                        Prebody::Peaks(peaks, sparse)
                    }
                },
            })
            .collect();
        Self { stretches }
    }

    /// Samples in one pass.
    pub fn len(&self) -> usize {
        self.stretches.len()
    }

    pub fn is_empty(&self) -> bool {
        self.stretches.is_empty()
    }

    /// Milliseconds of one pass.
    pub fn duration_ms(&self) -> u64 {
        self.stretches
            .iter()
            .map(|s| u64::from(s.duration_ms))
            .sum()
    }

    /// The `k`-th sample (looping), captured at `captured_at_ms`.
    pub fn sample(&self, k: usize, captured_at_ms: i64) -> Sample {
        let s = &self.stretches[k % self.stretches.len()];
        Sample {
            captured_at_ms,
            duration_ms: s.duration_ms,
            body: match &s.body {
                Prebody::Wav(b) => Body::Audio(b.clone()),
                Prebody::Peaks(peaks, sparse) => Body::Fingerprint(
                    SampleFingerprint {
                        captured_at_ms,
                        duration_ms: s.duration_ms,
                        peaks: peaks.clone(),
                        sparse: sparse.clone(),
                    }
                    .encode(),
                ),
            },
        }
    }

    /// The duration of the `k`-th sample (looping).
    pub fn duration_of(&self, k: usize) -> u32 {
        self.stretches[k % self.stretches.len()].duration_ms
    }
}

/// Audio cut into stretches of `seconds` (the last one shorter, if over a
/// second; shorter tails are dropped, as a device would not send them).
pub fn cut(audio: &[f32], seconds: f64) -> Vec<&[f32]> {
    let n = ((seconds * f64::from(RATE)) as usize).max(1);
    audio
        .chunks(n)
        .filter(|c| c.len() >= RATE as usize)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audio_is_cut_into_contiguous_samples() {
        let audio = vec![0.1f32; RATE as usize * 65];
        let parts = cut(&audio, 30.0);
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[2].len(), RATE as usize * 5);
        let s = sample(parts[0], 1_796_000_000_000, Kind::Fingerprint);
        assert_eq!(s.duration_ms, 30_000);
        let Body::Fingerprint(bytes) = &s.body else {
            panic!("a fingerprint")
        };
        let decoded = SampleFingerprint::decode(bytes).unwrap();
        assert_eq!(decoded.captured_at_ms, 1_796_000_000_000);
        let a = sample(parts[2], 0, Kind::Audio);
        assert!(matches!(&a.body, Body::Audio(b) if b.len() == 44 + 2 * RATE as usize * 5));
    }
}
