//! The catalogue split over recognition shards, measured against one index:
//! the same tracks as [`crate::scale`] grows (real ones, then synthetic ones
//! made from them), each given to the shard of its music id
//! ([`hendu_storage::Shard::of`], as the recognisers split a store), every
//! query searched in every shard and decided across them as the recognisers
//! decide ([`hendu_fingerprint::strongest_across_shards`]). What it shows:
//! whether recall and the false-positive rate stay where one index puts
//! them, how many answers differ from one index's, the memory of the
//! largest shard, and the search time of the slowest shard (the latency
//! when the shards search at once) and of all of them (the work).

use std::collections::HashMap;
use std::time::Instant;

use anyhow::Result;
use hendu_fingerprint::index::confidence;
use hendu_fingerprint::{
    Evidence, Index, IndexBuilder, SearchOptions, Searcher, TrackId, strongest_across_shards,
};
use hendu_storage::Shard;
use hendu_storage::catalogue::LoadedTrack;
use rand::SeedableRng;
use rand::rngs::SmallRng;
use serde::Serialize;

use crate::scale::{Query, Tally, condition_names, percentile, synthetic};

/// What one split measured.
#[derive(Debug, Clone, Serialize)]
pub struct SplitReport {
    pub tracks: usize,
    pub shards: u32,
    pub total_mb: f64,
    pub largest_shard_mb: f64,
    pub queries: usize,
    /// Per query, the slowest shard's search (the latency with the shards
    /// searching at once) ...
    pub slowest_shard_p50_ms: f64,
    pub slowest_shard_p99_ms: f64,
    /// ... and all shards' searches added (the work).
    pub all_shards_p50_ms: f64,
    pub by_condition: Vec<crate::scale::ConditionReport>,
    pub held_out: usize,
    pub held_out_answered: usize,
    pub held_out_max_strength: f32,
    /// Queries whose answer (a track, or none) is not the one-shard answer.
    pub differ_from_one: usize,
}

/// One catalogue track: its peaks, and the real track it is or was made from.
struct Track<'a> {
    peaks: std::borrow::Cow<'a, [hendu_fingerprint::Peak]>,
    frames: u32,
    name: &'a str,
    synthetic: bool,
}

fn catalogue<'a>(real: &'a [LoadedTrack], size: usize, seed: u64) -> Vec<Track<'a>> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut out: Vec<Track<'a>> = real
        .iter()
        .map(|t| Track {
            peaks: std::borrow::Cow::Borrowed(&t.peaks),
            frames: t.frames,
            name: &t.music.source,
            synthetic: false,
        })
        .collect();
    for k in 0..size.saturating_sub(real.len()) {
        let source = &real[k % real.len()];
        let (peaks, frames) = synthetic(&source.peaks, source.frames, &mut rng);
        out.push(Track {
            peaks: std::borrow::Cow::Owned(peaks),
            frames,
            name: &source.music.source,
            synthetic: true,
        });
    }
    out
}

/// Measures each split of `splits` (shard counts) of a catalogue of `size`
/// tracks. The first split is the reference the others' answers are
/// compared with: start with 1.
///
/// # Errors
/// A track the index cannot hold.
pub fn run(
    real: &[LoadedTrack],
    queries: &[Query],
    size: usize,
    splits: &[u32],
    seed: u64,
    min_confidence: f32,
    mut progress: impl FnMut(&SplitReport),
) -> Result<Vec<SplitReport>> {
    let tracks = catalogue(real, size, seed);
    let options = SearchOptions::default();
    let mut searcher = Searcher::default();
    let mut reference: Option<Vec<Option<&str>>> = None;
    let mut reports = Vec::new();
    for &count in splits {
        let count = count.clamp(1, Shard::MAX);
        let mut builders: Vec<IndexBuilder> = (0..count).map(|_| IndexBuilder::new()).collect();
        // (shard, track id) -> catalogue position.
        let mut at: HashMap<(usize, TrackId), usize> = HashMap::new();
        for (i, t) in tracks.iter().enumerate() {
            let shard = Shard::of(i as i64 + 1, count).index() as usize - 1;
            let id = builders[shard].add(&t.peaks, t.frames)?;
            at.insert((shard, id), i);
        }
        let indexes: Vec<Index> = builders.into_iter().map(IndexBuilder::build).collect();
        let sizes: Vec<f64> = indexes.iter().map(|x| x.bytes() as f64 / 1e6).collect();

        let mut slowest = Vec::with_capacity(queries.len());
        let mut all = Vec::with_capacity(queries.len());
        let mut answers: Vec<Option<&str>> = Vec::with_capacity(queries.len());
        let mut tally = Tally::default();
        let mut held_strengths = Vec::new();
        let mut held_answered = 0;
        for q in queries {
            let mut bests = Vec::with_capacity(indexes.len());
            let (mut worst, mut sum) = (0.0_f64, 0.0_f64);
            for index in &indexes {
                let started = Instant::now();
                bests.push(index.search_wide(&q.peaks, &q.sparse, &options, &mut searcher));
                let ms = started.elapsed().as_secs_f64() * 1000.0;
                worst = worst.max(ms);
                sum += ms;
            }
            slowest.push(worst);
            all.push(sum);
            let evidence: Vec<Option<Evidence>> = bests
                .iter()
                .map(|b| b.as_ref().map(|c| c.evidence()))
                .collect();
            let winner = strongest_across_shards(&evidence);
            let answered = winner
                .filter(|&(_, s)| confidence(s) >= min_confidence)
                .and_then(|(shard, _)| {
                    let c = bests[shard].as_ref()?;
                    at.get(&(shard, c.track)).map(|&i| &tracks[i])
                });
            answers.push(answered.map(|t| t.name));
            match &q.track {
                None => {
                    held_strengths.push(winner.map_or(f32::NEG_INFINITY, |w| w.1));
                    held_answered += usize::from(answered.is_some());
                }
                Some(track) => {
                    let right = answered.is_some_and(|t| !t.synthetic && t.name == track);
                    let wrong = answered.is_some() && !right;
                    let own_copy = answered.is_some_and(|t| t.synthetic && t.name == track);
                    tally.add(&q.condition, right, wrong, own_copy);
                }
            }
        }
        slowest.sort_by(f64::total_cmp);
        all.sort_by(f64::total_cmp);
        held_strengths.sort_by(f32::total_cmp);
        let differ_from_one = reference.as_ref().map_or(0, |r| {
            r.iter().zip(&answers).filter(|(a, b)| a != b).count()
        });
        if reference.is_none() {
            reference = Some(answers);
        }
        let report = SplitReport {
            tracks: tracks.len(),
            shards: count,
            total_mb: sizes.iter().sum(),
            largest_shard_mb: sizes.iter().copied().fold(0.0, f64::max),
            queries: queries.len(),
            slowest_shard_p50_ms: percentile(&slowest, 0.5),
            slowest_shard_p99_ms: percentile(&slowest, 0.99),
            all_shards_p50_ms: percentile(&all, 0.5),
            by_condition: tally.reports(),
            held_out: held_strengths.len(),
            held_out_answered: held_answered,
            held_out_max_strength: held_strengths.last().copied().unwrap_or(f32::NAN),
            differ_from_one,
        };
        progress(&report);
        reports.push(report);
    }
    Ok(reports)
}

/// The reports as a Markdown table.
pub fn table(reports: &[SplitReport]) -> String {
    let mut out = String::from(
        "| tracks | shards | largest shard MB (all) | slowest shard p50 / p99 ms | all shards p50 ms | never-indexed answered | strongest never-indexed | answers unlike one index |",
    );
    let conditions = condition_names(reports.first().map(|r| &r.by_condition[..]));
    for c in &conditions {
        out.push_str(&format!(" {c} recall (wrong) |"));
    }
    out.push_str("\n| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for _ in &conditions {
        out.push_str(" ---: |");
    }
    out.push('\n');
    for r in reports {
        out.push_str(&format!(
            "| {} | {} | {:.0} ({:.0}) | {:.1} / {:.1} | {:.1} | {} of {} | {:.2} | {} of {} |",
            r.tracks,
            r.shards,
            r.largest_shard_mb,
            r.total_mb,
            r.slowest_shard_p50_ms,
            r.slowest_shard_p99_ms,
            r.all_shards_p50_ms,
            r.held_out_answered,
            r.held_out,
            r.held_out_max_strength,
            r.differ_from_one,
            r.queries,
        ));
        for c in &r.by_condition {
            out.push_str(&format!(" {:.3} ({}) |", c.recall, c.wrong));
        }
        out.push('\n');
    }
    out
}
