//! Hostile inputs, built in memory, for tests and benchmarks of the limits.
//!
//! Not used by the engine itself: these generators exist so that this crate's
//! tests, its `hostile` example and the services' tests exercise the same
//! attacks without large fixtures. Each is small on the wire and expensive
//! (or dangerous) to handle naively:
//! - [`silent_flac`] / [`silent_flac_sized`]: FLAC of digital silence, one
//!   CONSTANT subframe per 65,535-sample block, about 14 bytes a block, so
//!   that a few hundred kilobytes decode to many hours;
//! - [`lying_wav`]: a WAV whose header claims far more audio than it holds;
//! - [`huge_packet_caf`]: a CAF whose header claims packets of 2^32 - 1
//!   frames, which a decoder that trusts it allocates up front;
//! - [`dense_sample_fingerprint`]: a device fingerprint with as many peaks as
//!   the caller asks, packed as tightly as the format allows;
//! - [`random_bytes`]: seeded noise bytes.
//!
//! Every generator is deterministic and never panics: out-of-range requests
//! are clamped to what the format can express.

use crate::params::{BAND_HI, BAND_LO, HOP, SAMPLE_RATE};
use crate::peaks::Peak;
use crate::synth::{Rng, music};
use crate::wire::SampleFingerprint;

/// A `kB` field of a `/proc/<pid>/status` text (`VmRSS:`, `VmHWM:`), for
/// the memory bounds the tests and benchmarks of these inputs check.
pub fn status_kb(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// [`status_kb`] of this process (`None` where there is no `/proc`).
pub fn own_status_kb(key: &str) -> Option<u64> {
    status_kb(&std::fs::read_to_string("/proc/self/status").ok()?, key)
}

/// Samples per FLAC block in [`silent_flac`]: the largest a FLAC block can be.
pub const FLAC_BLOCK: u32 = 65_535;

/// `seconds` of digital silence at `sample_rate` Hz (clamped to FLAC's
/// 1-655,350 Hz), mono, 16 bits, as a valid FLAC file of about
/// `14 * seconds * sample_rate / 65,535` bytes (8 h at 44.1 kHz: 68 KB).
pub fn silent_flac(seconds: f64, sample_rate: u32) -> Vec<u8> {
    let rate = sample_rate.clamp(1, 655_350);
    // FLAC numbers fixed-size blocks with 31 bits.
    let max_samples = u64::from(FLAC_BLOCK) * 0x7fff_ffff;
    let samples = (seconds.max(0.0) * f64::from(rate))
        .round()
        .min(max_samples as f64) as u64;
    let mut out = flac_header(rate, samples);
    let mut frame_number = 0u64;
    let mut left = samples;
    while left > 0 {
        let block = left.min(u64::from(FLAC_BLOCK)) as u32;
        put_silent_frame(&mut out, frame_number, block);
        frame_number += 1;
        left -= u64::from(block);
    }
    out
}

/// A silent FLAC like [`silent_flac`] of at least `bytes` bytes (as long as it
/// takes, in whole 65,535-sample blocks): the most audio a body of that size
/// can carry. 8 MB at 44.1 kHz is about 250 hours.
pub fn silent_flac_sized(bytes: usize, sample_rate: u32) -> Vec<u8> {
    let rate = sample_rate.clamp(1, 655_350);
    // The header's total is left unknown (0), as a streaming encoder may.
    let mut out = flac_header(rate, 0);
    let mut frame_number = 0u64;
    while out.len() < bytes && frame_number < 0x7fff_ffff {
        put_silent_frame(&mut out, frame_number, FLAC_BLOCK);
        frame_number += 1;
    }
    out
}

/// `fLaC` and a STREAMINFO block: mono, 16 bits, blocks of [`FLAC_BLOCK`],
/// `samples` in all (0: unknown), no MD5 (all zeros: not computed).
fn flac_header(rate: u32, samples: u64) -> Vec<u8> {
    let mut out = b"fLaC".to_vec();
    out.push(0x80); // last metadata block, type 0 (STREAMINFO)
    out.extend_from_slice(&[0, 0, 34]);
    let block = FLAC_BLOCK as u16;
    out.extend_from_slice(&block.to_be_bytes()); // min block size
    out.extend_from_slice(&block.to_be_bytes()); // max block size
    out.extend_from_slice(&[0; 6]); // min and max frame size: unknown
    let total = if samples < 1 << 36 { samples } else { 0 };
    // 20 bits rate, 3 bits channels - 1, 5 bits bits-per-sample - 1, 36 bits total.
    // (Channels - 1 is 0: mono.)
    let packed: u64 = (u64::from(rate) << 44) | (15 << 36) | total;
    out.extend_from_slice(&packed.to_be_bytes());
    out.extend_from_slice(&[0; 16]);
    out
}

/// One FLAC frame of `block` silent samples: fixed blocking, the rate from
/// STREAMINFO, mono, 16 bits, one CONSTANT subframe of value 0.
fn put_silent_frame(out: &mut Vec<u8>, frame_number: u64, block: u32) {
    let start = out.len();
    out.extend_from_slice(&[0xff, 0xf8]); // sync, fixed blocking
    // Block size: 16 bits (size - 1) after the frame number; rate: STREAMINFO's.
    out.push(0x70);
    // Mono, 16 bits per sample, reserved 0.
    out.push(0x08);
    put_utf8_number(out, frame_number);
    out.extend_from_slice(&((block.clamp(1, FLAC_BLOCK) - 1) as u16).to_be_bytes());
    let crc = crc8(&out[start..]);
    out.push(crc);
    // Subframe header: padding 0, type CONSTANT (000000), no wasted bits;
    // then the one sample, 16 bits. Byte-aligned already.
    out.extend_from_slice(&[0x00, 0x00, 0x00]);
    let crc = crc16(&out[start..]);
    out.extend_from_slice(&crc.to_be_bytes());
}

/// FLAC's "UTF-8" coding of a frame number (up to 36 bits).
fn put_utf8_number(out: &mut Vec<u8>, n: u64) {
    if n < 0x80 {
        out.push(n as u8);
        return;
    }
    let continuation_bytes = match n {
        0x80..0x800 => 1,
        0x800..0x1_0000 => 2,
        0x1_0000..0x20_0000 => 3,
        0x20_0000..0x400_0000 => 4,
        0x400_0000..0x8000_0000 => 5,
        _ => 6,
    };
    let lead_marker: u8 = !(0xffu8 >> (continuation_bytes + 1));
    out.push(lead_marker | (n >> (6 * continuation_bytes)) as u8);
    for k in (0..continuation_bytes).rev() {
        out.push(0x80 | ((n >> (6 * k)) & 0x3f) as u8);
    }
}

/// CRC-8, polynomial x^8 + x^2 + x + 1, as FLAC frame headers use.
fn crc8(bytes: &[u8]) -> u8 {
    let mut crc = 0u8;
    for &b in bytes {
        crc ^= b;
        for _ in 0..8 {
            crc = if crc & 0x80 != 0 {
                (crc << 1) ^ 0x07
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// CRC-16, polynomial x^16 + x^15 + x^2 + 1, as FLAC frames use.
fn crc16(bytes: &[u8]) -> u16 {
    let mut crc = 0u16;
    for &b in bytes {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x8005
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// A mono 16-bit PCM WAV of `samples` (clamped to [-1, 1]) whose RIFF and
/// data sizes are taken from `claimed_frames` instead of the samples given
/// (saturating at what 32-bit sizes can say).
fn wav_claiming(samples: &[f32], sample_rate: u32, claimed_frames: u64) -> Vec<u8> {
    let data_bytes = claimed_frames
        .saturating_mul(2)
        .min(u64::from(u32::MAX - 36) & !1) as u32;
    let mut out = Vec::with_capacity(44 + samples.len() * 2);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(data_bytes + 36).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes()); // PCM
    out.extend_from_slice(&1u16.to_le_bytes()); // mono
    out.extend_from_slice(&sample_rate.to_le_bytes());
    out.extend_from_slice(&sample_rate.saturating_mul(2).to_le_bytes()); // bytes per second
    out.extend_from_slice(&2u16.to_le_bytes()); // block align
    out.extend_from_slice(&16u16.to_le_bytes()); // bits per sample
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_bytes.to_le_bytes());
    for &s in samples {
        let v = (s.clamp(-1.0, 1.0) * f32::from(i16::MAX)).round() as i16;
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// A valid mono 16-bit PCM WAV of `samples` at `sample_rate` Hz.
pub fn wav(samples: &[f32], sample_rate: u32) -> Vec<u8> {
    wav_claiming(samples, sample_rate, samples.len() as u64)
}

/// A WAV whose header claims `claimed_seconds` of audio (saturating at the
/// 4 GB a WAV can claim) but which holds only `actual_seconds` of synthetic
/// music, mono 16 bits at `sample_rate` Hz (at least 1).
pub fn lying_wav(claimed_seconds: f64, actual_seconds: f64, sample_rate: u32) -> Vec<u8> {
    let rate = sample_rate.max(1);
    let samples = music(16, actual_seconds.clamp(0.0, 3600.0) as f32, rate);
    let claimed = (claimed_seconds.max(0.0) * f64::from(rate)).min(u64::MAX as f64) as u64;
    wav_claiming(&samples, rate, claimed)
}

/// A CAF of linear PCM (64-bit float, `channels` channels, at least 1) whose
/// description claims 2^32 - 1 frames per packet: a decoder that sizes its
/// buffer from the header asks for `channels * 32 GiB` before it reads a byte
/// of audio. The file holds a second of silence at 48 kHz.
pub fn huge_packet_caf(channels: u32) -> Vec<u8> {
    let channels = channels.clamp(1, 32);
    let mut out = b"caff".to_vec();
    out.extend_from_slice(&1u16.to_be_bytes()); // version
    out.extend_from_slice(&0u16.to_be_bytes()); // flags
    out.extend_from_slice(b"desc");
    out.extend_from_slice(&32i64.to_be_bytes());
    out.extend_from_slice(&48_000f64.to_be_bytes());
    out.extend_from_slice(b"lpcm");
    out.extend_from_slice(&3u32.to_be_bytes()); // float, little-endian
    out.extend_from_slice(&(8 * channels).to_be_bytes()); // bytes per packet
    out.extend_from_slice(&u32::MAX.to_be_bytes()); // frames per packet: the lie
    out.extend_from_slice(&channels.to_be_bytes());
    out.extend_from_slice(&64u32.to_be_bytes()); // bits per channel
    let audio = vec![0u8; 48_000 * 8 * channels as usize];
    out.extend_from_slice(b"data");
    out.extend_from_slice(&(audio.len() as i64 + 4).to_be_bytes());
    out.extend_from_slice(&0u32.to_be_bytes()); // edit count
    out.extend_from_slice(&audio);
    out
}

/// `len` seeded pseudo-random bytes.
pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    (0..len).map(|_| (rng.next_f32() * 256.0) as u8).collect()
}

/// The first frame of second `s` of a sample (frames are 16 ms; a second
/// holds 62 or 63 of them).
fn first_frame_of_second(s: u64) -> u64 {
    (s * u64::from(SAMPLE_RATE)).div_ceil(HOP as u64)
}

/// A device fingerprint of `duration_ms` (clamped to the format's
/// (0, 1 h]) with `peaks_per_second` peaks in every second of it, put
/// `peaks_per_frame` (at least 1) to a frame from the second's first frame
/// on, all within 63 bins of each other so that every peak pairs with every
/// later one in reach. Its size is about 3 bytes a peak.
pub fn dense_sample_fingerprint(
    duration_ms: u32,
    peaks_per_second: u32,
    peaks_per_frame: u32,
) -> Vec<u8> {
    let duration_ms = duration_ms.clamp(1, crate::wire::MAX_DURATION_MS);
    let per_frame = peaks_per_frame.max(1);
    let sample = SampleFingerprint {
        captured_at_ms: 1_790_000_000_000,
        duration_ms,
        peaks: Vec::new(),
        sparse: Vec::new(),
    };
    let frames = u64::from(sample.frames());
    // A bin step that spreads a frame's peaks over 63 bins of the main band.
    let (lo, span) = (
        BAND_LO as f32 + 60.0,
        63.0f32.min((BAND_HI - BAND_LO - 61) as f32),
    );
    let mut peaks = Vec::new();
    let mut second = 0u64;
    // Peaks may sit on frames 0 to `frames`, both included.
    while first_frame_of_second(second) <= frames {
        let first = first_frame_of_second(second);
        let end = first_frame_of_second(second + 1).min(frames + 1);
        let mut placed = 0u32;
        let mut frame = first;
        while placed < peaks_per_second && frame < end {
            let here = per_frame.min(peaks_per_second - placed);
            for k in 0..here {
                peaks.push(Peak {
                    frame: frame as u32,
                    bin: lo + span * k as f32 / here as f32,
                });
            }
            placed += here;
            frame += 1;
        }
        second += 1;
    }
    SampleFingerprint { peaks, ..sample }.encode()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crcs_match_flacs_check_values() {
        // The CRC catalogue's check values for "123456789".
        assert_eq!(crc8(b"123456789"), 0xf4);
        assert_eq!(crc16(b"123456789"), 0xfee8);
    }

    #[test]
    fn frame_numbers_are_coded_like_utf8() {
        for n in [
            0u64,
            0x7f,
            0x80,
            0x7ff,
            0x800,
            0xffff,
            0x1_0000,
            0x7fff_ffff,
        ] {
            let mut out = Vec::new();
            put_utf8_number(&mut out, n);
            if let Some(c) = u32::try_from(n).ok().and_then(char::from_u32) {
                let mut buf = [0; 4];
                assert_eq!(out, c.encode_utf8(&mut buf).as_bytes(), "{n:#x}");
            }
            // The lead byte says how many bytes follow.
            let len = if out[0] < 0x80 {
                1
            } else {
                out[0].leading_ones() as usize
            };
            assert_eq!(len, out.len(), "{n:#x}: {out:x?}");
        }
    }

    #[test]
    fn a_silent_flac_is_tiny_for_its_duration() {
        let hour = silent_flac(3600.0, 44_100);
        // 2,423 blocks of about 14 bytes.
        assert!(hour.len() < 40_000, "{} bytes", hour.len());
        let sized = silent_flac_sized(100_000, 44_100);
        assert!((100_000..100_020).contains(&sized.len()));
    }

    /// Every sample of the audio a generator claims.
    fn decoded_frames(bytes: Vec<u8>) -> Result<(u64, u32), crate::DecodeError> {
        let mut reader =
            crate::AudioReader::from_source(Box::new(std::io::Cursor::new(bytes)), None)?;
        while reader.next_chunk()?.is_some() {}
        Ok((reader.frames_read(), reader.sample_rate().unwrap_or(0)))
    }

    #[test]
    fn a_silent_flac_decodes_to_exactly_its_duration() {
        let (frames, rate) = decoded_frames(silent_flac(100.0, 44_100)).unwrap();
        assert_eq!((frames, rate), (4_410_000, 44_100));
        let (frames, _) = decoded_frames(silent_flac_sized(10_000, 8_000)).unwrap();
        assert!(frames > 700 * u64::from(FLAC_BLOCK), "{frames}");
    }

    #[test]
    fn a_lying_wav_decodes_to_what_it_holds() {
        let (frames, rate) = decoded_frames(lying_wav(1e9, 2.0, 8_000)).unwrap();
        assert_eq!((frames, rate), (16_000, 8_000));
    }
}
