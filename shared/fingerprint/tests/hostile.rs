//! Hostile inputs end quickly, with their typed error, in bounded memory.
//!
//! One test in its own binary: the peak memory read from `/proc/self/status`
//! (`VmHWM`) is the whole process's, so nothing else may run beside it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly by design.

use std::io::Cursor;
use std::time::{Duration, Instant};

use hendu_fingerprint::hostile::{
    dense_sample_fingerprint, huge_packet_caf, lying_wav, own_status_kb, random_bytes, silent_flac,
    silent_flac_sized,
};
use hendu_fingerprint::synth::music;
use hendu_fingerprint::wire::{
    MAX_DURATION_MS, MAX_PEAKS_PER_FRAME, MAX_PEAKS_PER_SECOND, SampleFingerprint, WireError,
};
use hendu_fingerprint::{
    AudioReader, Clip, DecodeError, DecodeLimits, Fingerprint, IndexBuilder, PeakProfile,
    SearchOptions, Searcher, fingerprint_clip, fingerprint_reader,
};

/// A field of `/proc/self/status`, in kB.
fn status_kb(key: &str) -> u64 {
    own_status_kb(key).unwrap()
}

fn decode(bytes: Vec<u8>, limits: DecodeLimits) -> Result<Fingerprint, DecodeError> {
    let mut reader = AudioReader::from_source_with(Box::new(Cursor::new(bytes)), None, limits)?;
    fingerprint_reader(&mut reader, PeakProfile::QUERY)
}

/// Work that would take minutes without the limits takes well under this,
/// even on a loaded two-core machine.
const QUICK: Duration = Duration::from_secs(20);

/// Peak memory growth allowed over all the inputs below. Measured: 18 MB
/// for the audio (8 MB of it the largest input itself), 76 MB once the
/// densest fingerprint accepted has been matched (its 1.7 million landmarks
/// and their lookups). Without the limits one input asks for 32 GiB and
/// aborts the process, and matching a dense fingerprint passes 4 GB.
const MEMORY_BOUND_KB: u64 = 128 * 1024;

/// What an input must end with.
type Expected = fn(&Result<Fingerprint, DecodeError>) -> bool;

#[test]
fn hostile_inputs_are_refused_quickly_within_bounded_memory() {
    let baseline = status_kb("VmHWM:");
    let ten_minutes = DecodeLimits::new(600.0);
    let audio: Vec<(&str, Vec<u8>, Expected)> = vec![
        (
            "8 MB of silent FLAC (250 h)",
            silent_flac_sized(8 << 20, 44_100),
            |r| matches!(r, Err(DecodeError::TooLong { limit_s }) if *limit_s == 600.0),
        ),
        (
            "512 KB of silent FLAC (16 h) at 192 kHz",
            silent_flac_sized(512 << 10, 192_000),
            |r| matches!(r, Err(DecodeError::TooLong { .. })),
        ),
        ("silent FLAC at 384 kHz", silent_flac(1.0, 384_000), |r| {
            matches!(r, Err(DecodeError::SampleRate(384_000)))
        }),
        (
            "a WAV claiming 13.5 h, holding 30 s",
            lying_wav(1e9, 30.0, 44_100),
            |r| r.as_ref().is_ok_and(|fp| fp.duration_s == 30.0),
        ),
        (
            "a CAF claiming 2^32 - 1 frames per packet",
            huge_packet_caf(8),
            |r| matches!(r, Err(DecodeError::Corrupt(_))),
        ),
        ("1 MB of random bytes", random_bytes(5, 1 << 20), |r| {
            matches!(r, Err(DecodeError::Unsupported(_)))
        }),
        (
            "a silent FLAC cut mid-frame",
            {
                let mut b = silent_flac(100.0, 44_100);
                b.truncate(b.len() - 5);
                b
            },
            // What came before the cut is good audio; only silence, so no peaks.
            |r| matches!(r, Ok(fp) if fp.duration_s > 98.0 && fp.duration_s < 100.0),
        ),
        (
            "a silent FLAC with every 50th byte damaged",
            {
                let mut b = silent_flac(3600.0, 44_100);
                for i in (100..b.len()).step_by(50) {
                    b[i] ^= 0x5a;
                }
                b
            },
            // Damaged frames are skipped; the rest is within the limit or refused.
            |r| {
                matches!(r, Ok(fp) if fp.duration_s <= 600.0)
                    || matches!(
                        r,
                        Err(DecodeError::TooLong { .. }
                            | DecodeError::Corrupt(_)
                            | DecodeError::NoAudio)
                    )
            },
        ),
    ];
    for (name, bytes, expected) in audio {
        let started = Instant::now();
        let result = decode(bytes, ten_minutes);
        let took = started.elapsed();
        eprintln!("{name}: {took:?}, VmHWM {} kB", status_kb("VmHWM:"));
        assert!(expected(&result), "{name}: {result:?}");
        assert!(took < QUICK, "{name}: {took:?}");
    }

    // Device fingerprints, against a small catalogue.
    let mut builder = IndexBuilder::new();
    for seed in 1..=3 {
        let clip = Clip {
            sample_rate: 8_000,
            samples: music(seed, 30.0, 8_000),
        };
        builder
            .add(&fingerprint_clip(&clip, PeakProfile::CATALOGUE), 1875)
            .unwrap();
    }
    let index = builder.build();
    let refused: Vec<(&str, Vec<u8>)> = vec![
        (
            "60 s at 5,000 peaks/s, 80 a frame (0.9 MB)",
            dense_sample_fingerprint(60_000, 5_000, 80),
        ),
        (
            "an hour at 250 peaks/s, 4 a frame (2.7 MB)",
            dense_sample_fingerprint(MAX_DURATION_MS, 250, 4),
        ),
    ];
    for (name, bytes) in refused {
        let started = Instant::now();
        let result = SampleFingerprint::decode(&bytes);
        assert!(
            matches!(
                result,
                Err(WireError::TooManyPeaks { .. }
                    | WireError::TooDense { .. }
                    | WireError::FrameTooDense { .. })
            ),
            "{name}: {result:?}"
        );
        assert!(started.elapsed() < QUICK, "{name}");
    }
    // The densest fingerprint accepted, an hour long: matched at a bounded
    // cost (only its first 65 s are paired, 128 targets per anchor at most).
    let densest =
        dense_sample_fingerprint(MAX_DURATION_MS, MAX_PEAKS_PER_SECOND, MAX_PEAKS_PER_FRAME);
    let started = Instant::now();
    let sample = SampleFingerprint::decode(&densest).unwrap();
    let _ = index.search(
        &sample.peaks,
        &SearchOptions::default(),
        &mut Searcher::default(),
    );
    eprintln!(
        "densest accepted fingerprint: {:?}, VmHWM {} kB",
        started.elapsed(),
        status_kb("VmHWM:")
    );
    assert!(started.elapsed() < QUICK, "{:?}", started.elapsed());

    let grown = status_kb("VmHWM:").saturating_sub(baseline);
    eprintln!("peak memory growth over all hostile inputs: {grown} kB");
    assert!(grown < MEMORY_BOUND_KB, "{grown} kB");
}
