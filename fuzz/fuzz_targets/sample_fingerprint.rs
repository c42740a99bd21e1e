//! The device-fingerprint decoder on arbitrary bytes: it never panics, what
//! it accepts is within the wire limits and survives a round trip, and
//! matching it costs a bounded amount (libFuzzer's RSS limit catches the rest).

#![no_main]

use std::sync::OnceLock;

use hendu_fingerprint::synth::music;
use hendu_fingerprint::wire::{
    MAX_PEAKS_PER_FRAME, MAX_PEAKS_PER_SECOND, SampleFingerprint, max_peaks,
};
use hendu_fingerprint::{
    Clip, Index, IndexBuilder, PeakProfile, SearchOptions, Searcher, fingerprint_clip,
};
use libfuzzer_sys::fuzz_target;

/// Three synthetic tracks, built once, for accepted fingerprints to be matched against.
fn index() -> &'static Index {
    static INDEX: OnceLock<Index> = OnceLock::new();
    INDEX.get_or_init(|| {
        let mut builder = IndexBuilder::new();
        for seed in 1..=3 {
            let clip = Clip {
                sample_rate: 8_000,
                samples: music(seed, 30.0, 8_000),
            };
            let peaks = fingerprint_clip(&clip, PeakProfile::CATALOGUE);
            builder.add(&peaks, 1875).expect("a 30 s track fits the index");
        }
        builder.build()
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(sample) = SampleFingerprint::decode(data) else {
        return;
    };
    assert!(sample.peaks.len() as u64 <= max_peaks(sample.duration_ms));
    assert!(sample.peaks.iter().all(|p| p.frame <= sample.frames()));
    for frame in sample.peaks.chunk_by(|a, b| a.frame == b.frame) {
        assert!(frame.len() <= MAX_PEAKS_PER_FRAME as usize);
    }
    // A second is 62.5 frames: frame * 128 / 8000.
    let second = |frame: u32| u64::from(frame) * 128 / 8000;
    for s in sample.peaks.chunk_by(|a, b| second(a.frame) == second(b.frame)) {
        assert!(s.len() <= MAX_PEAKS_PER_SECOND as usize);
    }
    let again = SampleFingerprint::decode(&sample.encode()).expect("what was accepted re-encodes");
    assert_eq!(again, sample);
    let _ = index().search(&sample.peaks, &SearchOptions::default(), &mut Searcher::default());
});
