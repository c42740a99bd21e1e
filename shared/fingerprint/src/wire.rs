//! The sample fingerprint a sensor sends instead of audio: version 1.
//!
//! A device that fingerprints on board sends this (media type
//! [`MEDIA_TYPE`]) to `POST /v1/devices/{imei}/samples`: a few kilobytes
//! for 30 s instead of the audio, and no audio leaves the venue.
//!
//! | offset | size | field |
//! | --- | --- | --- |
//! | 0 | 4 | magic `HNDU` |
//! | 4 | 1 | format version, `1` |
//! | 5 | 1 | analysis, `3`: main band 8 kHz, 512-point STFT, hop 128; low band 1 kHz, 256-point STFT, hop 16; [`crate::PeakProfile::QUERY`] |
//! | 6 | 8 | capture instant of the first sample, Unix milliseconds, signed little-endian |
//! | 14 | 4 | duration in milliseconds, unsigned little-endian, within (0, 3 600 000] |
//! | 18 | ... | the peaks, [`crate::packed`] (either precision; fine keeps speed correction exact) |
//!
//! Peaks are the output of [`crate::Fingerprinter`] with the query profile,
//! frames counted from the start of the sample. A server refuses any other
//! version or analysis rather than guess: both are bumped whenever a
//! parameter that changes peaks changes.
//!
//! ```
//! use hendu_fingerprint::Peak;
//! use hendu_fingerprint::wire::SampleFingerprint;
//!
//! let sample = SampleFingerprint {
//!     captured_at_ms: 1_790_000_000_000,
//!     duration_ms: 30_000,
//!     peaks: vec![Peak { frame: 4, bin: 51.5 }],
//! };
//! assert_eq!(SampleFingerprint::decode(&sample.encode()).unwrap(), sample);
//! ```

use crate::packed::{BinPrecision, UnpackError, pack, unpack};
use crate::params::FRAME_SECONDS;
use crate::peaks::Peak;

/// The HTTP media type of an encoded [`SampleFingerprint`].
pub const MEDIA_TYPE: &str = "application/vnd.hendu.sample-fingerprint";
pub const MAGIC: &[u8; 4] = b"HNDU";
pub const VERSION: u8 = 1;
/// The analysis this build's peaks come from.
/// (3: a low band, 20-301 Hz, beside the main band; 2 had the main band
/// from 78 Hz only; 1 took it from 312 Hz.)
pub const ANALYSIS: u8 = 3;
/// The longest sample, in milliseconds (one hour).
pub const MAX_DURATION_MS: u32 = 3_600_000;
const HEADER: usize = 18;

/// Why bytes are not a sample fingerprint this build accepts.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    #[error("not a HENDU sample fingerprint (bad magic or shorter than its header)")]
    NotAFingerprint,
    #[error(
        "sample fingerprint version {0} is not supported (this server reads version {VERSION})"
    )]
    Version(u8),
    #[error(
        "sample fingerprint analysis {0} is not supported (this server uses analysis {ANALYSIS})"
    )]
    Analysis(u8),
    #[error("duration {0} ms is not within (0, {MAX_DURATION_MS}]")]
    Duration(u32),
    #[error("a peak at frame {frame} lies beyond the sample's {frames} frames")]
    PeakBeyondEnd { frame: u32, frames: u32 },
    #[error(transparent)]
    Peaks(#[from] UnpackError),
}

/// A sample's fingerprint as a device sends it.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleFingerprint {
    pub captured_at_ms: i64,
    pub duration_ms: u32,
    pub peaks: Vec<Peak>,
}

impl SampleFingerprint {
    /// Frames the sample spans.
    pub fn frames(&self) -> u32 {
        frames_in(self.duration_ms)
    }

    /// The version 1 bytes, bins at fine precision.
    pub fn encode(&self) -> Vec<u8> {
        let peaks = pack(&self.peaks, BinPrecision::Fine);
        let mut out = Vec::with_capacity(HEADER + peaks.len());
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.push(ANALYSIS);
        out.extend_from_slice(&self.captured_at_ms.to_le_bytes());
        out.extend_from_slice(&self.duration_ms.to_le_bytes());
        out.extend_from_slice(&peaks);
        out
    }

    /// Reads version 1 bytes.
    ///
    /// # Errors
    /// [`WireError`] for anything else; never panics.
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        if bytes.len() < HEADER || &bytes[..4] != MAGIC {
            return Err(WireError::NotAFingerprint);
        }
        if bytes[4] != VERSION {
            return Err(WireError::Version(bytes[4]));
        }
        if bytes[5] != ANALYSIS {
            return Err(WireError::Analysis(bytes[5]));
        }
        let mut at = [0u8; 8];
        at.copy_from_slice(&bytes[6..14]);
        let mut duration = [0u8; 4];
        duration.copy_from_slice(&bytes[14..18]);
        let duration_ms = u32::from_le_bytes(duration);
        if duration_ms == 0 || duration_ms > MAX_DURATION_MS {
            return Err(WireError::Duration(duration_ms));
        }
        let peaks = unpack(&bytes[HEADER..])?;
        let frames = frames_in(duration_ms);
        if let Some(p) = peaks.iter().find(|p| p.frame > frames) {
            return Err(WireError::PeakBeyondEnd {
                frame: p.frame,
                frames,
            });
        }
        Ok(Self {
            captured_at_ms: i64::from_le_bytes(at),
            duration_ms,
            peaks,
        })
    }
}

/// Frames in `duration_ms` of audio (rounded up).
fn frames_in(duration_ms: u32) -> u32 {
    (f64::from(duration_ms) / 1000.0 / FRAME_SECONDS).ceil() as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SampleFingerprint {
        SampleFingerprint {
            captured_at_ms: -5,
            duration_ms: 1000,
            peaks: vec![
                Peak {
                    frame: 0,
                    bin: 20.5,
                },
                Peak {
                    frame: 62,
                    bin: 200.25,
                },
            ],
        }
    }

    #[test]
    fn other_versions_analyses_and_garbage_are_refused_by_name() {
        let good = sample().encode();
        assert_eq!(SampleFingerprint::decode(&good), Ok(sample()));
        let mut v2 = good.clone();
        v2[4] = 2;
        assert_eq!(SampleFingerprint::decode(&v2), Err(WireError::Version(2)));
        let mut other = good.clone();
        other[5] = 9;
        assert_eq!(
            SampleFingerprint::decode(&other),
            Err(WireError::Analysis(9))
        );
        assert_eq!(
            SampleFingerprint::decode(b"RIFF....WAVEfmt "),
            Err(WireError::NotAFingerprint)
        );
        for cut in 0..good.len() {
            assert!(
                SampleFingerprint::decode(&good[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        let mut zero = good.clone();
        zero[14..18].copy_from_slice(&0u32.to_le_bytes());
        assert_eq!(
            SampleFingerprint::decode(&zero),
            Err(WireError::Duration(0))
        );
    }

    #[test]
    fn a_peak_after_the_end_of_the_sample_is_refused() {
        let mut s = sample();
        s.peaks[1].frame = 5000;
        assert!(matches!(
            SampleFingerprint::decode(&s.encode()),
            Err(WireError::PeakBeyondEnd { frame: 5000, .. })
        ));
    }
}
