//! End-to-end tests of the engine: decoders on real files, recognition of
//! synthetic music under noise and speed changes, refusal of bad input.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly by design.

use std::io::Write;
use std::path::{Path, PathBuf};

use hendu_fingerprint::params::{SAMPLE_RATE, is_low_bin};
use hendu_fingerprint::synth::{bass_line, mix_at_snr, music, music_warped, white_noise};
use hendu_fingerprint::{
    Clip, DecodeError, Fingerprinter, Index, IndexBuilder, PeakProfile, SearchOptions, Searcher,
    Warp, fingerprint_clip, fingerprint_clip_sparse, fingerprint_file, read_clip,
};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

const FORMATS: [&str; 7] = [
    "tones.wav",
    "tones.mp3",
    "tones.aac",
    "tones.m4a",
    "tones.flac",
    "tones-ogg-without-extension",
    "tones.opus",
];

#[test]
fn every_supported_format_decodes_to_the_same_audio() {
    let reference = fingerprint_file(&fixture("tones.wav"), PeakProfile::CATALOGUE).unwrap();
    let mut builder = IndexBuilder::new();
    builder.add(&reference.peaks, reference.frames).unwrap();
    let index = builder.build();
    for name in FORMATS {
        let clip = read_clip(&fixture(name), 60.0).unwrap_or_else(|e| panic!("{name}: {e}"));
        let seconds = clip.samples.len() as f64 / f64::from(clip.sample_rate);
        // Lossy codecs add priming and padding of a few tens of milliseconds.
        assert!((seconds - 3.0).abs() < 0.1, "{name}: {seconds} s");
        let peaks = fingerprint_clip(&clip, PeakProfile::QUERY);
        let found = index
            .search(
                &peaks,
                &SearchOptions::with_speed_range(0.0, 0.01),
                &mut Searcher::default(),
            )
            .unwrap_or_else(|| panic!("{name}: no candidate"));
        assert!(
            found.offset_s.abs() < 0.1,
            "{name}: offset {}",
            found.offset_s
        );
        assert!(found.score >= 10, "{name}: score {}", found.score);
    }
}

fn catalogue(seeds: &[u64], seconds: f32) -> Index {
    let mut builder = IndexBuilder::new();
    for &seed in seeds {
        let clip = Clip {
            sample_rate: 22_050,
            samples: music(seed, seconds, 22_050),
        };
        let mut fp = Fingerprinter::new(clip.sample_rate, PeakProfile::CATALOGUE);
        let mut peaks = Vec::new();
        fp.push(&clip.samples, &mut peaks);
        fp.finish(&mut peaks);
        builder.add(&peaks, fp.frames()).unwrap();
    }
    builder.build()
}

/// Music whose energy is nearly all in a sub-bass line below the main band,
/// as some real music's is.
fn bass_heavy(seed: u64, seconds: f32, rate: u32) -> Vec<f32> {
    let bass = bass_line(seed, seconds, rate);
    music(seed, seconds, rate)
        .iter()
        .zip(&bass)
        .map(|(m, b)| 0.1 * m + b)
        .collect()
}

#[test]
fn bass_heavy_music_is_recognised_through_the_low_band_when_noise_drowns_the_rest() {
    let rate = 22_050;
    let mut builder = IndexBuilder::new();
    for seed in 1..=4 {
        let track = bass_heavy(seed, 40.0, rate);
        let peaks = fingerprint_clip(
            &Clip {
                sample_rate: rate,
                samples: track,
            },
            PeakProfile::CATALOGUE,
        );
        assert!(
            peaks.iter().any(|p| is_low_bin(p.bin)),
            "the catalogue keeps low-band peaks"
        );
        builder
            .add(
                &peaks,
                (40.0 / hendu_fingerprint::params::FRAME_SECONDS) as u32,
            )
            .unwrap();
    }
    let index = builder.build();
    let clip = |samples: Vec<f32>| {
        fingerprint_clip(
            &Clip {
                sample_rate: rate,
                samples,
            },
            PeakProfile::QUERY,
        )
    };
    let track = bass_heavy(3, 40.0, rate);
    let part = &track[12 * rate as usize..22 * rate as usize];

    // Clean, the main band speaks for itself and the query keeps no low-band peaks.
    let clean = clip(part.to_vec());
    assert!(clean.iter().all(|p| !is_low_bin(p.bin)));

    // White noise at 0 dB: in the low band the bass stands far above it; the
    // rest of the music is 20 dB under it.
    let noisy = clip(mix_at_snr(part, &white_noise(9, part.len()), 0.0));
    assert!(
        noisy.iter().any(|p| is_low_bin(p.bin)),
        "the gate opens in noise"
    );
    let options = SearchOptions::default();
    let found = index
        .search(&noisy, &options, &mut Searcher::default())
        .unwrap();
    assert_eq!(found.track, 2);
    assert!(
        (found.offset_s - 12.0).abs() < 0.1,
        "offset {}",
        found.offset_s
    );
    assert!(found.confidence > 0.5, "confidence {}", found.confidence);

    // The main band alone cannot tell.
    let main_only: Vec<_> = noisy.into_iter().filter(|p| !is_low_bin(p.bin)).collect();
    let without = index.search(&main_only, &options, &mut Searcher::default());
    assert!(without.is_none_or(|c| c.track != 2 || c.confidence < 0.5));
}

fn excerpt(seed: u64, start_s: f32, seconds: f32, rate: u32) -> Vec<f32> {
    let all = music(seed, start_s + seconds, rate);
    all[(start_s * rate as f32) as usize..].to_vec()
}

#[test]
fn recognises_a_noisy_excerpt_and_locates_it() {
    let index = catalogue(&[1, 2, 3, 4, 5], 60.0);
    let clean = excerpt(3, 20.0, 8.0, 22_050);
    let noisy = mix_at_snr(&clean, &white_noise(99, clean.len()), 0.0);
    let clip = Clip {
        sample_rate: 22_050,
        samples: noisy,
    };
    let peaks = fingerprint_clip(&clip, PeakProfile::QUERY);
    let found = index
        .search(&peaks, &SearchOptions::default(), &mut Searcher::default())
        .unwrap();
    assert_eq!(found.track, 2);
    assert!(
        (found.offset_s - 20.0).abs() < 0.05,
        "offset {}",
        found.offset_s
    );
    assert!(found.confidence > 0.9, "confidence {}", found.confidence);
}

#[test]
fn recognises_audio_played_two_percent_fast() {
    let index = catalogue(&[1, 2, 3], 60.0);
    // Played 2% fast: the original at 22050 Hz, declared as 22491 Hz.
    let clip = Clip {
        sample_rate: 22_491,
        samples: excerpt(2, 10.0, 8.0, 22_050),
    };
    let peaks = fingerprint_clip(&clip, PeakProfile::QUERY);
    let found = index
        .search(&peaks, &SearchOptions::default(), &mut Searcher::default())
        .unwrap();
    assert_eq!(found.track, 1);
    assert!((found.speed - 1.02).abs() < 0.003, "speed {}", found.speed);
    assert!(
        (found.offset_s - 10.0).abs() < 0.1,
        "offset {}",
        found.offset_s
    );
    assert!(found.confidence > 0.9);
}

#[test]
fn a_djs_speed_tempo_and_key_changes_are_found_by_the_wide_search() {
    let index = catalogue(&[1, 2, 3], 60.0);
    let rate = 22_050;
    // 8 s of the warped music from 12 s of its own (warped) time line.
    let cut = |samples: Vec<f32>| samples[12 * rate as usize..20 * rate as usize].to_vec();
    let cases = [
        // A turntable 7% fast: the original declared at a 7% higher rate.
        (
            "7% fast",
            Clip {
                sample_rate: (rate as f32 * 1.07).round() as u32,
                samples: excerpt(2, 12.0 * 1.07, 8.0 * 1.07, rate),
            },
            Warp::speed(1.07),
        ),
        (
            "tempo 8% slower, key kept",
            Clip {
                sample_rate: rate,
                samples: cut(music_warped(
                    2,
                    60.0,
                    rate,
                    Warp {
                        time: 0.92,
                        freq: 1.0,
                    },
                )),
            },
            Warp {
                time: 0.92,
                freq: 1.0,
            },
        ),
        (
            "a semitone up, tempo kept",
            Clip {
                sample_rate: rate,
                samples: cut(music_warped(
                    2,
                    60.0,
                    rate,
                    Warp {
                        time: 1.0,
                        freq: 1.0595,
                    },
                )),
            },
            Warp {
                time: 1.0,
                freq: 1.0595,
            },
        ),
    ];
    for (name, clip, warp) in cases {
        let (peaks, sparse) = fingerprint_clip_sparse(&clip);
        let options = SearchOptions::default();
        // The speed grid alone cannot reach these warps (a key-locked
        // clip may still match weakly at speed 1, where its onsets line up
        // for a second or two) ...
        let narrow = index.search(&peaks, &options, &mut Searcher::default());
        assert!(
            narrow.as_ref().is_none_or(|c| c.confidence < 0.9
                || (c.speed - warp.time).abs() > 0.01
                || (c.pitch - warp.freq).abs() > 0.01),
            "{name}: the grid found {narrow:?}"
        );
        // ... the triplets propose the warp.
        let found = index
            .search_wide(&peaks, &sparse, &options, &mut Searcher::default())
            .unwrap_or_else(|| panic!("{name}: no candidate"));
        assert_eq!(found.track, 1, "{name}: {found:?}");
        assert!(found.confidence > 0.9, "{name}: {found:?}");
        assert!((found.speed - warp.time).abs() < 0.006, "{name}: {found:?}");
        assert!((found.pitch - warp.freq).abs() < 0.006, "{name}: {found:?}");
        let offset = 12.0 * f64::from(warp.time);
        assert!((found.offset_s - offset).abs() < 0.15, "{name}: {found:?}");
    }
}

#[test]
fn unknown_audio_is_not_confidently_matched() {
    let index = catalogue(&[1, 2, 3, 4, 5], 60.0);
    for seed in 100..110 {
        let clip = Clip {
            sample_rate: 22_050,
            samples: music(seed, 8.0, 22_050),
        };
        let (peaks, sparse) = fingerprint_clip_sparse(&clip);
        let options = SearchOptions::default();
        let best = index.search_wide(&peaks, &sparse, &options, &mut Searcher::default());
        assert!(
            best.as_ref().is_none_or(|c| c.confidence < 0.5),
            "seed {seed}: {best:?}"
        );
    }
}

#[test]
fn chunking_does_not_change_the_fingerprint() {
    // Clean music, then bass-heavy music drowned in noise, where the query's
    // low-band gate opens: chunk boundaries must not move its verdicts.
    let rate = 44_100;
    let mut samples = music(11, 4.0, rate);
    let bass = bass_heavy(12, 4.0, rate);
    samples.extend(mix_at_snr(&bass, &white_noise(13, bass.len()), 0.0));
    let run = |profile: PeakProfile, chunk: usize| {
        let mut fp = Fingerprinter::new(rate, profile);
        let mut peaks = Vec::new();
        for c in samples.chunks(chunk) {
            fp.push(c, &mut peaks);
        }
        fp.finish(&mut peaks);
        peaks
    };
    for profile in [PeakProfile::QUERY, PeakProfile::CATALOGUE] {
        let whole = run(profile, samples.len());
        assert!(whole.len() > 100);
        let low = whole.iter().filter(|p| is_low_bin(p.bin)).count();
        assert!(low > 20, "low-band peaks: {low}");
        for chunk in [1, 333, 4096] {
            assert_eq!(run(profile, chunk), whole, "chunk {chunk}");
        }
    }
}

#[test]
fn most_peaks_survive_noise_at_ten_db() {
    let clean = music(5, 10.0, SAMPLE_RATE);
    let noisy = mix_at_snr(&clean, &white_noise(6, clean.len()), 10.0);
    let peaks = |s: Vec<f32>| {
        fingerprint_clip(
            &Clip {
                sample_rate: SAMPLE_RATE,
                samples: s,
            },
            PeakProfile::QUERY,
        )
    };
    let (a, b) = (peaks(clean), peaks(noisy));
    let kept = a
        .iter()
        .filter(|p| {
            b.iter()
                .any(|q| q.frame.abs_diff(p.frame) <= 1 && (q.bin - p.bin).abs() <= 1.0)
        })
        .count();
    assert!(
        kept * 10 >= a.len() * 6,
        "{kept} of {} peaks survive",
        a.len()
    );
}

fn temp_file(bytes: &[u8]) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(bytes).unwrap();
    f
}

#[test]
fn empty_and_non_audio_files_are_refused_clearly() {
    for bytes in [&b""[..], b"hello, this is a text file\n", &[0u8; 10_000]] {
        let f = temp_file(bytes);
        let err = read_clip(f.path(), 60.0).unwrap_err();
        assert!(
            matches!(err, DecodeError::Unsupported(_) | DecodeError::NoAudio),
            "{err:?}"
        );
    }
    let missing = read_clip(Path::new("/nonexistent/clip.mp3"), 60.0).unwrap_err();
    assert!(matches!(missing, DecodeError::Io(_)), "{missing:?}");
}

#[test]
fn truncated_files_give_what_they_hold_or_a_clear_error() {
    for name in FORMATS {
        let bytes = std::fs::read(fixture(name)).unwrap();
        for cut in [bytes.len() / 2, 64, 7] {
            let f = temp_file(&bytes[..cut]);
            // Either the audio before the cut, or an error; never a panic.
            if let Ok(clip) = read_clip(f.path(), 60.0) {
                assert!(clip.samples.len() as f64 / f64::from(clip.sample_rate) < 3.0);
            }
        }
    }
}

#[test]
fn corrupt_bytes_never_panic() {
    let mut rng = hendu_fingerprint::synth::Rng::new(42);
    for name in FORMATS {
        let bytes = std::fs::read(fixture(name)).unwrap();
        for _ in 0..20 {
            let mut damaged = bytes.clone();
            for _ in 0..30 {
                let i = (rng.next_f32() * damaged.len() as f32) as usize % damaged.len();
                damaged[i] = (rng.next_f32() * 256.0) as u8;
            }
            let f = temp_file(&damaged);
            let _ = read_clip(f.path(), 60.0);
        }
    }
}

#[test]
fn a_wav_header_claiming_gigabytes_is_refused_without_allocating_them() {
    let mut wav = Vec::new();
    wav.extend_from_slice(b"RIFF");
    wav.extend_from_slice(&u32::MAX.to_le_bytes());
    wav.extend_from_slice(b"WAVEfmt ");
    wav.extend_from_slice(&16u32.to_le_bytes());
    wav.extend_from_slice(&1u16.to_le_bytes()); // PCM
    wav.extend_from_slice(&u16::MAX.to_le_bytes()); // 65535 channels
    wav.extend_from_slice(&u32::MAX.to_le_bytes()); // 4 GHz
    wav.extend_from_slice(&u32::MAX.to_le_bytes());
    wav.extend_from_slice(&u16::MAX.to_le_bytes());
    wav.extend_from_slice(&16u16.to_le_bytes());
    wav.extend_from_slice(b"data");
    wav.extend_from_slice(&u32::MAX.to_le_bytes());
    wav.extend_from_slice(&[0u8; 4096]);
    let f = temp_file(&wav);
    assert!(read_clip(f.path(), 60.0).is_err());
}
