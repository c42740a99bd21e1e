//! `hendu-communication`: where sensors deliver samples.
//!
//! - `POST /v1/devices/{imei}/samples`, with the device's secret in the
//!   `X-Hendu-Device-Secret` header. The body is either audio in any format
//!   the engine decodes (with the capture instant in `X-Hendu-Captured-At`,
//!   RFC 3339), or the fingerprint the device computed itself
//!   (`Content-Type: application/vnd.hendu.sample-fingerprint`, see
//!   [`hendu_fingerprint::wire`]). The sample's fingerprint is stored with
//!   its source, location and capture instant, and queued for recognition:
//!   `202 Accepted`. Unknown device or wrong secret: 401; disabled: 403;
//!   nothing is stored.
//! - Administrators (with an API token) register devices: `POST
//!   /v1/devices` (the server makes the device's secret and shows it once),
//!   `GET /v1/devices/{imei}`, `PATCH /v1/devices/{imei}` (`{"enabled":
//!   false}`, `{"rotate_secret": true}`).
//! - The accounts API (`/v1/tokens`, `/v1/users`, from `hendu_service::accounts`).
//! - Sensors over TCP ([`tcp`]): protocol v1 (the paper's control and data
//!   ports) and v2 (one framed connection, challenge-response login),
//!   specified in `docs/sensor-protocol.md`.
//!
//! # Layout
//! - [`ingest`]: a device's sample, however it came, into the sample path.
//! - [`samples`]: the REST upload.
//! - [`tcp`]: the TCP protocols.
//! - [`devices`]: the administrators' device API.

pub mod devices;
pub mod ingest;
pub mod samples;
pub mod tcp;

use anyhow::Context;
use hendu_service::accounts::{self, AccountsState};
use hendu_service::limits::CpuQueue;
use hendu_service::settings::var_or;
use hendu_service::{Application, Auth};
use hendu_storage::Storage;
use hendu_storage::model::{NewUser, Role, Secret};

pub const SERVICE: &str = "communication";
pub const DEFAULT_PORT: u16 = 8080;

pub mod vars {
    pub const MAX_SAMPLE_BYTES: &str = "HENDU_MAX_SAMPLE_BYTES";
    pub const MAX_SAMPLE_S: &str = "HENDU_MAX_SAMPLE_S";
    pub const ADMIN_EMAIL: &str = "HENDU_ADMIN_EMAIL";
    pub const ADMIN_PASSWORD: &str = "HENDU_ADMIN_PASSWORD";
}

const DEFAULT_MAX_SAMPLE: usize = 16_000_000;
const DEFAULT_MAX_SAMPLE_S: f64 = 3600.0;

fn help() -> String {
    HELP.replace("{}", tcp::HELP)
}

const HELP: &str =
    "  HENDU_MAX_SAMPLE_BYTES  largest sample upload in bytes (default 16000000: 30 s of
                          CD-quality WAV is 5.3 MB)
  HENDU_MAX_SAMPLE_S      longest sample audio in seconds; decoding stops there
                          (default 3600)
  HENDU_ADMIN_EMAIL, HENDU_ADMIN_PASSWORD
                          at start, create this administrator if no user has the
                          e-mail (the password is never printed; at least 12 characters)

{}

Default port: 8080.";

/// Receives samples from sensors; lets administrators register devices.
#[derive(Debug, clap::Parser)]
#[command(
    name = "hendu-communication",
    version,
    after_help = format!("{}\n{}", hendu_service::settings::ENV_HELP, help())
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<hendu_service::healthcheck::ServiceCommand>,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub max_sample_bytes: usize,
    pub max_sample_s: f64,
    /// The administrator to create at start, if any.
    pub admin: Option<(String, Secret)>,
    /// The sensors' TCP protocols.
    pub tcp: tcp::TcpConfig,
}

impl Config {
    /// # Errors
    /// A malformed variable, or only one of the administrator's two.
    pub fn from_env() -> anyhow::Result<Self> {
        Self::from_env_on(std::net::IpAddr::from([0, 0, 0, 0]))
    }

    /// As [`Self::from_env`], with the TCP protocols on `host` unless their
    /// variables say otherwise.
    ///
    /// # Errors
    /// As [`Self::from_env`].
    pub fn from_env_on(host: std::net::IpAddr) -> anyhow::Result<Self> {
        let max_sample_bytes = var_or(vars::MAX_SAMPLE_BYTES, DEFAULT_MAX_SAMPLE, "a byte count")?;
        let max_sample_s: f64 = var_or(vars::MAX_SAMPLE_S, DEFAULT_MAX_SAMPLE_S, "seconds")?;
        if !(max_sample_s > 0.0 && max_sample_s <= DEFAULT_MAX_SAMPLE_S) {
            anyhow::bail!("{} must be within (0, 3600]", vars::MAX_SAMPLE_S);
        }
        let get = |k| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let admin = match (get(vars::ADMIN_EMAIL), get(vars::ADMIN_PASSWORD)) {
            (Some(email), Some(password)) => Some((email, Secret::new(password))),
            (None, None) => None,
            _ => anyhow::bail!(
                "set both {} and {}, or neither",
                vars::ADMIN_EMAIL,
                vars::ADMIN_PASSWORD
            ),
        };
        Ok(Self {
            max_sample_bytes,
            max_sample_s,
            admin,
            tcp: tcp::TcpConfig::from_env(host)?,
        })
    }
}

/// Creates the configured administrator unless a user has that e-mail.
///
/// # Errors
/// A malformed e-mail or a short password, or the store failing.
pub async fn bootstrap_admin(storage: &Storage, config: &Config) -> anyhow::Result<()> {
    let Some((email, password)) = &config.admin else {
        return Ok(());
    };
    let user = NewUser::new(email, "Administrator", Role::Admin, password.clone())
        .with_context(|| format!("{} / {}", vars::ADMIN_EMAIL, vars::ADMIN_PASSWORD))?;
    if storage
        .relational
        .user_by_email(&user.email)
        .await?
        .is_some()
    {
        tracing::info!(email = %user.email, "administrator already exists");
        return Ok(());
    }
    match storage.relational.add_user(&user).await {
        Ok(_) => tracing::info!(email = %user.email, "administrator created"),
        // Another replica created it at the same moment.
        Err(hendu_storage::StorageError::Conflict(_)) => {}
        Err(e) => return Err(e.into()),
    }
    Ok(())
}

/// Shared by the handlers.
#[derive(Debug, Clone)]
pub struct AppState {
    pub storage: Storage,
    pub auth: Auth,
    pub cpu: CpuQueue,
    pub stopping: tokio_util::sync::CancellationToken,
    pub max_sample_bytes: usize,
    pub max_sample_s: f64,
}

impl axum::extract::FromRef<AppState> for Auth {
    fn from_ref(state: &AppState) -> Self {
        state.auth.clone()
    }
}

/// Adds the communication routes, the accounts API and the TCP protocols
/// (listening where `config.tcp` says) to `app`.
///
/// # Errors
/// A TCP address in use.
pub fn install(app: &mut Application, config: &Config) -> anyhow::Result<()> {
    let listeners = tcp::Listeners::bind(&config.tcp)?;
    install_with(app, config, listeners)
}

/// As [`install`], on TCP sockets bound by the caller (tests bind port 0).
///
/// # Errors
/// A listener that cannot be used.
pub fn install_with(
    app: &mut Application,
    config: &Config,
    listeners: tcp::Listeners,
) -> anyhow::Result<()> {
    let state = AppState {
        storage: app.storage.clone(),
        auth: app.auth.clone(),
        cpu: app.cpu.clone(),
        stopping: app.stopping(),
        max_sample_bytes: config.max_sample_bytes,
        max_sample_s: config.max_sample_s,
    };
    app.route(samples::router(state.clone()));
    app.route(devices::router(state.clone()));
    app.document(<accounts::Api as utoipa::OpenApi>::openapi());
    app.document(<devices::Api as utoipa::OpenApi>::openapi());
    app.route(accounts::router(AccountsState {
        storage: app.storage.clone(),
        auth: app.auth.clone(),
    }));
    tcp::install(app, state, listeners, config.tcp.limits.clone())
}
