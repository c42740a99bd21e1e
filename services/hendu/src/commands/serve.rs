//! `hendu serve`: the six services in one process, over one store, on one port.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use hendu_service::Application;

use crate::storage::StoreArgs;

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Where the web pages and the HTTP API listen (catalogue uploads,
    /// device samples, radio stations, health).
    #[arg(
        long,
        value_name = "ADDR",
        env = "HENDU_HTTP_ADDR",
        default_value = "127.0.0.1:8080"
    )]
    pub addr: SocketAddr,
}

/// The name in logs and metrics.
const SERVICE: &str = "hendu";
/// The port of `--addr`'s default.
pub const DEFAULT_PORT: u16 = 8080;

/// Serves until SIGTERM or Ctrl-C.
///
/// # Errors
/// A bad setting, an unopenable store, an address in use.
pub fn run(args: &ServeArgs) -> Result<i32> {
    let hash_generator = hendu_hash_generator::Config::from_env()?;
    let recognition = hendu_recognition::Config::from_env()?;
    if !recognition.shard.is_whole() {
        anyhow::bail!(
            "hendu serve holds the whole catalogue; {} is for the hendu-recognition replicas of a \
             sharded deployment",
            hendu_recognition::vars::SHARD
        );
    }
    let filter = hendu_filter::Config::from_env()?;
    let communication = hendu_communication::Config::from_env_on(args.addr.ip())?;
    let radio_monitor = hendu_radio_monitor::Config::from_env()?;
    let web = hendu_web::Config::from_env_on(args.addr.ip())?;
    let log = std::env::var(hendu_service::settings::vars::LOG).unwrap_or_else(|_| "info".into());
    let http = hendu_service::settings::HttpLimits::from_env()?;
    let faults = hendu_service::Faults::new(hendu_service::faults::FaultSettings::from_env()?);
    let opened = args.store.open_routed(true, &faults)?;
    opened.block_on(async {
        hendu_service::telemetry::init(&log);
        let listener = tokio::net::TcpListener::bind(args.addr)
            .await
            .with_context(|| format!("cannot listen on {}", args.addr))?;
        let auth = hendu_service::Auth::load(&opened.storage)
            .await
            .context("cannot load the credential key")?;
        let mut app = Application::new(
            SERVICE,
            listener,
            opened.storage.clone(),
            auth,
            Duration::from_secs(20),
        )
        .with_http_limits(http)
        .with_faults(faults);
        hendu_communication::bootstrap_admin(&app.storage, &communication).await?;
        hendu_hash_generator::install(&mut app, &hash_generator);
        hendu_communication::install(&mut app, &communication)?;
        hendu_recognition::install(&mut app, &recognition);
        hendu_filter::install(&mut app, &filter);
        hendu_radio_monitor::install(&mut app, &radio_monitor);
        hendu_web::install(&mut app, &web);
        eprintln!(
            "HENDU is at http://{}/ (sign in with a user of `hendu user create`)",
            args.addr
        );
        app.run().await?;
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(0)
}
