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

use std::future::Future;
use std::net::SocketAddr;

use anyhow::Context;
use hendu_service::{Ops, Settings};
use hendu_storage::Storage;
use tokio::net::TcpListener;

pub const SERVICE: &str = "hash-generator";

/// Environment variable: the largest upload accepted, in bytes (default 200 MB).
pub const MAX_UPLOAD_VAR: &str = "HENDU_MAX_UPLOAD_BYTES";
const DEFAULT_MAX_UPLOAD: usize = 200_000_000;

/// Ingests catalogue music: stores the audio, fingerprints it in 30 s blocks
/// with 15 s overlap, writes the blocks and the musics row.
#[derive(Debug, clap::Parser)]
#[command(
    name = "hendu-hash-generator",
    version,
    after_help = format!("{}\n  {MAX_UPLOAD_VAR}      largest upload in bytes (default {DEFAULT_MAX_UPLOAD})\n\nDefault port: 8081.", hendu_service::settings::ENV_HELP)
)]
pub struct Cli {}

/// Shared by the handlers.
#[derive(Debug, Clone)]
pub struct AppState {
    pub storage: Storage,
    pub max_upload: usize,
}

/// The service, bound and ready to run.
#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    router: axum::Router,
    storage: Storage,
    grace: std::time::Duration,
}

impl Application {
    /// Connects the storage, binds the listener.
    ///
    /// # Errors
    /// A malformed upload limit, an unreachable store, an address in use.
    pub async fn build(settings: &Settings) -> anyhow::Result<Self> {
        let max_upload = match std::env::var(MAX_UPLOAD_VAR) {
            Ok(v) => v.trim().parse().with_context(|| {
                format!("{MAX_UPLOAD_VAR} is malformed: {v:?} is not a byte count")
            })?,
            Err(_) => DEFAULT_MAX_UPLOAD,
        };
        let storage = Storage::connect(&settings.storage).await?;
        let listener = TcpListener::bind(settings.http_addr)
            .await
            .with_context(|| format!("cannot listen on {}", settings.http_addr))?;
        Ok(Self::with_parts(
            listener,
            storage,
            max_upload,
            settings.shutdown_grace,
        ))
    }

    /// From an already-open store and a bound listener (tests bind port 0).
    pub fn with_parts(
        listener: TcpListener,
        storage: Storage,
        max_upload: usize,
        grace: std::time::Duration,
    ) -> Self {
        let ops = Ops::new(SERVICE);
        let checked = storage.clone();
        ops.health.check(move || {
            let storage = checked.clone();
            Box::pin(async move {
                storage
                    .check()
                    .await
                    .into_iter()
                    .map(|(name, why)| (name.to_owned(), why))
                    .collect()
            })
        });
        let state = AppState {
            storage: storage.clone(),
            max_upload,
        };
        Self {
            listener,
            router: ops.wrap(routes::router(state)),
            storage,
            grace,
        }
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    pub fn storage_description(&self) -> &str {
        &self.storage.description
    }

    /// Serves until `shutdown` completes, then drains.
    ///
    /// # Errors
    /// An I/O error from the listener.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let result = hendu_service::serve(self.listener, self.router, shutdown, self.grace).await;
        self.storage.close().await;
        result
    }
}
