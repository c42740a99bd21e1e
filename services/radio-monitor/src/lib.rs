//! `hendu-radio-monitor`: listens to every registered radio station.
//!
//! Each enabled station is listened to by exactly one replica (leases, see
//! [`supervisor`]). The replica reads the stream (HTTP or HTTPS, through
//! playlist files and redirects, with ICY metadata taken out), decodes it
//! (MP3, AAC in ADTS, Ogg Vorbis, HLS with AAC or MP3 segments, and whatever else the engine's decoder
//! reads), cuts the audio into contiguous 30 s samples on its own sample
//! clock, fingerprints them and hands them to recognition exactly as a
//! sensor's samples are (stored, queued; the same ids and idempotency), so
//! that radio plays come out of the same filter. A station's state
//! (`connecting`, `streaming`, `silent`, `backoff`, `down`,
//! `unsupported_codec`, `disabled`) is written to the store, exported as
//! metrics and, for dead air and drops, published as events.
//!
//! # Layout
//! - [`stations`]: the stations API (administrators and operators).
//! - [`supervisor`]: which replica listens to which station.
//! - [`listener`]: one station's connections and state.
//! - [`source`], [`playlist`], [`icy`]: opening a stream.
//! - [`hls`]: HTTP Live Streaming (MPEG-TS, fMP4 and packed audio segments).
//! - [`decoder`]: the decoding thread of a connection.
//! - [`cutter`]: samples on the audio's clock, capture instants, dead air.
//! - [`meters`]: metrics per station.

pub mod cutter;
pub mod decoder;
pub mod hls;
pub mod http;
pub mod icy;
pub mod listener;
pub mod meters;
pub mod playlist;
pub mod source;
pub mod stations;
pub mod supervisor;

use std::sync::Arc;
use std::time::Duration;

use hendu_service::Application;
use hendu_service::settings::{default_replica, seconds_or, var_or};
use hendu_storage::Storage;

pub const SERVICE: &str = "radio-monitor";
pub const DEFAULT_PORT: u16 = 8084;

/// Length of a radio sample.
pub const SAMPLE: Duration = Duration::from_secs(30);

pub mod vars {
    pub const LEASE_S: &str = "HENDU_RADIO_LEASE_S";
    pub const SCAN_S: &str = "HENDU_RADIO_SCAN_S";
    pub const STALL_S: &str = "HENDU_RADIO_STALL_S";
    pub const SILENCE_DBFS: &str = "HENDU_RADIO_SILENCE_DBFS";
    pub const SILENCE_S: &str = "HENDU_RADIO_SILENCE_S";
    pub const DOWN_S: &str = "HENDU_RADIO_DOWN_S";
    pub const BACKOFF_MAX_S: &str = "HENDU_RADIO_BACKOFF_MAX_S";
    pub const MAX_STATIONS: &str = "HENDU_RADIO_MAX_STATIONS";
    pub const REPLICA: &str = "HENDU_REPLICA";
}

const HELP: &str =
    "  HENDU_RADIO_LEASE_S        how long a replica holds a station without renewing: a
                             dead replica's stations move after this (default 15)
  HENDU_RADIO_SCAN_S         how often the stations and the replicas are looked at:
                             a new or enabled station starts within this (default 2)
  HENDU_RADIO_STALL_S        a stream that sends nothing this long is reconnected
                             (default 10)
  HENDU_RADIO_SILENCE_DBFS   audio below this level (RMS over a second, dBFS) counts
                             as silent (default -50)
  HENDU_RADIO_SILENCE_S      this much silence in a row is dead air: the station is
                             `silent` and StationSilent is published (default 15)
  HENDU_RADIO_DOWN_S         a station failing to stream this long is `down` and
                             StationDown is published (default 60)
  HENDU_RADIO_BACKOFF_MAX_S  longest wait between reconnections (default 60)
  HENDU_RADIO_MAX_STATIONS   most stations one replica listens to (default 500)
  HENDU_REPLICA              this replica's name (default host name and pid)
See docs/services.md (the radio monitor).

Default port: 8084.";

/// Listens to the registered radio stations; serves the stations API.
#[derive(Debug, clap::Parser)]
#[command(
    name = "hendu-radio-monitor",
    version,
    after_help = format!("{}\n{HELP}", hendu_service::settings::ENV_HELP)
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<hendu_service::healthcheck::ServiceCommand>,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub lease: Duration,
    pub scan_every: Duration,
    pub stall: Duration,
    pub silence_dbfs: f64,
    pub silence: Duration,
    pub down_after: Duration,
    pub backoff_max: Duration,
    pub max_stations: usize,
    pub replica: String,
}

impl Config {
    /// # Errors
    /// A malformed variable, named.
    pub fn from_env() -> anyhow::Result<Self> {
        let silence_dbfs: f64 = var_or(vars::SILENCE_DBFS, -50.0, "a level in dBFS")?;
        if !(-120.0..0.0).contains(&silence_dbfs) {
            anyhow::bail!("{} must be within [-120, 0)", vars::SILENCE_DBFS);
        }
        let config = Self {
            lease: seconds_or(vars::LEASE_S, 15.0)?,
            scan_every: seconds_or(vars::SCAN_S, 2.0)?,
            stall: seconds_or(vars::STALL_S, 10.0)?,
            silence_dbfs,
            silence: seconds_or(vars::SILENCE_S, 15.0)?,
            down_after: seconds_or(vars::DOWN_S, 60.0)?,
            backoff_max: seconds_or(vars::BACKOFF_MAX_S, 60.0)?,
            max_stations: var_or(vars::MAX_STATIONS, 500, "a whole number")?,
            replica: var_or(vars::REPLICA, default_replica(), "a name")?,
        };
        if config.scan_every * 2 >= config.lease {
            anyhow::bail!(
                "{} must be less than half of {}: leases are renewed every scan",
                vars::SCAN_S,
                vars::LEASE_S
            );
        }
        Ok(config)
    }
}

/// What every station's listener shares.
#[derive(Debug)]
pub struct Context {
    pub storage: Storage,
    pub config: Config,
    pub client: reqwest::Client,
    pub meters: meters::Meters,
}

/// The supervisor's allowance between heartbeats: a scan is a few store
/// calls per station.
const ALLOWANCE: Duration = Duration::from_secs(120);

/// Adds the stations API and the monitor's worker to `app`.
///
/// # Panics
/// If the TLS backend of the HTTP client cannot start.
pub fn install(app: &mut Application, config: &Config) {
    let client = http::client(config.stall).expect("the HTTP client starts");
    let ctx = Arc::new(Context {
        storage: app.storage.clone(),
        config: config.clone(),
        client,
        meters: meters::Meters::new(&app.ops.metrics),
    });
    app.document(<stations::Api as utoipa::OpenApi>::openapi());
    app.route(stations::router(stations::StationsState {
        storage: app.storage.clone(),
        auth: app.auth.clone(),
        stale_after: config.lease + config.scan_every,
    }));
    let supervisor = supervisor::Supervisor::new(ctx);
    app.worker("stations", ALLOWANCE, move |beat, stop| async move {
        supervisor.run(beat, stop).await;
    });
}
