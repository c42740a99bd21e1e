//! `hendu-recognition`: recognises queued samples.
//!
//! Each replica holds the whole catalogue index in memory. It loads it from
//! the store at start-up (readiness waits for it) and keeps it current from
//! the catalogue events, with a periodic resync for events it missed
//! ([`catalogue`]). Its consumer ([`worker`]) takes samples from the
//! `samples` queue in the `recognition` group, shared with every other
//! replica, matches each against the index, writes the raw result (best
//! match, or "no match") and queues it for the filter, then acknowledges.
//! A replica that dies leaves its unacknowledged samples to the others.
//!
//! A catalogue larger than one replica's memory is split into shards
//! (`HENDU_RECOGNITION_SHARD=k/N`, [`shards`]): a replica then holds only its
//! shard's tracks, reads every sample in its shard's own group, and stores
//! its best candidate; the sample's raw result is decided from all the
//! shards' answers by the replica that completes them, or, when a shard
//! stays silent, by reconciliation after `HENDU_SHARD_WAIT_S` without it.
//! Samples that can never be recognised go to the queue's dead letters, and a
//! periodic reconciliation ([`reconcile`]) queues again the stored samples
//! the queue lost.
//!
//! # Layout
//! - [`catalogue`]: the live catalogue index.
//! - [`worker`]: samples in, raw results out.
//! - [`reconcile`]: stored samples the queue lost, queued again; samples a
//!   shard left unanswered, decided without it.
//! - [`shards`]: a sample's raw result from its shards' answers.
//! - [`results`]: a raw result stored and queued for the filter.

pub mod catalogue;
pub mod reconcile;
pub mod results;
pub mod shards;
#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests fail loudly by design.
mod testing;
pub mod worker;

use std::sync::Arc;
use std::time::Duration;

use hendu_service::Application;
use hendu_service::settings::{default_replica, var_or};
use hendu_storage::Shard;

pub use catalogue::LiveCatalogue;

pub const SERVICE: &str = "recognition";
pub const DEFAULT_PORT: u16 = 8082;

/// The recogniser's own settings.
pub mod vars {
    pub const CONCURRENCY: &str = "HENDU_RECOGNITION_CONCURRENCY";
    pub const MIN_CONFIDENCE: &str = "HENDU_MIN_CONFIDENCE";
    pub const RESYNC_S: &str = "HENDU_CATALOGUE_RESYNC_S";
    pub const RECONCILE_S: &str = "HENDU_RECONCILE_S";
    pub const REPLICA: &str = "HENDU_REPLICA";
    pub const SHARD: &str = "HENDU_RECOGNITION_SHARD";
    pub const SHARD_WAIT_S: &str = "HENDU_SHARD_WAIT_S";
}

const HELP: &str =
    "  HENDU_RECOGNITION_CONCURRENCY  samples matched at once (default: the number of cores)
  HENDU_MIN_CONFIDENCE           below this confidence a sample is \"no match\" (default 0.5)
  HENDU_CATALOGUE_RESYNC_S       how often the index is compared with the store, for
                                 catalogue events missed in a reconnection (default 60)
  HENDU_RECONCILE_S              how often stored samples the queue lost (never recognised,
                                 not queued) are looked for and queued again (default 60)
  HENDU_QUEUE_MAX_DELIVERIES     a sample delivered this often without being acknowledged
                                 goes to the dead letters (default 5)
  HENDU_REPLICA                  this replica's name in the queue (default host name and pid)
  HENDU_RECOGNITION_SHARD        k/N: hold only shard k of the catalogue split N ways, and
                                 answer every sample for it (default 1/1: the whole catalogue);
                                 run replicas of every shard, each shard's sharing its work
  HENDU_SHARD_WAIT_S             a sample some shard has not answered this long after the first
                                 shard's answer is decided from the answers in, recorded as
                                 partial (default 120; more than the claim timeout)

Default port: 8082.";

/// Matches queued samples against the catalogue and queues raw results.
#[derive(Debug, clap::Parser)]
#[command(
    name = "hendu-recognition",
    version,
    after_help = format!("{}\n{HELP}", hendu_service::settings::ENV_HELP)
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<hendu_service::healthcheck::ServiceCommand>,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub concurrency: usize,
    pub min_confidence: f32,
    pub resync: Duration,
    /// How often reconciliation looks for samples the queue lost.
    pub reconcile: Duration,
    /// The queue's claim timeout (`HENDU_QUEUE_CLAIM_AFTER_MS`): samples
    /// captured more recently may be in flight.
    pub claim_after: Duration,
    /// Names this replica's consumer in the queue.
    pub replica: String,
    /// The part of the catalogue this replica holds.
    pub shard: Shard,
    /// How long after its first answer a sample waits for every shard's.
    pub shard_wait: Duration,
}

impl Config {
    /// # Errors
    /// A malformed variable, named.
    pub fn from_env() -> anyhow::Result<Self> {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        let concurrency = var_or(vars::CONCURRENCY, cores, "a whole number")?;
        let min_confidence: f32 = var_or(vars::MIN_CONFIDENCE, 0.5, "a number within [0, 1]")?;
        if !(0.0..=1.0).contains(&min_confidence) || concurrency == 0 {
            anyhow::bail!(
                "{} must be within [0, 1] and {} at least 1",
                vars::MIN_CONFIDENCE,
                vars::CONCURRENCY
            );
        }
        let resync_s: u64 = var_or(vars::RESYNC_S, 60, "a whole number of seconds")?;
        let reconcile_s: u64 = var_or(vars::RECONCILE_S, 60, "a whole number of seconds")?;
        let claim_after_ms: u64 = var_or(
            hendu_storage::config::vars::CLAIM_AFTER_MS,
            30_000,
            "a whole number of milliseconds",
        )?;
        let shard = var_or(vars::SHARD, Shard::WHOLE, "a shard k/N, as in 2/3")?;
        let shard_wait = hendu_service::settings::seconds_or(vars::SHARD_WAIT_S, 120.0)?;
        if shard_wait <= Duration::from_millis(claim_after_ms) {
            anyhow::bail!(
                "{} must be longer than the claim timeout ({} ms), or a shard's replica that \
                 dies would be decided without before another takes its samples over",
                vars::SHARD_WAIT_S,
                claim_after_ms
            );
        }
        Ok(Self {
            concurrency,
            min_confidence,
            resync: Duration::from_secs(resync_s.max(1)),
            reconcile: Duration::from_secs(reconcile_s.max(1)),
            claim_after: Duration::from_millis(claim_after_ms),
            replica: var_or(vars::REPLICA, default_replica(), "a name")?,
            shard,
            shard_wait,
        })
    }
}

/// Adds the recogniser's workers, readiness check and metrics to `app`.
pub fn install(app: &mut Application, config: &Config) {
    let live = Arc::new(LiveCatalogue::new(
        app.storage.clone(),
        &app.ops.metrics,
        config.shard,
    ));
    let loaded = live.clone();
    app.ops.health.check(move || {
        let missing = (!loaded.is_loaded()).then(|| "loading".to_owned());
        Box::pin(async move { vec![("catalogue index".to_owned(), missing)] })
    });
    let resync = config.resync;
    let keeper = live.clone();
    app.worker(
        "catalogue",
        catalogue::BEAT_EVERY * 4,
        move |beat, stop| async move { keeper.keep_current(resync, beat, stop).await },
    );
    let consumer = worker::Consumer::new(&app.storage, &app.ops, live, config);
    app.worker(
        "samples consumer",
        worker::ALLOWANCE,
        move |beat, stop| async move { consumer.run(beat, stop).await },
    );
    let reconciler = reconcile::Reconciler::new(&app.storage, &app.ops, config);
    app.worker(
        "samples reconciliation",
        reconcile::ALLOWANCE,
        move |beat, stop| async move { reconciler.run(beat, stop).await },
    );
    app.route(hendu_service::dead_letters::router(
        hendu_storage::Queue::Samples,
        app.storage.clone(),
        app.auth.clone(),
    ));
}
