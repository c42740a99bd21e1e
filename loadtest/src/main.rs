//! `hendu-load`: sends HENDU an open-loop load and writes what it measured.

use std::net::SocketAddr;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use hendu_loadtest::load::Load;
use hendu_loadtest::null_server;

#[derive(Debug, Parser)]
#[command(
    name = "hendu-load",
    version,
    about = "Sends HENDU an open-loop load and writes what it measured",
    long_about = "Sends HENDU an open-loop load: requests go out at the instants of a declared \
arrival process whatever the answers do, and each one's latency is measured from its intended \
send time into HDR histograms (no coordinated omission). Writes a results directory: \
summary.json (provenance, totals, percentiles, errors by kind), seconds.csv, errors.csv, \
latency.hgrm, and throughput and latency plots as SVG and PNG."
)]
struct Cli {
    /// Worker threads of the generator (default: one per core).
    #[arg(long, global = true)]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs a load and writes its results directory.
    Run(Box<Load>),
    /// Answers every request at once with 200: the other end for measuring
    /// the generator's own ceiling.
    NullServer {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8099")]
        addr: SocketAddr,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = cli.threads {
        anyhow::ensure!((1..=1024).contains(&n), "--threads is between 1 and 1024");
        runtime.worker_threads(n);
    }
    let runtime = runtime
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    runtime.block_on(async move {
        match cli.command {
            Command::NullServer { addr } => {
                let listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot listen on {addr}"))?;
                eprintln!("null server on {}", listener.local_addr()?);
                null_server::serve(listener).await?;
                Ok(())
            }
            Command::Run(args) => run(*args).await,
        }
    })
}

async fn run(load: Load) -> Result<()> {
    let plan = load.plan().await?;
    let outcome = hendu_loadtest::run(plan).await?;
    let s = &outcome.summary;
    println!(
        "{} due, {} ok ({}/s), {} errors; latency p50 {} ms, p99 {} ms, max {} ms; results in {}",
        s["requests"]["due"],
        s["requests"]["ok"],
        s["requests"]["ok_per_s"],
        s["requests"]["errors"],
        s["latency_ms"]["p50"],
        s["latency_ms"]["p99"],
        s["latency_ms"]["max"],
        outcome.out.display()
    );
    if !s["end_to_end"].is_null() {
        println!("end to end (sample to play): {}", s["end_to_end"]);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn a_run_needs_a_schedule_and_refuses_two() {
        assert!(
            Cli::try_parse_from(["hendu-load", "run", "--rate", "10", "--bursts", "1/1s"]).is_err()
        );
        assert!(Cli::try_parse_from(["hendu-load", "run", "--rate", "10"]).is_ok());
    }

    #[test]
    fn rest_samples_go_to_the_apis_address() {
        assert!(hendu_loadtest::load::address_of("https://x").is_err());
        assert_eq!(
            hendu_loadtest::load::address_of("http://127.0.0.1:8081/")
                .unwrap()
                .port(),
            8081
        );
    }
}
