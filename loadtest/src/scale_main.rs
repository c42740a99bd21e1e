//! `hendu-scale`: the engine at catalogue scale, measured.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;
use hendu_loadtest::scale::{self, Plan};
use hendu_loadtest::scale_shards;

#[derive(Debug, Parser)]
#[command(
    name = "hendu-scale",
    version,
    about = "Grows the recognition benchmark's catalogue with synthetic tracks and measures the index at each size",
    long_about = "Grows the recognition benchmark's catalogue (its store and queries, made by \
`python3 bench/recognition/bench.py run`) with synthetic tracks made from the real tracks' peaks \
(bins moved, time stretched, blocks shuffled), and measures at each size: index memory, build \
time, a track added / removed / merged, search time per query, recall, and the never-indexed \
queries answered. Writes results.json, results.md and plots (SVG, PNG) into --out. Run it alone \
on the machine: times are one thread's."
)]
struct Cli {
    /// The recognition benchmark's data folder (its `run/store` and `queries/queries.json`).
    #[arg(long, default_value = ".bench-data")]
    data: PathBuf,
    /// Catalogue sizes to measure, in tracks (the real tracks count in). On a
    /// 2-core machine 10,000 tracks take about 25 minutes and 2.5 GB (6.5 GB
    /// with the full merge); queries grow slower with the size.
    #[arg(long, value_delimiter = ',', default_value = "1000,3000,10000")]
    sizes: Vec<usize>,
    /// The benchmark's query conditions to run.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "clean3,clean10,pink5db,speed5,tempo8,room"
    )]
    conditions: Vec<String>,
    /// Sizes up to this also get a full merge measured (it holds the index twice).
    #[arg(long, default_value_t = 10_000)]
    full_merge_up_to: usize,
    /// Seed of the synthetic tracks.
    #[arg(long, default_value_t = 20_261_207)]
    seed: u64,
    /// Instead: split the catalogue of each size over this many shards
    /// (comma-separated, from 1, the reference), search every query in every
    /// shard, decide across them as the recognisers do, and compare recall,
    /// false positives, memory and time (`shards.json`, `shards.md`).
    #[arg(long, value_delimiter = ',')]
    shards: Vec<u32>,
    /// Where the results go.
    #[arg(long, default_value = ".bench-data/scale")]
    out: PathBuf,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let real = runtime.block_on(scale::load_real(&cli.data.join("run/store")))?;
    eprintln!("{} real catalogue tracks", real.len());
    let queries = scale::load_queries(&cli.data.join("queries/queries.json"), &cli.conditions)?;
    eprintln!("{} queries of {:?}", queries.len(), cli.conditions);
    let provenance = serde_json::json!({
        "revision": std::process::Command::new("git")
            .args(["rev-parse", "--short", "HEAD"])
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned()),
        "date": time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .ok(),
        "cpus": std::thread::available_parallelism().map(std::num::NonZero::get).ok(),
        "seed": cli.seed,
        "conditions": cli.conditions,
    });
    if !cli.shards.is_empty() {
        return split(&cli, &real, &queries, &provenance);
    }
    let plan = Plan {
        sizes: cli.sizes.clone(),
        seed: cli.seed,
        full_merge_up_to: cli.full_merge_up_to,
        min_confidence: 0.5,
    };
    let reports = scale::run(&real, &queries, &plan, |r| {
        eprintln!(
            "{} tracks ({:.0} h): index {:.0} MB ({:.2} MB/h), built in {:.1} s; search p50 {:.1} ms p99 {:.1} ms; never-indexed answered {} of {}, strongest {:.2}",
            r.tracks,
            r.audio_hours,
            r.index_mb,
            r.index_mb_per_hour,
            r.build_s,
            r.search_p50_ms,
            r.search_p99_ms,
            r.held_out_answered,
            r.held_out,
            r.held_out_max_strength
        );
    })?;
    let dir = scale::write(&cli.out, &reports, &provenance).context("cannot write the results")?;
    println!("{}", scale::table(&reports));
    eprintln!("results in {}", dir.display());
    Ok(())
}

/// `--shards`: each size split over each shard count.
fn split(
    cli: &Cli,
    real: &[hendu_storage::catalogue::LoadedTrack],
    queries: &[scale::Query],
    provenance: &serde_json::Value,
) -> Result<()> {
    let mut reports = Vec::new();
    for &size in &cli.sizes {
        reports.extend(scale_shards::run(
            real,
            queries,
            size,
            &cli.shards,
            cli.seed,
            0.5,
            |r| {
                eprintln!(
                    "{} tracks in {} shards: largest {:.0} MB; slowest shard p50 {:.1} ms; never-indexed answered {} of {}, strongest {:.2}; {} answers unlike one index",
                    r.tracks,
                    r.shards,
                    r.largest_shard_mb,
                    r.slowest_shard_p50_ms,
                    r.held_out_answered,
                    r.held_out,
                    r.held_out_max_strength,
                    r.differ_from_one
                );
            },
        )?);
    }
    std::fs::create_dir_all(&cli.out)?;
    let json = serde_json::json!({ "provenance": provenance, "splits": reports });
    std::fs::write(
        cli.out.join("shards.json"),
        serde_json::to_string_pretty(&json)?,
    )?;
    let table = scale_shards::table(&reports);
    std::fs::write(cli.out.join("shards.md"), &table)?;
    println!("{table}");
    eprintln!("results in {}", cli.out.join("shards.md").display());
    Ok(())
}
