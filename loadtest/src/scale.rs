//! The engine at catalogue scale: an index grown from the recognition
//! benchmark's real tracks to thousands of tracks with synthetic ones, and
//! what size does to memory, build time, changes and queries.
//!
//! **Synthetic tracks.** Each is made from the peaks of one real catalogue
//! track (in turn), so that its peak density, band balance, note lengths and
//! repetitions are those of real music: the bins are moved by 3 to 24 bins
//! up or down (each band within itself; peaks moved out of their band are
//! dropped), time is stretched by a factor of 0.80 to 1.25 (never within 3%
//! of 1.0, where the speed search would undo it), and the track is cut into
//! 4 s blocks that are put back in a shuffled order. Real tracks stay the
//! only ones that are queried: the benchmark's clips of the indexed tracks
//! (recall), and of the held-out tracks (false positives).
//!
//! **What is measured** at each size (one thread, the process alone on the
//! machine): the index's bytes and bytes per hour of audio, the process's
//! resident and peak memory, the build time from peaks in memory; one real
//! track, left out of the build, added as a new part (time until its query
//! is answered), removed, and the new part merged back; the search time per
//! query (its fingerprint made beforehand) at p50 and p99; recall at the
//! shipped threshold, wrong answers, answered never-indexed queries and the
//! strongest never-indexed candidate.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hendu_fingerprint::params::{FRAME_SECONDS, band_bins, is_low_bin};
use hendu_fingerprint::{
    IndexBuilder, Peak, SearchOptions, Searcher, TrackId, fingerprint_clip_sparse, read_clip,
};
use hendu_storage::catalogue::LoadedTrack;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// A query of the recognition benchmark, fingerprinted.
#[derive(Debug)]
pub struct Query {
    pub condition: String,
    /// The indexed track it was cut from (its path), or none when held out.
    pub track: Option<String>,
    pub peaks: Vec<Peak>,
    pub sparse: Vec<Peak>,
}

#[derive(Deserialize)]
struct QueryEntry {
    path: String,
    condition: String,
    track: Option<String>,
}

/// Reads and fingerprints the benchmark's queries of `conditions`.
///
/// # Errors
/// A manifest or clip that cannot be read.
pub fn load_queries(manifest: &Path, conditions: &[String]) -> Result<Vec<Query>> {
    let text = std::fs::read_to_string(manifest)
        .with_context(|| format!("cannot read {}", manifest.display()))?;
    #[derive(Deserialize)]
    struct Manifest {
        queries: Vec<QueryEntry>,
    }
    let entries: Vec<QueryEntry> = match serde_json::from_str::<Manifest>(&text) {
        Ok(m) => m.queries,
        Err(_) => serde_json::from_str(&text)
            .with_context(|| format!("{} is no query manifest", manifest.display()))?,
    };
    let wanted: Vec<&QueryEntry> = entries
        .iter()
        .filter(|e| conditions.iter().any(|c| c == &e.condition))
        .collect();
    if wanted.is_empty() {
        bail!("no queries of {conditions:?} in {}", manifest.display());
    }
    let bar =
        indicatif::ProgressBar::new(wanted.len() as u64).with_message("fingerprinting queries");
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg} {bar:30} {pos}/{len} {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut out = Vec::with_capacity(wanted.len());
    for e in wanted {
        let clip = read_clip(Path::new(&e.path), 60.0)
            .with_context(|| format!("cannot read the query {}", e.path))?;
        let (peaks, sparse) = fingerprint_clip_sparse(&clip);
        out.push(Query {
            condition: e.condition.clone(),
            track: e.track.clone(),
            peaks,
            sparse,
        });
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(out)
}

/// Frames of a synthetic track's shuffled blocks (4 s).
const BLOCK_FRAMES: u32 = 250;

/// A synthetic track made from `real`'s peaks (see the module documentation).
pub fn synthetic(real: &[Peak], frames: u32, rng: &mut SmallRng) -> (Vec<Peak>, u32) {
    let shift = rng.random_range(3..=24) * if rng.random_bool(0.5) { 1 } else { -1 };
    let stretch = loop {
        let s: f32 = rng.random_range(0.80..1.25);
        if (s - 1.0).abs() > 0.03 {
            break s;
        }
    };
    let blocks = frames.div_ceil(BLOCK_FRAMES).max(1);
    let mut order: Vec<u32> = (0..blocks).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, rng.random_range(0..=i));
    }
    let mut peaks = Vec::with_capacity(real.len());
    for (slot, &block) in order.iter().enumerate() {
        let from = real.partition_point(|p| p.frame < block * BLOCK_FRAMES);
        let to = real.partition_point(|p| p.frame < (block + 1) * BLOCK_FRAMES);
        let base = slot as f32 * BLOCK_FRAMES as f32;
        for p in &real[from..to] {
            let bins = band_bins(is_low_bin(p.bin));
            let bin = p.bin + shift as f32;
            if bin < 0.0 || !bins.contains(&(bin.round() as usize)) {
                continue;
            }
            let frame = ((base + (p.frame - block * BLOCK_FRAMES) as f32) * stretch).round() as u32;
            peaks.push(Peak { frame, bin });
        }
    }
    // Stretching keeps the order within a block and blocks follow each
    // other, so the peaks are in time order already; peaks of one frame
    // may come from two neighbouring source frames.
    peaks.sort_by_key(|p| p.frame);
    let length = ((blocks * BLOCK_FRAMES) as f32 * stretch) as u32;
    (peaks, length.max(1))
}

/// What one catalogue size measured.
#[derive(Debug, Clone, Serialize)]
pub struct SizeReport {
    pub tracks: usize,
    pub audio_hours: f64,
    pub postings: usize,
    pub index_mb: f64,
    pub index_mb_per_hour: f64,
    /// The process's resident memory after the build, and its peak so far.
    pub rss_mb: f64,
    pub peak_rss_mb: f64,
    pub build_s: f64,
    /// A real track left out of the build, added as a part of its own,
    /// until its query is answered.
    pub add_track_ms: f64,
    pub added_track_found: bool,
    pub remove_track_ms: f64,
    /// The added part merged with the rest; a full merge only when asked.
    pub merge_new_part_ms: f64,
    pub full_merge_s: Option<f64>,
    pub queries: usize,
    pub search_p50_ms: f64,
    pub search_p99_ms: f64,
    pub by_condition: Vec<ConditionReport>,
    pub held_out: usize,
    pub held_out_answered: usize,
    /// Strongest best candidate of a never-indexed query, and its 99th
    /// percentile: where the threshold must stay above.
    pub held_out_max_strength: f32,
    pub held_out_p99_strength: f32,
}

/// Recall and wrong answers of one condition.
#[derive(Debug, Clone, Serialize)]
pub struct ConditionReport {
    pub condition: String,
    pub queries: usize,
    pub recall: f64,
    pub wrong: usize,
    /// Of the wrong answers, those that name a synthetic track made from
    /// the queried track itself (bins moved, time stretched, blocks
    /// shuffled): to a warp search, a near relative of the track.
    pub own_copy: usize,
}

/// Recall and wrong answers, condition by condition, as queries come.
#[derive(Debug, Default)]
pub struct Tally(Vec<ConditionReport>);

impl Tally {
    /// One query of `condition`: answered right, wrong, and whether the
    /// wrong answer is a synthetic copy of the queried track.
    pub fn add(&mut self, condition: &str, right: bool, wrong: bool, own_copy: bool) {
        let slot = match self.0.iter().position(|c| c.condition == condition) {
            Some(i) => i,
            None => {
                self.0.push(ConditionReport {
                    condition: condition.to_owned(),
                    queries: 0,
                    recall: 0.0,
                    wrong: 0,
                    own_copy: 0,
                });
                self.0.len() - 1
            }
        };
        let c = &mut self.0[slot];
        // `recall` counts the right answers until `reports`.
        c.queries += 1;
        c.recall += f64::from(u8::from(right));
        c.wrong += usize::from(wrong);
        c.own_copy += usize::from(own_copy);
    }

    /// Each condition's report, in the order they first came.
    pub fn reports(self) -> Vec<ConditionReport> {
        self.0
            .into_iter()
            .map(|c| ConditionReport {
                recall: c.recall / c.queries.max(1) as f64,
                ..c
            })
            .collect()
    }
}

/// Settings of one run.
#[derive(Debug, Clone)]
pub struct Plan {
    pub sizes: Vec<usize>,
    pub seed: u64,
    /// Sizes up to this get a full merge measured too (it holds the index twice).
    pub full_merge_up_to: usize,
    pub min_confidence: f32,
}

/// The process's resident and peak resident memory, in MB.
fn memory_mb() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1000.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The `q` quantile of sorted values (`NaN` for none).
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i]
}

/// Measures every size of `plan`, smallest first (the peak memory of each
/// is then its own). `real` are the benchmark's catalogue tracks; `late` is
/// the one left out of each build and added afterwards.
pub fn run(
    real: &[LoadedTrack],
    queries: &[Query],
    plan: &Plan,
    mut progress: impl FnMut(&SizeReport),
) -> Result<Vec<SizeReport>> {
    let Some(late) = real.iter().position(|t| {
        queries
            .iter()
            .any(|q| q.track.as_deref() == Some(&t.music.source))
    }) else {
        bail!("no query is of a catalogue track: are the store and the queries of one benchmark?");
    };
    let late_query = queries
        .iter()
        .find(|q| q.track.as_deref() == Some(&real[late].music.source) && q.condition == "clean10")
        .or_else(|| {
            queries
                .iter()
                .find(|q| q.track.as_deref() == Some(&real[late].music.source))
        })
        .expect("found above");
    let mut reports = Vec::new();
    for &size in &plan.sizes {
        let size = size.max(real.len());
        let mut rng = SmallRng::seed_from_u64(plan.seed);
        let mut names: HashMap<TrackId, &str> = HashMap::new();
        let mut frames_total = 0u64;
        let mut build = Duration::ZERO;
        let mut builder = IndexBuilder::new();
        for (i, t) in real.iter().enumerate() {
            if i == late {
                continue;
            }
            let started = Instant::now();
            let id = builder.add(&t.peaks, t.frames)?;
            build += started.elapsed();
            names.insert(id, &t.music.source);
            frames_total += u64::from(t.frames);
        }
        // Which real track each synthetic one was made from.
        let mut made_from: HashMap<TrackId, &str> = HashMap::new();
        for k in 0..size - real.len() {
            let source = &real[k % real.len()];
            let (peaks, frames) = synthetic(&source.peaks, source.frames, &mut rng);
            let started = Instant::now();
            let id = builder.add(&peaks, frames)?;
            build += started.elapsed();
            made_from.insert(id, &source.music.source);
            frames_total += u64::from(frames);
        }
        let started = Instant::now();
        let index = builder.build();
        build += started.elapsed();
        let (rss_mb, peak_rss_mb) = memory_mb();

        let options = SearchOptions::default();
        let mut searcher = Searcher::default();
        // The late track: a part of its own, then found.
        let started = Instant::now();
        let mut added = index.builder();
        let late_id = added.add(&real[late].peaks, real[late].frames)?;
        let grown = index.with_added(added);
        let found = grown.search_wide(
            &late_query.peaks,
            &late_query.sparse,
            &options,
            &mut searcher,
        );
        let add_track = started.elapsed();
        let added_track_found = found
            .as_ref()
            .is_some_and(|c| c.track == late_id && c.confidence >= plan.min_confidence);
        names.insert(late_id, &real[late].music.source);
        let started = Instant::now();
        let shrunk = grown.without(&[late_id]);
        let remove_track = started.elapsed();
        drop(shrunk);
        let started = Instant::now();
        let merged = grown.merge(1)?;
        let grown = grown.with_merged(merged);
        let merge_new_part = started.elapsed();
        drop(index);
        let full_merge_s = if size <= plan.full_merge_up_to {
            let started = Instant::now();
            let merged = grown.merge(0)?;
            drop(grown.with_merged(merged));
            Some(started.elapsed().as_secs_f64())
        } else {
            None
        };
        let index = grown;

        let mut times = Vec::with_capacity(queries.len());
        let mut tally = Tally::default();
        let mut held_strengths = Vec::new();
        let mut held_answered = 0;
        for q in queries {
            let started = Instant::now();
            let found = index.search_wide(&q.peaks, &q.sparse, &options, &mut searcher);
            times.push(ms(started.elapsed()));
            let answered = found
                .as_ref()
                .filter(|c| c.confidence >= plan.min_confidence);
            match &q.track {
                None => {
                    held_strengths.push(found.as_ref().map_or(f32::NEG_INFINITY, |c| c.strength));
                    held_answered += usize::from(answered.is_some());
                }
                Some(track) => {
                    let right =
                        answered.is_some_and(|c| names.get(&c.track) == Some(&track.as_str()));
                    let wrong = answered.is_some() && !right;
                    let own_copy =
                        answered.is_some_and(|c| made_from.get(&c.track) == Some(&track.as_str()));
                    tally.add(&q.condition, right, wrong, own_copy);
                }
            }
        }
        times.sort_by(f64::total_cmp);
        held_strengths.sort_by(f32::total_cmp);
        let hours = frames_total as f64 * FRAME_SECONDS / 3600.0
            + f64::from(real[late].frames) * FRAME_SECONDS / 3600.0;
        let report = SizeReport {
            tracks: index.len(),
            audio_hours: hours,
            postings: index.postings(),
            index_mb: index.bytes() as f64 / 1e6,
            index_mb_per_hour: index.bytes() as f64 / 1e6 / hours,
            rss_mb,
            peak_rss_mb,
            build_s: build.as_secs_f64(),
            add_track_ms: ms(add_track),
            added_track_found,
            remove_track_ms: ms(remove_track),
            merge_new_part_ms: ms(merge_new_part),
            full_merge_s,
            queries: queries.len(),
            search_p50_ms: percentile(&times, 0.5),
            search_p99_ms: percentile(&times, 0.99),
            by_condition: tally.reports(),
            held_out: held_strengths.len(),
            held_out_answered: held_answered,
            held_out_max_strength: held_strengths.last().copied().unwrap_or(f32::NAN),
            held_out_p99_strength: held_strengths
                .get(((held_strengths.len().max(1) - 1) as f64 * 0.99).round() as usize)
                .copied()
                .unwrap_or(f32::NAN),
        };
        progress(&report);
        reports.push(report);
        drop(index);
    }
    Ok(reports)
}

/// The reports as a Markdown table.
pub fn table(reports: &[SizeReport]) -> String {
    let mut out = String::from(
        "| tracks | audio h | index MB | MB per h | RSS / peak MB | build s | add a track ms (found) | remove ms | merge new part ms | full merge s | search p50 / p99 ms | never-indexed answered | strongest never-indexed |\n\
         | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for r in reports {
        out.push_str(&format!(
            "| {} | {:.0} | {:.0} | {:.2} | {:.0} / {:.0} | {:.1} | {:.1} ({}) | {:.2} | {:.0} | {} | {:.1} / {:.1} | {} of {} | {:.2} |\n",
            r.tracks,
            r.audio_hours,
            r.index_mb,
            r.index_mb_per_hour,
            r.rss_mb,
            r.peak_rss_mb,
            r.build_s,
            r.add_track_ms,
            if r.added_track_found { "yes" } else { "no" },
            r.remove_track_ms,
            r.merge_new_part_ms,
            r.full_merge_s.map_or("-".to_owned(), |s| format!("{s:.1}")),
            r.search_p50_ms,
            r.search_p99_ms,
            r.held_out_answered,
            r.held_out,
            r.held_out_max_strength,
        ));
    }
    let conditions = condition_names(reports.first().map(|r| &r.by_condition[..]));
    out.push_str("\n| tracks |");
    for c in &conditions {
        out.push_str(&format!(" {c} recall (wrong, of them own copy) |"));
    }
    out.push_str("\n| ---: |");
    for _ in &conditions {
        out.push_str(" ---: |");
    }
    out.push('\n');
    for r in reports {
        out.push_str(&format!("| {} |", r.tracks));
        for c in &r.by_condition {
            out.push_str(&format!(" {:.3} ({}, {}) |", c.recall, c.wrong, c.own_copy));
        }
        out.push('\n');
    }
    out
}

/// The conditions of a run's first report, in its order (the columns of a
/// table).
pub fn condition_names(first: Option<&[ConditionReport]>) -> Vec<&str> {
    first
        .unwrap_or_default()
        .iter()
        .map(|c| c.condition.as_str())
        .collect()
}

/// Writes `results.json`, `results.md` and the plots into `dir`.
///
/// # Errors
/// A file that cannot be written.
pub fn write(
    dir: &Path,
    reports: &[SizeReport],
    provenance: &serde_json::Value,
) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let json = serde_json::json!({ "provenance": provenance, "sizes": reports });
    std::fs::write(
        dir.join("results.json"),
        serde_json::to_string_pretty(&json)?,
    )?;
    std::fs::write(dir.join("results.md"), table(reports))?;
    let x = |f: fn(&SizeReport) -> f64| -> Vec<(f64, f64)> {
        reports.iter().map(|r| (r.tracks as f64, f(r))).collect()
    };
    crate::plot::curves(
        dir,
        "search",
        (
            "Search time per query against catalogue size",
            "tracks in the index",
            "milliseconds (log)",
        ),
        true,
        &[
            ("p50", x(|r| r.search_p50_ms)),
            ("p99", x(|r| r.search_p99_ms)),
        ],
    )?;
    crate::plot::curves(
        dir,
        "memory",
        (
            "Index memory against catalogue size",
            "tracks in the index",
            "MB",
        ),
        false,
        &[
            ("index", x(|r| r.index_mb)),
            ("peak RSS", x(|r| r.peak_rss_mb)),
        ],
    )?;
    crate::plot::curves(
        dir,
        "null",
        (
            "Strongest never-indexed candidate against catalogue size",
            "tracks in the index",
            "strength",
        ),
        false,
        &[
            ("max", x(|r| f64::from(r.held_out_max_strength))),
            ("p99", x(|r| f64::from(r.held_out_p99_strength))),
            (
                "threshold",
                x(|_| f64::from(hendu_fingerprint::index::CONFIDENCE_MID)),
            ),
        ],
    )?;
    Ok(dir.to_path_buf())
}

/// The catalogue of the benchmark's store, `Index` aside.
///
/// # Errors
/// A store that cannot be opened or read.
pub async fn load_real(store: &Path) -> Result<Vec<LoadedTrack>> {
    let file = store.join("hendu.db");
    if !file.is_file() {
        bail!(
            "no benchmark store at {}: run `python3 bench/recognition/bench.py run` first",
            file.display()
        );
    }
    let storage = hendu_storage::Storage::embedded(&file, hendu_storage::QueueConfig::default())
        .await
        .with_context(|| format!("cannot open {}", file.display()))?;
    let loaded = storage.load_catalogue().await?;
    if loaded.tracks.is_empty() {
        bail!("the store at {} holds no track", store.display());
    }
    Ok(loaded.tracks)
}
