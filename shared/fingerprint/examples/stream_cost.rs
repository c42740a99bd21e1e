//! What one stream costs the radio monitor's engine side, on one core: a file
//! decoded alone, then decoded and fingerprinted in 30 s samples as the
//! monitor does, as real-time factors (best of three each).
//!
//! ```sh
//! cargo run --release -p hendu-fingerprint --example stream_cost -- programme.mp3
//! ```
//!
//! Built to be profiled too (`perf record` on the example): every stage
//! runs in this one thread.

#![allow(clippy::unwrap_used)] // A measurement: a failure should stop it loudly.

use std::path::Path;
use std::time::Instant;

use hendu_fingerprint::{AudioReader, Fingerprinter, PeakProfile};

/// Seconds of audio per sample, as the monitor cuts them.
const SAMPLE_S: u64 = 30;

/// Real-time factor of decoding `path`, and fingerprinting it when asked.
fn run(path: &Path, fingerprint: bool) -> f64 {
    let started = Instant::now();
    let mut reader = AudioReader::open(path).unwrap();
    let mut frames = 0u64;
    let mut fp: Option<(Fingerprinter, u64)> = None;
    let mut peaks = Vec::new();
    while let Some(chunk) = reader.next_chunk().unwrap() {
        frames += chunk.samples.len() as u64;
        if !fingerprint {
            continue;
        }
        let rate = chunk.sample_rate;
        let (f, n) = fp.get_or_insert_with(|| (Fingerprinter::new(rate, PeakProfile::QUERY), 0));
        f.push(chunk.samples, &mut peaks);
        *n += chunk.samples.len() as u64;
        if *n >= u64::from(rate) * SAMPLE_S {
            f.finish(&mut peaks);
            peaks.clear();
            fp = None;
        }
    }
    let audio_s = frames as f64 / f64::from(reader.sample_rate().unwrap());
    audio_s / started.elapsed().as_secs_f64()
}

fn main() {
    let path = std::env::args()
        .nth(1)
        .expect("usage: stream_cost AUDIO_FILE");
    let path = Path::new(&path);
    let best = |f: bool| (0..3).map(|_| run(path, f)).fold(0.0, f64::max);
    let decode = best(false);
    let full = best(true);
    println!("decoding alone: {decode:.0}x real time");
    println!("decoding + fingerprinting in {SAMPLE_S} s samples: {full:.0}x real time");
    println!(
        "fingerprinting costs {:.2} of decoding",
        decode / full - 1.0
    );
}
