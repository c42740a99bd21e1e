//! A device's sample, whichever way it came (REST, TCP v1, TCP v2): its
//! fingerprint from the body (the device's own, or computed from its
//! audio behind the service's bounded CPU queue), then the shared sample
//! path ([`hendu_service::samples::submit`]).

use std::io::Cursor;

use bytes::Bytes;
use hendu_fingerprint::packed::{BinPrecision, pack, pack_query};
use hendu_fingerprint::wire::SampleFingerprint;
use hendu_fingerprint::{AudioReader, DecodeLimits, PeakProfile, fingerprint_reader};
use hendu_service::ApiError;
use hendu_service::audio::{self, CancelOnDrop};
use hendu_service::samples;
use hendu_storage::model::{Device, NewSample, Source};
use time::OffsetDateTime;

use crate::AppState;

/// What a device sent.
#[derive(Debug, Clone)]
pub enum SampleBody {
    /// The device fingerprint format ([`hendu_fingerprint::wire`]).
    Fingerprint(Bytes),
    /// Audio in any format the engine decodes.
    Audio {
        captured_at: OffsetDateTime,
        audio: Bytes,
    },
}

/// A sample taken: its id, and whether it was stored before (a resend).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub sample_id: String,
    pub duplicate: bool,
}

/// Fingerprints, stores and queues `device`'s sample.
///
/// # Errors
/// 422 with the reason for a body that is not a sample, 503 `busy` when
/// the CPU queue is full, the store failing.
pub async fn ingest(
    state: &AppState,
    device: &Device,
    body: SampleBody,
) -> Result<Accepted, ApiError> {
    let (captured_at, duration_ms, peaks) = fingerprint(state, body).await?;
    let sample = NewSample::new(
        Source::Device(device.id),
        device.location.as_deref(),
        captured_at,
        duration_ms,
        peaks,
    )?;
    let stored = samples::submit(&state.storage, &sample).await?;
    Ok(Accepted {
        sample_id: sample.id,
        duplicate: !stored,
    })
}

/// A capture instant in Unix milliseconds, as a date.
///
/// # Errors
/// 422 `capture_time_too_early` for one no date here can hold.
pub fn instant_ms(ms: i64) -> Result<OffsetDateTime, ApiError> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).map_err(|_| {
        ApiError::unprocessable(
            "capture_time_too_early",
            "the capture instant is not a date this service can hold",
        )
    })
}

/// The sample's capture instant, duration and peaks.
async fn fingerprint(
    state: &AppState,
    body: SampleBody,
) -> Result<(OffsetDateTime, u32, Vec<u8>), ApiError> {
    let (captured_at, audio) = match body {
        SampleBody::Fingerprint(bytes) => {
            let sample = SampleFingerprint::decode(&bytes)
                .map_err(|e| ApiError::unprocessable("invalid_fingerprint", e.to_string()))?;
            return Ok((
                instant_ms(sample.captured_at_ms)?,
                sample.duration_ms,
                // A sensor's sparse peaks (wire version 2) go along, as with
                // the samples fingerprinted here.
                if sample.sparse.is_empty() {
                    pack(&sample.peaks, BinPrecision::Fine)
                } else {
                    pack_query(&sample.peaks, &sample.sparse)
                },
            ));
        }
        SampleBody::Audio { captured_at, audio } => (captured_at, audio),
    };
    if audio.is_empty() {
        return Err(ApiError::bad_request(
            "empty_body",
            "the sample holds no audio",
        ));
    }
    // Before the audio costs anything: a time that cannot be a play's.
    samples::check_capture_time(captured_at)?;
    let cancel = CancelOnDrop::new(&state.stopping);
    let flag = cancel.flag();
    let limits = DecodeLimits::new(state.max_sample_s);
    let decoded = state
        .cpu
        .run(move || {
            let mut reader =
                AudioReader::from_source_with(Box::new(Cursor::new(audio)), None, limits)?;
            reader.cancel_when(flag);
            fingerprint_reader(&mut reader, PeakProfile::QUERY)
        })
        .await?
        .map_err(|e| audio::refused(e, crate::vars::MAX_SAMPLE_S))?;
    drop(cancel);
    let duration_ms = (decoded.duration_s * 1000.0).round() as u32;
    Ok((
        captured_at,
        duration_ms,
        pack_query(&decoded.peaks, &decoded.sparse),
    ))
}
