//! The operational routes (`/healthz`, `/readyz`, `/metrics`) and the
//! middleware (request id, request span, latency metric) around a service's
//! own router, and `serve`.

use std::future::Future;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tokio::net::TcpListener;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{DefaultOnFailure, TraceLayer};

use crate::health::Health;
use crate::metrics::{Metrics, RouteLabels};

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// What the operational routes report on.
#[derive(Debug, Clone)]
pub struct Ops {
    pub service: &'static str,
    pub health: Health,
    pub metrics: Metrics,
}

impl Ops {
    pub fn new(service: &'static str) -> Self {
        Self {
            service,
            health: Health::default(),
            metrics: Metrics::new(service),
        }
    }

    /// The service's router with the operational routes and the middleware.
    pub fn wrap(&self, app: Router) -> Router {
        let ops = Router::new()
            .route("/healthz", get(healthz))
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics))
            .with_state(self.clone());
        app.merge(ops)
            .layer(middleware::from_fn_with_state(self.metrics.clone(), measure))
            .layer(
                TraceLayer::new_for_http()
                    // A 503 from /readyz while starting is routine; handlers log real errors.
                    .on_failure(DefaultOnFailure::new().level(tracing::Level::WARN))
                    .make_span_with(|request: &Request| {
                    let id = request
                        .headers()
                        .get(&REQUEST_ID)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("-");
                    tracing::info_span!("request", request_id = %id, method = %request.method(), path = %request.uri().path())
                }),
            )
            .layer(PropagateRequestIdLayer::new(REQUEST_ID))
            .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
    }
}

async fn healthz(State(ops): State<Ops>) -> Response {
    let stuck = ops.health.stuck();
    if stuck.is_empty() {
        Json(json!({ "status": "ok", "service": ops.service })).into_response()
    } else {
        let stuck: Vec<_> = stuck
            .iter()
            .map(|(name, silent)| json!({ "worker": name, "silent_s": silent.as_secs_f64() }))
            .collect();
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "stuck", "service": ops.service, "stuck": stuck })),
        )
            .into_response()
    }
}

async fn readyz(State(ops): State<Ops>) -> Response {
    let missing = ops.health.missing().await;
    if missing.is_empty() {
        Json(json!({ "status": "ready", "service": ops.service })).into_response()
    } else {
        let missing: Vec<_> = missing
            .iter()
            .map(|(name, why)| json!({ "name": name, "reason": why }))
            .collect();
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "not ready", "service": ops.service, "missing": missing })),
        )
            .into_response()
    }
}

async fn metrics(State(ops): State<Ops>) -> Response {
    (
        [("content-type", "text/plain; version=0.0.4; charset=utf-8")],
        ops.metrics.encode(),
    )
        .into_response()
}

async fn measure(State(metrics): State<Metrics>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await;
    metrics
        .requests
        .get_or_create(&RouteLabels {
            method,
            route,
            status: response.status().as_u16(),
        })
        .observe(started.elapsed().as_secs_f64());
    response
}

/// Serves `app` on an already-bound listener until `shutdown` completes, then
/// stops accepting, lets in-flight requests finish for up to `grace`, and returns.
///
/// # Errors
/// An I/O error from the listener.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> std::io::Result<()> {
    let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        shutdown.await;
        let _ = stopping_tx.send(());
    });
    let mut server = std::pin::pin!(server.into_future());
    tokio::select! {
        result = &mut server => result,
        Ok(()) = stopping_rx => {
            match tokio::time::timeout(grace, server).await {
                Ok(result) => result,
                Err(_) => {
                    tracing::warn!(grace_s = grace.as_secs_f64(), "in-flight requests outlived the grace period; stopping anyway");
                    Ok(())
                }
            }
        }
    }
}
