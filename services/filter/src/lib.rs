//! `hendu-filter`: turns raw results into plays.
//!
//! Raw results arrive on the `raw-results` queue, which every replica reads
//! in the `filter` group. An entry only says "source S has a new result":
//! the replica takes S's lease, reads all of S's waiting results from the
//! store in capture order, runs the block algorithm ([`plays`]) over them,
//! records the plays it finds (idempotently), publishes a `PlayRecognised`
//! event for each new one, deletes the results it decided, gives the lease
//! back and acknowledges. So each source is handled by one replica at a
//! time, and whichever replica gets the next entry carries on from the
//! store. A replica that dies loses its leases within the lease time, and
//! its unacknowledged entries go to the others.
//!
//! A sweep ([`worker`]) also visits every source with waiting results, so
//! that a source that went quiet has its last results decided once the
//! flush time has passed without news from it.
//!
//! # Layout
//! - [`plays`]: the block algorithm, pure.
//! - [`worker`]: queue, leases, store.

pub mod plays;
pub mod worker;

use std::time::Duration;

use hendu_service::Application;
use hendu_service::settings::{default_replica, seconds_or, var_or};

pub use plays::Thresholds;

pub const SERVICE: &str = "filter";
pub const DEFAULT_PORT: u16 = 8083;

/// The filter's own settings.
pub mod vars {
    pub const MIN_SAMPLES: &str = "HENDU_FILTER_MIN_SAMPLES";
    pub const MIN_CONFIDENCE: &str = "HENDU_FILTER_MIN_CONFIDENCE";
    pub const ALIGNMENT_S: &str = "HENDU_FILTER_ALIGNMENT_S";
    pub const GAP_WAIT_S: &str = "HENDU_FILTER_GAP_WAIT_S";
    pub const FLUSH_S: &str = "HENDU_FILTER_FLUSH_S";
    pub const LEASE_S: &str = "HENDU_FILTER_LEASE_S";
    pub const SWEEP_S: &str = "HENDU_FILTER_SWEEP_S";
    pub const REPLICA: &str = "HENDU_REPLICA";
}

const HELP: &str =
    "  HENDU_FILTER_MIN_SAMPLES     aligned samples of a track that make a play (default 2)
  HENDU_FILTER_MIN_CONFIDENCE  raw matches below this confidence count as none (default 0.5)
  HENDU_FILTER_ALIGNMENT_S     how far samples may disagree on the track's start, in
                               seconds, and still be one play (default 15)
  HENDU_FILTER_GAP_WAIT_S      how long a missing sample is waited for, in seconds; keep it
                               above the queue's claim timeout (default 60)
  HENDU_FILTER_FLUSH_S         a source quiet this long has its last results decided
                               (default 60)
  HENDU_FILTER_LEASE_S         how long a replica holds a source without renewing:
                               a dead replica's sources move after this (default 10)
  HENDU_FILTER_SWEEP_S         how often quiet sources are looked for (default 5)
  HENDU_REPLICA                this replica's name (default host name and pid)
See docs/services.md (the filter) for what the thresholds do.

Default port: 8083.";

/// Turns each source's raw results into plays.
#[derive(Debug, clap::Parser)]
#[command(
    name = "hendu-filter",
    version,
    after_help = format!("{}\n{HELP}", hendu_service::settings::ENV_HELP)
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<hendu_service::healthcheck::ServiceCommand>,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub thresholds: Thresholds,
    pub flush_after: Duration,
    pub lease: Duration,
    pub sweep_every: Duration,
    pub replica: String,
}

impl Config {
    /// # Errors
    /// A malformed variable, named.
    pub fn from_env() -> anyhow::Result<Self> {
        let defaults = Thresholds::default();
        let thresholds = Thresholds {
            min_samples: var_or(vars::MIN_SAMPLES, defaults.min_samples, "a whole number")?,
            min_confidence: var_or(
                vars::MIN_CONFIDENCE,
                defaults.min_confidence,
                "a number within [0, 1]",
            )?,
            alignment_s: var_or(
                vars::ALIGNMENT_S,
                defaults.alignment_s,
                "a number of seconds",
            )?,
            gap_wait_s: var_or(vars::GAP_WAIT_S, defaults.gap_wait_s, "a number of seconds")?,
        };
        if thresholds.min_samples == 0
            || !(0.0..=1.0).contains(&thresholds.min_confidence)
            || !thresholds.alignment_s.is_finite()
            || thresholds.alignment_s < 0.0
            || !thresholds.gap_wait_s.is_finite()
            || thresholds.gap_wait_s < 0.0
        {
            anyhow::bail!(
                "{} must be at least 1, {} within [0, 1], {} and {} not negative",
                vars::MIN_SAMPLES,
                vars::MIN_CONFIDENCE,
                vars::ALIGNMENT_S,
                vars::GAP_WAIT_S
            );
        }
        Ok(Self {
            thresholds,
            flush_after: seconds_or(vars::FLUSH_S, 60.0)?,
            lease: seconds_or(vars::LEASE_S, 10.0)?,
            sweep_every: seconds_or(vars::SWEEP_S, 5.0)?,
            replica: var_or(vars::REPLICA, default_replica(), "a name")?,
        })
    }
}

/// Adds the filter's worker and metrics to `app`.
pub fn install(app: &mut Application, config: &Config) {
    let filter = worker::Filter::new(app, config.clone());
    app.worker(
        "raw results consumer",
        worker::ALLOWANCE,
        move |beat, stop| async move { filter.run(beat, stop).await },
    );
    app.route(hendu_service::dead_letters::router(
        hendu_storage::Queue::RawResults,
        app.storage.clone(),
        app.auth.clone(),
    ));
}
