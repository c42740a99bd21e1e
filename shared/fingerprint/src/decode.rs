//! Decoding any supported container and codec into mono `f32` samples.
//!
//! Symphonia does the demuxing and decoding; this module adds what a
//! fingerprinter needs on top: one audio track chosen, every channel layout
//! down-mixed to mono, corrupt packets skipped (up to a bound) instead of
//! aborting, and a clear [`DecodeError`] for input that is not audio at all.
//!
//! # Limits on untrusted audio
//! A reader works within [`DecodeLimits`], so that what a file costs is
//! bounded by the limits, not by what its header claims:
//! - **duration**: decoding stops with [`DecodeError::TooLong`] at the first
//!   packet that takes the decoded audio past `max_seconds` (a few hundred
//!   kilobytes of FLAC can hold hours of silence; a header's stated length
//!   is never trusted, nor needed);
//! - **sample rate and channels**: refused with [`DecodeError::SampleRate`]
//!   or [`DecodeError::Channels`] before any packet is decoded when the
//!   track states them, and checked again on every decoded buffer, since
//!   headers lie;
//! - **packet size**: a track whose header promises packets of more than
//!   [`MAX_FRAMES_PER_PACKET`] frames is refused before a decoder is made
//!   (decoders size their buffers from that number: a CAF claiming 2^32 - 1
//!   frames made one ask for 32 GiB and abort the process), and so is any
//!   decoded buffer longer than that; memory is then a few packets of PCM;
//! - **cancellation**: [`AudioReader::cancel_when`] ends decoding with
//!   [`DecodeError::Cancelled`] within a packet of the flag being set (a
//!   client that went away, a shutdown).

use std::fs::File;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};

use symphonia::core::codecs::audio::{AudioCodecParameters, AudioDecoder, AudioDecoderOptions};
use symphonia::core::codecs::registry::CodecRegistry;
use symphonia::core::errors::Error as SymphoniaError;
use symphonia::core::formats::probe::Hint;
use symphonia::core::formats::{FormatOptions, FormatReader, TrackType};
use symphonia::core::io::{MediaSource, MediaSourceStream};
use symphonia::core::meta::MetadataOptions;

/// Consecutive undecodable packets tolerated before a stream is declared corrupt.
/// Real files have the odd damaged frame (a cut MP3, a bad sector); a stream of
/// nothing but damage is not audio.
const MAX_CONSECUTIVE_BAD_PACKETS: usize = 64;

/// Highest sample rate ever accepted, whatever the limits say. Anything above
/// is a corrupt header, and accepting it would size buffers from
/// attacker-controlled numbers.
const MAX_SAMPLE_RATE: u32 = 768_000;

/// Most channels ever accepted in one stream (Symphonia itself caps layouts lower).
const MAX_CHANNELS: usize = 64;

/// Default for [`DecodeLimits::max_sample_rate`]: the highest rate studio
/// masters use. Nothing above it is music a fingerprint needs (the engine
/// resamples to 8 kHz).
pub const DEFAULT_MAX_SAMPLE_RATE: u32 = 192_000;

/// Default for [`DecodeLimits::max_channels`]: 7.1 surround.
pub const DEFAULT_MAX_CHANNELS: usize = 8;

/// Default for [`DecodeLimits::max_seconds`]: 24 hours.
pub const DEFAULT_MAX_SECONDS: f64 = 24.0 * 3600.0;

/// Most frames a packet may hold, by its track's header or once decoded.
/// The largest real packets are FLAC's 65,535-frame blocks and IMA ADPCM's
/// 131,063-frame WAV blocks; 2^18 frames of 8 channels of 64-bit samples is
/// 16 MiB, the most one decoder buffer can then take.
pub const MAX_FRAMES_PER_PACKET: u64 = 1 << 18;

/// How much untrusted audio a reader decodes before it refuses the rest.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DecodeLimits {
    /// Longest audio decoded, in seconds: [`DecodeError::TooLong`] past it.
    /// `f64::INFINITY` decodes any length; zero, a negative value or NaN
    /// refuses any audio at all.
    pub max_seconds: f64,
    /// Highest sample rate accepted, Hz: [`DecodeError::SampleRate`] above.
    pub max_sample_rate: u32,
    /// Most channels accepted: [`DecodeError::Channels`] above.
    pub max_channels: usize,
}

impl DecodeLimits {
    /// `max_seconds` of audio, with the default sample rate and channel limits.
    pub fn new(max_seconds: f64) -> Self {
        Self {
            max_seconds,
            ..Self::default()
        }
    }

    /// Most frames accepted at `rate` Hz (NaN and negatives saturate to 0,
    /// infinity to `u64::MAX`).
    fn max_frames(&self, rate: u32) -> u64 {
        (self.max_seconds * f64::from(rate)).floor() as u64
    }
}

impl Default for DecodeLimits {
    /// 24 hours, [`DEFAULT_MAX_SAMPLE_RATE`], [`DEFAULT_MAX_CHANNELS`].
    fn default() -> Self {
        Self {
            max_seconds: DEFAULT_MAX_SECONDS,
            max_sample_rate: DEFAULT_MAX_SAMPLE_RATE,
            max_channels: DEFAULT_MAX_CHANNELS,
        }
    }
}

/// Why audio could not be decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The file could not be opened or read.
    #[error("cannot read: {0}")]
    Io(#[from] std::io::Error),
    /// The bytes are not a container/codec this build understands.
    #[error("not a supported audio format ({0})")]
    Unsupported(String),
    /// The container was recognised but its content is damaged.
    #[error("corrupt audio: {0}")]
    Corrupt(String),
    /// The container holds no audio track, or the track holds no samples.
    #[error("no audio in the file")]
    NoAudio,
    /// The stream changed its sample rate or channel count mid-way.
    #[error("the stream changed format mid-way ({0})")]
    FormatChanged(String),
    /// The decoded audio passed [`DecodeLimits::max_seconds`]; decoding
    /// stopped there.
    #[error("the audio is longer than the limit of {limit_s} s")]
    TooLong {
        /// The limit that was passed, seconds.
        limit_s: f64,
    },
    /// The sample rate (Hz) is above [`DecodeLimits::max_sample_rate`].
    #[error("sample rate {0} Hz is above the accepted limit")]
    SampleRate(u32),
    /// The channel count is above [`DecodeLimits::max_channels`].
    #[error("{0} channels is above the accepted limit")]
    Channels(usize),
    /// The flag given to [`AudioReader::cancel_when`] was set.
    #[error("decoding was cancelled")]
    Cancelled,
}

impl From<SymphoniaError> for DecodeError {
    fn from(err: SymphoniaError) -> Self {
        match err {
            SymphoniaError::IoError(e) => DecodeError::Io(e),
            SymphoniaError::Unsupported(what) => DecodeError::Unsupported(what.to_string()),
            other => DecodeError::Corrupt(other.to_string()),
        }
    }
}

/// Symphonia's decoders, and Opus (which Symphonia does not decode) through
/// libopus, the reference decoder: Symphonia demuxes Ogg Opus and Opus in
/// Matroska/WebM itself, and hands the packets to it.
fn codecs() -> &'static CodecRegistry {
    static CODECS: LazyLock<CodecRegistry> = LazyLock::new(|| {
        let mut registry = CodecRegistry::new();
        symphonia::default::register_enabled_codecs(&mut registry);
        registry.register_audio_decoder::<symphonia_adapter_libopus::OpusDecoder>();
        registry
    });
    &CODECS
}

/// Counts a corrupt packet that is skipped; too many in a row end the stream.
fn skip_bad_packet(bad_packets: &mut usize, msg: &str) -> Result<(), DecodeError> {
    *bad_packets += 1;
    if *bad_packets > MAX_CONSECUTIVE_BAD_PACKETS {
        return Err(DecodeError::Corrupt(msg.to_string()));
    }
    Ok(())
}

/// Runs a Symphonia call, turning a panic on malformed input (a bug on their
/// side, but our input is untrusted) into a [`DecodeError`] instead of a crash.
fn guard<T>(call: impl FnOnce() -> T) -> Result<T, DecodeError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(call))
        .map_err(|_| DecodeError::Corrupt("the decoder failed on malformed data".into()))
}

/// Mono samples decoded from one packet.
#[derive(Debug, Clone, Copy)]
pub struct AudioChunk<'a> {
    /// Sample rate of `samples` in Hz (constant over a stream).
    pub sample_rate: u32,
    /// Channel-averaged samples in `[-1, 1]`.
    pub samples: &'a [f32],
}

/// A pull-based decoder that yields mono chunks at the source sample rate.
pub struct AudioReader {
    format: Box<dyn FormatReader>,
    decoder: Box<dyn AudioDecoder>,
    track_id: u32,
    sample_rate: Option<u32>,
    channels: usize,
    interleaved: Vec<f32>,
    mono: Vec<f32>,
    frames_read: u64,
    limits: DecodeLimits,
    /// Frames accepted at the stream's rate, known with the first buffer.
    max_frames: u64,
    /// Set once the duration limit was passed: later calls refuse again
    /// rather than decode on.
    too_long: bool,
    cancel: Option<Arc<AtomicBool>>,
    /// Corrupt packets skipped so far.
    skipped: u64,
}

impl std::fmt::Debug for AudioReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AudioReader")
            .field("track_id", &self.track_id)
            .field("sample_rate", &self.sample_rate)
            .field("frames_read", &self.frames_read)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl AudioReader {
    /// Opens a file within [`DecodeLimits::default`]. The extension is only
    /// a hint: an Ogg Vorbis file without one (or with a wrong one) is still
    /// recognised by its content.
    ///
    /// # Errors
    /// [`DecodeError`] if the file cannot be read or holds no decodable audio.
    pub fn open(path: &Path) -> Result<Self, DecodeError> {
        Self::open_with(path, DecodeLimits::default())
    }

    /// Opens a file, to be decoded within `limits`.
    ///
    /// # Errors
    /// [`DecodeError`] if the file cannot be read, holds no decodable audio,
    /// or its header states a sample rate or channel count above `limits`.
    pub fn open_with(path: &Path, limits: DecodeLimits) -> Result<Self, DecodeError> {
        let file = File::open(path)?;
        let ext = path.extension().and_then(|e| e.to_str());
        Self::from_source_with(Box::new(file), ext, limits)
    }

    /// Decodes from any byte source (a file, an in-memory buffer, a socket
    /// wrapped as a [`MediaSource`]) within [`DecodeLimits::default`].
    ///
    /// # Errors
    /// [`DecodeError`] if the bytes are not audio this build can decode.
    pub fn from_source(
        source: Box<dyn MediaSource>,
        extension: Option<&str>,
    ) -> Result<Self, DecodeError> {
        Self::from_source_with(source, extension, DecodeLimits::default())
    }

    /// Decodes from any byte source within `limits`.
    ///
    /// ```
    /// use hendu_fingerprint::decode::{AudioReader, DecodeError, DecodeLimits};
    /// use hendu_fingerprint::hostile::silent_flac;
    ///
    /// // 69 KB of FLAC that decode to 8 hours, read with a 1 hour limit.
    /// let bytes = silent_flac(8.0 * 3600.0, 44_100);
    /// let mut reader = AudioReader::from_source_with(
    ///     Box::new(std::io::Cursor::new(bytes)), None, DecodeLimits::new(3600.0),
    /// ).unwrap();
    /// let outcome = loop {
    ///     match reader.next_chunk() {
    ///         Ok(Some(_)) => continue,
    ///         other => break other.map(|_| ()),
    ///     }
    /// };
    /// assert!(matches!(outcome, Err(DecodeError::TooLong { .. })));
    /// // Decoding stopped within a block of the limit.
    /// assert!(reader.frames_read() <= 3600 * 44_100);
    /// ```
    ///
    /// # Errors
    /// [`DecodeError`] if the bytes are not audio this build can decode, or
    /// the track's header states a sample rate or channel count above
    /// `limits` ([`DecodeError::SampleRate`], [`DecodeError::Channels`]) or
    /// implausibly large packets ([`DecodeError::Corrupt`]).
    pub fn from_source_with(
        source: Box<dyn MediaSource>,
        extension: Option<&str>,
        limits: DecodeLimits,
    ) -> Result<Self, DecodeError> {
        let stream = MediaSourceStream::new(source, Default::default());
        let mut hint = Hint::new();
        if let Some(ext) = extension {
            hint.with_extension(ext);
        }
        let format = guard(|| {
            symphonia::default::get_probe().probe(
                &hint,
                stream,
                FormatOptions::default(),
                MetadataOptions::default(),
            )
        })?
        .map_err(|e| match e {
            SymphoniaError::Unsupported(_) => {
                DecodeError::Unsupported("unrecognised container".into())
            }
            other => other.into(),
        })?;
        let track = format
            .default_track(TrackType::Audio)
            .ok_or(DecodeError::NoAudio)?;
        let track_id = track.id;
        let params = track
            .codec_params
            .as_ref()
            .and_then(|p| p.audio())
            .ok_or(DecodeError::NoAudio)?;
        check_stated(params, &limits)?;
        let decoder =
            guard(|| codecs().make_audio_decoder(params, &AudioDecoderOptions::default()))??;
        Ok(Self {
            format,
            decoder,
            track_id,
            sample_rate: None,
            channels: 0,
            interleaved: Vec::new(),
            mono: Vec::new(),
            frames_read: 0,
            limits,
            max_frames: 0,
            too_long: false,
            cancel: None,
            skipped: 0,
        })
    }

    /// Makes [`AudioReader::next_chunk`] return [`DecodeError::Cancelled`]
    /// once `flag` is true (it is read before every packet), so that work
    /// nobody waits for any more (a client gone, a shutdown) stops within a
    /// packet.
    pub fn cancel_when(&mut self, flag: Arc<AtomicBool>) {
        self.cancel = Some(flag);
    }

    /// The limits this reader decodes within.
    pub fn limits(&self) -> DecodeLimits {
        self.limits
    }

    /// Sample rate of the stream, known once the first chunk was decoded.
    pub fn sample_rate(&self) -> Option<u32> {
        self.sample_rate
    }

    /// Frames (samples per channel) returned so far.
    pub fn frames_read(&self) -> u64 {
        self.frames_read
    }

    /// Corrupt packets skipped so far (garbage in a stream costs these,
    /// not the stream).
    pub fn skipped_packets(&self) -> u64 {
        self.skipped
    }

    /// The next chunk of mono samples, or `None` at the end of the stream.
    /// Chunks are a codec packet long (a few milliseconds to a few hundred).
    ///
    /// # Errors
    /// [`DecodeError`] on an I/O error, a run of corrupt packets, a change
    /// of sample rate or channel count inside the stream, audio beyond the
    /// reader's limits ([`DecodeError::TooLong`], [`DecodeError::SampleRate`],
    /// [`DecodeError::Channels`]; `TooLong` again on every later call), or
    /// cancellation ([`DecodeError::Cancelled`]).
    pub fn next_chunk(&mut self) -> Result<Option<AudioChunk<'_>>, DecodeError> {
        let mut bad_packets = 0usize;
        loop {
            // Relaxed: the flag carries no data to synchronise with, only "stop".
            if self
                .cancel
                .as_ref()
                .is_some_and(|f| f.load(Ordering::Relaxed))
            {
                return Err(DecodeError::Cancelled);
            }
            if self.too_long {
                return Err(self.too_long_error());
            }
            let packet = match guard(|| self.format.next_packet())? {
                Ok(Some(packet)) => packet,
                Ok(None) => return Ok(None),
                // A truncated file ends with an unexpected EOF: what came before is good audio.
                Err(SymphoniaError::IoError(e))
                    if e.kind() == std::io::ErrorKind::UnexpectedEof =>
                {
                    return Ok(None);
                }
                Err(SymphoniaError::ResetRequired) => return Ok(None),
                Err(SymphoniaError::DecodeError(msg)) => {
                    self.skipped += 1;
                    skip_bad_packet(&mut bad_packets, msg)?;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            if packet.track_id != self.track_id {
                continue;
            }
            let buf = match guard(|| self.decoder.decode(&packet))? {
                Ok(buf) => buf,
                Err(SymphoniaError::DecodeError(msg)) => {
                    self.skipped += 1;
                    skip_bad_packet(&mut bad_packets, msg)?;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            let rate = buf.spec().rate();
            let channels = buf.spec().channels().count();
            if rate > self.limits.max_sample_rate {
                return Err(DecodeError::SampleRate(rate));
            }
            if channels > self.limits.max_channels {
                return Err(DecodeError::Channels(channels));
            }
            if rate == 0 || rate > MAX_SAMPLE_RATE || channels == 0 || channels > MAX_CHANNELS {
                return Err(DecodeError::Corrupt(format!(
                    "implausible stream: {rate} Hz, {channels} channels"
                )));
            }
            match self.sample_rate {
                None => {
                    self.sample_rate = Some(rate);
                    self.channels = channels;
                    self.max_frames = self.limits.max_frames(rate);
                }
                Some(r) if r != rate || self.channels != channels => {
                    return Err(DecodeError::FormatChanged(format!(
                        "{r} Hz x{} became {rate} Hz x{channels}",
                        self.channels
                    )));
                }
                Some(_) => {}
            }
            let frames = buf.frames();
            if frames == 0 {
                continue;
            }
            if frames as u64 > MAX_FRAMES_PER_PACKET {
                return Err(DecodeError::Corrupt(format!(
                    "implausible packet of {frames} frames"
                )));
            }
            if self.frames_read + frames as u64 > self.max_frames {
                self.too_long = true;
                return Err(self.too_long_error());
            }
            self.interleaved.resize(frames * channels, 0.0);
            buf.copy_to_slice_interleaved(&mut self.interleaved[..]);
            self.mono.clear();
            if channels == 1 {
                self.mono.extend_from_slice(&self.interleaved);
            } else if channels == 2 {
                // The common case, spelt out so that it vectorises.
                self.mono.extend(
                    self.interleaved
                        .chunks_exact(2)
                        .map(|frame| (frame[0] + frame[1]) * 0.5),
                );
            } else {
                let scale = 1.0 / channels as f32;
                self.mono.extend(
                    self.interleaved
                        .chunks_exact(channels)
                        .map(|frame| frame.iter().sum::<f32>() * scale),
                );
            }
            self.frames_read += frames as u64;
            return Ok(Some(AudioChunk {
                sample_rate: rate,
                samples: &self.mono,
            }));
        }
    }
}

impl AudioReader {
    fn too_long_error(&self) -> DecodeError {
        DecodeError::TooLong {
            limit_s: self.limits.max_seconds,
        }
    }
}

/// Refuses a track whose header states more than `limits` accept, or packets
/// so long that the decoder would size its buffers from a lie. What a header
/// leaves out is checked on the decoded buffers instead.
fn check_stated(params: &AudioCodecParameters, limits: &DecodeLimits) -> Result<(), DecodeError> {
    if let Some(rate) = params.sample_rate
        && rate > limits.max_sample_rate
    {
        return Err(DecodeError::SampleRate(rate));
    }
    if let Some(channels) = &params.channels
        && channels.count() > limits.max_channels
    {
        return Err(DecodeError::Channels(channels.count()));
    }
    for (what, stated) in [
        ("frames per packet", params.max_frames_per_packet),
        ("frames per block", params.frames_per_block),
    ] {
        if let Some(n) = stated
            && n > MAX_FRAMES_PER_PACKET
        {
            return Err(DecodeError::Corrupt(format!(
                "the header claims {n} {what} (at most {MAX_FRAMES_PER_PACKET} accepted)"
            )));
        }
    }
    Ok(())
}

/// A short recording decoded into memory.
#[derive(Debug, Clone, PartialEq)]
pub struct Clip {
    /// Sample rate of `samples`, Hz.
    pub sample_rate: u32,
    /// Mono samples.
    pub samples: Vec<f32>,
}

/// Decodes at most the first `max_seconds` of a file into memory (queries are
/// short; only their first minute or so is ever matched).
///
/// # Errors
/// [`DecodeError`] if the file is unreadable, not audio, or has no samples.
pub fn read_clip(path: &Path, max_seconds: f64) -> Result<Clip, DecodeError> {
    let mut reader = AudioReader::open(path)?;
    let mut clip = Clip {
        sample_rate: 0,
        samples: Vec::new(),
    };
    while let Some(chunk) = reader.next_chunk()? {
        clip.sample_rate = chunk.sample_rate;
        clip.samples.extend_from_slice(chunk.samples);
        if clip.samples.len() as f64 >= max_seconds * f64::from(chunk.sample_rate) {
            break;
        }
    }
    if clip.samples.is_empty() {
        return Err(DecodeError::NoAudio);
    }
    Ok(clip)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fingerprinter::fingerprint_reader;
    use crate::hostile::{FLAC_BLOCK, huge_packet_caf, lying_wav, random_bytes, silent_flac, wav};
    use crate::params::PeakProfile;
    use proptest::prelude::*;
    use std::io::Cursor;

    fn reader(bytes: Vec<u8>, limits: DecodeLimits) -> Result<AudioReader, DecodeError> {
        AudioReader::from_source_with(Box::new(Cursor::new(bytes)), None, limits)
    }

    /// Reads to the end; the first error, or `Ok` at the end of the stream.
    fn drain(reader: &mut AudioReader) -> Result<(), DecodeError> {
        while reader.next_chunk()?.is_some() {}
        Ok(())
    }

    /// A WAV of `channels` channels of silence at `rate`, written by hound.
    fn hound_wav(rate: u32, channels: u16, frames: usize) -> Vec<u8> {
        let spec = hound::WavSpec {
            channels,
            sample_rate: rate,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut out = Cursor::new(Vec::new());
        let mut writer = hound::WavWriter::new(&mut out, spec).unwrap();
        for i in 0..frames * usize::from(channels) {
            writer.write_sample((i % 97) as i16 * 100).unwrap();
        }
        writer.finalize().unwrap();
        out.into_inner()
    }

    #[test]
    fn defaults_are_a_day_192_khz_and_8_channels() {
        let d = DecodeLimits::default();
        assert_eq!(
            d,
            DecodeLimits {
                max_seconds: 86_400.0,
                max_sample_rate: 192_000,
                max_channels: 8,
            }
        );
        assert_eq!(
            DecodeLimits::new(5.0),
            DecodeLimits {
                max_seconds: 5.0,
                ..d
            }
        );
    }

    #[test]
    fn decoding_stops_at_the_first_packet_past_the_limit_and_stays_stopped() {
        // 10 hours of FLAC (80 KB), read with a one-minute limit.
        let mut r = reader(silent_flac(36_000.0, 44_100), DecodeLimits::new(60.0)).unwrap();
        let err = drain(&mut r).unwrap_err();
        assert!(
            matches!(err, DecodeError::TooLong { limit_s } if limit_s == 60.0),
            "{err:?}"
        );
        // Nothing past the limit was returned, and not a block more was decoded.
        assert!(r.frames_read() <= 60 * 44_100);
        assert!(r.frames_read() > 60 * 44_100 - u64::from(FLAC_BLOCK));
        assert!(matches!(r.next_chunk(), Err(DecodeError::TooLong { .. })));
    }

    #[test]
    fn audio_exactly_as_long_as_the_limit_is_accepted() {
        let mut r = reader(silent_flac(60.0, 8_000), DecodeLimits::new(60.0)).unwrap();
        drain(&mut r).unwrap();
        assert_eq!(r.frames_read(), 480_000);
    }

    #[test]
    fn a_nan_or_negative_duration_limit_refuses_any_audio_and_infinity_none() {
        for limit in [f64::NAN, -1.0, 0.0] {
            let mut r = reader(silent_flac(1.0, 8_000), DecodeLimits::new(limit)).unwrap();
            assert!(matches!(drain(&mut r), Err(DecodeError::TooLong { .. })));
        }
        let mut r = reader(silent_flac(100.0, 8_000), DecodeLimits::new(f64::INFINITY)).unwrap();
        drain(&mut r).unwrap();
        assert_eq!(r.frames_read(), 800_000);
    }

    #[test]
    fn a_sample_rate_or_channel_count_above_the_limits_is_refused_before_decoding() {
        let fast = wav(&[0.0; 1000], 384_000);
        let err = reader(fast.clone(), DecodeLimits::default()).unwrap_err();
        assert!(matches!(err, DecodeError::SampleRate(384_000)), "{err:?}");
        let limits = DecodeLimits {
            max_sample_rate: 400_000,
            ..DecodeLimits::default()
        };
        drain(&mut reader(fast, limits).unwrap()).unwrap();

        let wide = hound_wav(8_000, 10, 100);
        let err = reader(wide.clone(), DecodeLimits::default()).unwrap_err();
        assert!(matches!(err, DecodeError::Channels(10)), "{err:?}");
        let limits = DecodeLimits {
            max_channels: 16,
            ..DecodeLimits::default()
        };
        drain(&mut reader(wide, limits).unwrap()).unwrap();
    }

    #[test]
    fn a_header_promising_huge_packets_is_refused_before_a_decoder_sizes_buffers_from_it() {
        // Without the check the PCM decoder asks for 32 GiB per channel and
        // the allocation failure aborts the whole process.
        let err = reader(huge_packet_caf(8), DecodeLimits::default()).unwrap_err();
        assert!(
            matches!(&err, DecodeError::Corrupt(msg) if msg.contains("frames per packet")),
            "{err:?}"
        );
    }

    #[test]
    fn a_header_lying_about_the_length_costs_only_what_the_file_holds() {
        let mut r = reader(lying_wav(1e9, 2.0, 8_000), DecodeLimits::new(60.0)).unwrap();
        drain(&mut r).unwrap();
        assert_eq!(r.frames_read(), 16_000);
    }

    #[test]
    fn a_set_flag_cancels_before_the_next_packet() {
        let flag = Arc::new(AtomicBool::new(false));
        let mut r = reader(silent_flac(36_000.0, 8_000), DecodeLimits::default()).unwrap();
        r.cancel_when(flag.clone());
        assert!(r.next_chunk().unwrap().is_some());
        flag.store(true, Ordering::Relaxed);
        assert!(matches!(r.next_chunk(), Err(DecodeError::Cancelled)));
        assert_eq!(r.frames_read(), u64::from(FLAC_BLOCK));
    }

    #[test]
    fn fingerprinting_stops_when_another_thread_cancels() {
        // 250 hours of silence: minutes of work unless cancelled.
        let bytes = crate::hostile::silent_flac_sized(8 << 20, 44_100);
        let flag = Arc::new(AtomicBool::new(false));
        let mut r = reader(bytes, DecodeLimits::new(f64::INFINITY)).unwrap();
        r.cancel_when(flag.clone());
        let setter = {
            let flag = flag.clone();
            std::thread::spawn(move || {
                std::thread::sleep(std::time::Duration::from_millis(100));
                flag.store(true, Ordering::Relaxed);
            })
        };
        let started = std::time::Instant::now();
        let err = fingerprint_reader(&mut r, PeakProfile::QUERY).unwrap_err();
        setter.join().unwrap();
        assert!(matches!(err, DecodeError::Cancelled), "{err:?}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn fingerprint_file_with_applies_limits_and_cancellation() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut f, &silent_flac(120.0, 8_000)).unwrap();
        let limited = crate::fingerprint_file_with(
            f.path(),
            PeakProfile::CATALOGUE,
            DecodeLimits::new(60.0),
            None,
        );
        assert!(matches!(limited, Err(DecodeError::TooLong { .. })));
        let cancelled = crate::fingerprint_file_with(
            f.path(),
            PeakProfile::CATALOGUE,
            DecodeLimits::default(),
            Some(Arc::new(AtomicBool::new(true))),
        );
        assert!(matches!(cancelled, Err(DecodeError::Cancelled)));
        let whole = crate::fingerprint_file_with(
            f.path(),
            PeakProfile::CATALOGUE,
            DecodeLimits::new(120.0),
            None,
        )
        .unwrap();
        assert_eq!(whole.duration_s, 120.0);
    }

    /// Valid files of every container this test can build or has as a
    /// fixture, a few seconds each (built once: proptest asks for them per case).
    fn valid_files() -> Vec<Vec<u8>> {
        static FILES: std::sync::OnceLock<Vec<Vec<u8>>> = std::sync::OnceLock::new();
        FILES.get_or_init(build_valid_files).clone()
    }

    fn build_valid_files() -> Vec<Vec<u8>> {
        let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/");
        let mut files: Vec<Vec<u8>> = [
            "tones.mp3",
            "tones.aac",
            "tones.m4a",
            "tones.flac",
            "tones-ogg-without-extension",
            "tones.opus",
        ]
        .iter()
        .map(|name| std::fs::read(format!("{fixtures}{name}")).unwrap())
        .collect();
        files.push(hound_wav(8_000, 2, 16_000));
        files.push(wav(&crate::synth::music(3, 2.0, 11_025), 11_025));
        files.push(silent_flac(600.0, 44_100));
        files
    }

    /// What a decode of untrusted bytes may end with: within the limits, or
    /// an error; a panic fails the property.
    fn decode_within(bytes: Vec<u8>, limits: DecodeLimits) -> Result<(), TestCaseError> {
        let Ok(mut r) = reader(bytes, limits) else {
            return Ok(());
        };
        if let Ok(fp) = fingerprint_reader(&mut r, PeakProfile::QUERY) {
            prop_assert!(fp.duration_s <= limits.max_seconds, "{}", fp.duration_s);
            prop_assert!(fp.peaks.iter().all(|p| p.frame <= fp.frames));
        }
        let rate = r.sample_rate().unwrap_or(0);
        prop_assert!(rate <= limits.max_sample_rate);
        prop_assert!(r.frames_read() as f64 <= limits.max_seconds * f64::from(rate));
        Ok(())
    }

    const SMALL: DecodeLimits = DecodeLimits {
        max_seconds: 5.0,
        max_sample_rate: 96_000,
        max_channels: 2,
    };

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn arbitrary_bytes_never_panic_and_stay_within_the_limits(
            bytes in prop::collection::vec(any::<u8>(), 0..2048),
            magic in prop::sample::select(vec![
                &b""[..], b"RIFF\xff\xff\xff\xffWAVEfmt ", b"fLaC", b"OggS", b"ID3\x04",
                b"caff\x00\x01\x00\x00", b"\x00\x00\x00\x20ftypM4A ", b"\x1a\x45\xdf\xa3",
                b"FORM\x00\x00\x10\x00AIFF", b"\xff\xfb\x90\x64", b"\xff\xf1\x50\x80",
            ]),
        ) {
            let mut input = magic.to_vec();
            input.extend(bytes);
            decode_within(input, SMALL)?;
        }

        #[test]
        fn truncated_and_corrupted_files_never_panic_and_stay_within_the_limits(
            file in 0usize..9,
            cut in 0.0f64..=1.0,
            damage in prop::collection::vec((0.0f64..1.0, any::<u8>()), 0..40),
        ) {
            let mut bytes = valid_files().swap_remove(file);
            for (at, value) in damage {
                let i = (at * bytes.len() as f64) as usize;
                bytes[i] = value;
            }
            bytes.truncate((cut * bytes.len() as f64).ceil() as usize);
            decode_within(bytes, SMALL)?;
        }
    }

    #[test]
    fn the_files_the_properties_damage_decode_when_whole() {
        for (i, bytes) in valid_files().into_iter().enumerate() {
            let mut r = reader(bytes, SMALL).unwrap();
            match fingerprint_reader(&mut r, PeakProfile::QUERY) {
                Ok(fp) => assert!(fp.duration_s > 1.9 && !fp.peaks.is_empty(), "file {i}"),
                // The ten minutes of silence pass the 5 s limit.
                Err(DecodeError::TooLong { .. }) if i == 8 => {}
                Err(e) => panic!("file {i}: {e}"),
            }
        }
    }

    #[test]
    fn random_bytes_are_refused_as_not_audio() {
        let err = reader(random_bytes(7, 100_000), DecodeLimits::default()).unwrap_err();
        assert!(matches!(err, DecodeError::Unsupported(_)), "{err:?}");
    }
}
