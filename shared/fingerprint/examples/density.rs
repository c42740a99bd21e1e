//! How dense the query profile's peaks are, and how many targets its anchors
//! have: the measurements behind `wire::MAX_PEAKS_PER_SECOND`,
//! `wire::MAX_PEAKS_PER_FRAME` and `params::QUERY_MAX_PAIRS_PER_ANCHOR`.
//!
//! ```sh
//! cargo run --release -p hendu-fingerprint --example density
//! ```
//!
//! For each kind of 30 s query (synthetic music, clean and in white noise,
//! bass-heavy music, pure noise, silence with clicks) over several seeds it
//! prints peaks per second on average and in the densest second, the most
//! peaks in one frame, and the targets per anchor (median, 99th percentile,
//! maximum over every speed hypothesis the matcher tries).

#![allow(clippy::unwrap_used)] // A measurement: a failure should stop it loudly.

use hendu_fingerprint::hashes::query_zone_sizes;
use hendu_fingerprint::params::{HOP, QUERY_MAX_PAIRS_PER_ANCHOR, SAMPLE_RATE};
use hendu_fingerprint::synth::{bass_line, mix_at_snr, music, white_noise};
use hendu_fingerprint::wire::{MAX_PEAKS_PER_FRAME, MAX_PEAKS_PER_SECOND};
use hendu_fingerprint::{Clip, PeakProfile, fingerprint_clip};

const RATE: u32 = 22_050;
const SECONDS: f32 = 30.0;
const SEEDS: u64 = 8;

fn kinds(seed: u64) -> Vec<(&'static str, Vec<f32>)> {
    let n = (SECONDS * RATE as f32) as usize;
    let m = music(seed, SECONDS, RATE);
    let noise = white_noise(seed + 100, n);
    let bass: Vec<f32> = bass_line(seed, SECONDS, RATE)
        .iter()
        .zip(&m)
        .map(|(b, x)| b + 0.1 * x)
        .collect();
    // Clicks: one sample at full scale every 10 ms, a broadband spectrum
    // in every frame.
    let clicks: Vec<f32> = (0..n)
        .map(|i| {
            if i % (RATE as usize / 100) == 0 {
                1.0
            } else {
                0.0
            }
        })
        .collect();
    vec![
        ("music", m.clone()),
        ("music + white noise, 5 dB SNR", mix_at_snr(&m, &noise, 5.0)),
        ("music + white noise, 0 dB SNR", mix_at_snr(&m, &noise, 0.0)),
        (
            "music + white noise, -5 dB SNR",
            mix_at_snr(&m, &noise, -5.0),
        ),
        ("bass-heavy music", bass),
        ("white noise", noise),
        ("clicks every 10 ms", clicks),
    ]
}

fn percentile(sorted: &[usize], p: f64) -> usize {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    println!(
        "Limits: {MAX_PEAKS_PER_SECOND} peaks in any second, {MAX_PEAKS_PER_FRAME} in a frame, \
         {QUERY_MAX_PAIRS_PER_ANCHOR} targets per anchor.\n"
    );
    println!(
        "| query ({SEEDS} seeds x {SECONDS} s) | peaks/s, mean | densest second | densest frame | \
         targets per anchor: median / p99 / max | anchors at the cap |"
    );
    println!("| --- | --- | --- | --- | --- | --- |");
    let names: Vec<&str> = kinds(0).iter().map(|k| k.0).collect();
    for (k, name) in names.iter().enumerate() {
        let (mut peaks_total, mut densest_second, mut densest_frame) = (0usize, 0usize, 0usize);
        let mut zones = Vec::new();
        for seed in 0..SEEDS {
            let samples = kinds(seed).swap_remove(k).1;
            let peaks = fingerprint_clip(
                &Clip {
                    sample_rate: RATE,
                    samples,
                },
                PeakProfile::QUERY,
            );
            peaks_total += peaks.len();
            let mut per_second = std::collections::HashMap::<u64, usize>::new();
            let mut per_frame = std::collections::HashMap::<u32, usize>::new();
            for p in &peaks {
                *per_second
                    .entry(u64::from(p.frame) * HOP as u64 / u64::from(SAMPLE_RATE))
                    .or_default() += 1;
                *per_frame.entry(p.frame).or_default() += 1;
            }
            densest_second = densest_second.max(per_second.values().copied().max().unwrap_or(0));
            densest_frame = densest_frame.max(per_frame.values().copied().max().unwrap_or(0));
            // The speeds the matcher tries by default: -3% to +3% in 0.5% steps.
            for step in -6..=6 {
                zones.extend(query_zone_sizes(&peaks, 1.0 + 0.005 * step as f32));
            }
        }
        zones.sort_unstable();
        let at_cap = zones
            .iter()
            .filter(|&&z| z >= QUERY_MAX_PAIRS_PER_ANCHOR)
            .count();
        println!(
            "| {name} | {:.1} | {densest_second} | {densest_frame} | {} / {} / {} | {at_cap} of {} |",
            peaks_total as f64 / (SEEDS as f64 * f64::from(SECONDS)),
            percentile(&zones, 0.5),
            percentile(&zones, 0.99),
            zones.last().copied().unwrap_or(0),
            zones.len(),
        );
    }
}
