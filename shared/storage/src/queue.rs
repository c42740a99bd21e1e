//! Work between services: durable queues shared by the replicas of one
//! consumer group, delivered at least once.
//!
//! Each [`Queue`] has one consumer group (the service that drains it). An entry
//! is delivered to one consumer; the consumer acknowledges it when its effect
//! is stored. An entry a consumer read but did not acknowledge within the
//! claim timeout (the consumer crashed, hung, or was killed) is delivered again
//! to the next consumer that reads, marked [`Delivery::redelivered`]. Writes
//! downstream are idempotent (sample ids, play keys), so a second delivery
//! never duplicates data.
//!
//! Pushing is not deduplicated: a producer that retries a push may enqueue an
//! entry twice, which the idempotent consumers absorb.
//!
//! No entry can stall a queue. Every delivery carries its count
//! ([`Delivery::deliveries`]); an entry delivered `max_deliveries` times
//! without being acknowledged (it crashes or hangs every consumer that takes
//! it) is moved by [`WorkQueue::read`] itself to the queue's dead letters
//! instead of being delivered again. A consumer that knows an entry can never
//! succeed (bad data) moves it there at once with [`WorkQueue::dead_letter`].
//! Dead letters are kept until an administrator requeues or discards them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize, Serializer};
use time::OffsetDateTime;

use crate::error::Result;
use crate::model::Source;
use crate::shards::Shard;

/// The queues of the pipeline, as their consumers read them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Queue {
    /// Samples waiting for recognition (consumed by `recognition`).
    Samples,
    /// The same samples as one recognition shard reads them, in the group
    /// of that shard ([`Shard::group`]): every entry reaches every shard, and
    /// leaves the queue once all of them acknowledged it. Pushing to it is
    /// pushing to [`Queue::Samples`]. Made by [`Queue::samples`].
    SamplesShard(Shard),
    /// Raw results waiting for the filter (consumed by `filter`).
    RawResults,
}

impl Queue {
    /// Every queue, each as its unsharded consumers read it.
    pub const ALL: [Self; 2] = [Self::Samples, Self::RawResults];

    /// The samples as the recognisers of `shard` read them
    /// ([`Queue::Samples`] for the whole catalogue).
    pub fn samples(shard: Shard) -> Self {
        if shard.is_whole() {
            Self::Samples
        } else {
            Self::SamplesShard(shard)
        }
    }

    /// The queue named `name` (as [`Queue::name`] spells it).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|q| q.name() == name)
    }

    /// The queue's name: one per queue, whoever reads it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Samples | Self::SamplesShard(_) => "samples",
            Self::RawResults => "raw-results",
        }
    }

    /// The consumer group that drains it.
    pub fn group(self) -> String {
        match self {
            Self::Samples => Shard::GROUP.to_owned(),
            Self::SamplesShard(shard) => shard.group(),
            Self::RawResults => "filter".to_owned(),
        }
    }

    /// The groups that must all have acknowledged an entry this queue's
    /// group acknowledges before it leaves the queue, whether they exist
    /// yet or not: a shard's siblings, or the group itself.
    pub fn needed_groups(self) -> Vec<String> {
        match self {
            Self::SamplesShard(shard) => shard.siblings().map(Shard::group).collect(),
            other => vec![other.group()],
        }
    }
}

impl Serialize for Queue {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

/// An entry handed to a consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Opaque entry id, for [`WorkQueue::ack`].
    pub id: String,
    pub payload: Vec<u8>,
    /// True when another consumer had it first and did not acknowledge it.
    pub redelivered: bool,
    /// How many times this entry has been delivered, this delivery included
    /// (1 the first time). Never more than the queue's `max_deliveries`.
    pub deliveries: u32,
}

/// How much work a queue holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Backlog {
    /// Entries not yet delivered to any consumer.
    pub waiting: u64,
    /// Entries delivered and not yet acknowledged.
    pub pending: u64,
    /// Entries set aside in the queue's dead letters.
    pub dead: u64,
}

/// An entry taken out of its queue: delivered too often without being
/// acknowledged, or refused by its consumer as one that can never succeed.
///
/// Serialised for administrators as `{"id", "queue", "payload", "reason",
/// "deliveries", "dead_at"}`, with the payload as text (HENDU's entries are
/// JSON; bytes that are not UTF-8 show as U+FFFD, while requeueing uses the
/// stored bytes) and `dead_at` in RFC 3339.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadLetter {
    /// Opaque id, for [`WorkQueue::requeue_dead_letter`] and
    /// [`WorkQueue::discard_dead_letter`]; dead letters list in id order,
    /// which is the order they died in.
    pub id: String,
    pub queue: Queue,
    #[serde(serialize_with = "lossy_text")]
    pub payload: Vec<u8>,
    pub reason: String,
    /// Deliveries before it was set aside.
    pub deliveries: u32,
    #[serde(with = "time::serde::rfc3339")]
    pub dead_at: OffsetDateTime,
}

fn lossy_text<S: Serializer>(payload: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&String::from_utf8_lossy(payload))
}

/// A paging cursor that is no entry id.
pub(crate) fn bad_cursor() -> crate::StorageError {
    crate::StorageError::Invalid(crate::ValidationError::Range {
        field: "after",
        reason: "not an entry id".into(),
    })
}

/// The reason recorded for an entry [`WorkQueue::read`] set aside.
pub fn too_many_deliveries(deliveries: u32) -> String {
    format!("delivered {deliveries} times without being acknowledged")
}

/// Why entries went to the dead letters, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeadReason {
    /// Delivered `max_deliveries` times without an acknowledgement.
    MaxDeliveries,
    /// Refused by its consumer ([`WorkQueue::dead_letter`]).
    Refused,
}

impl DeadReason {
    pub const ALL: [Self; 2] = [Self::MaxDeliveries, Self::Refused];

    /// A metric label value.
    pub fn label(self) -> &'static str {
        match self {
            Self::MaxDeliveries => "max_deliveries",
            Self::Refused => "refused",
        }
    }
}

/// Entries a store moved to dead letters since it was opened, per queue and
/// reason (for the consumers' metrics; the stores count, so that the moves
/// [`WorkQueue::read`] makes on its own are counted too).
#[derive(Debug, Default, Clone)]
pub struct DeadCounts(Arc<[AtomicU64; 4]>);

impl DeadCounts {
    fn slot(queue: Queue, reason: DeadReason) -> usize {
        let q = usize::from(matches!(queue, Queue::RawResults));
        let r = usize::from(reason == DeadReason::Refused);
        q * 2 + r
    }

    pub(crate) fn add(&self, queue: Queue, reason: DeadReason, n: u64) {
        if n > 0 {
            self.0[Self::slot(queue, reason)].fetch_add(n, Ordering::Relaxed);
        }
    }

    pub fn get(&self, queue: Queue, reason: DeadReason) -> u64 {
        self.0[Self::slot(queue, reason)].load(Ordering::Relaxed)
    }
}

/// Whether a consumer can read its queue, for readiness: a consumer reports
/// each read, and after [`ReadStatus::FAILURES`] failed reads in a row
/// [`ReadStatus::problem`] names the problem with a stable code.
#[derive(Debug, Default, Clone)]
pub struct ReadStatus(Arc<AtomicU32>);

impl ReadStatus {
    /// Failed reads in a row that make a consumer unready (one failure is a
    /// blip the next read usually gets past).
    pub const FAILURES: u32 = 3;
    /// The readiness reason while it cannot read.
    pub const UNREADABLE: &'static str = "queue_unreadable";

    pub fn succeeded(&self) {
        self.0.store(0, Ordering::Relaxed);
    }

    pub fn failed(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// `Some("queue_unreadable")` while the last reads failed.
    pub fn problem(&self) -> Option<String> {
        (self.0.load(Ordering::Relaxed) >= Self::FAILURES).then(|| Self::UNREADABLE.to_owned())
    }
}

#[async_trait]
pub trait WorkQueue: Send + Sync + std::fmt::Debug {
    /// Answers when the queue's server does (readiness checks).
    async fn ping(&self) -> Result<()>;
    /// Appends an entry; returns its id.
    async fn push(&self, queue: Queue, payload: &[u8]) -> Result<String>;
    /// Up to `max` entries for `consumer`: first those other consumers left
    /// unacknowledged beyond the claim timeout, then new ones. Waits up to
    /// `wait` when there are none. An entry already delivered
    /// `max_deliveries` times is not delivered again: it is moved to the
    /// dead letters with [`too_many_deliveries`] as its reason.
    async fn read(
        &self,
        queue: Queue,
        consumer: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Delivery>>;
    /// Acknowledges (and removes) an entry. Acknowledging twice is harmless.
    async fn ack(&self, queue: Queue, id: &str) -> Result<()>;
    /// Keeps a delivery `consumer` still holds from going to another consumer
    /// for another claim timeout, without counting a delivery (a consumer
    /// retrying a transient failure calls it between attempts). False when
    /// the consumer no longer holds it (acknowledged, or taken over).
    async fn hold(&self, queue: Queue, consumer: &str, id: &str) -> Result<bool>;
    async fn backlog(&self, queue: Queue) -> Result<Backlog>;
    /// Entries in the queue, waiting or pending, in queue order, after the
    /// entry `after` (an `after` that is no id is
    /// [`crate::StorageError::Invalid`]), at most `limit`; nothing is
    /// delivered (reconciliation looks for what is queued).
    async fn entries(
        &self,
        queue: Queue,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>>;

    /// Moves an entry a consumer holds to the dead letters at once, with the
    /// reason (a permanent failure: the entry can never succeed). An entry
    /// no longer in the queue (acknowledged meanwhile) is left alone.
    async fn dead_letter(&self, queue: Queue, delivery: &Delivery, reason: &str) -> Result<()>;
    /// The queue's dead letters, oldest first, after the one with id
    /// `after`, at most `limit`. An `after` that is no id is
    /// [`crate::StorageError::Invalid`].
    async fn dead_letters(
        &self,
        queue: Queue,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>>;
    /// Puts a dead letter back at the end of its queue as a fresh entry (its
    /// delivery count starts again); false if there is no such dead letter.
    async fn requeue_dead_letter(&self, queue: Queue, id: &str) -> Result<bool>;
    /// Deletes a dead letter; false if there is no such dead letter.
    async fn discard_dead_letter(&self, queue: Queue, id: &str) -> Result<bool>;
    /// Entries this store moved to the dead letters since it was opened.
    fn dead_counts(&self) -> DeadCounts;
}

/// A sample queued for recognition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SampleQueued {
    pub sample_id: String,
    pub source: Source,
}

/// A raw result queued for the filter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RawResultQueued {
    pub sample_id: String,
    pub source: Source,
}

/// What a reconciliation pass did ([`requeue_lost_samples`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Reconciled {
    /// Samples queued again: stored, never recognised, neither queued nor
    /// in the dead letters.
    pub requeued: usize,
    /// Samples found in the dead letters, now marked so that reconciliation
    /// leaves them to an administrator.
    pub set_aside: usize,
    /// The queue held more than [`RECONCILE_SCAN`] entries: the pass looked
    /// no further (the recognisers are behind; queueing more would not help).
    pub skipped: bool,
}

/// Most entries a reconciliation pass reads from the samples queue, and from
/// its dead letters, to learn what is there.
pub const RECONCILE_SCAN: u64 = 100_000;
const SCAN_PAGE: usize = 1000;

/// How many of the oldest unsettled samples one pass looks at: those that
/// have a raw result (the filter has not decided them yet, or is down) are
/// passed over, and the lost ones behind them still found.
const RECONCILE_CANDIDATES: u32 = 1000;

/// One reconciliation pass. The stored samples are the truth and the queue a
/// cache of work: a sample stored, captured at least `age` ago (choose it
/// beyond the claim timeout, so that samples in flight are left alone), not
/// settled (its result not decided by the filter), with no raw result
/// waiting for the filter, and not in the samples queue was lost by the
/// queue (Redis restarted without persistence) and is queued again, at most
/// `limit` of them per pass. A sample in the dead letters is marked set
/// aside instead, so that a poison sample is not fed back again and again.
///
/// Samples are looked up again after the queue was read, raw results first
/// and then marks (the filter marks a sample before it deletes its raw
/// result), so that one recognised or decided meanwhile is not queued
/// twice; two replicas reconciling at the same time may both queue a
/// sample, which recognition absorbs (a raw result is keyed by its sample).
///
/// # Errors
/// [`crate::StorageError`] from the stores.
pub async fn requeue_lost_samples(
    storage: &crate::Storage,
    age: Duration,
    limit: u32,
) -> Result<Reconciled> {
    let older_than = OffsetDateTime::now_utc() - age;
    let mut done = Reconciled::default();
    let docs = &storage.documents;
    let unsettled = docs
        .unsettled_samples(older_than, RECONCILE_CANDIDATES)
        .await?;
    let ids: Vec<String> = unsettled.iter().map(|(id, _)| id.clone()).collect();
    let recognised = docs.samples_with_raw_results(&ids).await?;
    let candidates: Vec<(String, Source)> = unsettled
        .into_iter()
        .filter(|(id, _)| !recognised.contains(id))
        .take(limit as usize)
        .collect();
    if candidates.is_empty() {
        return Ok(done);
    }
    let backlog = storage.queue.backlog(Queue::Samples).await?;
    if backlog.waiting + backlog.pending > RECONCILE_SCAN || backlog.dead > RECONCILE_SCAN {
        done.skipped = true;
        return Ok(done);
    }
    // The queue first, then the dead letters: an entry moving from one to the
    // other meanwhile is seen in one of them.
    let queued = queued_samples(storage, false).await?;
    let dead = queued_samples(storage, true).await?;
    let ids: Vec<String> = candidates.iter().map(|(id, _)| id.clone()).collect();
    let recognised = docs.samples_with_raw_results(&ids).await?;
    let still: std::collections::HashSet<String> = docs
        .unsettled_samples(older_than, RECONCILE_CANDIDATES)
        .await?
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    for (sample_id, source) in candidates {
        if recognised.contains(&sample_id)
            || !still.contains(&sample_id)
            || queued.contains(&sample_id)
        {
            continue;
        }
        if dead.contains(&sample_id) {
            docs.set_sample_aside(&sample_id).await?;
            done.set_aside += 1;
            continue;
        }
        let entry = serde_json::to_vec(&SampleQueued {
            sample_id: sample_id.clone(),
            source,
        })
        .map_err(crate::StorageError::corrupt)?;
        storage.queue.push(Queue::Samples, &entry).await?;
        tracing::info!(sample = %sample_id, "a stored sample was not queued; queued again");
        done.requeued += 1;
    }
    Ok(done)
}

/// The sample ids in the samples queue, or in its dead letters.
async fn queued_samples(
    storage: &crate::Storage,
    dead: bool,
) -> Result<std::collections::HashSet<String>> {
    let mut ids = std::collections::HashSet::new();
    let mut after: Option<String> = None;
    loop {
        let page: Vec<(String, Vec<u8>)> = if dead {
            storage
                .queue
                .dead_letters(Queue::Samples, after.as_deref(), SCAN_PAGE)
                .await?
                .into_iter()
                .map(|d| (d.id, d.payload))
                .collect()
        } else {
            storage
                .queue
                .entries(Queue::Samples, after.as_deref(), SCAN_PAGE)
                .await?
        };
        let full = page.len() == SCAN_PAGE;
        for (id, payload) in page {
            if let Ok(q) = serde_json::from_slice::<SampleQueued>(&payload) {
                ids.insert(q.sample_id);
            }
            after = Some(id);
        }
        if !full || ids.len() as u64 > RECONCILE_SCAN {
            return Ok(ids);
        }
    }
}
