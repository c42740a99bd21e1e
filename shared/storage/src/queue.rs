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

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::model::Source;

/// The queues of the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Queue {
    /// Samples waiting for recognition (consumed by `recognition`).
    Samples,
    /// Raw results waiting for the filter (consumed by `filter`).
    RawResults,
}

impl Queue {
    pub fn name(self) -> &'static str {
        match self {
            Self::Samples => "samples",
            Self::RawResults => "raw-results",
        }
    }

    /// The consumer group that drains it.
    pub fn group(self) -> &'static str {
        match self {
            Self::Samples => "recognition",
            Self::RawResults => "filter",
        }
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
}

/// How much work a queue holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Backlog {
    /// Entries not yet delivered to any consumer.
    pub waiting: u64,
    /// Entries delivered and not yet acknowledged.
    pub pending: u64,
}

#[async_trait]
pub trait WorkQueue: Send + Sync + std::fmt::Debug {
    /// Answers when the queue's server does (readiness checks).
    async fn ping(&self) -> Result<()>;
    /// Appends an entry; returns its id.
    async fn push(&self, queue: Queue, payload: &[u8]) -> Result<String>;
    /// Up to `max` entries for `consumer`: first those other consumers left
    /// unacknowledged beyond the claim timeout, then new ones. Waits up to
    /// `wait` when there are none.
    async fn read(
        &self,
        queue: Queue,
        consumer: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Delivery>>;
    /// Acknowledges (and removes) an entry. Acknowledging twice is harmless.
    async fn ack(&self, queue: Queue, id: &str) -> Result<()>;
    async fn backlog(&self, queue: Queue) -> Result<Backlog>;
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
