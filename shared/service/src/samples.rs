//! The sample path's entry: a sample's fingerprint, from a sensor or a
//! radio, checked, stored and queued for recognition. One mechanism for
//! every source, so that a radio's samples and a device's are the same
//! records, with the same ids and the same idempotency.

use hendu_storage::model::NewSample;
use hendu_storage::queue::SampleQueued;
use hendu_storage::{Queue, Storage};
use time::OffsetDateTime;

use crate::ApiError;

/// Capture instants further ahead of the server's clock are refused.
pub const MAX_CLOCK_AHEAD: time::Duration = time::Duration::minutes(10);
/// Capture instants before 2000-01-01 are refused (a device without a
/// clock counts from 1970 or year 0; such a time can never be a play's time).
pub const EARLIEST_CAPTURE_S: i64 = 946_684_800;
/// The most packed peaks stored for one sample. The format's own limits
/// (peaks per second, one hour) keep a real sample under 3 MB; this keeps
/// any document well inside what MongoDB holds (16 MB).
pub const MAX_STORED_PEAKS: usize = 8 << 20;

/// Refuses a capture instant that cannot be a play's time.
///
/// # Errors
/// `capture_time_in_future` or `capture_time_too_early` (422).
pub fn check_capture_time(captured_at: OffsetDateTime) -> Result<(), ApiError> {
    if captured_at > OffsetDateTime::now_utc() + MAX_CLOCK_AHEAD {
        return Err(ApiError::unprocessable(
            "capture_time_in_future",
            format!(
                "the capture instant {captured_at} is ahead of the server's clock; check the device's clock"
            ),
        ));
    }
    if captured_at.unix_timestamp() < EARLIEST_CAPTURE_S {
        return Err(ApiError::unprocessable(
            "capture_time_too_early",
            format!("the capture instant {captured_at} is before 2000; check the device's clock"),
        ));
    }
    Ok(())
}

/// Stores the sample and queues it for recognition; true when it was new.
///
/// It is queued even when it was stored before: an earlier attempt may
/// have died between the two writes, and recognition is idempotent per
/// sample.
///
/// # Errors
/// `fingerprint_too_large` (422) or `capture_time_*` (422); the store or
/// the queue failing.
pub async fn submit(storage: &Storage, sample: &NewSample) -> Result<bool, ApiError> {
    check_capture_time(sample.captured_at)?;
    if sample.peaks.len() > MAX_STORED_PEAKS {
        return Err(ApiError::unprocessable(
            "fingerprint_too_large",
            "the sample's fingerprint is larger than a sample can be",
        ));
    }
    let stored = storage.documents.put_sample(sample).await?;
    let entry = SampleQueued {
        sample_id: sample.id.clone(),
        source: sample.source,
    };
    let payload = serde_json::to_vec(&entry).map_err(|e| ApiError::internal(&e))?;
    storage.queue.push(Queue::Samples, &payload).await?;
    tracing::info!(sample = %sample.id, duration_ms = sample.duration_ms, new = stored, "sample queued");
    Ok(stored)
}
