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
//! What an upload goes through, and the worker that removes what uploads
//! that died mid-way left, are shared with the web's catalogue page
//! ([`hendu_service::catalogue`]).
//!
//! # Layout
//! - [`routes`]: the API.

pub mod routes;

use hendu_service::catalogue::{Catalogue, Clean};
use hendu_service::{Application, Auth};

pub const SERVICE: &str = "hash-generator";
pub const DEFAULT_PORT: u16 = 8081;

/// The hash-generator's own settings: those of uploads.
pub use hendu_service::catalogue::UploadConfig as Config;

/// Ingests catalogue music: stores the audio, fingerprints it in 30 s blocks
/// with 15 s overlap, writes the blocks and the musics row.
#[derive(Debug, clap::Parser)]
#[command(
    name = "hendu-hash-generator",
    version,
    after_help = format!(
        "{}\n{}\n\n{HELP}",
        hendu_service::settings::ENV_HELP,
        hendu_service::catalogue::HELP
    )
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<hendu_service::healthcheck::ServiceCommand>,
}

const HELP: &str =
    "Every route needs an API token (Authorization: Bearer; see `hendu token create`).
Default port: 8081.";

/// Shared by the handlers.
#[derive(Debug, Clone)]
pub struct AppState {
    pub auth: Auth,
    pub catalogue: Catalogue,
}

impl axum::extract::FromRef<AppState> for Auth {
    fn from_ref(state: &AppState) -> Self {
        state.auth.clone()
    }
}

/// Adds the hash-generator's routes and its clean-up worker to `app`.
pub fn install(app: &mut Application, config: &Config) {
    let state = AppState {
        auth: app.auth.clone(),
        catalogue: Catalogue::install(app, config, Clean::Catalogue),
    };
    app.document(<routes::Api as utoipa::OpenApi>::openapi());
    app.route(routes::router(state));
}
