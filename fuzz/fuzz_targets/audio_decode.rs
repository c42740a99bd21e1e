//! The audio decode entry point the services use on uploads and samples, on
//! arbitrary bytes, with small limits: it never panics outside the guarded
//! decoder calls, never allocates past libFuzzer's limits, and returns
//! within the limits.

#![no_main]

use std::io::Cursor;

use hendu_fingerprint::{AudioReader, DecodeLimits, PeakProfile, fingerprint_reader};
use libfuzzer_sys::fuzz_target;

const LIMITS: DecodeLimits = DecodeLimits {
    max_seconds: 10.0,
    max_sample_rate: 96_000,
    max_channels: 2,
};

fuzz_target!(
    init: {
        // The engine turns a panic inside Symphonia into DecodeError::Corrupt
        // (decode.rs, `guard`); libFuzzer's hook would report those caught
        // panics as crashes. Panics anywhere else still unwind out of this
        // target, and libfuzzer-sys reports them.
        std::panic::set_hook(Box::new(|_| {}));
    },
    |data: &[u8]| {
        let Ok(mut reader) =
            AudioReader::from_source_with(Box::new(Cursor::new(data.to_vec())), None, LIMITS)
        else {
            return;
        };
        let result = fingerprint_reader(&mut reader, PeakProfile::QUERY);
        let rate = reader.sample_rate().unwrap_or(0);
        assert!(rate <= LIMITS.max_sample_rate);
        assert!(reader.frames_read() as f64 <= LIMITS.max_seconds * f64::from(rate));
        if let Ok(fp) = result {
            assert!(fp.duration_s <= LIMITS.max_seconds);
            assert!(fp.peaks.iter().all(|p| p.frame <= fp.frames));
        }
    }
);
