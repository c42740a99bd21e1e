//! From a multipart upload to a stored music.

use std::io::Write;

use axum::extract::Multipart;
use axum::http::StatusCode;
use hendu_fingerprint::{PeakProfile, fingerprint_file};
use hendu_service::ApiError;
use hendu_storage::model::{ContentHash, Music, NewMusic};
use hendu_storage::{Inserted, Storage};
use tempfile::NamedTempFile;

/// What the client sent.
#[derive(Debug)]
pub struct Upload {
    /// The audio, spooled to disk (never held in memory whole).
    pub file: NamedTempFile,
    pub file_name: String,
    pub hash: ContentHash,
    pub title: Option<String>,
    pub artist: Option<String>,
}

fn multipart_error(e: axum::extract::multipart::MultipartError) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::payload_too_large(crate::MAX_UPLOAD_VAR)
    } else {
        ApiError::bad_request("bad_multipart", e.body_text())
    }
}

/// Reads the form: `file` (streamed to a temporary file and hashed on the
/// way), `title`, `artist`.
///
/// # Errors
/// 400 for a malformed form or a missing file, 413 beyond the size limit.
pub async fn receive(mut form: Multipart) -> Result<Upload, ApiError> {
    let mut file = None;
    let (mut title, mut artist) = (None, None);
    while let Some(mut field) = form.next_field().await.map_err(multipart_error)? {
        match field.name() {
            Some("file") => {
                let name = field.file_name().unwrap_or("upload").to_owned();
                let mut spool = NamedTempFile::new().map_err(|e| ApiError::internal(&e))?;
                let mut hasher = blake3::Hasher::new();
                while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
                    hasher.update(&chunk);
                    spool
                        .write_all(&chunk)
                        .map_err(|e| ApiError::internal(&e))?;
                }
                spool.flush().map_err(|e| ApiError::internal(&e))?;
                let hash = ContentHash::parse(&hasher.finalize().to_hex())
                    .map_err(|e| ApiError::internal(&e))?;
                file = Some((spool, name, hash));
            }
            Some("title") => title = Some(field.text().await.map_err(multipart_error)?),
            Some("artist") => artist = Some(field.text().await.map_err(multipart_error)?),
            _ => {} // Unknown fields are ignored, as forms often carry extras.
        }
    }
    let (file, file_name, hash) =
        file.ok_or_else(|| ApiError::bad_request("missing_file", "the form has no `file` field"))?;
    Ok(Upload {
        file,
        file_name,
        hash,
        title,
        artist,
    })
}

/// Fingerprints and stores an upload. The title defaults to the file name
/// without its extension.
///
/// # Errors
/// 422 `unsupported_audio` for audio that cannot be decoded (nothing is
/// stored), 422 `invalid_input` for a bad title or artist, 503 when a store
/// does not answer.
pub async fn store(storage: &Storage, upload: Upload) -> Result<Inserted<Music>, ApiError> {
    let path = upload.file.path().to_owned();
    let fingerprint =
        tokio::task::spawn_blocking(move || fingerprint_file(&path, PeakProfile::CATALOGUE))
            .await
            .map_err(|e| ApiError::internal(&e))?
            .map_err(|e| ApiError::unprocessable("unsupported_audio", e.to_string()))?;
    let duration_ms = (fingerprint.duration_s * 1000.0).round() as u32;
    if duration_ms == 0 {
        return Err(ApiError::unprocessable(
            "unsupported_audio",
            "the file holds no audio",
        ));
    }
    let default_title = std::path::Path::new(&upload.file_name)
        .file_stem()
        .map_or_else(
            || upload.file_name.clone(),
            |s| s.to_string_lossy().into_owned(),
        );
    let title = upload
        .title
        .as_deref()
        .filter(|t| !t.trim().is_empty())
        .unwrap_or(&default_title);
    let new = NewMusic::new(
        title,
        upload.artist.as_deref(),
        duration_ms,
        upload.hash,
        &upload.file_name,
    )
    .map_err(|e| ApiError::unprocessable("invalid_input", e.to_string()))?;
    let audio = tokio::fs::File::open(upload.file.path())
        .await
        .map_err(|e| ApiError::internal(&e))?;
    let stored = storage
        .add_music(
            &new,
            &fingerprint.peaks,
            fingerprint.frames,
            Some(Box::new(audio)),
        )
        .await?;
    tracing::info!(
        music = stored.record.id,
        created = stored.created,
        blocks = stored.record.blocks,
        duration_s = fingerprint.duration_s,
        "music stored"
    );
    Ok(stored)
}
