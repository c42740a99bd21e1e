//! `hendu-experiment`: runs a declared scaling or chaos experiment into
//! data and plots.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use hendu_loadtest::experiment::{self, Spec, Target};

#[derive(Debug, Parser)]
#[command(
    name = "hendu-experiment",
    version,
    about = "Runs a declared experiment (a TOML file) into data and plots",
    long_about = "Runs a declared experiment: deploys HENDU's services (as processes on this \
machine over the real databases, or as kubectl commands printed for a cluster), sends the \
declared load, applies the faults on their schedule, reads every replica's metrics each second, \
checks the invariants (every accepted sample recognised and decided, no play lost or twice), \
and writes the results directory. See loadtest/experiments/ for examples."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs an experiment file.
    Run {
        /// The experiment (TOML).
        file: PathBuf,
        /// The results directory (default: loadtest/results/<name>-<UTC time>).
        #[arg(long)]
        out: Option<PathBuf>,
        /// For the kubernetes target: only print what would run (the only
        /// mode without a cluster).
        #[arg(long)]
        dry_run: bool,
    },
    /// Reads an experiment file and says what is wrong with it, if anything.
    Check { file: PathBuf },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    runtime.block_on(async move {
        match cli.command {
            Command::Check { file } => {
                let spec = Spec::read(&file)?;
                println!(
                    "{}: {} ({} faults, {:.0} s of load)",
                    file.display(),
                    spec.name,
                    spec.faults.len(),
                    spec.load.duration_s()
                );
                Ok(())
            }
            Command::Run { file, out, dry_run } => {
                let spec = Spec::read(&file)?;
                let out = out.unwrap_or_else(|| experiment::default_out(&spec.name));
                match spec.deployment.target {
                    Target::Kubernetes => {
                        anyhow::ensure!(
                            dry_run,
                            "there is no cluster to run on: add --dry-run to see what would run"
                        );
                        experiment::kubernetes::dry_run(&spec, &out)
                    }
                    Target::Local => {
                        // On Ctrl-C or SIGTERM the run is dropped, which
                        // kills the services it started and drops its database.
                        let holds = tokio::select! {
                            holds = experiment::run_local(&spec, &file, &out) => holds?,
                            () = stopped() => anyhow::bail!("stopped by a signal: the services were killed, the results in {} are incomplete", out.display()),
                        };
                        anyhow::ensure!(
                            holds,
                            "the invariants do not hold: see {}",
                            out.join("experiment.json").display()
                        );
                        Ok(())
                    }
                }
            }
        }
    })
}

/// Ctrl-C or SIGTERM.
async fn stopped() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(t) => t,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
