//! From a multipart upload to a stored music.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use axum::extract::Multipart;
use axum::http::StatusCode;
use hendu_fingerprint::{DecodeLimits, PeakProfile, fingerprint_file_with};
use hendu_service::audio::{self, CancelOnDrop};
use hendu_service::{ApiError, Principal};
use hendu_storage::model::{ContentHash, Music, MusicState, NewMusic, Role, UserId, isrc_code};
use hendu_storage::{Inserted, Storage};
use tempfile::NamedTempFile;

use crate::AppState;

/// Temporary upload files are named so; what a killed process left behind
/// is found by this prefix and removed ([`sweep_spool`]).
pub const SPOOL_PREFIX: &str = "hendu-upload-";
/// Longest text field read (title, artist, owner), in bytes.
const MAX_FIELD: usize = 4096;

/// What the client sent.
#[derive(Debug)]
pub struct Upload {
    /// The audio, spooled to disk (never held in memory whole); removed
    /// when this is dropped.
    pub file: NamedTempFile,
    pub file_name: String,
    pub hash: ContentHash,
    pub title: Option<String>,
    pub artist: Option<String>,
    /// Administrators only: the musician the track belongs to.
    pub owner_id: Option<UserId>,
    /// The recording's ISRC, checked and normalised.
    pub isrc: Option<String>,
}

fn multipart_error(e: axum::extract::multipart::MultipartError) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::payload_too_large(crate::MAX_UPLOAD_VAR)
    } else {
        ApiError::bad_request("bad_multipart", e.body_text())
    }
}

/// A text field, at most [`MAX_FIELD`] bytes.
async fn text_field(
    mut field: axum::extract::multipart::Field<'_>,
    name: &str,
) -> Result<String, ApiError> {
    let mut bytes = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
        if bytes.len() + chunk.len() > MAX_FIELD {
            return Err(ApiError::unprocessable(
                "invalid_input",
                format!("the `{name}` field is longer than {MAX_FIELD} bytes"),
            ));
        }
        bytes.extend_from_slice(&chunk);
    }
    String::from_utf8(bytes).map_err(|_| {
        ApiError::unprocessable("invalid_input", format!("the `{name}` field is not UTF-8"))
    })
}

/// Reads the form: `file` (streamed to a temporary file and hashed on the
/// way), `title`, `artist`, `owner_id`, `isrc`.
///
/// # Errors
/// 400 for a malformed form or a missing file, 413 beyond the size limit.
pub async fn receive(mut form: Multipart, spool: &Path) -> Result<Upload, ApiError> {
    let mut file = None;
    let (mut title, mut artist, mut owner, mut isrc) = (None, None, None, None);
    while let Some(mut field) = form.next_field().await.map_err(multipart_error)? {
        match field.name() {
            Some("file") => {
                let name = field.file_name().unwrap_or("upload").to_owned();
                let mut out = tempfile::Builder::new()
                    .prefix(SPOOL_PREFIX)
                    .tempfile_in(spool)
                    .map_err(|e| ApiError::internal(&e))?;
                let mut hasher = blake3::Hasher::new();
                while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
                    hasher.update(&chunk);
                    out.write_all(&chunk).map_err(|e| ApiError::internal(&e))?;
                }
                out.flush().map_err(|e| ApiError::internal(&e))?;
                let hash = ContentHash::parse(&hasher.finalize().to_hex())
                    .map_err(|e| ApiError::internal(&e))?;
                file = Some((out, name, hash));
            }
            Some("title") => title = Some(text_field(field, "title").await?),
            Some("artist") => artist = Some(text_field(field, "artist").await?),
            // Checked now, before any audio is decoded.
            Some("isrc") => isrc = isrc_code(Some(&text_field(field, "isrc").await?))?,
            Some("owner_id") => {
                let raw = text_field(field, "owner_id").await?;
                owner = Some(raw.trim().parse::<UserId>().map_err(|_| {
                    ApiError::unprocessable("invalid_input", "owner_id must be a user id")
                })?);
            }
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
        owner_id: owner,
        isrc,
    })
}

/// Who the upload will belong to: the uploading musician, or for an
/// administrator the musician named (or no one).
///
/// # Errors
/// 403 for an operator, or a musician naming another owner; 422 for an
/// owner who is not a musician.
pub async fn owner_of(
    storage: &Storage,
    principal: &Principal,
    named: Option<UserId>,
) -> Result<Option<UserId>, ApiError> {
    match principal.role {
        Role::Musician => match named {
            Some(id) if id != principal.user.id => Err(hendu_service::auth::forbidden(
                "upload tracks for another musician",
            )),
            _ => Ok(Some(principal.user.id)),
        },
        Role::Admin => {
            let Some(id) = named else { return Ok(None) };
            let user = storage.relational.user(id).await?;
            match user {
                Some(u) if u.role == Role::Musician => Ok(Some(id)),
                _ => Err(ApiError::unprocessable(
                    "invalid_input",
                    format!("user {id} is not a musician"),
                )),
            }
        }
        Role::Operator => Err(hendu_service::auth::forbidden("upload tracks")),
    }
}

/// What storing an upload came to.
#[derive(Debug)]
pub enum Stored {
    Music(Inserted<Music>),
    /// The audio belongs to another owner: a claim was recorded.
    Claimed,
}

/// Fingerprints and stores an upload for `owner`. The same audio already
/// held by the same owner is that music (nothing is decoded again); held by
/// another, it is a claim for an administrator. The title defaults to the
/// file name without its extension.
///
/// # Errors
/// 422 for audio that cannot be decoded or passes the limits (nothing is
/// stored), 422 `invalid_input` for a bad title or artist, 503 `busy` when
/// the CPU queue is full, 503 when a store does not answer.
pub async fn store(
    state: &AppState,
    upload: Upload,
    principal: &Principal,
) -> Result<Stored, ApiError> {
    let storage = &state.storage;
    let owner = owner_of(storage, principal, upload.owner_id).await?;
    // An administrator who names no owner takes the catalogue as it is.
    let any_owner = principal.is_admin() && upload.owner_id.is_none();
    let claimant = principal.user.id;
    if let Some(existing) = storage.relational.music_by_hash(&upload.hash).await?
        && matches!(existing.state, MusicState::Ready | MusicState::Ingesting)
    {
        if existing.owner != owner && !any_owner {
            let claim = storage.relational.add_claim(existing.id, claimant).await?;
            tracing::info!(
                music = existing.id,
                claimant,
                created = claim.created,
                "claim recorded"
            );
            return Ok(Stored::Claimed);
        }
        if existing.state == MusicState::Ready {
            // The same owner's audio again: nothing to decode.
            return Ok(Stored::Music(Inserted {
                record: existing,
                created: false,
            }));
        }
    }
    let path = upload.file.path().to_owned();
    let cancel = CancelOnDrop::new(&state.stopping);
    let flag = cancel.flag();
    let limits = DecodeLimits::new(state.max_track_s);
    let fingerprint = state
        .cpu
        .run(move || fingerprint_file_with(&path, PeakProfile::CATALOGUE, limits, Some(flag)))
        .await?
        .map_err(|e| audio::refused(e, crate::MAX_TRACK_VAR))?;
    drop(cancel);
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
    let mut new = NewMusic::new(
        title,
        upload.artist.as_deref(),
        duration_ms,
        upload.hash.clone(),
        &upload.file_name,
    )?;
    new.owner = owner;
    new.isrc = upload.isrc.clone();
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
    if stored.record.owner != owner && !any_owner {
        // Another owner's upload of the same audio finished first.
        storage
            .relational
            .add_claim(stored.record.id, claimant)
            .await?;
        return Ok(Stored::Claimed);
    }
    tracing::info!(
        music = stored.record.id,
        created = stored.created,
        blocks = stored.record.blocks,
        duration_s = fingerprint.duration_s,
        "music stored"
    );
    Ok(Stored::Music(stored))
}

/// Removes upload files older than `older_than` left in `spool` by a
/// process that was killed mid-upload. Returns how many.
pub fn sweep_spool(spool: &Path, older_than: Duration) -> usize {
    let Ok(entries) = std::fs::read_dir(spool) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let stale = entry
            .file_name()
            .to_string_lossy()
            .starts_with(SPOOL_PREFIX)
            && entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().is_ok_and(|age| age > older_than));
        if stale && std::fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}
