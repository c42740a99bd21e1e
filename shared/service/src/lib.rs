//! What every HENDU service binary shares, from one place.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use hendu_service::{Ops, Settings, serve, telemetry};
//!
//! let settings = Settings::from_env("hendu-example", 8080)?;
//! telemetry::init(&settings.log);
//! let ops = Ops::new(settings.service);
//! let app = axum::Router::new(); // the service's own routes
//! let listener = tokio::net::TcpListener::bind(settings.http_addr).await?;
//! let limits = &settings.http;
//! serve(listener, ops.wrap(app, limits), hendu_service::shutdown::signal(), settings.shutdown_grace, limits).await?;
//! # Ok(()) }
//! ```
//!
//! # Layout
//! - [`app`]: a service's routes and worker loops, run together with one shutdown.
//! - [`accounts`]: the users and tokens API.
//! - [`catalogue`]: an upload to a stored music (or a claim), and the clean-up of dead uploads.
//! - [`audio`]: refused audio, work cancelled with its request, bounded bodies.
//! - [`auth`]: API tokens, passwords and device secrets; limits on failed attempts.
//! - [`dead_letters`]: the administrators' view of a queue's dead letters.
//! - [`limits`]: failed-attempt counting, and the bounded queue for CPU-heavy work.
//! - [`samples`]: the sample path's entry (checked, stored, queued), for sensors and radios.
//! - [`settings`]: typed settings from the environment, one list of variable names.
//! - [`telemetry`]: JSON logs (human-readable in a terminal), request ids.
//! - [`faults`]: fault injection for experiments (`HENDU_FAULTS=on`), reverting by itself.
//! - [`health`]: liveness that notices a stuck worker loop, readiness that names what is missing.
//! - [`healthcheck`]: the `healthcheck` subcommand, the probe a container runs on itself.
//! - [`openapi`]: the OpenAPI document, from the handlers' annotations, at `/v1/openapi.json`.
//! - [`metrics`]: Prometheus metrics, request latency per route.
//! - [`error`]: the one JSON error shape, with a stable `code`.
//! - [`http`]: the operational routes and middleware around a service's router, and `serve`.
//! - [`shutdown`]: SIGTERM / Ctrl-C, and a bounded drain.

pub mod accounts;
pub mod app;
pub mod audio;
pub mod auth;
pub mod catalogue;
pub mod dead_letters;
pub mod error;
pub mod faults;
pub mod health;
pub mod healthcheck;
pub mod http;
pub mod limits;
pub mod metrics;
pub mod openapi;
pub mod samples;
pub mod settings;
pub mod shutdown;
pub mod telemetry;

pub use app::Application;
pub use auth::{Auth, Principal};
pub use error::ApiError;
pub use faults::Faults;
pub use health::{Health, Heartbeat};
pub use http::{Ops, serve};
pub use metrics::Metrics;
pub use settings::Settings;
