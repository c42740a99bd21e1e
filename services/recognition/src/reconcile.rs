//! Reconciliation: the stored samples are the truth, the queue is a cache of
//! work. Every `HENDU_RECONCILE_S` this worker looks for samples that are
//! stored, have no raw result, were never decided by the filter, and are
//! neither in the samples queue nor in its dead letters (Redis restarted
//! without persistence and lost them), and queues them again ([`hendu_storage::queue::requeue_lost_samples`]).
//! Only samples captured longer ago than the claim timeout plus
//! [`MARGIN`] are considered, and at most [`LIMIT`] per pass; every replica
//! runs it, and a sample two replicas queue at once is recognised twice to
//! the same raw result.
//!
//! A shard's replica also decides the samples some shard left unanswered
//! for `HENDU_SHARD_WAIT_S` after their first answer, without it
//! ([`crate::shards::decide_overdue`]), and prunes answers a day old.

use std::time::Duration;

use hendu_service::{Heartbeat, Ops};
use hendu_storage::queue::{Reconciled, requeue_lost_samples};
use hendu_storage::{Storage, StorageError};
use prometheus_client::metrics::counter::Counter;
use tokio_util::sync::CancellationToken;

use crate::Config;
use crate::shards::{KEEP_ANSWERS, decide_overdue};

/// Samples captured this long beyond the claim timeout are no longer in
/// flight (a 30 s sample is uploaded when it ends).
pub const MARGIN: Duration = Duration::from_secs(60);
/// Most samples queued again per pass.
pub const LIMIT: u32 = 500;
/// `/healthz` fails when the worker has not beaten for this long.
pub const ALLOWANCE: Duration = Duration::from_secs(120);

#[derive(Debug)]
pub struct Reconciler {
    storage: Storage,
    every: Duration,
    settled_after: Duration,
    shard: hendu_storage::Shard,
    shard_wait: Duration,
    min_confidence: f32,
    requeued: Counter,
    set_aside: Counter,
    partial: Counter,
}

impl Reconciler {
    /// Registers its metrics in `ops`.
    pub fn new(storage: &Storage, ops: &Ops, config: &Config) -> Self {
        let requeued = Counter::default();
        let set_aside = Counter::default();
        ops.metrics.register(
            "samples_requeued",
            "Stored samples the queue had lost, queued again by reconciliation",
            requeued.clone(),
        );
        ops.metrics.register(
            "samples_set_aside",
            "Samples reconciliation found in the dead letters and leaves to an administrator",
            set_aside.clone(),
        );
        let partial = Counter::default();
        if !config.shard.is_whole() {
            ops.metrics.register(
                "samples_decided_overdue",
                "Samples decided without the shards that had not answered within HENDU_SHARD_WAIT_S",
                partial.clone(),
            );
        }
        Self {
            storage: storage.clone(),
            every: config.reconcile,
            settled_after: config.claim_after + MARGIN,
            shard: config.shard,
            shard_wait: config.shard_wait,
            min_confidence: config.min_confidence,
            requeued,
            set_aside,
            partial,
        }
    }

    /// A pass every period until `stop` (the first one a period after start).
    pub async fn run(&self, beat: Heartbeat, stop: CancellationToken) {
        let mut last = tokio::time::Instant::now();
        loop {
            beat.pace().await;
            beat.beat();
            let next = last + self.every;
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep_until(next.min(tokio::time::Instant::now() + ALLOWANCE / 4)) => {}
            }
            if tokio::time::Instant::now() < next {
                continue;
            }
            last = tokio::time::Instant::now();
            beat.beat();
            match self.pass().await {
                Ok(r) if r.skipped => tracing::info!(
                    "reconciliation skipped: the samples queue is longer than it scans"
                ),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "reconciliation failed; the next pass retries")
                }
            }
        }
    }

    /// One pass.
    ///
    /// # Errors
    /// [`StorageError`] from the stores.
    pub async fn pass(&self) -> Result<Reconciled, StorageError> {
        let done = requeue_lost_samples(&self.storage, self.settled_after, LIMIT).await?;
        self.requeued.inc_by(done.requeued as u64);
        self.set_aside.inc_by(done.set_aside as u64);
        if done.requeued > 0 || done.set_aside > 0 {
            tracing::warn!(
                requeued = done.requeued,
                set_aside = done.set_aside,
                "reconciliation found samples the queue had lost"
            );
        }
        if !self.shard.is_whole() {
            let decided = decide_overdue(
                &self.storage,
                self.shard,
                self.shard_wait,
                self.min_confidence,
            )
            .await?;
            self.partial.inc_by(decided as u64);
            let old = time::OffsetDateTime::now_utc() - KEEP_ANSWERS;
            self.storage.documents.prune_shard_answers(old).await?;
        }
        Ok(done)
    }
}
