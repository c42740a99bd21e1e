//! `hendu scan`: the timeline of what played in a long recording.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use hendu_fingerprint::{AudioReader, DecodeLimits, Fingerprinter, ScanOptions, Scanner, Segment};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use crate::commands::SearchArgs;
use crate::commands::matching::{clock, round3};

/// Arguments of `hendu scan`.
#[derive(Debug, clap::Args)]
pub struct ScanArgs {
    #[command(flatten)]
    pub search: SearchArgs,
    /// The recording (any length: it is streamed, never held in memory).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
}

/// Runs `hendu scan`.
///
/// # Errors
/// When the store cannot be loaded or the recording cannot be decoded.
pub fn run(args: &ScanArgs) -> Result<i32> {
    let catalog = args.search.load_catalog()?;
    let json = args.search.json;
    let started = Instant::now();
    // A recording of any length: scanning streams it with bounded memory.
    let mut reader = AudioReader::open_with(&args.file, DecodeLimits::new(f64::INFINITY))
        .with_context(|| format!("cannot decode {}", args.file.display()))?;
    let options = ScanOptions {
        min_confidence: args.search.min_confidence,
        ..ScanOptions::default()
    };
    let mut scanner = Scanner::new(&catalog.index, options);
    let mut fingerprinter: Option<Fingerprinter> = None;
    let mut peaks = Vec::new();
    let mut sparse = Vec::new();
    let mut segments = Vec::new();
    let progress = ProgressBar::new_spinner().with_style(
        ProgressStyle::with_template("{spinner} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    let stdout = std::io::stdout();
    if !json {
        println!(
            "{:>9} {:>9}  {:<40} {:>9} {:>10}",
            "START", "END", "TRACK", "OFFSET", "CONFIDENCE"
        );
    }
    let emit = |segments: &mut Vec<Segment>| -> Result<()> {
        let mut out = stdout.lock();
        for s in segments.drain(..) {
            let meta = catalog.track(s.track);
            if json {
                let line = json!({
                    "start_s": round3(s.start_s),
                    "end_s": round3(s.end_s),
                    "source": meta.source,
                    "title": meta.title,
                    "offset_s": round3(s.offset_s),
                    "speed": round3(f64::from(s.speed)),
                    "confidence": round3(f64::from(s.confidence)),
                    "score": s.score,
                });
                writeln!(out, "{line}")?;
            } else {
                progress.suspend(|| {
                    writeln!(
                        out,
                        "{:>9} {:>9}  {:<40} {:>9} {:>10.2}",
                        clock(s.start_s),
                        clock(s.end_s),
                        meta.title,
                        clock(s.offset_s),
                        s.confidence
                    )
                })?;
            }
        }
        out.flush()?;
        Ok(())
    };
    while let Some(chunk) = reader
        .next_chunk()
        .with_context(|| format!("cannot decode {}", args.file.display()))?
    {
        let fp = fingerprinter.get_or_insert_with(|| Fingerprinter::for_query(chunk.sample_rate));
        peaks.clear();
        fp.push(chunk.samples, &mut peaks);
        sparse.clear();
        fp.take_sparse(&mut sparse);
        scanner.push_sparse(&sparse);
        scanner.push(&peaks, fp.final_before(), &mut segments);
        if !segments.is_empty() {
            emit(&mut segments)?;
        }
        progress.set_message(format!(
            "{} scanned",
            clock(fp.frames() as f64 * hendu_fingerprint::params::FRAME_SECONDS)
        ));
        progress.tick();
    }
    let Some(mut fp) = fingerprinter else {
        anyhow::bail!("{}: no audio in the file", args.file.display());
    };
    peaks.clear();
    fp.finish(&mut peaks);
    sparse.clear();
    fp.take_sparse(&mut sparse);
    scanner.push_sparse(&sparse);
    scanner.push(&peaks, fp.frames(), &mut segments);
    scanner.finish(fp.frames(), &mut segments);
    emit(&mut segments)?;
    progress.finish_and_clear();
    let audio_s = reader.frames_read() as f64 / f64::from(reader.sample_rate().unwrap_or(1));
    eprintln!(
        "scanned {} of audio in {:.1} s",
        clock(audio_s),
        started.elapsed().as_secs_f64()
    );
    Ok(0)
}
