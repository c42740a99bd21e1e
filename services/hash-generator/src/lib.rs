//! `hendu-hash-generator`: adds music to the catalogue.
//!
//! `POST /v1/musics` (multipart: `file`, `title`, optional `artist`, and for
//! administrators `owner_id`) streams the upload to a temporary file while
//! hashing it, fingerprints it (behind the service's bounded CPU queue,
//! stopping at `HENDU_MAX_TRACK_S` or when the client goes away), and
//! stores the audio, its 30 s blocks and the `musics` row through
//! `hendu-storage`, which announces the catalogue change. The same audio
//! uploaded again by its owner is the same music (`200` instead of `201`);
//! by someone else it is a claim (`409 already_claimed`) for an
//! administrator (`GET /v1/claims`, `POST /v1/claims/{id}`). `GET
//! /v1/musics`, `GET /v1/musics/{id}`, `DELETE /v1/musics/{id}`: a
//! musician's own tracks, an administrator's all.
//!
//! A worker removes what uploads that died mid-way left (rows still
//! `ingesting` with their partial blocks and audio, temporary files), at
//! start-up and every few minutes.
//!
//! # Layout
//! - [`routes`]: the API.
//! - [`ingest`]: upload to stored music, and the clean-up of dead uploads.

pub mod ingest;
pub mod routes;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use hendu_service::limits::CpuQueue;
use hendu_service::settings::var_or;
use hendu_service::{Application, Auth};
use hendu_storage::Storage;

pub const SERVICE: &str = "hash-generator";
pub const DEFAULT_PORT: u16 = 8081;

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

/// Ingests catalogue music: stores the audio, fingerprints it in 30 s blocks
/// with 15 s overlap, writes the blocks and the musics row.
#[derive(Debug, clap::Parser)]
#[command(
    name = "hendu-hash-generator",
    version,
    after_help = format!("{}\n{HELP}", hendu_service::settings::ENV_HELP)
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<hendu_service::healthcheck::ServiceCommand>,
}

const HELP: &str = "  HENDU_MAX_UPLOAD_BYTES  largest upload in bytes (default 200000000)
  HENDU_MAX_TRACK_S       longest track in seconds; decoding stops there (default 7200)
  HENDU_SPOOL_DIR         where uploads are spooled while they are fingerprinted
                          (default the system's temporary directory)

Every route needs an API token (Authorization: Bearer; see `hendu token create`).
Default port: 8081.";

/// The hash-generator's own settings.
#[derive(Debug, Clone)]
pub struct Config {
    pub max_upload: usize,
    pub max_track_s: f64,
    pub spool: PathBuf,
}

impl Config {
    /// # Errors
    /// A malformed variable, named.
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

/// Shared by the handlers.
#[derive(Debug, Clone)]
pub struct AppState {
    pub storage: Storage,
    pub auth: Auth,
    pub cpu: CpuQueue,
    pub stopping: tokio_util::sync::CancellationToken,
    pub max_upload: usize,
    pub max_track_s: f64,
    pub spool: Arc<PathBuf>,
}

impl axum::extract::FromRef<AppState> for Auth {
    fn from_ref(state: &AppState) -> Self {
        state.auth.clone()
    }
}

/// Adds the hash-generator's routes and its clean-up worker to `app`.
pub fn install(app: &mut Application, config: &Config) {
    let state = AppState {
        storage: app.storage.clone(),
        auth: app.auth.clone(),
        cpu: app.cpu.clone(),
        stopping: app.stopping(),
        max_upload: config.max_upload,
        max_track_s: config.max_track_s,
        spool: Arc::new(config.spool.clone()),
    };
    app.route(routes::router(state.clone()));
    app.worker(
        "upload clean-up",
        CLEAN_EVERY * 3,
        move |beat, stop| async move {
            loop {
                beat.beat();
                clean_up(&state).await;
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(CLEAN_EVERY) => {}
                }
            }
        },
    );
}

/// One pass of the clean-up of dead uploads.
async fn clean_up(state: &AppState) {
    match state.storage.abandon_stale_ingests(STALE_INGEST).await {
        Ok(0) => {}
        Ok(n) => tracing::warn!(musics = n, "removed uploads that did not finish"),
        Err(e) => tracing::warn!(error = %e, "cannot look for uploads that did not finish"),
    }
    if let Err(e) = state.storage.finish_deletions().await {
        tracing::warn!(error = %e, "cannot finish interrupted deletions");
    }
    let spool = state.spool.clone();
    // An hour: no live upload of 200 MB takes that long to fingerprint.
    let removed =
        tokio::task::spawn_blocking(move || ingest::sweep_spool(&spool, Duration::from_secs(3600)))
            .await
            .unwrap_or(0);
    if removed > 0 {
        tracing::warn!(
            files = removed,
            "removed temporary files of uploads that died"
        );
    }
}
