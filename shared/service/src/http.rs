//! The operational routes (`/healthz`, `/readyz`, `/metrics`) and the
//! middleware (request id, request span, latency metric) around a service's
//! own router, and `serve`.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderName, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use hyper::body::Incoming;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutBody;
use tower_http::trace::{DefaultOnFailure, TraceLayer};

use crate::error::{ApiError, busy};
use crate::faults::Faults;
use crate::health::Health;
use crate::metrics::{Metrics, RouteLabels};
use crate::settings::HttpLimits;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// What the operational routes report on.
#[derive(Debug, Clone)]
pub struct Ops {
    pub service: &'static str,
    pub health: Health,
    pub metrics: Metrics,
    /// Fault injection (off unless `HENDU_FAULTS=on`).
    pub faults: Faults,
}

impl Ops {
    pub fn new(service: &'static str) -> Self {
        Self {
            service,
            health: Health::default(),
            metrics: Metrics::new(service),
            faults: Faults::default(),
        }
    }

    /// The service's router with the operational routes and the middleware.
    pub fn wrap(&self, app: Router, limits: &HttpLimits) -> Router {
        let ops = Router::new()
            .route("/healthz", get(healthz))
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics))
            .with_state(self.clone());
        let gate = Gate {
            in_flight: Arc::new(Semaphore::new(limits.max_requests.max(1))),
            request_timeout: limits.request_timeout,
        };
        let mut app = app.merge(ops);
        if self.faults.enabled() {
            // Innermost, so that an injected delay counts in the latency metric.
            app = app.layer(middleware::from_fn_with_state(
                self.faults.clone(),
                crate::faults::inject,
            ));
        }
        app.layer(middleware::from_fn(json_errors))
            .layer(middleware::from_fn_with_state(gate, admit))
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
    let missing = if ops.health.is_draining() {
        vec![("service".to_owned(), "shutting_down".to_owned())]
    } else {
        ops.health.missing().await
    };
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
    // A closed set: invented methods must not make new series.
    let method = match *request.method() {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    };
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
/// Each connection must send its request head within the header timeout and
/// keep its body moving (no pause longer than the body timeout); at most
/// `max_connections` are open at once (more wait in the listen backlog).
///
/// # Errors
/// An I/O error from the listener.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
    limits: &HttpLimits,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use tower::ServiceExt;

    let connections = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    // Every connection, upgraded ones (WebSockets) included until they are
    // handed over, ends when `stopping` is cancelled, after its request.
    let stopping = tokio_util::sync::CancellationToken::new();
    let open = tokio_util::task::TaskTracker::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            () = &mut shutdown => break,
            permit = connections.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait, do not spin.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let body_timeout = limits.body_timeout;
        let router = app.clone();
        let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            let request = request.map(|b| Body::new(TimeoutBody::new(body_timeout, b)));
            router.clone().oneshot(request)
        });
        let connection = builder
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        let stop = stopping.clone();
        open.spawn(async move {
            let _permit = permit;
            let mut connection = std::pin::pin!(connection);
            let ended = tokio::select! {
                ended = connection.as_mut() => ended,
                () = stop.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = ended {
                tracing::debug!(error = %e, %peer, "connection ended with an error");
            }
        });
    }
    drop(listener);
    stopping.cancel();
    open.close();
    if tokio::time::timeout(grace, open.wait()).await.is_err() {
        tracing::warn!(
            grace_s = grace.as_secs_f64(),
            "in-flight requests outlived the grace period; stopping anyway"
        );
    }
    Ok(())
}

/// Sheds requests beyond the in-flight limit (503 `busy`), bounds each
/// request's whole time (408), and refuses new work once shutdown began.
async fn admit(State(gate): State<Gate>, request: Request, next: Next) -> Response {
    // Probes are never shed: an orchestrator must not restart a busy replica.
    let probe = matches!(request.uri().path(), "/healthz" | "/readyz" | "/metrics");
    let permit = gate.in_flight.clone().try_acquire_owned();
    if permit.is_err() && !probe {
        return busy(Duration::from_secs(1)).into_response();
    }
    match tokio::time::timeout(gate.request_timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            "the request took longer than this service allows (HENDU_HTTP_REQUEST_TIMEOUT_S)",
        )
        .into_response(),
    }
}

#[derive(Debug, Clone)]
struct Gate {
    in_flight: Arc<Semaphore>,
    request_timeout: Duration,
}

/// Gives every error answer the JSON shape, including axum's own (a bad
/// path or query parameter, a bad multipart boundary, 404, 405), which
/// come as plain text.
async fn json_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    // JSON errors of the APIs, and the web service's error pages, are theirs.
    let shaped = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json") || v.starts_with("text/html"));
    if shaped {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 4096)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let code = match status.as_u16() {
        404 => "not_found",
        405 => "method_not_allowed",
        408 => "request_timeout",
        413 => "payload_too_large",
        415 => "unsupported_media_type",
        422 => "invalid_input",
        429 => "too_many_requests",
        503 => "unavailable",
        _ if status.is_client_error() => "bad_request",
        _ => "internal",
    };
    let message = if text.is_empty() || status.is_server_error() {
        status.canonical_reason().unwrap_or("error").to_lowercase()
    } else {
        text
    };
    let mut out = ApiError::new(status, code, message).into_response();
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            out.headers_mut().insert(name, value.clone());
        }
    }
    out
}
