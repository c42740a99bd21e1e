//! How much of a track's constellation survives in a warped query: the share
//! of the catalogue's main-band peaks over the query's stretch that the
//! query's sparse peaks reproduce (within 1.5 frames and 1 bin once the warp
//! is undone), and the share of the catalogue's triplets whose hash the
//! query's triplets carry. This is how the triplet stage was diagnosed
//! (`docs/recognition.md`, "DJs and key shifts").
//!
//! ```sh
//! cargo run --release -p hendu-fingerprint --example triplet_survival -- \
//!     TRACK QUERY START_S TIME FREQ
//! ```
//!
//! `QUERY` is `TRACK` from `START_S` seconds on, with `TIME` track seconds
//! per query second and its frequencies `FREQ` times the track's (1.08 1.08
//! for 8% fast, 1.08 1.0 for a key-locked tempo, 1.0 1.0595 for a semitone
//! up).

use std::path::Path;
use std::process::ExitCode;

use hendu_fingerprint::params::{BAND_HI, FRAME_SECONDS};
use hendu_fingerprint::triplets::{TRIPLET_MAX_DT, catalogue_triplets, query_triplets};
use hendu_fingerprint::{Peak, PeakProfile, fingerprint_clip, fingerprint_clip_sparse, read_clip};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [track, query, start, time, freq] = args.as_slice() else {
        eprintln!("usage: triplet_survival TRACK QUERY START_S TIME FREQ");
        return ExitCode::from(2);
    };
    let numbers: Result<Vec<f64>, _> = [start, time, freq].iter().map(|s| s.parse()).collect();
    let Ok(numbers) = numbers else {
        eprintln!("START_S, TIME and FREQ are numbers");
        return ExitCode::from(2);
    };
    let (start, time, freq) = (numbers[0], numbers[1] as f32, numbers[2] as f32);
    let (track, query) = match (
        read_clip(Path::new(track), 4.0 * 3600.0),
        read_clip(Path::new(query), 65.0),
    ) {
        (Ok(t), Ok(q)) => (t, q),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("cannot read the audio: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (_, sparse) = fingerprint_clip_sparse(&query);
    let Some(last) = sparse.last() else {
        eprintln!("the query has no peaks");
        return ExitCode::FAILURE;
    };
    // The track's peaks over the query's stretch, away from its edges (where
    // a triplet's partners lie outside the query).
    let from = (start / FRAME_SECONDS) as u32;
    let span = (last.frame as f32 * time) as u32;
    let edge = TRIPLET_MAX_DT + 8;
    let stretch: Vec<Peak> = fingerprint_clip(&track, PeakProfile::CATALOGUE)
        .into_iter()
        .filter(|p| {
            p.bin < BAND_HI as f32 && p.frame >= from + edge && p.frame + edge < from + span
        })
        .map(|p| Peak {
            frame: p.frame - from,
            bin: p.bin,
        })
        .collect();
    let reproduced = stretch
        .iter()
        .filter(|c| {
            sparse.iter().any(|q| {
                (q.frame as f32 * time - c.frame as f32).abs() <= 1.5
                    && (q.bin / freq - c.bin).abs() <= 1.0
            })
        })
        .count();
    let (mut catalogue, mut queried) = (Vec::new(), Vec::new());
    catalogue_triplets(&stretch, &mut catalogue);
    query_triplets(&sparse, &mut queried);
    let hashes: std::collections::HashSet<u32> = queried.iter().map(|t| t.hash).collect();
    let kept = catalogue
        .iter()
        .filter(|t| hashes.contains(&t.hash))
        .count();
    let share = |a: usize, b: usize| 100.0 * a as f64 / b.max(1) as f64;
    println!(
        "catalogue peaks reproduced: {reproduced} of {} ({:.0}%); query sparse peaks: {}; \
         catalogue triplets found: {kept} of {} ({:.0}%)",
        stretch.len(),
        share(reproduced, stretch.len()),
        sparse.len(),
        catalogue.len(),
        share(kept, catalogue.len()),
    );
    ExitCode::SUCCESS
}
