//! A running service: its HTTP routes and its worker loops, over one store,
//! with the operational routes, and one shutdown for all of them.
//!
//! A service crate adds its parts to an [`Application`] (routes, workers,
//! readiness checks); its binary runs that application alone, and `hendu
//! serve` adds every service's parts to one application.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use futures_util::future::BoxFuture;
use hendu_storage::Storage;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::auth::Auth;
use crate::faults::{Faults, FaultsState};
use crate::health::Heartbeat;
use crate::http::{Ops, serve};
use crate::limits::CpuQueue;
use crate::settings::HttpLimits;

/// Routes, workers and checks of one or more services, bound to a listener.
pub struct Application {
    pub ops: Ops,
    pub storage: Storage,
    /// Checks tokens, passwords and device secrets for every route.
    pub auth: Auth,
    /// CPU-heavy work of every route, behind one bounded queue.
    pub cpu: CpuQueue,
    http: HttpLimits,
    shutdown_delay: Duration,
    listener: TcpListener,
    router: Router,
    /// The routes' OpenAPI document, served at `/v1/openapi.json`.
    api: Option<utoipa::openapi::OpenApi>,
    workers: Vec<(String, BoxFuture<'static, ()>)>,
    stop: CancellationToken,
    grace: Duration,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("service", &self.ops.service)
            .field("addr", &self.local_addr())
            .field("workers", &self.workers.len())
            .finish_non_exhaustive()
    }
}

impl Application {
    /// An application with only the operational routes; it is ready when
    /// `storage` answers (and every check added later passes).
    pub fn new(
        service: &'static str,
        listener: TcpListener,
        storage: Storage,
        auth: Auth,
        grace: Duration,
    ) -> Self {
        let ops = Ops::new(service);
        let checked = storage.clone();
        ops.health.check(move || {
            let storage = checked.clone();
            Box::pin(async move {
                storage
                    .check()
                    .await
                    .into_iter()
                    .map(|(name, why)| {
                        // The driver's words go to the log, not to anyone who asks.
                        let reason = why.map(|why| {
                            tracing::warn!(store = name, error = %why, "a store does not answer");
                            "unreachable".to_owned()
                        });
                        (name.to_owned(), reason)
                    })
                    .collect()
            })
        });
        Self {
            ops,
            storage,
            auth,
            cpu: CpuQueue::per_core(),
            http: HttpLimits::default(),
            shutdown_delay: Duration::ZERO,
            listener,
            router: Router::new(),
            api: None,
            workers: Vec::new(),
            stop: CancellationToken::new(),
            grace,
        }
    }

    /// Limits on what HTTP clients can hold (the defaults until set).
    #[must_use]
    pub fn with_http_limits(mut self, limits: HttpLimits) -> Self {
        self.http = limits;
        self
    }

    /// Fault injection for experiments (when `faults` is on): the
    /// `/v1/faults` routes, documented, and the middleware. Before the
    /// workers are added is best, but any time before running works.
    #[must_use]
    pub fn with_faults(mut self, faults: Faults) -> Self {
        if faults.enabled() {
            faults.attach(&self.ops.health, &self.ops.metrics);
            self.document(<crate::faults::Api as utoipa::OpenApi>::openapi());
        }
        self.ops.faults = faults;
        self
    }

    /// How long to keep serving with `/readyz` failing after the signal.
    #[must_use]
    pub fn with_shutdown_delay(mut self, delay: Duration) -> Self {
        self.shutdown_delay = delay;
        self
    }

    /// Adds a service's routes.
    pub fn route(&mut self, router: Router) {
        self.router = std::mem::take(&mut self.router).merge(router);
    }

    /// Adds a service's part of the OpenAPI document (served at
    /// `/v1/openapi.json` with every other part of this application).
    pub fn document(&mut self, part: utoipa::openapi::OpenApi) {
        match &mut self.api {
            Some(doc) => doc.merge(part),
            None => {
                let mut doc = crate::openapi::base(self.ops.service);
                doc.merge(part);
                self.api = Some(doc);
            }
        }
    }

    /// Adds a worker loop. It must beat its heartbeat at least every
    /// `allowance` (or `/healthz` reports it stuck), and return soon after
    /// the token is cancelled (shutdown), handing back work it has not finished.
    pub fn worker<F, Fut>(&mut self, name: &str, allowance: Duration, work: F)
    where
        F: FnOnce(Heartbeat, CancellationToken) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let beat = self.ops.health.worker(name, allowance);
        beat.beat();
        self.workers
            .push((name.to_owned(), Box::pin(work(beat, self.stop.clone()))));
    }

    /// Cancelled when the application stops (for tasks a service spawns itself).
    pub fn stopping(&self) -> CancellationToken {
        self.stop.clone()
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// Runs the workers and serves HTTP until `shutdown` completes; then
    /// stops the workers and drains requests, each within the grace period,
    /// and closes the store.
    ///
    /// # Errors
    /// An I/O error from the listener.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let mut tasks = tokio::task::JoinSet::new();
        for (name, work) in self.workers {
            tasks.spawn(async move {
                work.await;
                name
            });
        }
        let stop = self.stop.clone();
        // One grace period, from the end of the shutdown delay, for requests and workers together.
        let signalled = std::sync::Arc::new(std::sync::OnceLock::new());
        let at_signal = signalled.clone();
        let health = self.ops.health.clone();
        let delay = self.shutdown_delay;
        let mut router = match &self.api {
            Some(doc) => self.router.merge(crate::openapi::route(doc)),
            None => self.router,
        };
        let faults = self.ops.faults.clone();
        if faults.enabled() {
            router = router.merge(crate::faults::router(FaultsState {
                faults: faults.clone(),
                auth: self.auth.clone(),
            }));
        }
        let served = serve(
            self.listener,
            self.ops.wrap(router, &self.http),
            async move {
                shutdown.await;
                health.set_draining();
                // Serving on while the balancer notices; then the grace begins.
                tokio::time::sleep(delay).await;
                let _ = at_signal.set(tokio::time::Instant::now());
                stop.cancel();
            },
            self.grace,
            &self.http,
        )
        .await;
        self.stop.cancel();
        let deadline = signalled
            .get()
            .copied()
            .unwrap_or_else(tokio::time::Instant::now)
            + self.grace;
        let drained = tokio::time::timeout_at(deadline, async {
            while let Some(done) = tasks.join_next().await {
                match done {
                    Ok(name) => tracing::debug!(worker = %name, "worker stopped"),
                    Err(e) => tracing::error!(error = %e, "a worker panicked"),
                }
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                left = tasks.len(),
                "workers outlived the grace period; their unacknowledged work will be redelivered"
            );
            tasks.abort_all();
        }
        // Burning threads and held memory end with the application.
        faults.clear();
        self.storage.close().await;
        served
    }
}

impl Application {
    /// For a service binary's `main`: settings from the environment, logs,
    /// the store, the listener. Add the service's parts, then [`Self::run`].
    ///
    /// # Errors
    /// Bad settings, an unreachable store, an address in use.
    pub async fn from_env(service: &'static str, default_port: u16) -> anyhow::Result<Self> {
        use anyhow::Context;
        let mut settings = crate::Settings::from_env(service, default_port)?;
        crate::telemetry::init(&settings.log);
        let faults = Faults::new(settings.faults);
        faults
            .route_storage(&mut settings.storage)
            .await
            .context("cannot start the fault proxies")?;
        let storage = Storage::connect(&settings.storage).await?;
        let auth = Auth::load(&storage)
            .await
            .context("cannot load the credential key")?;
        let listener = TcpListener::bind(settings.http_addr)
            .await
            .with_context(|| format!("cannot listen on {}", settings.http_addr))?;
        Ok(
            Self::new(service, listener, storage, auth, settings.shutdown_grace)
                .with_http_limits(settings.http.clone())
                .with_shutdown_delay(settings.shutdown_delay)
                .with_faults(faults),
        )
    }

    /// Runs until SIGTERM or Ctrl-C.
    ///
    /// # Errors
    /// An I/O error from the listener.
    pub async fn run(self) -> std::io::Result<()> {
        tracing::info!(addr = %self.local_addr(), storage = %self.storage.description, "listening");
        self.run_until_stopped(crate::shutdown::signal()).await
    }
}

/// The whole `main` of a service binary whose parts need only its own
/// settings: read them, open the application, install the parts, run.
///
/// # Errors
/// Bad settings, an unreachable store, an address in use, a listener error.
pub async fn main_with<C>(
    service: &'static str,
    default_port: u16,
    config: impl FnOnce() -> anyhow::Result<C>,
    install: impl FnOnce(&mut Application, &C),
) -> anyhow::Result<()> {
    let config = config()?;
    let mut app = Application::from_env(service, default_port).await?;
    install(&mut app, &config);
    app.run().await?;
    Ok(())
}
