//! The sample fingerprint a sensor sends instead of audio: versions 1 and 2.
//!
//! A device that fingerprints on board sends this (media type
//! [`MEDIA_TYPE`]) to `POST /v1/devices/{imei}/samples`: a few kilobytes
//! for 30 s instead of the audio, and no audio leaves the venue.
//!
//! | offset | size | field |
//! | --- | --- | --- |
//! | 0 | 4 | magic `HNDU` |
//! | 4 | 1 | format version, `1` or `2` |
//! | 5 | 1 | analysis, `3`: main band 8 kHz, 512-point STFT, hop 128; low band 1 kHz, 256-point STFT, hop 16; [`crate::PeakProfile::QUERY`] |
//! | 6 | 8 | capture instant of the first sample, Unix milliseconds, signed little-endian |
//! | 14 | 4 | duration in milliseconds, unsigned little-endian, within (0, 3 600 000] |
//! | 18 | ... | version 1: the peaks, [`crate::packed`] (either precision; fine keeps speed correction exact); version 2: the peaks and the sparse peaks, [`crate::packed::pack_query`] |
//!
//! Peaks are the output of [`crate::Fingerprinter`] with the query profile,
//! frames counted from the start of the sample; version 2 adds the sparse
//! peaks of [`crate::Fingerprinter::for_query`], which let the engine
//! propose a DJ's tempo or key change (`docs/recognition.md`, "DJs and key
//! shifts"), and which meet the same limits as the peaks.
//! [`SampleFingerprint::encode`] writes version 1 when there are no sparse
//! peaks, so a server older than version 2 still reads them. A server
//! refuses any other version or analysis rather than guess: both are bumped
//! whenever a parameter that changes peaks changes.
//!
//! # Density limits
//! A fingerprint is refused, before its peaks cost anything to match, when
//! it is denser than the engine could have made it:
//!
//! | limit | value | the query profile, at most by construction | measured (`examples/density.rs`) |
//! | --- | --- | --- | --- |
//! | peaks in any second of the sample ([`MAX_PEAKS_PER_SECOND`]) | 200 | 153 | at most 56 in synthetic music, 112 in it with white noise, 111 in white noise alone |
//! | peaks in one frame ([`MAX_PEAKS_PER_FRAME`]) | 64 | 51 | at most 13 (clicks), 9-11 in music with or without noise |
//! | peaks in all ([`max_peaks`]) | 200 a second touched: 720,200 for an hour | 99.6 a second, plus a block at each end | 27/s in synthetic music, 99.6/s in white noise (real music: about 60/s, up to 100/s in noise) |
//!
//! "A second" is frames `f` with `f * 128 / 8000` equal (62 or 63 frames);
//! the profile keeps at most 31 main-band and 20 low-band peaks per 32-frame
//! block, and a second touches at most 3 blocks of each band. The total is
//! checked on the packed count before a peak is unpacked
//! ([`crate::packed::peak_count`]), so a forged count costs nothing. With
//! [`crate::params::QUERY_MAX_PAIRS_PER_ANCHOR`], these bound the landmarks
//! any accepted sample makes to 128 per peak.
//!
//! ```
//! use hendu_fingerprint::Peak;
//! use hendu_fingerprint::wire::SampleFingerprint;
//!
//! let sample = SampleFingerprint {
//!     captured_at_ms: 1_790_000_000_000,
//!     duration_ms: 30_000,
//!     peaks: vec![Peak { frame: 4, bin: 51.5 }],
//!     sparse: vec![],
//! };
//! assert_eq!(SampleFingerprint::decode(&sample.encode()).unwrap(), sample);
//! ```

use crate::packed::{
    BinPrecision, UnpackError, pack, pack_query, peak_count, unpack, unpack_query,
};
use crate::params::{FRAME_SECONDS, HOP, SAMPLE_RATE};
use crate::peaks::Peak;

/// The HTTP media type of an encoded [`SampleFingerprint`].
pub const MEDIA_TYPE: &str = "application/vnd.hendu.sample-fingerprint";
pub const MAGIC: &[u8; 4] = b"HNDU";
/// The newest format version this build reads and writes (it reads 1 too).
pub const VERSION: u8 = 2;
/// The analysis this build's peaks come from.
/// (3: a low band, 20-301 Hz, beside the main band; 2 had the main band
/// from 78 Hz only; 1 took it from 312 Hz.)
pub const ANALYSIS: u8 = 3;
/// The longest sample, in milliseconds (one hour).
pub const MAX_DURATION_MS: u32 = 3_600_000;
/// Most peaks accepted in any one second of a sample (module docs: the
/// query profile makes at most 153, about 100 in noise).
pub const MAX_PEAKS_PER_SECOND: u32 = 200;
/// Most peaks accepted in one frame (the query profile makes at most 51).
pub const MAX_PEAKS_PER_FRAME: u32 = 64;
const HEADER: usize = 18;

/// Why bytes are not a sample fingerprint this build accepts.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    #[error("not a HENDU sample fingerprint (bad magic or shorter than its header)")]
    NotAFingerprint,
    #[error(
        "sample fingerprint version {0} is not supported (this server reads versions 1 to {VERSION})"
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
    /// More peaks than [`max_peaks`] allows for the duration (checked on the
    /// declared count, before unpacking).
    #[error("{peaks} peaks is more than a sample of {duration_ms} ms may hold ({limit})")]
    TooManyPeaks {
        peaks: u64,
        limit: u64,
        duration_ms: u32,
    },
    /// One second of the sample holds more than [`MAX_PEAKS_PER_SECOND`] peaks.
    #[error("second {second} of the sample holds {peaks} peaks (at most {MAX_PEAKS_PER_SECOND})")]
    TooDense { second: u32, peaks: u32 },
    /// One frame holds more than [`MAX_PEAKS_PER_FRAME`] peaks.
    #[error("frame {frame} holds {peaks} peaks (at most {MAX_PEAKS_PER_FRAME})")]
    FrameTooDense { frame: u32, peaks: u32 },
    #[error(transparent)]
    Peaks(#[from] UnpackError),
}

/// A sample's fingerprint as a device sends it.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleFingerprint {
    pub captured_at_ms: i64,
    pub duration_ms: u32,
    pub peaks: Vec<Peak>,
    /// The sparse peaks (version 2); empty in version 1.
    pub sparse: Vec<Peak>,
}

impl SampleFingerprint {
    /// Frames the sample spans.
    pub fn frames(&self) -> u32 {
        frames_in(self.duration_ms)
    }

    /// The bytes, bins at fine precision: version 2 with sparse peaks,
    /// version 1 without.
    pub fn encode(&self) -> Vec<u8> {
        let (version, peaks) = if self.sparse.is_empty() {
            (1, pack(&self.peaks, BinPrecision::Fine))
        } else {
            (2, pack_query(&self.peaks, &self.sparse))
        };
        let mut out = Vec::with_capacity(HEADER + peaks.len());
        out.extend_from_slice(MAGIC);
        out.push(version);
        out.push(ANALYSIS);
        out.extend_from_slice(&self.captured_at_ms.to_le_bytes());
        out.extend_from_slice(&self.duration_ms.to_le_bytes());
        out.extend_from_slice(&peaks);
        out
    }

    /// Reads version 1 or 2 bytes.
    ///
    /// # Errors
    /// [`WireError`] for anything else; never panics.
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        if bytes.len() < HEADER || &bytes[..4] != MAGIC {
            return Err(WireError::NotAFingerprint);
        }
        let version = bytes[4];
        if !(1..=VERSION).contains(&version) {
            return Err(WireError::Version(version));
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
        let packed = &bytes[HEADER..];
        let declared = peak_count(packed)?;
        let limit = max_peaks(duration_ms);
        if declared > limit {
            return Err(WireError::TooManyPeaks {
                peaks: declared,
                limit,
                duration_ms,
            });
        }
        // Version 1 holds one list; version 2 a second after it, which the
        // unpacking bounds by the bytes that describe it.
        let (peaks, sparse) = if version == 1 {
            (unpack(packed)?, Vec::new())
        } else {
            unpack_query(packed)?
        };
        if sparse.len() as u64 > limit {
            return Err(WireError::TooManyPeaks {
                peaks: sparse.len() as u64,
                limit,
                duration_ms,
            });
        }
        let frames = frames_in(duration_ms);
        for list in [&peaks, &sparse] {
            if let Some(p) = list.iter().find(|p| p.frame > frames) {
                return Err(WireError::PeakBeyondEnd {
                    frame: p.frame,
                    frames,
                });
            }
            check_density(list)?;
        }
        Ok(Self {
            captured_at_ms: i64::from_le_bytes(at),
            duration_ms,
            peaks,
            sparse,
        })
    }
}

/// Frames in `duration_ms` of audio (rounded up).
fn frames_in(duration_ms: u32) -> u32 {
    (f64::from(duration_ms) / 1000.0 / FRAME_SECONDS).ceil() as u32
}

/// The second of the sample a frame starts in.
fn second_of(frame: u32) -> u32 {
    (u64::from(frame) * HOP as u64 / u64::from(SAMPLE_RATE)) as u32
}

/// Most peaks a sample of `duration_ms` may hold: [`MAX_PEAKS_PER_SECOND`]
/// for every second its frames touch (peaks lie on frames 0 to the
/// duration's frame count), so that a sample within the per-second limit is
/// always within this one.
pub fn max_peaks(duration_ms: u32) -> u64 {
    let seconds = u64::from(second_of(frames_in(duration_ms))) + 1;
    seconds * u64::from(MAX_PEAKS_PER_SECOND)
}

/// Refuses peaks (in frame order, as unpacked) that crowd one frame or one
/// second more than the engine can.
fn check_density(peaks: &[Peak]) -> Result<(), WireError> {
    for frame in peaks.chunk_by(|a, b| a.frame == b.frame) {
        if frame.len() > MAX_PEAKS_PER_FRAME as usize {
            return Err(WireError::FrameTooDense {
                frame: frame[0].frame,
                peaks: frame.len() as u32,
            });
        }
    }
    for second in peaks.chunk_by(|a, b| second_of(a.frame) == second_of(b.frame)) {
        if second.len() > MAX_PEAKS_PER_SECOND as usize {
            return Err(WireError::TooDense {
                second: second_of(second[0].frame),
                peaks: second.len() as u32,
            });
        }
    }
    Ok(())
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
            sparse: Vec::new(),
        }
    }

    #[test]
    fn version_2_carries_the_sparse_peaks_and_version_1_is_still_read() {
        let plain = sample();
        let v1 = plain.encode();
        assert_eq!(v1[4], 1);
        assert_eq!(SampleFingerprint::decode(&v1), Ok(plain.clone()));
        let wide = SampleFingerprint {
            sparse: vec![Peak {
                frame: 30,
                bin: 44.0,
            }],
            ..plain
        };
        let v2 = wide.encode();
        assert_eq!(v2[4], 2);
        assert_eq!(SampleFingerprint::decode(&v2), Ok(wide.clone()));
        // The sparse list meets the same limits as the peaks.
        let beyond = SampleFingerprint {
            sparse: vec![Peak {
                frame: 5000,
                bin: 44.0,
            }],
            ..wide.clone()
        };
        assert!(matches!(
            SampleFingerprint::decode(&beyond.encode()),
            Err(WireError::PeakBeyondEnd { frame: 5000, .. })
        ));
        let crowded = SampleFingerprint {
            sparse: (0..100)
                .map(|i| Peak {
                    frame: 3,
                    bin: 10.0 + i as f32,
                })
                .collect(),
            ..wide
        };
        assert!(matches!(
            SampleFingerprint::decode(&crowded.encode()),
            Err(WireError::FrameTooDense { frame: 3, .. })
        ));
    }

    #[test]
    fn other_versions_analyses_and_garbage_are_refused_by_name() {
        let good = sample().encode();
        assert_eq!(SampleFingerprint::decode(&good), Ok(sample()));
        for version in [0, 3] {
            let mut other = good.clone();
            other[4] = version;
            assert_eq!(
                SampleFingerprint::decode(&other),
                Err(WireError::Version(version))
            );
        }
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
        // Version 1 carries one list: a query's two-list blob is refused.
        let mut two_lists = good[..HEADER].to_vec();
        let peaks = sample().peaks;
        two_lists.extend_from_slice(&crate::packed::pack_query(&peaks, &peaks));
        assert!(matches!(
            SampleFingerprint::decode(&two_lists),
            Err(WireError::Peaks(crate::packed::UnpackError::QueryBlob))
        ));
    }

    #[test]
    fn fingerprints_denser_than_the_engine_makes_are_refused_by_name() {
        use crate::hostile::dense_sample_fingerprint;
        // At the limits: accepted.
        let at = dense_sample_fingerprint(60_000, MAX_PEAKS_PER_SECOND, MAX_PEAKS_PER_FRAME);
        let sample = SampleFingerprint::decode(&at).unwrap();
        // 60 full seconds, and the one frame (3,750) of the 61st.
        assert_eq!(
            sample.peaks.len(),
            60 * MAX_PEAKS_PER_SECOND as usize + MAX_PEAKS_PER_FRAME as usize
        );
        // One more in a frame, or in a second.
        let frame = dense_sample_fingerprint(60_000, 100, MAX_PEAKS_PER_FRAME + 1);
        assert_eq!(
            SampleFingerprint::decode(&frame),
            Err(WireError::FrameTooDense {
                frame: 0,
                peaks: MAX_PEAKS_PER_FRAME + 1
            })
        );
        // The densest second is refused whatever the total: a sample of an
        // hour may not put its whole budget in its first second.
        let mut crowded = SampleFingerprint::decode(&at).unwrap();
        crowded.duration_ms = MAX_DURATION_MS;
        crowded.peaks[250].frame = 0;
        crowded.peaks.sort_by_key(|p| p.frame);
        assert!(matches!(
            SampleFingerprint::decode(&crowded.encode()),
            Err(WireError::FrameTooDense { frame: 0, .. })
        ));
        let mut spread = crowded.clone();
        for (i, p) in spread.peaks.iter_mut().enumerate().take(201) {
            p.frame = (i / 4) as u32;
        }
        spread.peaks.sort_by_key(|p| p.frame);
        assert!(matches!(
            SampleFingerprint::decode(&spread.encode()),
            Err(WireError::TooDense { second: 0, .. })
        ));
    }

    #[test]
    fn a_forged_peak_count_is_refused_from_the_header_alone() {
        let mut bytes = sample().encode()[..HEADER].to_vec();
        // Fine precision, a count of 2^40, and no peaks at all.
        bytes.push(BinPrecision::Fine as u8);
        let mut count = 1u64 << 40;
        while count >= 0x80 {
            bytes.push((count as u8) | 0x80);
            count >>= 7;
        }
        bytes.push(count as u8);
        assert_eq!(
            SampleFingerprint::decode(&bytes),
            Err(WireError::TooManyPeaks {
                peaks: 1 << 40,
                limit: max_peaks(1000),
                duration_ms: 1000
            })
        );
    }

    #[test]
    fn the_total_limit_is_the_per_second_limit_over_every_second_touched() {
        // 1 s is frames 0..=63: seconds 0 and 1.
        assert_eq!(max_peaks(1000), 2 * u64::from(MAX_PEAKS_PER_SECOND));
        assert_eq!(max_peaks(1), u64::from(MAX_PEAKS_PER_SECOND));
        assert_eq!(
            max_peaks(MAX_DURATION_MS),
            3601 * u64::from(MAX_PEAKS_PER_SECOND)
        );
    }

    #[test]
    fn what_the_engine_makes_of_noise_is_accepted() {
        // White noise is the densest input the query profile sees: about
        // 100 peaks a second, and the low band open.
        let noise = crate::synth::white_noise(3, 22_050 * 30);
        let clip = crate::Clip {
            sample_rate: 22_050,
            samples: noise,
        };
        let sample = SampleFingerprint {
            captured_at_ms: 0,
            duration_ms: 30_000,
            peaks: crate::fingerprint_clip(&clip, crate::PeakProfile::QUERY),
            sparse: Vec::new(),
        };
        assert!(sample.peaks.len() > 2_800, "{}", sample.peaks.len());
        let back = SampleFingerprint::decode(&sample.encode()).unwrap();
        assert_eq!(back.peaks.len(), sample.peaks.len());
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_and_what_is_accepted_is_within_the_limits(
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..3000),
            duration_ms in 1u32..=MAX_DURATION_MS,
            raw in proptest::prelude::any::<bool>(),
            raw_version in proptest::prelude::any::<bool>(),
        ) {
            // Either bytes from nowhere, or a valid header before them, so
            // that the peaks and the limits are reached.
            let bytes = if raw {
                body
            } else {
                let version = if raw_version { 1 } else { 2 };
                let mut b = SampleFingerprint { captured_at_ms: 0, duration_ms, peaks: vec![], sparse: vec![] }
                    .encode()[..HEADER]
                    .to_vec();
                b[4] = version;
                b.extend(body);
                b
            };
            if let Ok(s) = SampleFingerprint::decode(&bytes) {
                proptest::prop_assert!(s.peaks.len() as u64 <= max_peaks(s.duration_ms));
                proptest::prop_assert!(s.sparse.len() as u64 <= max_peaks(s.duration_ms));
                proptest::prop_assert!(s.sparse.iter().all(|p| p.frame <= s.frames()));
                proptest::prop_assert!(s.peaks.iter().all(|p| p.frame <= s.frames()));
                for frame in s.peaks.chunk_by(|a, b| a.frame == b.frame) {
                    proptest::prop_assert!(frame.len() <= MAX_PEAKS_PER_FRAME as usize);
                }
                for second in s.peaks.chunk_by(|a, b| second_of(a.frame) == second_of(b.frame)) {
                    proptest::prop_assert!(second.len() <= MAX_PEAKS_PER_SECOND as usize);
                }
            }
        }
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
