//! Decoding any supported container and codec into mono `f32` samples.
//!
//! Symphonia does the demuxing and decoding; this module adds what a
//! fingerprinter needs on top: one audio track chosen, every channel layout
//! down-mixed to mono, corrupt packets skipped (up to a bound) instead of
//! aborting, and a clear [`DecodeError`] for input that is not audio at all.

use std::fs::File;
use std::path::Path;

use symphonia::core::codecs::audio::{AudioDecoder, AudioDecoderOptions};
use symphonia::core::errors::Error as SymphoniaError;
use symphonia::core::formats::probe::Hint;
use symphonia::core::formats::{FormatOptions, FormatReader, TrackType};
use symphonia::core::io::{MediaSource, MediaSourceStream};
use symphonia::core::meta::MetadataOptions;

/// Consecutive undecodable packets tolerated before a stream is declared corrupt.
/// Real files have the odd damaged frame (a cut MP3, a bad sector); a stream of
/// nothing but damage is not audio.
const MAX_CONSECUTIVE_BAD_PACKETS: usize = 64;

/// Highest sample rate accepted. Anything above is a corrupt header, and
/// accepting it would size buffers from attacker-controlled numbers.
const MAX_SAMPLE_RATE: u32 = 768_000;

/// Most channels accepted in one stream (Symphonia itself caps layouts lower).
const MAX_CHANNELS: usize = 64;

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
}

impl std::fmt::Debug for AudioReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AudioReader")
            .field("track_id", &self.track_id)
            .field("sample_rate", &self.sample_rate)
            .field("frames_read", &self.frames_read)
            .finish_non_exhaustive()
    }
}

impl AudioReader {
    /// Opens a file. The extension is only a hint: an Ogg Vorbis file without
    /// one (or with a wrong one) is still recognised by its content.
    ///
    /// # Errors
    /// [`DecodeError`] if the file cannot be read or holds no decodable audio.
    pub fn open(path: &Path) -> Result<Self, DecodeError> {
        let file = File::open(path)?;
        let ext = path.extension().and_then(|e| e.to_str());
        Self::from_source(Box::new(file), ext)
    }

    /// Decodes from any byte source (a file, an in-memory buffer, a socket
    /// wrapped as a [`MediaSource`]).
    ///
    /// # Errors
    /// [`DecodeError`] if the bytes are not audio this build can decode.
    pub fn from_source(
        source: Box<dyn MediaSource>,
        extension: Option<&str>,
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
        let decoder = symphonia::default::get_codecs()
            .make_audio_decoder(params, &AudioDecoderOptions::default())?;
        Ok(Self {
            format,
            decoder,
            track_id,
            sample_rate: None,
            channels: 0,
            interleaved: Vec::new(),
            mono: Vec::new(),
            frames_read: 0,
        })
    }

    /// Sample rate of the stream, known once the first chunk was decoded.
    pub fn sample_rate(&self) -> Option<u32> {
        self.sample_rate
    }

    /// Frames (samples per channel) returned so far.
    pub fn frames_read(&self) -> u64 {
        self.frames_read
    }

    /// The next chunk of mono samples, or `None` at the end of the stream.
    /// Chunks are a codec packet long (a few milliseconds to a few hundred).
    ///
    /// # Errors
    /// [`DecodeError`] on an I/O error, a run of corrupt packets, or a
    /// change of sample rate or channel count inside the stream.
    pub fn next_chunk(&mut self) -> Result<Option<AudioChunk<'_>>, DecodeError> {
        let mut bad_packets = 0usize;
        loop {
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
                    skip_bad_packet(&mut bad_packets, msg)?;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            let rate = buf.spec().rate();
            let channels = buf.spec().channels().count();
            if rate == 0 || rate > MAX_SAMPLE_RATE || channels == 0 || channels > MAX_CHANNELS {
                return Err(DecodeError::Corrupt(format!(
                    "implausible stream: {rate} Hz, {channels} channels"
                )));
            }
            match self.sample_rate {
                None => {
                    self.sample_rate = Some(rate);
                    self.channels = channels;
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
