//! `hendu-hash-generator`: adds music to the catalogue.
//!
//! `POST /v1/musics` (multipart: `file`, `title`, optional `artist`) streams
//! the upload to a temporary file while hashing it, fingerprints it (off the
//! async threads), and stores the audio, its 30 s blocks and the `musics` row
//! through `hendu-storage`, which announces the catalogue change. The same
//! audio uploaded again is the same music (`200` instead of `201`).
//! `GET /v1/musics`, `GET /v1/musics/{id}`, `DELETE /v1/musics/{id}`.
//!
//! # Layout
//! - [`routes`]: the API.
//! - [`ingest`]: upload to stored music.

pub mod ingest;
pub mod routes;

use anyhow::Context;
use hendu_service::Application;
use hendu_storage::Storage;

pub const SERVICE: &str = "hash-generator";
pub const DEFAULT_PORT: u16 = 8081;

/// Environment variable: the largest upload accepted, in bytes (default 200 MB).
pub const MAX_UPLOAD_VAR: &str = "HENDU_MAX_UPLOAD_BYTES";
const DEFAULT_MAX_UPLOAD: usize = 200_000_000;

/// Ingests catalogue music: stores the audio, fingerprints it in 30 s blocks
/// with 15 s overlap, writes the blocks and the musics row.
#[derive(Debug, clap::Parser)]
#[command(
    name = "hendu-hash-generator",
    version,
    after_help = format!("{}\n  {MAX_UPLOAD_VAR}      largest upload in bytes (default {DEFAULT_MAX_UPLOAD})\n\nDefault port: {DEFAULT_PORT}.", hendu_service::settings::ENV_HELP)
)]
pub struct Cli {}

/// The hash-generator's own settings.
#[derive(Debug, Clone)]
pub struct Config {
    pub max_upload: usize,
}

impl Config {
    /// # Errors
    /// A malformed upload limit.
    pub fn from_env() -> anyhow::Result<Self> {
        let max_upload = match std::env::var(MAX_UPLOAD_VAR) {
            Ok(v) => v.trim().parse().with_context(|| {
                format!("{MAX_UPLOAD_VAR} is malformed: {v:?} is not a byte count")
            })?,
            Err(_) => DEFAULT_MAX_UPLOAD,
        };
        Ok(Self { max_upload })
    }
}

/// Shared by the handlers.
#[derive(Debug, Clone)]
pub struct AppState {
    pub storage: Storage,
    pub max_upload: usize,
}

/// Adds the hash-generator's routes to `app`.
pub fn install(app: &mut Application, config: &Config) {
    app.route(routes::router(AppState {
        storage: app.storage.clone(),
        max_upload: config.max_upload,
    }));
}
