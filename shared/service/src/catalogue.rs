//! Adding music to the catalogue from an upload, for every service that
//! takes one (the hash-generator's API, the web's catalogue page): the form
//! is streamed to a spool file and hashed on the way, the audio is
//! fingerprinted behind the bounded CPU queue (stopping at the track limit
//! or when the client goes away), and stored with its owner; the same audio
//! held by another owner becomes a claim for an administrator. Also the
//! clean-up of what uploads that died left behind.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::extract::Multipart;
use axum::http::StatusCode;
use hendu_fingerprint::{DecodeLimits, PeakProfile, fingerprint_file_with};
use hendu_storage::model::{
    ContentHash, Music, MusicState, NewMusic, Role, User, UserId, isrc_code,
};
use hendu_storage::{Inserted, Storage};
use tempfile::NamedTempFile;
use tokio_util::sync::CancellationToken;

use crate::audio::{self, CancelOnDrop};
use crate::limits::CpuQueue;
use crate::settings::var_or;
use crate::{ApiError, Application};

/// Environment variable: the largest upload accepted, in bytes (default 200 MB).
pub const MAX_UPLOAD_VAR: &str = "HENDU_MAX_UPLOAD_BYTES";
/// Environment variable: the longest track, in seconds (default 2 h).
pub const MAX_TRACK_VAR: &str = "HENDU_MAX_TRACK_S";
/// Environment variable: where uploads are spooled (default the system's
/// temporary directory).
pub const SPOOL_DIR_VAR: &str = "HENDU_SPOOL_DIR";
const DEFAULT_MAX_UPLOAD: usize = 200_000_000;
const DEFAULT_MAX_TRACK_S: f64 = 7200.0;
/// An upload whose row has been `ingesting` this long died.
const STALE_INGEST: Duration = Duration::from_secs(600);
/// How often the clean-up runs.
const CLEAN_EVERY: Duration = Duration::from_secs(300);

/// What the `--help` of a service that takes uploads says of them.
pub const HELP: &str = "  HENDU_MAX_UPLOAD_BYTES  largest upload in bytes (default 200000000)
  HENDU_MAX_TRACK_S       longest track in seconds; decoding stops there (default 7200)
  HENDU_SPOOL_DIR         where uploads are spooled while they are fingerprinted
                          (default the system's temporary directory)";

/// Temporary upload files are named so; what a killed process left behind
/// is found by this prefix and removed ([`sweep_spool`]).
pub const SPOOL_PREFIX: &str = "hendu-upload-";
/// Longest text field read (title, artist, owner), in bytes.
const MAX_FIELD: usize = 4096;

/// The settings of uploads.
#[derive(Debug, Clone)]
pub struct UploadConfig {
    pub max_upload: usize,
    pub max_track_s: f64,
    pub spool: PathBuf,
}

impl UploadConfig {
    /// # Errors
    /// A malformed variable, named; a spool directory that cannot be made.
    pub fn from_env() -> anyhow::Result<Self> {
        let max_upload = var_or(MAX_UPLOAD_VAR, DEFAULT_MAX_UPLOAD, "a byte count")?;
        let max_track_s: f64 = var_or(MAX_TRACK_VAR, DEFAULT_MAX_TRACK_S, "seconds")?;
        if !(max_track_s > 0.0 && max_track_s <= 24.0 * 3600.0) {
            anyhow::bail!("{MAX_TRACK_VAR} must be within (0, 86400]");
        }
        let spool = std::env::var(SPOOL_DIR_VAR)
            .ok()
            .filter(|v| !v.trim().is_empty())
            .map_or_else(std::env::temp_dir, PathBuf::from);
        std::fs::create_dir_all(&spool)
            .with_context(|| format!("{SPOOL_DIR_VAR}: cannot create {}", spool.display()))?;
        Ok(Self {
            max_upload,
            max_track_s,
            spool,
        })
    }
}

/// What a service's clean-up of dead uploads covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clean {
    /// The store's unfinished uploads and deletions, and the spool.
    Catalogue,
    /// Only this process's spool files.
    Spool,
}

/// What storing uploads needs, shared by a service's handlers.
#[derive(Debug, Clone)]
pub struct Catalogue {
    pub storage: Storage,
    pub cpu: CpuQueue,
    pub stopping: CancellationToken,
    pub max_upload: usize,
    pub max_track_s: f64,
    pub spool: Arc<PathBuf>,
}

impl Catalogue {
    /// Uploads into `app`'s store, with its CPU queue, and the worker that
    /// clears what uploads that died left behind: with `Clean::Catalogue`
    /// (the catalogue's own service) the store's rows and deletions, which
    /// are the cluster's, and this process's spool files; with
    /// `Clean::Spool` (another service that takes uploads) only the files.
    pub fn install(app: &mut Application, config: &UploadConfig, clean: Clean) -> Self {
        let catalogue = Self {
            storage: app.storage.clone(),
            cpu: app.cpu.clone(),
            stopping: app.stopping(),
            max_upload: config.max_upload,
            max_track_s: config.max_track_s,
            spool: Arc::new(config.spool.clone()),
        };
        let state = catalogue.clone();
        app.worker(
            "upload clean-up",
            CLEAN_EVERY * 3,
            move |beat, stop| async move {
                loop {
                    beat.pace().await;
                    beat.beat();
                    state.clean_up(clean).await;
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(CLEAN_EVERY) => {}
                    }
                }
            },
        );
        catalogue
    }

    /// One pass of the clean-up of dead uploads: rows still `ingesting`
    /// with their partial blocks and audio and interrupted deletions (with
    /// `Clean::Catalogue`), then spool files.
    pub async fn clean_up(&self, clean: Clean) {
        if clean == Clean::Catalogue {
            match self.storage.abandon_stale_ingests(STALE_INGEST).await {
                Ok(0) => {}
                Ok(n) => tracing::warn!(musics = n, "removed uploads that did not finish"),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot look for uploads that did not finish");
                }
            }
            if let Err(e) = self.storage.finish_deletions().await {
                tracing::warn!(error = %e, "cannot finish interrupted deletions");
            }
        }
        let spool = self.spool.clone();
        // An hour: no live upload of 200 MB takes that long to fingerprint.
        let removed =
            tokio::task::spawn_blocking(move || sweep_spool(&spool, Duration::from_secs(3600)))
                .await
                .unwrap_or(0);
        if removed > 0 {
            tracing::warn!(
                files = removed,
                "removed temporary files of uploads that died"
            );
        }
    }
}

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
        ApiError::payload_too_large(MAX_UPLOAD_VAR)
    } else {
        ApiError::bad_request("bad_multipart", e.body_text())
    }
}

/// A text field, at most [`MAX_FIELD`] bytes.
///
/// # Errors
/// 422 for a longer field or one that is not UTF-8; 400 for a broken form.
pub async fn text_field(
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

/// Who uploads: a person, acting with a role (a token's, or their own).
#[derive(Debug, Clone, Copy)]
pub struct Uploader<'a> {
    pub user: &'a User,
    pub role: Role,
}

impl<'a> From<&'a crate::Principal> for Uploader<'a> {
    fn from(p: &'a crate::Principal) -> Self {
        Self {
            user: &p.user,
            role: p.role,
        }
    }
}

/// Who the upload will belong to: the uploading musician, or for an
/// administrator the musician named (or no one).
///
/// # Errors
/// 403 for an operator, or a musician naming another owner; 422 for an
/// owner who is not a musician.
pub async fn owner_of(
    storage: &Storage,
    uploader: Uploader<'_>,
    named: Option<UserId>,
) -> Result<Option<UserId>, ApiError> {
    match uploader.role {
        Role::Musician => match named {
            Some(id) if id != uploader.user.id => {
                Err(crate::auth::forbidden("upload tracks for another musician"))
            }
            _ => Ok(Some(uploader.user.id)),
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
        Role::Operator => Err(crate::auth::forbidden("upload tracks")),
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
    state: &Catalogue,
    upload: Upload,
    uploader: Uploader<'_>,
) -> Result<Stored, ApiError> {
    let storage = &state.storage;
    let owner = owner_of(storage, uploader, upload.owner_id).await?;
    // An administrator who names no owner takes the catalogue as it is.
    let any_owner = uploader.role == Role::Admin && upload.owner_id.is_none();
    let claimant = uploader.user.id;
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
        .map_err(|e| audio::refused(e, MAX_TRACK_VAR))?;
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
