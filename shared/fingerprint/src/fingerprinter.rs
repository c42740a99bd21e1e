//! The streaming fingerprinter: PCM at any rate in, peaks out, bounded memory.

use std::path::Path;

use crate::decode::{AudioReader, Clip, DecodeError};
use crate::params::{PeakProfile, SAMPLE_RATE};
use crate::peaks::{Peak, PeakPicker};
use crate::resample::Resampler;
use crate::spectrogram::Stft;

/// Resample, STFT and peak-pick a stream pushed in chunks of any size.
///
/// Memory is bounded whatever the stream's length: a resampler chunk, one STFT
/// window, the picker's neighbourhood and one density block. Peaks come out
/// about half a second behind the input.
///
/// ```
/// use hendu_fingerprint::{Fingerprinter, PeakProfile};
/// let mut fp = Fingerprinter::new(44_100, PeakProfile::QUERY);
/// let mut peaks = Vec::new();
/// let chirp: Vec<f32> = (0..44_100 * 2)
///     .map(|i| { let t = i as f32 / 44_100.0; (2.0 * std::f32::consts::PI * (400.0 + 500.0 * t) * t).sin() })
///     .collect();
/// for chunk in chirp.chunks(1000) {
///     fp.push(chunk, &mut peaks);
/// }
/// fp.finish(&mut peaks);
/// assert!(!peaks.is_empty());
/// ```
#[derive(Debug)]
pub struct Fingerprinter {
    resampler: Resampler,
    stft: Stft,
    picker: PeakPicker,
    resampled: Vec<f32>,
    frames: u32,
}

impl Fingerprinter {
    /// A fingerprinter for mono input at `input_rate` Hz.
    ///
    /// # Panics
    /// If `input_rate` is zero.
    pub fn new(input_rate: u32, profile: PeakProfile) -> Self {
        Self {
            resampler: Resampler::new(input_rate, SAMPLE_RATE),
            stft: Stft::new(),
            picker: PeakPicker::new(profile),
            resampled: Vec::new(),
            frames: 0,
        }
    }

    /// Feeds mono samples; appends the peaks that became final to `out`.
    pub fn push(&mut self, samples: &[f32], out: &mut Vec<Peak>) {
        self.resampled.clear();
        self.resampler.push(samples, &mut self.resampled);
        self.analyse(out);
    }

    /// Ends the stream; appends the remaining peaks to `out`.
    pub fn finish(&mut self, out: &mut Vec<Peak>) {
        self.resampled.clear();
        self.resampler.finish(&mut self.resampled);
        self.analyse(out);
        self.picker.finish(out);
    }

    /// STFT frames analysed so far (the stream's length in frames).
    pub fn frames(&self) -> u32 {
        self.frames
    }

    fn analyse(&mut self, out: &mut Vec<Peak>) {
        let Self {
            stft,
            picker,
            resampled,
            frames,
            ..
        } = self;
        stft.push(resampled, |frame| {
            picker.push_frame(frame, out);
            *frames += 1;
        });
    }
}

/// The fingerprint of a whole file.
#[derive(Debug, Clone, PartialEq)]
pub struct Fingerprint {
    /// Peaks in time order.
    pub peaks: Vec<Peak>,
    /// Length in STFT frames.
    pub frames: u32,
    /// Duration of the decoded audio in seconds.
    pub duration_s: f64,
}

/// Decodes and fingerprints a whole file, never holding more than one
/// codec packet of PCM at a time.
///
/// # Errors
/// [`DecodeError`] if the file is unreadable, not audio, or has no samples.
pub fn fingerprint_file(path: &Path, profile: PeakProfile) -> Result<Fingerprint, DecodeError> {
    let mut reader = AudioReader::open(path)?;
    fingerprint_reader(&mut reader, profile)
}

/// Fingerprints everything an [`AudioReader`] yields.
///
/// # Errors
/// [`DecodeError`] from the reader, or [`DecodeError::NoAudio`] for an empty stream.
pub fn fingerprint_reader(
    reader: &mut AudioReader,
    profile: PeakProfile,
) -> Result<Fingerprint, DecodeError> {
    let mut fingerprinter: Option<Fingerprinter> = None;
    let mut peaks = Vec::new();
    let mut rate = 0;
    while let Some(chunk) = reader.next_chunk()? {
        rate = chunk.sample_rate;
        fingerprinter
            .get_or_insert_with(|| Fingerprinter::new(chunk.sample_rate, profile))
            .push(chunk.samples, &mut peaks);
    }
    let mut fp = fingerprinter.ok_or(DecodeError::NoAudio)?;
    fp.finish(&mut peaks);
    if fp.frames() == 0 {
        return Err(DecodeError::NoAudio);
    }
    Ok(Fingerprint {
        peaks,
        frames: fp.frames(),
        duration_s: reader.frames_read() as f64 / f64::from(rate),
    })
}

/// Peaks of a clip already in memory.
pub fn fingerprint_clip(clip: &Clip, profile: PeakProfile) -> Vec<Peak> {
    let mut fp = Fingerprinter::new(clip.sample_rate, profile);
    let mut peaks = Vec::new();
    fp.push(&clip.samples, &mut peaks);
    fp.finish(&mut peaks);
    peaks
}
