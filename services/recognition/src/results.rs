//! A sample's raw result: made from the sample and its match, stored and
//! queued for the filter. The consumer writes it for the samples it decides,
//! and reconciliation for those a silent shard left undecided.

use hendu_storage::model::{NewSample, RawMatch, RawResult};
use hendu_storage::queue::RawResultQueued;
use hendu_storage::{Queue, Storage, StorageError};

/// Stores `sample`'s raw result (reconciliation leaves a sample that has one
/// alone) and queues it for the filter.
///
/// # Errors
/// [`StorageError`] from the stores.
pub async fn forward(
    storage: &Storage,
    sample: NewSample,
    matched: Option<RawMatch>,
) -> Result<(), StorageError> {
    let result = RawResult {
        sample_id: sample.id,
        source: sample.source,
        captured_at: sample.captured_at,
        duration_ms: sample.duration_ms,
        location: sample.location,
        matched,
        stored_at: None,
    };
    storage.documents.put_raw_result(&result).await?;
    let entry = RawResultQueued {
        sample_id: result.sample_id,
        source: result.source,
    };
    let payload = serde_json::to_vec(&entry).map_err(|e| StorageError::Corrupt(e.to_string()))?;
    storage.queue.push(Queue::RawResults, &payload).await?;
    Ok(())
}
