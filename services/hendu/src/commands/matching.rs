//! `hendu match`: identify clips against the store.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Result;
use hendu_fingerprint::blocks::block_of;
use hendu_fingerprint::index::TRACK_GAP_FRAMES;
use hendu_fingerprint::params::FRAME_SECONDS;
use hendu_fingerprint::{Candidate, SearchOptions, Searcher, fingerprint_clip_sparse, read_clip};
use rayon::prelude::*;
use serde_json::{Value, json};

use crate::catalog::Catalog;
use crate::commands::{JobsArgs, SearchArgs};

/// Arguments of `hendu match`.
#[derive(Debug, clap::Args)]
pub struct MatchArgs {
    #[command(flatten)]
    pub search: SearchArgs,
    #[command(flatten)]
    pub jobs: JobsArgs,
    /// Audio clips to identify (only their first 65 s are used).
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
}

struct Answer {
    query: String,
    candidate: Option<Candidate>,
    error: Option<String>,
    elapsed_ms: f64,
    match_ms: f64,
}

/// Runs `hendu match`. Returns the exit code: 0, or 1 when a query could not be read.
///
/// # Errors
/// When the store cannot be opened.
pub fn run(args: &MatchArgs) -> Result<i32> {
    let catalog = args.search.load_catalog()?;
    let json = args.search.json;
    if !json {
        eprintln!(
            "loaded {} tracks ({} landmarks) in {:.0} ms ({:.0} ms reading the store)",
            catalog.tracks.len(),
            catalog.index.postings(),
            catalog.load_time.as_secs_f64() * 1000.0,
            catalog.fetch_time.as_secs_f64() * 1000.0
        );
    }
    let pool = args.jobs.pool()?;
    let options = SearchOptions::default();
    let max_seconds = f64::from(TRACK_GAP_FRAMES) * FRAME_SECONDS;
    let stdout = std::io::stdout();
    let mut failed = false;
    if !json {
        println!(
            "{:<40} {:<32} {:>5} {:>9} {:>10} {:>8}",
            "QUERY", "TRACK", "BLOCK", "OFFSET", "CONFIDENCE", "TIME"
        );
    }
    // Answers are printed in the order of the arguments, a chunk at a time,
    // so a long batch shows progress and memory stays bounded.
    for chunk in args.paths.chunks(64) {
        let answers: Vec<Answer> = pool.install(|| {
            chunk
                .par_iter()
                .map_init(Searcher::default, |searcher, path| {
                    identify(&catalog, path, &options, searcher, max_seconds)
                })
                .collect()
        });
        let mut out = stdout.lock();
        for answer in answers {
            failed |= answer.error.is_some();
            let accepted = answer
                .candidate
                .as_ref()
                .filter(|c| c.confidence >= args.search.min_confidence);
            if json {
                let mut line = json!({
                    "query": answer.query,
                    "match": accepted.map(|c| describe(&catalog, c)),
                    "elapsed_ms": round3(answer.elapsed_ms),
                    "match_ms": round3(answer.match_ms),
                });
                if let Some(e) = &answer.error {
                    line["error"] = Value::from(e.as_str());
                }
                writeln!(out, "{line}")?;
            } else {
                let (track, block, offset, confidence) = match (&answer.error, accepted) {
                    (Some(e), _) => (
                        format!("error: {e}"),
                        String::new(),
                        String::new(),
                        String::new(),
                    ),
                    (None, Some(c)) => {
                        let meta = catalog.track(c.track);
                        let (a, b) = c.track_span_s();
                        (
                            meta.title.clone(),
                            block_of(a, b, meta.duration_s).to_string(),
                            clock(c.offset_s),
                            format!("{:.2}", c.confidence),
                        )
                    }
                    (None, None) => (
                        "(not in the catalogue)".into(),
                        "-".into(),
                        "-".into(),
                        "-".into(),
                    ),
                };
                writeln!(
                    out,
                    "{:<40} {:<32} {:>5} {:>9} {:>10} {:>6.0}ms",
                    answer.query, track, block, offset, confidence, answer.elapsed_ms
                )?;
            }
        }
        out.flush()?;
    }
    Ok(i32::from(failed))
}

fn identify(
    catalog: &Catalog,
    path: &Path,
    options: &SearchOptions,
    searcher: &mut Searcher,
    max_seconds: f64,
) -> Answer {
    let started = Instant::now();
    let query = path.to_string_lossy().into_owned();
    let clip = read_clip(path, max_seconds);
    let decoded = Instant::now();
    let (candidate, error) = match clip {
        Ok(clip) => {
            let (peaks, sparse) = fingerprint_clip_sparse(&clip);
            (
                catalog
                    .index
                    .search_wide(&peaks, &sparse, options, searcher),
                None,
            )
        }
        Err(e) => (None, Some(e.to_string())),
    };
    let done = Instant::now();
    Answer {
        query,
        candidate,
        error,
        elapsed_ms: (done - started).as_secs_f64() * 1000.0,
        match_ms: (done - decoded).as_secs_f64() * 1000.0,
    }
}

/// The JSON description of a match.
pub fn describe(catalog: &Catalog, c: &Candidate) -> Value {
    let meta = catalog.track(c.track);
    let (a, b) = c.track_span_s();
    json!({
        "source": meta.source,
        "title": meta.title,
        "block": block_of(a, b, meta.duration_s),
        "offset_s": round3(c.offset_s),
        "span_s": [round3(a), round3(b)],
        "speed": round3(f64::from(c.speed)),
        "pitch": round3(f64::from(c.pitch)),
        "score": c.score,
        "confidence": round3(f64::from(c.confidence)),
        "evidence": {
            "rival_score": c.rival_score,
            "verified": c.verified,
            "expected": round3(f64::from(c.expected)),
            "z": round3(f64::from(c.z)),
            "strength": round3(f64::from(c.strength)),
        },
    })
}

pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// `m:ss.s`, or `-m:ss.s` before the start.
pub fn clock(seconds: f64) -> String {
    let sign = if seconds < 0.0 { "-" } else { "" };
    let s = seconds.abs();
    format!("{sign}{}:{:04.1}", (s / 60.0).floor() as u64, s % 60.0)
}
