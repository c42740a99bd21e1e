//! What each hostile input costs to decode or refuse: time and peak memory.
//!
//! ```sh
//! cargo run --release -p hendu-fingerprint --example hostile            # every input, both modes
//! cargo run --release -p hendu-fingerprint --example hostile -- after   # one mode
//! ```
//!
//! Each input is measured in a fresh child process of this example, so that
//! one input's peak memory (`VmHWM`) does not hide the next one's. The parent
//! kills a child that runs past `HENDU_HOSTILE_TIMEOUT_S` (default 120) or
//! whose peak passes `HENDU_HOSTILE_MAX_MB` (default 4096), and reports the
//! bound it passed.
//!
//! Modes: `before` is the call path the services used before the limits
//! (`AudioReader::from_source` and `fingerprint_reader`; the fingerprint's
//! peaks unpacked with no density check); `after` is the limited path
//! (`AudioReader::from_source_with` with the services' limits,
//! `SampleFingerprint::decode`).

#![allow(clippy::unwrap_used)] // A benchmark: a failure to spawn or parse should stop it loudly.

use std::io::Cursor;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hendu_fingerprint::hostile::{
    dense_sample_fingerprint, huge_packet_caf, lying_wav, random_bytes, silent_flac_sized,
};
use hendu_fingerprint::packed::unpack;
use hendu_fingerprint::synth::music;
use hendu_fingerprint::{
    AudioReader, Clip, Index, IndexBuilder, PeakProfile, SearchOptions, Searcher, fingerprint_clip,
    fingerprint_reader,
};

/// (name, what it is). Audio inputs ending in `-upload` are handled as a
/// catalogue track, the others as a device sample.
const INPUTS: &[(&str, &str)] = &[
    (
        "flac-upload",
        "silent FLAC, 8 MB (a catalogue upload's size)",
    ),
    ("flac-sample", "silent FLAC, 512 KB (a sample's size)"),
    ("lying-wav", "WAV claiming 13.5 h, holding 30 s"),
    (
        "huge-packet-caf",
        "CAF claiming 2^32-1 frames per packet, 8 channels",
    ),
    ("random", "1 MB of random bytes"),
    (
        "dense-fp",
        "device fingerprint, 60 s, 5,000 peaks/s, 80 per frame",
    ),
    (
        "densest-fp",
        "device fingerprint, 1 h at the new limits (200 peaks/s, 64 per frame)",
    ),
    (
        "normal-fp",
        "device fingerprint of 30 s of music (for scale)",
    ),
];

/// The services' limits (issue 16): a catalogue track 2 h, a sample 1 h.
const TRACK_LIMIT_S: f64 = 7200.0;
const SAMPLE_LIMIT_S: f64 = 3600.0;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("child") {
        child(&args[1], &args[2]);
        return;
    }
    let modes: Vec<&str> = match args.first().map(String::as_str) {
        Some(mode) => vec![mode],
        None => vec!["before", "after"],
    };
    let timeout = Duration::from_secs(env_u64("HENDU_HOSTILE_TIMEOUT_S", 120));
    let max_kb = env_u64("HENDU_HOSTILE_MAX_MB", 4096) * 1024;
    println!("| input | mode | outcome | time | peak RSS | peak - RSS before |");
    println!("| --- | --- | --- | --- | --- | --- |");
    for &(name, what) in INPUTS {
        for &mode in &modes {
            let row = run_child(name, mode, timeout, max_kb);
            println!("| {what} | {mode} | {row} |");
        }
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Runs one input in a child; the table cells after the mode.
fn run_child(name: &str, mode: &str, timeout: Duration, max_kb: u64) -> String {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["child", name, mode])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let status_path = format!("/proc/{}/status", child.id());
    let started = Instant::now();
    let mut hwm = 0;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        // The child's peak so far, in case it has to be stopped.
        hwm = std::fs::read_to_string(&status_path)
            .ok()
            .and_then(|s| hendu_fingerprint::hostile::status_kb(&s, "VmHWM:"))
            .unwrap_or(hwm);
        if started.elapsed() > timeout || hwm > max_kb {
            child.kill().unwrap();
            child.wait().unwrap();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let elapsed = started.elapsed();
    let Some(status) = status else {
        let why = if hwm > max_kb {
            format!("stopped past {} MB", max_kb / 1024)
        } else {
            format!("stopped after {} s", timeout.as_secs())
        };
        return format!(
            "{why} | >{:.0} s | >{} MB | n/a",
            elapsed.as_secs_f64(),
            hwm / 1024
        );
    };
    let mut out = String::new();
    use std::io::Read;
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let Some(line) = out.lines().find_map(|l| l.strip_prefix("RESULT ")) else {
        use std::os::unix::process::ExitStatusExt;
        let how = status
            .signal()
            .map_or(format!("{status}"), |s| format!("signal {s}"));
        return format!(
            "crashed ({how}) | {:.1} s | >{} MB | n/a",
            elapsed.as_secs_f64(),
            hwm / 1024
        );
    };
    let field = |key: &str| {
        line.split('\t')
            .find_map(|kv| kv.strip_prefix(key))
            .unwrap_or("")
            .to_string()
    };
    let ms: f64 = field("ms=").parse().unwrap_or(f64::NAN);
    let hwm: u64 = field("hwm_kb=").parse().unwrap_or(0);
    let before: u64 = field("rss_before_kb=").parse().unwrap_or(0);
    format!(
        "{} | {} | {:.1} MB | {:.1} MB",
        field("outcome="),
        if ms < 1000.0 {
            format!("{ms:.1} ms")
        } else {
            format!("{:.1} s", ms / 1000.0)
        },
        hwm as f64 / 1024.0,
        hwm.saturating_sub(before) as f64 / 1024.0
    )
}

fn own_status(key: &str) -> u64 {
    hendu_fingerprint::hostile::own_status_kb(key).unwrap_or(0)
}

/// A small catalogue for the fingerprint inputs to be matched against.
fn catalogue() -> Index {
    let mut builder = IndexBuilder::new();
    for seed in 1..=20 {
        let clip = Clip {
            sample_rate: 8_000,
            samples: music(seed, 60.0, 8_000),
        };
        let peaks = fingerprint_clip(&clip, PeakProfile::CATALOGUE);
        builder.add(&peaks, 3750).unwrap();
    }
    builder.build()
}

fn child(name: &str, mode: &str) {
    let after = mode == "after";
    let fingerprint = name.ends_with("-fp");
    let index = fingerprint.then(catalogue);
    let bytes = match name {
        "flac-upload" => silent_flac_sized(8 << 20, 44_100),
        "flac-sample" => silent_flac_sized(512 << 10, 44_100),
        "lying-wav" => lying_wav(1e9, 30.0, 44_100),
        "huge-packet-caf" => huge_packet_caf(8),
        "random" => random_bytes(1, 1 << 20),
        "dense-fp" => dense_sample_fingerprint(60_000, 5_000, 80),
        // The limits' values, spelt out so that this also builds against the
        // engine from before them.
        "densest-fp" => dense_sample_fingerprint(3_600_000, 200, 64),
        "normal-fp" => {
            let clip = Clip {
                sample_rate: 8_000,
                samples: music(3, 30.0, 8_000)[..].to_vec(),
            };
            hendu_fingerprint::wire::SampleFingerprint {
                captured_at_ms: 0,
                duration_ms: 30_000,
                peaks: fingerprint_clip(&clip, PeakProfile::QUERY),
                sparse: Vec::new(),
            }
            .encode()
        }
        other => panic!("unknown input {other}"),
    };
    // Resets the peak (VmHWM) to the current RSS, so that the peak measured
    // is the work's and not the building of the input or the catalogue.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let rss_before = own_status("VmRSS:");
    let started = Instant::now();
    let outcome = match &index {
        Some(index) => match_fingerprint(&bytes, index, after),
        None => decode_audio(bytes, name.ends_with("-upload"), after),
    };
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    println!(
        "RESULT outcome={outcome}\tms={ms}\trss_before_kb={rss_before}\thwm_kb={}",
        own_status("VmHWM:")
    );
}

fn decode_audio(bytes: Vec<u8>, upload: bool, after: bool) -> String {
    let profile = if upload {
        PeakProfile::CATALOGUE
    } else {
        PeakProfile::QUERY
    };
    let source = Box::new(Cursor::new(bytes));
    let result = if after {
        let limit_s = if upload {
            TRACK_LIMIT_S
        } else {
            SAMPLE_LIMIT_S
        };
        open_limited(source, limit_s)
    } else {
        AudioReader::from_source(source, None)
    }
    .and_then(|mut reader| fingerprint_reader(&mut reader, profile));
    match result {
        Ok(fp) => format!("decoded {:.0} s, {} peaks", fp.duration_s, fp.peaks.len()),
        Err(e) => format!("refused: {e}"),
    }
}

/// The limited reader (the only call of the new decode API).
fn open_limited(
    source: Box<Cursor<Vec<u8>>>,
    limit_s: f64,
) -> Result<AudioReader, hendu_fingerprint::DecodeError> {
    AudioReader::from_source_with(source, None, hendu_fingerprint::DecodeLimits::new(limit_s))
}

/// The sample's peaks as the service decodes them (the only call of the
/// new wire limits).
fn decode_limited(bytes: &[u8]) -> Result<Vec<hendu_fingerprint::Peak>, String> {
    hendu_fingerprint::wire::SampleFingerprint::decode(bytes)
        .map(|s| s.peaks)
        .map_err(|e| e.to_string())
}

fn match_fingerprint(bytes: &[u8], index: &Index, after: bool) -> String {
    let peaks = if after {
        decode_limited(bytes)
    } else {
        // Before the wire limits: the header as it was checked, the peaks
        // unpacked as they come.
        unpack(&bytes[18..]).map_err(|e| e.to_string())
    };
    let peaks = match peaks {
        Ok(peaks) => peaks,
        Err(e) => return format!("refused: {e}"),
    };
    let found = index.search(&peaks, &SearchOptions::default(), &mut Searcher::default());
    format!(
        "{} peaks matched, {}",
        peaks.len(),
        found.map_or("no match".to_string(), |c| format!(
            "best: track {}, confidence {:.2}",
            c.track, c.confidence
        ))
    )
}
