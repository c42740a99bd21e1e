//! The streaming fingerprinter: PCM at any rate in, peaks out, bounded memory.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use crate::decode::{AudioReader, Clip, DecodeError, DecodeLimits};
use crate::gate::LowGate;
use crate::params::{
    FFT_SIZE, HOP, LOW_FFT_SIZE, LOW_HOP, LOW_SAMPLE_RATE, PeakProfile, SAMPLE_RATE,
};
use crate::peaks::{Band, Peak, PeakPicker};
use crate::resample::Resampler;
use crate::spectrogram::Stft;

/// Resample, STFT and peak-pick a stream pushed in chunks of any size.
///
/// Two bands are analysed: the main band (78-3400 Hz) from the 8 kHz signal,
/// and the low band (20-301 Hz) from the same signal resampled once more to
/// 1 kHz, where a longer window resolves bass notes. Their peaks come out as
/// one list in time order (low-band bins are numbered after the main band's,
/// see [`crate::params::LOW_BIN_BASE`]).
///
/// Memory is bounded whatever the stream's length: two resampler chunks, two
/// STFT windows, the pickers' neighbourhoods and a density block of peaks
/// each, and the gate's three blocks of flatness. Peaks come out up to about
/// a second behind the input ([`Fingerprinter::final_before`]).
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
/// assert!(peaks.windows(2).all(|w| w[0].frame <= w[1].frame));
/// ```
#[derive(Debug)]
pub struct Fingerprinter {
    resampler: Resampler,
    main: BandChain,
    low_resampler: Resampler,
    low: BandChain,
    gate: Option<LowGate>,
    resampled: Vec<f32>,
    low_resampled: Vec<f32>,
    /// Every peak before this frame has been emitted.
    final_before: u32,
}

/// One band's STFT and picker, and its peaks not yet merged into the output.
#[derive(Debug)]
struct BandChain {
    stft: Stft,
    picker: PeakPicker,
    pending: VecDeque<Peak>,
    scratch: Vec<Peak>,
    frames: u32,
    /// A second picker on the same spectrogram, with the catalogue's
    /// profile, and its peaks (see [`Fingerprinter::keep_sparse`]).
    sparse: Option<(PeakPicker, Vec<Peak>)>,
}

impl BandChain {
    fn new(stft: Stft, picker: PeakPicker) -> Self {
        Self {
            stft,
            picker,
            pending: VecDeque::new(),
            scratch: Vec::new(),
            frames: 0,
            sparse: None,
        }
    }

    fn push(&mut self, samples: &[f32], mut gate: Option<&mut LowGate>) {
        let Self {
            stft,
            picker,
            scratch,
            frames,
            sparse,
            ..
        } = self;
        stft.push(samples, |frame| {
            picker.push_frame(frame, scratch);
            if let Some((picker, out)) = sparse.as_mut() {
                picker.push_frame(frame, out);
            }
            if let Some(gate) = gate.as_deref_mut() {
                gate.push_frame(frame);
            }
            *frames += 1;
        });
        self.pending.extend(self.scratch.drain(..));
    }

    fn finish(&mut self) {
        self.picker.finish(&mut self.scratch);
        self.pending.extend(self.scratch.drain(..));
        if let Some((picker, out)) = self.sparse.as_mut() {
            picker.finish(out);
        }
    }
}

impl Fingerprinter {
    /// A fingerprinter for mono input at `input_rate` Hz.
    ///
    /// # Panics
    /// If `input_rate` is zero.
    pub fn new(input_rate: u32, profile: PeakProfile) -> Self {
        Self {
            resampler: Resampler::new(input_rate, SAMPLE_RATE),
            main: BandChain::new(
                Stft::with_geometry(FFT_SIZE, HOP, Band::MAIN.bins),
                PeakPicker::new(profile.main, Band::MAIN),
            ),
            low_resampler: Resampler::new(SAMPLE_RATE, LOW_SAMPLE_RATE),
            low: BandChain::new(
                Stft::with_geometry(LOW_FFT_SIZE, LOW_HOP, Band::LOW.bins),
                PeakPicker::new(profile.low, Band::LOW),
            ),
            gate: profile.low_gate.map(LowGate::new),
            resampled: Vec::new(),
            low_resampled: Vec::new(),
            final_before: 0,
        }
    }

    /// A query's fingerprinter: [`PeakProfile::QUERY`], and the sparse peaks
    /// its triplets are made of ([`Fingerprinter::keep_sparse`]).
    ///
    /// # Panics
    /// If `input_rate` is zero.
    pub fn for_query(input_rate: u32) -> Self {
        let mut fp = Self::new(input_rate, PeakProfile::QUERY);
        fp.keep_sparse();
        fp
    }

    /// Also picks the main band's peaks with the catalogue's profile, from
    /// the same spectrogram (a query's triplets are made of them, see
    /// [`crate::triplets`]); [`Fingerprinter::take_sparse`] hands them out.
    pub fn keep_sparse(&mut self) {
        self.main.sparse = Some((
            PeakPicker::new(PeakProfile::CATALOGUE.main, Band::MAIN),
            Vec::new(),
        ));
    }

    /// Moves the sparse peaks found so far (in time order) to `out`.
    pub fn take_sparse(&mut self, out: &mut Vec<Peak>) {
        if let Some((_, peaks)) = self.main.sparse.as_mut() {
            out.append(peaks);
        }
    }

    /// Feeds mono samples; appends the peaks that became final to `out`.
    pub fn push(&mut self, samples: &[f32], out: &mut Vec<Peak>) {
        self.resampled.clear();
        self.resampler.push(samples, &mut self.resampled);
        self.low_resampled.clear();
        self.low_resampler
            .push(&self.resampled, &mut self.low_resampled);
        self.main.push(&self.resampled, self.gate.as_mut());
        self.low.push(&self.low_resampled, None);
        let ready = self
            .main
            .picker
            .emitted_before()
            .min(self.low.picker.emitted_before())
            .min(self.gate.as_ref().map_or(u32::MAX, LowGate::judged_before))
            .min(
                self.main
                    .sparse
                    .as_ref()
                    .map_or(u32::MAX, |(picker, _)| picker.emitted_before()),
            );
        self.merge(ready, out);
        self.final_before = self.final_before.max(ready);
        // Later peaks of either band come at `ready` or after.
        if let Some(gate) = self.gate.as_mut() {
            gate.forget_before(ready);
        }
    }

    /// Ends the stream; appends the remaining peaks to `out`.
    pub fn finish(&mut self, out: &mut Vec<Peak>) {
        self.resampled.clear();
        self.resampler.finish(&mut self.resampled);
        self.low_resampled.clear();
        self.low_resampler
            .push(&self.resampled, &mut self.low_resampled);
        self.low_resampler.finish(&mut self.low_resampled);
        self.main.push(&self.resampled, self.gate.as_mut());
        self.low.push(&self.low_resampled, None);
        self.main.finish();
        self.low.finish();
        self.merge(u32::MAX, out);
        self.final_before = u32::MAX;
    }

    /// STFT frames analysed so far (the stream's length in frames).
    pub fn frames(&self) -> u32 {
        self.main.frames
    }

    /// Every peak before this frame has been emitted (peaks come out up to
    /// about a second behind the input: a density block of each band, the
    /// resampler's delay and, for queries, the gate's next block).
    pub fn final_before(&self) -> u32 {
        self.final_before
    }

    /// Moves the pending peaks of both bands before frame `ready` to `out`,
    /// in time order (main band first within a frame).
    fn merge(&mut self, ready: u32, out: &mut Vec<Peak>) {
        let (main, low) = (&mut self.main.pending, &mut self.low.pending);
        loop {
            let take_low = match (main.front(), low.front()) {
                (Some(m), Some(l)) => l.frame < m.frame,
                (None, Some(_)) => true,
                (Some(_), None) => false,
                (None, None) => return,
            };
            let queue = if take_low { &mut *low } else { &mut *main };
            match queue.front() {
                Some(p) if p.frame < ready => {
                    let p = *p;
                    queue.pop_front();
                    if !take_low || self.gate.as_mut().is_none_or(|g| g.passes(p.frame)) {
                        out.push(p);
                    }
                }
                _ => return,
            }
        }
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
    /// A query's sparse peaks ([`Fingerprinter::keep_sparse`]), for its
    /// triplets; empty for the catalogue profile.
    pub sparse: Vec<Peak>,
}

/// Decodes and fingerprints a whole file within [`DecodeLimits::default`],
/// never holding more than one codec packet of PCM at a time.
///
/// # Errors
/// [`DecodeError`] if the file is unreadable, not audio, or has no samples.
pub fn fingerprint_file(path: &Path, profile: PeakProfile) -> Result<Fingerprint, DecodeError> {
    fingerprint_file_with(path, profile, DecodeLimits::default(), None)
}

/// Decodes and fingerprints a whole file within `limits`, stopping with
/// [`DecodeError::Cancelled`] within a packet of `cancel` becoming true.
///
/// # Errors
/// [`DecodeError`] if the file is unreadable, not audio, has no samples,
/// passes `limits`, or was cancelled.
pub fn fingerprint_file_with(
    path: &Path,
    profile: PeakProfile,
    limits: DecodeLimits,
    cancel: Option<Arc<AtomicBool>>,
) -> Result<Fingerprint, DecodeError> {
    let mut reader = AudioReader::open_with(path, limits)?;
    if let Some(flag) = cancel {
        reader.cancel_when(flag);
    }
    fingerprint_reader(&mut reader, profile)
}

/// Fingerprints everything an [`AudioReader`] yields, within the reader's
/// limits and cancellation ([`AudioReader::from_source_with`],
/// [`AudioReader::cancel_when`]): the first error ends the work, and the
/// peaks found so far are dropped with it. With [`PeakProfile::QUERY`] the
/// sparse peaks are kept too ([`Fingerprint::sparse`]).
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
            .get_or_insert_with(|| {
                if profile == PeakProfile::QUERY {
                    Fingerprinter::for_query(chunk.sample_rate)
                } else {
                    Fingerprinter::new(chunk.sample_rate, profile)
                }
            })
            .push(chunk.samples, &mut peaks);
    }
    let mut fp = fingerprinter.ok_or(DecodeError::NoAudio)?;
    fp.finish(&mut peaks);
    if fp.frames() == 0 {
        return Err(DecodeError::NoAudio);
    }
    let mut sparse = Vec::new();
    fp.take_sparse(&mut sparse);
    Ok(Fingerprint {
        peaks,
        frames: fp.frames(),
        duration_s: reader.frames_read() as f64 / f64::from(rate),
        sparse,
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

/// A query clip's peaks ([`PeakProfile::QUERY`]) and its sparse main-band
/// peaks ([`Fingerprinter::keep_sparse`]), for [`crate::Index::search_wide`].
pub fn fingerprint_clip_sparse(clip: &Clip) -> (Vec<Peak>, Vec<Peak>) {
    let mut fp = Fingerprinter::for_query(clip.sample_rate);
    let (mut peaks, mut sparse) = (Vec::new(), Vec::new());
    fp.push(&clip.samples, &mut peaks);
    fp.finish(&mut peaks);
    fp.take_sparse(&mut sparse);
    (peaks, sparse)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::{FRAME_SECONDS, LOW_BIN_BASE, is_low_bin};

    /// Five bursts of a tone at `hz`, each `on_s` long, 0.8 s apart, the
    /// first at 0.4 s.
    fn bursts(hz: f32, on_s: f32, rate: u32) -> Clip {
        let at = |s: f32| (s * rate as f32) as usize;
        let mut samples = vec![0.0; at(4.4)];
        for k in 0..5 {
            let from = at(0.4 + 0.8 * k as f32);
            for (i, x) in samples.iter_mut().enumerate().skip(from).take(at(on_s)) {
                *x = 0.5 * (std::f32::consts::TAU * hz * i as f32 / rate as f32).sin();
            }
        }
        Clip {
            sample_rate: rate,
            samples,
        }
    }

    fn split(peaks: &[Peak]) -> (Vec<Peak>, Vec<Peak>) {
        peaks.iter().partition(|p| !is_low_bin(p.bin))
    }

    #[test]
    fn a_250_hz_tone_peaks_at_its_bin_in_both_bands_at_the_same_instants() {
        // 64 ms bursts: exactly one main-band window (64 ms) fits each, and the
        // low band's 256 ms window weighs a burst most when centred on it, so
        // both bands put a burst's peak where their window is centred on it.
        let peaks = fingerprint_clip(&bursts(250.0, 0.064, 44_100), PeakProfile::CATALOGUE);
        let (main, low) = split(&peaks);
        // 250 Hz is main bin 16.0 (15.6 Hz bins) and low bin 64.0 (3.9 Hz bins).
        assert_eq!(main.len(), 5, "one main-band peak per burst: {main:?}");
        assert_eq!(low.len(), 5, "one low-band peak per burst: {low:?}");
        for p in &main {
            assert!((p.bin - 16.0).abs() < 0.25, "{p:?}");
        }
        for p in &low {
            assert!((p.bin - (LOW_BIN_BASE as f32 + 64.0)).abs() < 0.25, "{p:?}");
        }
        // The bands' frames describe the same instants (a frame apart at most;
        // without the low band's lag they would be six apart).
        for (m, l) in main.iter().zip(&low) {
            assert!(m.frame.abs_diff(l.frame) <= 1, "main {m:?}, low {l:?}");
            let burst_centre =
                0.4 + 0.032 + 0.8 * (f64::from(m.frame) * FRAME_SECONDS / 0.8).floor();
            let window_centre = f64::from(m.frame) * FRAME_SECONDS + 0.032;
            assert!((window_centre - burst_centre).abs() <= 0.016, "{m:?}");
        }
    }

    #[test]
    fn a_tone_below_the_main_band_peaks_only_in_the_low_band() {
        let peaks = fingerprint_clip(&bursts(60.0, 0.2, 8_000), PeakProfile::CATALOGUE);
        let (main, low) = split(&peaks);
        assert!(main.is_empty(), "60 Hz is below the main band: {main:?}");
        assert_eq!(low.len(), 5, "{low:?}");
        for p in &low {
            assert!(
                (p.bin - (LOW_BIN_BASE as f32 + 15.36)).abs() < 0.25,
                "{p:?}"
            );
        }
    }
    #[test]
    fn a_query_low_band_peak_leaves_only_once_its_gate_blocks_are_complete() {
        // Noise opens the gate; a peak judged on a block still filling could
        // get another verdict when the stream is cut into other chunks.
        let samples = crate::synth::white_noise(5, 44_100 * 8);
        let mut fp = Fingerprinter::new(44_100, PeakProfile::QUERY);
        let (mut peaks, mut low) = (Vec::new(), 0);
        for chunk in samples.chunks(333) {
            let before = peaks.len();
            fp.push(chunk, &mut peaks);
            let judged = fp.gate.as_ref().map_or(0, LowGate::judged_before);
            for p in peaks[before..].iter().filter(|p| is_low_bin(p.bin)) {
                assert!(
                    p.frame < judged,
                    "{p:?} left before frame {judged} was judged"
                );
                low += 1;
            }
            assert!(peaks.last().is_none_or(|p| p.frame < fp.final_before()));
        }
        assert!(low > 20, "low-band peaks: {low}");
    }
}
