//! Fault injection for resilience experiments, off unless `HENDU_FAULTS=on`.
//!
//! An administrator creates a fault with `POST /v1/faults`; it acts until its
//! `ttl_s` runs out (or `DELETE /v1/faults/{id}`) and then reverts by itself:
//! delayed or aborted requests, a stalled worker loop, a slow or cut
//! dependency, burnt CPU, held memory, failed readiness. The kinds are named
//! as Chaos Mesh names them where they match (see `docs/faults.md`).
//!
//! - [`Faults`]: the registry every [`crate::Application`] holds (off: it
//!   holds nothing, and the request path pays one branch).
//! - HTTPChaos: [`inject`], a middleware on every route but the operational
//!   ones and this API.
//! - NetworkChaos: an in-process TCP proxy per server dependency; the store
//!   connects through it ([`Faults::route_storage`]), so a delay or a
//!   partition is seen by the drivers as it would be on the wire.
//! - WorkerChaos: [`crate::Health::stall`] and [`crate::Heartbeat::pace`].
//! - StressChaos: threads that burn a share of a core, or hold touched memory.
//! - PodChaos `pod-failure`: a readiness check that fails while the fault lives.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use axum::extract::{FromRef, MatchedPath, Path, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, post};
use axum::{Json, Router};
use hendu_storage::StorageConfig;
use hendu_storage::config::DbUrl;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::accounts::json_body;
use crate::auth::{Auth, Principal};
use crate::error::ApiError;
use crate::health::Health;
use crate::metrics::Metrics;
pub use crate::settings::{FaultSettings, MEMORY_BOUND_MB};
use crate::settings::{MIB, vars};

/// The longest a fault may live.
pub const MAX_TTL_S: u64 = 3600;
/// Faults alive at once, at most.
pub const MAX_LIVE: usize = 32;
/// The longest delay (and jitter) of a request or of a forwarded chunk.
pub const MAX_DELAY_MS: u64 = 60_000;
/// Paths no HTTP fault touches: probes, metrics, and this API (an
/// experiment must be able to end what it started).
const UNTOUCHED: [&str; 5] = [
    "/healthz",
    "/readyz",
    "/metrics",
    "/v1/faults",
    "/v1/faults/{id}",
];

/// A server dependency a NetworkChaos fault acts on.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    Mysql,
    Mongodb,
    Redis,
}

impl Target {
    const ALL: [Target; 3] = [Target::Mysql, Target::Mongodb, Target::Redis];

    fn default_port(self) -> u16 {
        match self {
            Target::Mysql => 3306,
            Target::Mongodb => 27017,
            Target::Redis => 6379,
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Target::Mysql => "mysql",
            Target::Mongodb => "mongodb",
            Target::Redis => "redis",
        })
    }
}

/// A fault to create. Which fields apply depends on `kind` and `action`
/// (or `stressor`); see `docs/faults.md`. Every fault needs `ttl_s`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FaultRequest {
    /// `HTTPChaos`, `StressChaos`, `NetworkChaos`, `WorkerChaos` or `PodChaos`.
    pub kind: String,
    /// HTTPChaos: `delay`, `abort`; NetworkChaos: `delay`, `partition`;
    /// WorkerChaos: `stall`; PodChaos: `pod-failure`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// StressChaos: `cpu` or `memory`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stressor: Option<String>,
    /// HTTPChaos: the route's pattern (`/v1/musics/{id}`); every route when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// HTTPChaos: only this method; every method when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// HTTPChaos: the share of matching requests affected, 0 to 100 (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<f64>,
    /// HTTPChaos and NetworkChaos `delay`: milliseconds added.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    /// With `delay_ms`: each delay is drawn from `delay_ms ± jitter_ms` (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter_ms: Option<u64>,
    /// HTTPChaos `abort`: the answer's status, 400 to 599 (default 503).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// StressChaos `cpu`: threads (default 1, at most the cores).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workers: Option<u32>,
    /// StressChaos `cpu`: the share of a core each thread burns, 1 to 100 (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load: Option<u32>,
    /// StressChaos `memory`: bytes held (touched, so resident).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
    /// StressChaos `memory`: grow at this many bytes a second (default: at once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_bytes_per_s: Option<u64>,
    /// NetworkChaos: `mysql`, `mongodb` or `redis`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<Target>,
    /// WorkerChaos: the worker loop's name (`GET /v1/faults` lists them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// Seconds until the fault reverts by itself, 1 to 3600.
    #[serde(default)]
    pub ttl_s: Option<u64>,
}

/// A live fault.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct FaultView {
    pub id: u64,
    /// The request, with its defaults filled in.
    #[serde(flatten)]
    pub spec: FaultRequest,
    /// RFC 3339.
    pub created: String,
    /// RFC 3339: when it reverts by itself.
    pub expires: String,
}

/// The live faults, and what faults can act on.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FaultList {
    pub faults: Vec<FaultView>,
    /// Names a WorkerChaos fault can stall.
    pub workers: Vec<String>,
    /// The dependencies, and whether NetworkChaos can act on each.
    pub targets: Vec<TargetView>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TargetView {
    pub target: Target,
    pub proxied: bool,
    /// Why not, when not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FaultLabels {
    kind: &'static str,
    action: &'static str,
}

const HTTP_DELAY: FaultLabels = FaultLabels {
    kind: "HTTPChaos",
    action: "delay",
};
const HTTP_ABORT: FaultLabels = FaultLabels {
    kind: "HTTPChaos",
    action: "abort",
};
const NET_DELAY: FaultLabels = FaultLabels {
    kind: "NetworkChaos",
    action: "delay",
};
const NET_PARTITION: FaultLabels = FaultLabels {
    kind: "NetworkChaos",
    action: "partition",
};

#[derive(Clone, Default)]
struct Meters {
    injected: Family<FaultLabels, Counter>,
    active: Family<FaultLabels, Gauge>,
    effects: Family<FaultLabels, Counter>,
}

impl Meters {
    fn effect(&self, labels: &FaultLabels) {
        self.effects.get_or_create(labels).inc();
    }
}

/// What a validated fault does.
#[derive(Debug, Clone, PartialEq)]
enum Effect {
    Http(HttpRule),
    Cpu {
        workers: u32,
        load: u32,
    },
    Memory {
        size: u64,
        rate: Option<u64>,
    },
    NetDelay {
        target: Target,
        delay: Duration,
        jitter: Duration,
    },
    NetPartition {
        target: Target,
    },
    Stall {
        worker: String,
    },
    PodFailure,
}

impl Effect {
    /// What the fault holds of the process: bytes of memory, busy threads.
    fn holds(&self) -> (u64, u32) {
        match *self {
            Effect::Memory { size, .. } => (size, 0),
            Effect::Cpu { workers, .. } => (0, workers),
            _ => (0, 0),
        }
    }

    fn labels(&self) -> FaultLabels {
        let (kind, action) = match self {
            Effect::Http(r) => match r.action {
                HttpAction::Delay { .. } => return HTTP_DELAY,
                HttpAction::Abort(_) => return HTTP_ABORT,
            },
            Effect::Cpu { .. } => ("StressChaos", "cpu"),
            Effect::Memory { .. } => ("StressChaos", "memory"),
            Effect::NetDelay { .. } => return NET_DELAY,
            Effect::NetPartition { .. } => return NET_PARTITION,
            Effect::Stall { .. } => ("WorkerChaos", "stall"),
            Effect::PodFailure => ("PodChaos", "pod-failure"),
        };
        FaultLabels { kind, action }
    }
}

#[derive(Debug, Clone, PartialEq)]
struct HttpRule {
    route: Option<String>,
    method: Option<Method>,
    share: f64,
    action: HttpAction,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum HttpAction {
    Delay { delay: Duration, jitter: Duration },
    Abort(StatusCode),
}

/// The fault registry of one application (clones share it).
#[derive(Clone, Default)]
pub struct Faults {
    /// `None`: fault injection is off.
    inner: Option<Arc<Inner>>,
}

impl std::fmt::Debug for Faults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Faults")
            .field("enabled", &self.enabled())
            .finish_non_exhaustive()
    }
}

struct Inner {
    settings: FaultSettings,
    meters: Meters,
    health: OnceLock<Health>,
    state: Mutex<Registry>,
    /// The HTTP rules, for the request path (read on every request while any lives).
    http: RwLock<Arc<[HttpRule]>>,
    http_live: AtomicBool,
    routes: Mutex<HashMap<Target, Route>>,
}

#[derive(Default)]
struct Registry {
    next: u64,
    live: BTreeMap<u64, Live>,
}

struct Live {
    view: FaultView,
    effect: Effect,
    /// Cancelled when the fault ends early (its expiry task stops waiting).
    ended: CancellationToken,
    /// Stops the fault's threads (CPU, memory) when dropped.
    _held: Option<StopOnDrop>,
}

enum Route {
    Proxied(watch::Sender<NetState>),
    Direct(String),
}

/// What a dependency's proxy does to the bytes it forwards.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct NetState {
    delay: Duration,
    jitter: Duration,
    partitioned: bool,
}

/// Sets its flag when dropped: the threads it was given stop.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

impl Faults {
    /// The registry `settings` ask for: off, or on and empty.
    pub fn new(settings: FaultSettings) -> Self {
        if !settings.enabled {
            return Self::default();
        }
        Self {
            inner: Some(Arc::new(Inner {
                settings,
                meters: Meters::default(),
                health: OnceLock::new(),
                state: Mutex::new(Registry::default()),
                http: RwLock::new(Arc::from(Vec::new())),
                http_live: AtomicBool::new(false),
                routes: Mutex::new(HashMap::new()),
            })),
        }
    }

    pub fn enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// Connects the registry to the application's health and metrics: the
    /// workers it can stall, the readiness it can fail, the counters.
    pub(crate) fn attach(&self, health: &Health, metrics: &Metrics) {
        let Some(inner) = &self.inner else {
            return;
        };
        if inner.health.set(health.clone()).is_err() {
            return;
        }
        metrics.register(
            "faults_injected",
            "Faults created, by kind and action",
            inner.meters.injected.clone(),
        );
        metrics.register(
            "faults_active",
            "Faults alive now, by kind and action",
            inner.meters.active.clone(),
        );
        metrics.register(
            "fault_effects",
            "What faults did: requests delayed or aborted, chunks delayed, connections cut or refused",
            inner.meters.effects.clone(),
        );
        // Weak: the health registry must not keep the fault registry alive.
        let faults = Arc::downgrade(inner);
        health.check(move || {
            let failing = faults.upgrade().is_some_and(|inner| {
                lock(&inner.state)
                    .live
                    .values()
                    .any(|l| l.effect == Effect::PodFailure)
            });
            Box::pin(async move {
                if failing {
                    vec![("faults".to_owned(), Some("fault".to_owned()))]
                } else {
                    Vec::new()
                }
            })
        });
    }

    /// Routes every server dependency of `config` through a proxy of this
    /// registry (when on), so that NetworkChaos faults act on it; the ones
    /// that cannot be (the embedded store, `mongodb+srv`, TLS checking the
    /// host name, ...) are left as they are, and faults on them refused.
    ///
    /// # Errors
    /// A proxy that cannot listen on the loopback interface.
    pub async fn route_storage(&self, config: &mut StorageConfig) -> std::io::Result<()> {
        let Some(inner) = &self.inner else {
            return Ok(());
        };
        let servers = match config {
            StorageConfig::Embedded { .. } => {
                for target in Target::ALL {
                    lock(&inner.routes).insert(
                        target,
                        Route::Direct("the embedded store has no server dependency".into()),
                    );
                }
                return Ok(());
            }
            StorageConfig::Servers(s) => s,
        };
        for (target, url) in [
            (Target::Mysql, &mut servers.mysql_url),
            (Target::Mongodb, &mut servers.mongo_url),
            (Target::Redis, &mut servers.redis_url),
        ] {
            if let Some(routed) = self.proxy_url(target, url.expose()).await? {
                *url = DbUrl::new(routed);
            }
        }
        Ok(())
    }

    /// Starts `target`'s proxy in front of the server `url` names and answers
    /// the URL that connects through it; `None` (and the reason recorded)
    /// when the URL cannot go through a proxy, or the registry is off.
    ///
    /// # Errors
    /// A proxy that cannot listen on the loopback interface.
    pub async fn proxy_url(&self, target: Target, url: &str) -> std::io::Result<Option<String>> {
        let Some(inner) = &self.inner else {
            return Ok(None);
        };
        let (mut routed, upstream) = match routable(target, url) {
            Ok(r) => r,
            Err(why) => {
                tracing::warn!(%target, reason = %why, "NetworkChaos cannot act on this dependency");
                lock(&inner.routes).insert(target, Route::Direct(why));
                return Ok(None);
            }
        };
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let local = listener.local_addr()?;
        let (state, seen) = watch::channel(NetState::default());
        tokio::spawn(proxy(
            listener,
            upstream.clone(),
            seen,
            inner.meters.clone(),
        ));
        // Both set on a URL that already has a host (`routable` checked).
        let _ = routed.set_host(Some("127.0.0.1"));
        let _ = routed.set_port(Some(local.port()));
        tracing::info!(%target, %upstream, proxy = %local, "dependency routed through a fault proxy");
        lock(&inner.routes).insert(target, Route::Proxied(state));
        Ok(Some(routed.to_string()))
    }

    /// Validates and starts a fault; it reverts by itself after its `ttl_s`.
    ///
    /// # Errors
    /// 400 naming what is wrong (stable codes: `unknown_kind`,
    /// `unknown_action`, `missing_field`, `field_not_applicable`,
    /// `out_of_range`, `unknown_worker`, `target_not_proxied`), 409
    /// `limit_reached` when live faults already hold what is allowed, 404
    /// when fault injection is off.
    pub fn create(&self, request: &FaultRequest) -> Result<FaultView, ApiError> {
        let inner = self.on()?;
        let workers = inner.health.get().map(Health::workers).unwrap_or_default();
        let (effect, spec) = validate(request, &workers)?;
        if let Effect::NetDelay { target, .. } | Effect::NetPartition { target } = &effect {
            match lock(&inner.routes).get(target) {
                Some(Route::Proxied(_)) => {}
                Some(Route::Direct(why)) => {
                    return Err(ApiError::bad_request(
                        "target_not_proxied",
                        format!("NetworkChaos cannot act on {target}: {why}"),
                    ));
                }
                None => {
                    return Err(ApiError::bad_request(
                        "target_not_proxied",
                        format!(
                            "NetworkChaos cannot act on {target}: the store was opened without a fault proxy"
                        ),
                    ));
                }
            }
        }
        let ttl = Duration::from_secs(spec.ttl_s.unwrap_or(1));
        let mut state = lock(&inner.state);
        inner.within_limits(&state, &effect)?;
        let held = match &effect {
            Effect::Cpu { workers, load } => Some(burn(*workers, *load)),
            Effect::Memory { size, rate } => Some(hold_memory(*size, *rate)?),
            _ => None,
        };
        state.next += 1;
        let id = state.next;
        let now = time::OffsetDateTime::now_utc();
        let view = FaultView {
            id,
            spec,
            created: rfc3339(now),
            expires: rfc3339(now + ttl),
        };
        let labels = effect.labels();
        let ended = CancellationToken::new();
        state.live.insert(
            id,
            Live {
                view: view.clone(),
                effect,
                ended: ended.clone(),
                _held: held,
            },
        );
        inner.apply(&state);
        drop(state);
        inner.meters.injected.get_or_create(&labels).inc();
        inner.meters.active.get_or_create(&labels).inc();
        let params = serde_json::to_string(&view.spec).unwrap_or_default();
        tracing::info!(fault = id, kind = labels.kind, action = labels.action, %params, ttl_s = ttl.as_secs(), "fault injected");
        let faults = self.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = ended.cancelled() => {}
                () = tokio::time::sleep(ttl) => { faults.end(id, "expired"); }
            }
        });
        Ok(view)
    }

    /// Ends a fault before its time; `None` if there is no such live fault.
    pub fn revert(&self, id: u64) -> Option<FaultView> {
        self.end(id, "reverted")
    }

    /// Ends every live fault (the application is stopping).
    pub fn clear(&self) {
        let Some(inner) = &self.inner else {
            return;
        };
        let ids: Vec<u64> = lock(&inner.state).live.keys().copied().collect();
        for id in ids {
            self.end(id, "stopped");
        }
    }

    /// The live faults, oldest first.
    pub fn list(&self) -> Vec<FaultView> {
        self.inner.as_ref().map_or_else(Vec::new, |inner| {
            lock(&inner.state)
                .live
                .values()
                .map(|l| l.view.clone())
                .collect()
        })
    }

    fn end(&self, id: u64, why: &'static str) -> Option<FaultView> {
        let inner = self.inner.as_ref()?;
        let mut state = lock(&inner.state);
        let live = state.live.remove(&id)?;
        inner.apply(&state);
        drop(state);
        live.ended.cancel();
        let labels = live.effect.labels();
        inner.meters.active.get_or_create(&labels).dec();
        tracing::info!(
            fault = id,
            kind = labels.kind,
            action = labels.action,
            reason = why,
            "fault ended"
        );
        // Dropping `live` stops its threads and frees its memory.
        Some(live.view)
    }

    fn on(&self) -> Result<&Inner, ApiError> {
        self.inner
            .as_deref()
            .ok_or_else(|| ApiError::not_found("fault injection is off (HENDU_FAULTS)"))
    }

    fn targets(&self) -> Vec<TargetView> {
        let Some(inner) = &self.inner else {
            return Vec::new();
        };
        let routes = lock(&inner.routes);
        Target::ALL
            .iter()
            .map(|&target| {
                let reason = match routes.get(&target) {
                    Some(Route::Proxied(_)) => None,
                    Some(Route::Direct(why)) => Some(why.clone()),
                    None => Some("the store was opened without a fault proxy".to_owned()),
                };
                TargetView {
                    target,
                    proxied: reason.is_none(),
                    reason,
                }
            })
            .collect()
    }
}

impl Inner {
    fn within_limits(&self, state: &Registry, effect: &Effect) -> Result<(), ApiError> {
        let refuse = |message: String| {
            Err(ApiError::new(
                StatusCode::CONFLICT,
                "limit_reached",
                message,
            ))
        };
        if state.live.len() >= MAX_LIVE {
            return refuse(format!(
                "{MAX_LIVE} faults are live, the most there may be; end one first"
            ));
        }
        let (memory, threads) = state
            .live
            .values()
            .map(|l| l.effect.holds())
            .fold((0, 0), |(m, t), (more_m, more_t)| (m + more_m, t + more_t));
        let (more_memory, more_threads) = effect.holds();
        if more_memory > 0 && memory + more_memory > self.settings.max_memory {
            return refuse(format!(
                "live memory faults would hold {} MiB, more than {} allows ({} MiB)",
                (memory + more_memory).div_ceil(MIB),
                vars::FAULTS_MAX_MEMORY_MB,
                self.settings.max_memory / MIB
            ));
        }
        let cores = cores();
        if more_threads > 0 && threads + more_threads > cores {
            return refuse(format!(
                "live CPU faults would run {} threads, more than the {cores} cores",
                threads + more_threads
            ));
        }
        Ok(())
    }

    /// Makes the effects match the live faults (called with the state locked,
    /// after every change, so that concurrent changes apply in order).
    fn apply(&self, state: &Registry) {
        let rules: Vec<HttpRule> = state
            .live
            .values()
            .filter_map(|l| match &l.effect {
                Effect::Http(rule) => Some(rule.clone()),
                _ => None,
            })
            .collect();
        self.http_live.store(!rules.is_empty(), Ordering::Release);
        *self.http.write().unwrap_or_else(|e| e.into_inner()) = Arc::from(rules);

        for (target, route) in lock(&self.routes).iter() {
            let Route::Proxied(net) = route else {
                continue;
            };
            let mut wanted = NetState::default();
            for live in state.live.values() {
                match live.effect {
                    Effect::NetDelay {
                        target: t,
                        delay,
                        jitter,
                    } if t == *target => {
                        wanted.delay += delay;
                        wanted.jitter += jitter;
                    }
                    Effect::NetPartition { target: t } if t == *target => {
                        wanted.partitioned = true;
                    }
                    _ => {}
                }
            }
            net.send_if_modified(|now| std::mem::replace(now, wanted) != wanted);
        }

        if let Some(health) = self.health.get() {
            let stalled: Vec<&str> = state
                .live
                .values()
                .filter_map(|l| match &l.effect {
                    Effect::Stall { worker } => Some(worker.as_str()),
                    _ => None,
                })
                .collect();
            health.stall(&stalled);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn cores() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as u32)
}

/// A uniform draw in [0, 1), cheap and good enough to pick a share of requests.
fn random() -> f64 {
    static STATE: OnceLock<AtomicU64> = OnceLock::new();
    let state = STATE.get_or_init(|| {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0x9E37_79B9, |d| d.as_nanos() as u64);
        AtomicU64::new(seed)
    });
    // splitmix64
    let mut z = state
        .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
        .wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

/// `delay ± jitter`, uniformly, never below zero.
fn jittered(delay: Duration, jitter: Duration) -> Duration {
    if jitter.is_zero() {
        return delay;
    }
    let offset = (random() * 2.0 - 1.0) * jitter.as_secs_f64();
    Duration::from_secs_f64((delay.as_secs_f64() + offset).max(0.0))
}

// --- validation -----------------------------------------------------------

const KINDS: &str = "HTTPChaos, StressChaos, NetworkChaos, WorkerChaos, PodChaos";

fn invalid(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::bad_request(code, message)
}

fn required<T: Clone>(value: &Option<T>, field: &str, what: &str) -> Result<T, ApiError> {
    value
        .clone()
        .ok_or_else(|| invalid("missing_field", format!("{what} needs `{field}`")))
}

fn range<T: PartialOrd + std::fmt::Display>(
    value: T,
    field: &str,
    low: T,
    high: T,
) -> Result<T, ApiError> {
    if value < low || value > high {
        return Err(invalid(
            "out_of_range",
            format!("`{field}` must be from {low} to {high}, not {value}"),
        ));
    }
    Ok(value)
}

/// Checks `request` whole and answers what it does, with the request's
/// defaults filled in.
fn validate(
    request: &FaultRequest,
    workers: &[String],
) -> Result<(Effect, FaultRequest), ApiError> {
    let r = request;
    let action = r.action.as_deref().unwrap_or("");
    let (what, allowed): (String, &[&str]) = match (r.kind.as_str(), action) {
        ("HTTPChaos", "delay") => (
            "HTTPChaos delay".into(),
            &[
                "action",
                "route",
                "method",
                "percent",
                "delay_ms",
                "jitter_ms",
            ],
        ),
        ("HTTPChaos", "abort") => (
            "HTTPChaos abort".into(),
            &["action", "route", "method", "percent", "status"],
        ),
        ("StressChaos", _) => match r.stressor.as_deref() {
            Some("cpu") => ("StressChaos cpu".into(), &["stressor", "workers", "load"]),
            Some("memory") => (
                "StressChaos memory".into(),
                &["stressor", "size_bytes", "rate_bytes_per_s"],
            ),
            Some(other) => {
                return Err(invalid(
                    "unknown_action",
                    format!("StressChaos has the stressors cpu and memory, not {other:?}"),
                ));
            }
            None => {
                return Err(invalid(
                    "missing_field",
                    "StressChaos needs `stressor` (cpu or memory)",
                ));
            }
        },
        ("NetworkChaos", "delay") => (
            "NetworkChaos delay".into(),
            &["action", "target", "delay_ms", "jitter_ms"],
        ),
        ("NetworkChaos", "partition") => ("NetworkChaos partition".into(), &["action", "target"]),
        ("WorkerChaos", "stall") => ("WorkerChaos stall".into(), &["action", "worker"]),
        ("PodChaos", "pod-failure") => ("PodChaos pod-failure".into(), &["action"]),
        (kind @ ("HTTPChaos" | "NetworkChaos" | "WorkerChaos" | "PodChaos"), _) => {
            let actions = match kind {
                "HTTPChaos" => "delay, abort",
                "NetworkChaos" => "delay, partition",
                "WorkerChaos" => "stall",
                _ => "pod-failure",
            };
            return Err(if r.action.is_none() {
                invalid(
                    "missing_field",
                    format!("{kind} needs `action` ({actions})"),
                )
            } else {
                invalid(
                    "unknown_action",
                    format!("{kind} has the actions {actions}, not {action:?}"),
                )
            });
        }
        (kind, _) => {
            return Err(invalid(
                "unknown_kind",
                format!("the kinds are {KINDS}, not {kind:?}"),
            ));
        }
    };
    let given = [
        ("action", r.action.is_some()),
        ("stressor", r.stressor.is_some()),
        ("route", r.route.is_some()),
        ("method", r.method.is_some()),
        ("percent", r.percent.is_some()),
        ("delay_ms", r.delay_ms.is_some()),
        ("jitter_ms", r.jitter_ms.is_some()),
        ("status", r.status.is_some()),
        ("workers", r.workers.is_some()),
        ("load", r.load.is_some()),
        ("size_bytes", r.size_bytes.is_some()),
        ("rate_bytes_per_s", r.rate_bytes_per_s.is_some()),
        ("target", r.target.is_some()),
        ("worker", r.worker.is_some()),
    ];
    if let Some((field, _)) = given.iter().find(|(f, set)| *set && !allowed.contains(f)) {
        return Err(invalid(
            "field_not_applicable",
            format!("`{field}` does not apply to {what}"),
        ));
    }
    let ttl = range(required(&r.ttl_s, "ttl_s", &what)?, "ttl_s", 1, MAX_TTL_S)?;
    let mut spec = FaultRequest {
        ttl_s: Some(ttl),
        ..r.clone()
    };
    let delay = |spec: &mut FaultRequest| -> Result<(Duration, Duration), ApiError> {
        let delay = range(
            required(&r.delay_ms, "delay_ms", &what)?,
            "delay_ms",
            0,
            MAX_DELAY_MS,
        )?;
        let jitter = range(r.jitter_ms.unwrap_or(0), "jitter_ms", 0, MAX_DELAY_MS)?;
        spec.jitter_ms = Some(jitter);
        Ok((Duration::from_millis(delay), Duration::from_millis(jitter)))
    };
    let effect = match (r.kind.as_str(), action) {
        ("HTTPChaos", _) => {
            let route = match &r.route {
                Some(route) if !route.starts_with('/') || route.len() > 256 => {
                    return Err(invalid(
                        "out_of_range",
                        "`route` is a route's pattern, such as /v1/musics/{id} (at most 256 characters)",
                    ));
                }
                Some(route) if UNTOUCHED.contains(&route.as_str()) => {
                    return Err(invalid(
                        "out_of_range",
                        format!(
                            "{route} is never faulted: probes, metrics and this API stay as they are"
                        ),
                    ));
                }
                other => other.clone(),
            };
            let method = match r.method.as_deref() {
                None => None,
                Some(m @ ("GET" | "POST" | "PUT" | "PATCH" | "DELETE" | "HEAD" | "OPTIONS")) => {
                    Method::from_bytes(m.as_bytes()).ok()
                }
                Some(other) => {
                    return Err(invalid(
                        "out_of_range",
                        format!(
                            "`method` is one of GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS, not {other:?}"
                        ),
                    ));
                }
            };
            let percent = r.percent.unwrap_or(100.0);
            if !(0.0..=100.0).contains(&percent) {
                return Err(invalid(
                    "out_of_range",
                    format!("`percent` must be from 0 to 100, not {percent}"),
                ));
            }
            spec.percent = Some(percent);
            let action = if action == "delay" {
                let (delay, jitter) = delay(&mut spec)?;
                HttpAction::Delay { delay, jitter }
            } else {
                let status = range(r.status.unwrap_or(503), "status", 400, 599)?;
                spec.status = Some(status);
                HttpAction::Abort(
                    StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
                )
            };
            Effect::Http(HttpRule {
                route,
                method,
                share: percent / 100.0,
                action,
            })
        }
        ("StressChaos", _) if r.stressor.as_deref() == Some("cpu") => {
            let workers = range(r.workers.unwrap_or(1), "workers", 1, cores())?;
            let load = range(r.load.unwrap_or(100), "load", 1, 100)?;
            spec.workers = Some(workers);
            spec.load = Some(load);
            Effect::Cpu { workers, load }
        }
        ("StressChaos", _) => {
            let size = range(
                required(&r.size_bytes, "size_bytes", &what)?,
                "size_bytes",
                1,
                MEMORY_BOUND_MB * MIB,
            )?;
            let rate = match r.rate_bytes_per_s {
                Some(rate) => Some(range(
                    rate,
                    "rate_bytes_per_s",
                    4096,
                    MEMORY_BOUND_MB * MIB,
                )?),
                None => None,
            };
            Effect::Memory { size, rate }
        }
        ("NetworkChaos", _) => {
            let target = required(&r.target, "target", &what)?;
            if action == "delay" {
                let (delay, jitter) = delay(&mut spec)?;
                Effect::NetDelay {
                    target,
                    delay,
                    jitter,
                }
            } else {
                Effect::NetPartition { target }
            }
        }
        ("WorkerChaos", _) => {
            let worker = required(&r.worker, "worker", &what)?;
            if !workers.contains(&worker) {
                return Err(invalid(
                    "unknown_worker",
                    format!(
                        "this service has no worker {worker:?}; it has: {}",
                        if workers.is_empty() {
                            "none".to_owned()
                        } else {
                            workers.join(", ")
                        }
                    ),
                ));
            }
            Effect::Stall { worker }
        }
        _ => Effect::PodFailure,
    };
    Ok((effect, spec))
}

// --- HTTPChaos ---------------------------------------------------------------

/// The HTTPChaos middleware: delays or answers in place of the route, for
/// the share of matching requests each live rule names. Installed only when
/// fault injection is on; with no live HTTP fault it costs one atomic load.
pub async fn inject(State(faults): State<Faults>, request: Request, next: Next) -> Response {
    let Some(inner) = &faults.inner else {
        return next.run(request).await;
    };
    if !inner.http_live.load(Ordering::Acquire) {
        return next.run(request).await;
    }
    let rules = inner.http.read().unwrap_or_else(|e| e.into_inner()).clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let Some(route) = route.filter(|r| !UNTOUCHED.contains(&r.as_str())) else {
        return next.run(request).await;
    };
    let mut delay = Duration::ZERO;
    let mut abort = None;
    for rule in rules.iter() {
        let applies = rule.route.as_ref().is_none_or(|r| *r == route)
            && rule.method.as_ref().is_none_or(|m| m == request.method());
        if !applies || random() >= rule.share {
            continue;
        }
        match rule.action {
            HttpAction::Delay { delay: d, jitter } => {
                delay += jittered(d, jitter);
                inner.meters.effect(&HTTP_DELAY);
            }
            HttpAction::Abort(status) => {
                if abort.is_none() {
                    abort = Some(status);
                    inner.meters.effect(&HTTP_ABORT);
                }
            }
        }
    }
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if let Some(status) = abort {
        return ApiError::new(
            status,
            "fault_injected",
            "this answer was injected by an HTTPChaos fault (see GET /v1/faults)",
        )
        .into_response();
    }
    next.run(request).await
}

// --- StressChaos -------------------------------------------------------------

/// `workers` threads, each busy `load` percent of every 100 ms, until dropped.
fn burn(workers: u32, load: u32) -> StopOnDrop {
    let stop = Arc::new(AtomicBool::new(false));
    const PERIOD: Duration = Duration::from_millis(100);
    let busy = PERIOD * load / 100;
    for n in 0..workers {
        let stop = stop.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("fault-cpu-{n}"))
            .spawn(move || {
                let mut spin: u64 = 0;
                while !stop.load(Ordering::Acquire) {
                    let started = Instant::now();
                    while started.elapsed() < busy {
                        spin = std::hint::black_box(spin.wrapping_mul(31).wrapping_add(7));
                    }
                    std::thread::sleep(PERIOD.saturating_sub(started.elapsed()));
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start a CPU fault's thread");
        }
    }
    StopOnDrop(stop)
}

/// `size` bytes, reserved now (so a refusal is an answer, not an abort) and
/// written to (so they are resident) at once or at `rate` bytes a second;
/// freed when dropped.
fn hold_memory(size: u64, rate: Option<u64>) -> Result<StopOnDrop, ApiError> {
    let size = usize::try_from(size).unwrap_or(usize::MAX);
    let mut memory: Vec<u8> = Vec::new();
    memory.try_reserve_exact(size).map_err(|_| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "cannot_allocate",
            "the memory could not be reserved",
        )
    })?;
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = stop.clone();
    const STEP: Duration = Duration::from_millis(100);
    let step = rate.map_or(size, |r| {
        usize::try_from(r / 10).unwrap_or(usize::MAX).max(4096)
    });
    let spawned = std::thread::Builder::new()
        .name("fault-memory".into())
        .spawn(move || {
            while !stopped.load(Ordering::Acquire) {
                if memory.len() < size {
                    // Non-zero bytes: zeroed pages could be left unmapped.
                    let next = (memory.len() + step).min(size);
                    memory.resize(next, 0xA5);
                }
                std::thread::sleep(STEP);
            }
            drop(memory);
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start a memory fault's thread");
    }
    Ok(StopOnDrop(stop))
}

// --- NetworkChaos --------------------------------------------------------------

/// The URL to rewrite and the `host:port` to forward to, or why `url`
/// cannot go through a proxy.
fn routable(target: Target, url: &str) -> Result<(url::Url, String), String> {
    let parsed = url::Url::parse(url).map_err(|_| {
        "its URL has more than one host, or cannot be read; only one host can be proxied".to_owned()
    })?;
    let query = |key: &str| {
        parsed
            .query_pairs()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.to_ascii_lowercase())
    };
    let refused = match (target, parsed.scheme()) {
        (Target::Mysql, "mysql" | "mariadb") => matches!(
            query("ssl-mode").as_deref(),
            Some("verify_ca" | "verify_identity")
        )
        .then_some("its TLS checks the server's name, which a proxy on 127.0.0.1 cannot pass"),
        (Target::Mongodb, "mongodb") => {
            if query("replicaSet").is_some() {
                Some("a replica set's members are found by the driver and would bypass the proxy")
            } else if matches!(query("tls").as_deref(), Some("true"))
                || matches!(query("ssl").as_deref(), Some("true"))
            {
                Some("its TLS checks the server's name, which a proxy on 127.0.0.1 cannot pass")
            } else if query("directConnection").is_some() {
                Some("it sets directConnection, which the proxy must set")
            } else {
                None
            }
        }
        (Target::Mongodb, "mongodb+srv") => {
            Some("mongodb+srv names its servers in DNS, where the proxy cannot stand")
        }
        (Target::Redis, "redis") => None,
        (Target::Redis, "rediss") => {
            Some("its TLS checks the server's name, which a proxy on 127.0.0.1 cannot pass")
        }
        _ => Some("its URL's scheme is not one the proxy knows"),
    };
    if let Some(why) = refused {
        return Err(why.to_owned());
    }
    let host = parsed
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| "its URL names no host".to_owned())?;
    let upstream = format!("{host}:{}", parsed.port().unwrap_or(target.default_port()));
    let mut routed = parsed.clone();
    if target == Target::Mongodb {
        // The driver must talk to the proxy, not to the members a server names.
        routed
            .query_pairs_mut()
            .append_pair("directConnection", "true");
    }
    Ok((routed, upstream))
}

/// Accepts connections for a dependency and forwards them to `upstream`,
/// doing what `state` says, until the registry's sender is gone.
async fn proxy(
    listener: TcpListener,
    upstream: String,
    state: watch::Receiver<NetState>,
    meters: Meters,
) {
    let mut gone = state.clone();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            changed = gone.changed() => match changed {
                Ok(()) => continue,
                Err(_) => return,
            },
        };
        let (client, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "the fault proxy cannot accept");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if state.borrow().partitioned {
            meters.effect(&NET_PARTITION);
            drop(client);
            continue;
        }
        tokio::spawn(relay(
            client,
            peer,
            upstream.clone(),
            state.clone(),
            meters.clone(),
        ));
    }
}

async fn relay(
    client: TcpStream,
    peer: SocketAddr,
    upstream: String,
    mut state: watch::Receiver<NetState>,
    meters: Meters,
) {
    let server = match TcpStream::connect(&upstream).await {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(error = %e, %upstream, "the fault proxy cannot reach the server");
            return;
        }
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_in, client_out) = client.into_split();
    let (server_in, server_out) = server.into_split();
    let forward = futures_util::future::join(
        pump(client_in, server_out, state.clone(), meters.clone()),
        pump(server_in, client_out, state.clone(), meters.clone()),
    );
    let partitioned = async {
        if state.wait_for(|s| s.partitioned).await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        _ = forward => {}
        () = partitioned => {
            meters.effect(&NET_PARTITION);
            tracing::debug!(%peer, %upstream, "connection cut by a partition");
        }
    }
}

/// One direction of a connection, each chunk held as long as `state` says.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    state: watch::Receiver<NetState>,
    meters: Meters,
) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let now = *state.borrow();
        if !now.delay.is_zero() || !now.jitter.is_zero() {
            tokio::time::sleep(jittered(now.delay, now.jitter)).await;
            meters.effect(&NET_DELAY);
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

// --- the API -------------------------------------------------------------------

/// What the fault routes need.
#[derive(Debug, Clone)]
pub struct FaultsState {
    pub faults: Faults,
    pub auth: Auth,
}

impl FromRef<FaultsState> for Auth {
    fn from_ref(state: &FaultsState) -> Self {
        state.auth.clone()
    }
}

/// `POST`/`GET /v1/faults`, `DELETE /v1/faults/{id}` (add only when on).
pub fn router(state: FaultsState) -> Router {
    Router::new()
        .route("/v1/faults", post(create_fault).get(list_faults))
        .route("/v1/faults/{id}", delete(revert_fault))
        .with_state(state)
}

/// The fault API's part of the OpenAPI document (added only when on).
#[derive(Debug, utoipa::OpenApi)]
#[openapi(
    paths(create_fault, list_faults, revert_fault),
    components(schemas(FaultRequest, FaultView, FaultList, TargetView, Target)),
    tags((name = "faults", description = "Fault injection for resilience experiments (HENDU_FAULTS=on)"))
)]
pub struct Api;

const WHAT: &str = "inject faults";

#[utoipa::path(post, path = "/v1/faults", operation_id = "create_fault", tag = "faults", request_body = FaultRequest,
    security(("token" = [])),
    responses((status = 201, description = "The fault, acting until it expires", body = FaultView),
        (status = 400, description = "A fault that is not valid, named (stable code)", body = crate::openapi::ErrorBody),
        (status = 401, description = "No live token", body = crate::openapi::ErrorBody),
        (status = 403, description = "Not an administrator", body = crate::openapi::ErrorBody),
        (status = 409, description = "Live faults already hold what is allowed", body = crate::openapi::ErrorBody)))]
async fn create_fault(
    State(state): State<FaultsState>,
    principal: Principal,
    body: bytes::Bytes,
) -> Result<Response, ApiError> {
    principal.require_admin(WHAT)?;
    let request: FaultRequest = json_body(&body)?;
    let view = state.faults.create(&request)?;
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

#[utoipa::path(get, path = "/v1/faults", operation_id = "list_faults", tag = "faults",
    security(("token" = [])),
    responses((status = 200, description = "The live faults, the workers and the dependencies they can act on", body = FaultList),
        (status = 401, description = "No live token", body = crate::openapi::ErrorBody),
        (status = 403, description = "Not an administrator", body = crate::openapi::ErrorBody)))]
async fn list_faults(
    State(state): State<FaultsState>,
    principal: Principal,
) -> Result<Json<FaultList>, ApiError> {
    principal.require_admin(WHAT)?;
    let faults = &state.faults;
    let inner = faults.on()?;
    Ok(Json(FaultList {
        faults: faults.list(),
        workers: inner.health.get().map(Health::workers).unwrap_or_default(),
        targets: faults.targets(),
    }))
}

#[utoipa::path(delete, path = "/v1/faults/{id}", operation_id = "revert_fault", tag = "faults",
    params(("id" = u64, Path, description = "The fault's id")), security(("token" = [])),
    responses((status = 200, description = "The fault, now ended", body = FaultView),
        (status = 401, description = "No live token", body = crate::openapi::ErrorBody),
        (status = 403, description = "Not an administrator", body = crate::openapi::ErrorBody),
        (status = 404, description = "No such live fault", body = crate::openapi::ErrorBody)))]
async fn revert_fault(
    State(state): State<FaultsState>,
    principal: Principal,
    Path(id): Path<u64>,
) -> Result<Json<FaultView>, ApiError> {
    principal.require_admin(WHAT)?;
    state
        .faults
        .revert(id)
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no live fault has id {id}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on() -> Faults {
        Faults::new(FaultSettings {
            enabled: true,
            max_memory: 64 * MIB,
        })
    }

    fn request(json: serde_json::Value) -> FaultRequest {
        serde_json::from_value(json).unwrap()
    }

    fn refused(json: serde_json::Value) -> &'static str {
        let faults = on();
        let health = Health::default();
        health.worker("consumer", Duration::from_secs(1));
        faults.attach(&health, &Metrics::new("test"));
        faults.create(&request(json)).unwrap_err().code
    }

    #[tokio::test]
    async fn invalid_faults_are_refused_with_a_stable_code() {
        use serde_json::json;
        let cases = [
            (
                json!({"kind": "PodChaos", "action": "pod-failure"}),
                "missing_field",
            ),
            (
                json!({"kind": "PodChaos", "action": "pod-failure", "ttl_s": 0}),
                "out_of_range",
            ),
            (
                json!({"kind": "PodChaos", "action": "pod-failure", "ttl_s": 3601}),
                "out_of_range",
            ),
            (
                json!({"kind": "PodChaos", "action": "pod-kill", "ttl_s": 5}),
                "unknown_action",
            ),
            (json!({"kind": "IOChaos", "ttl_s": 5}), "unknown_kind"),
            (json!({"kind": "HTTPChaos", "ttl_s": 5}), "missing_field"),
            (
                json!({"kind": "HTTPChaos", "action": "delay", "ttl_s": 5}),
                "missing_field",
            ),
            (
                json!({"kind": "HTTPChaos", "action": "delay", "delay_ms": 60_001, "ttl_s": 5}),
                "out_of_range",
            ),
            (
                json!({"kind": "HTTPChaos", "action": "delay", "delay_ms": 5, "percent": 101, "ttl_s": 5}),
                "out_of_range",
            ),
            (
                json!({"kind": "HTTPChaos", "action": "delay", "delay_ms": 5, "percent": -1, "ttl_s": 5}),
                "out_of_range",
            ),
            (
                json!({"kind": "HTTPChaos", "action": "delay", "delay_ms": 5, "status": 500, "ttl_s": 5}),
                "field_not_applicable",
            ),
            (
                json!({"kind": "HTTPChaos", "action": "abort", "status": 200, "ttl_s": 5}),
                "out_of_range",
            ),
            (
                json!({"kind": "HTTPChaos", "action": "abort", "route": "/healthz", "ttl_s": 5}),
                "out_of_range",
            ),
            (
                json!({"kind": "HTTPChaos", "action": "abort", "route": "v1/musics", "ttl_s": 5}),
                "out_of_range",
            ),
            (
                json!({"kind": "HTTPChaos", "action": "abort", "method": "BREW", "ttl_s": 5}),
                "out_of_range",
            ),
            (
                json!({"kind": "StressChaos", "stressor": "disk", "ttl_s": 5}),
                "unknown_action",
            ),
            (
                json!({"kind": "StressChaos", "stressor": "cpu", "load": 0, "ttl_s": 5}),
                "out_of_range",
            ),
            (
                json!({"kind": "StressChaos", "stressor": "cpu", "workers": 10_000, "ttl_s": 5}),
                "out_of_range",
            ),
            (
                json!({"kind": "StressChaos", "stressor": "memory", "ttl_s": 5}),
                "missing_field",
            ),
            (
                json!({"kind": "StressChaos", "stressor": "memory", "size_bytes": 65 * MIB, "ttl_s": 5}),
                "limit_reached",
            ),
            (
                json!({"kind": "StressChaos", "stressor": "memory", "size_bytes": 5 * 1024 * MIB, "ttl_s": 5}),
                "out_of_range",
            ),
            (
                json!({"kind": "NetworkChaos", "action": "partition", "ttl_s": 5}),
                "missing_field",
            ),
            (
                json!({"kind": "NetworkChaos", "action": "partition", "target": "redis", "ttl_s": 5}),
                "target_not_proxied",
            ),
            (
                json!({"kind": "WorkerChaos", "action": "stall", "worker": "nobody", "ttl_s": 5}),
                "unknown_worker",
            ),
            (
                json!({"kind": "WorkerChaos", "action": "stall", "worker": "consumer", "target": "redis", "ttl_s": 5}),
                "field_not_applicable",
            ),
        ];
        for (json, code) in cases {
            assert_eq!(refused(json.clone()), code, "{json}");
        }
        // Unknown fields and wrong types are refused when the body is read.
        assert!(
            serde_json::from_value::<FaultRequest>(json!({"kind": "PodChaos", "ttl": 5})).is_err()
        );
        assert!(
            serde_json::from_value::<FaultRequest>(
                json!({"kind": "NetworkChaos", "target": "postgres"})
            )
            .is_err()
        );
    }

    #[tokio::test]
    async fn defaults_are_filled_in_and_the_count_of_live_faults_is_bounded() {
        let faults = on();
        let view = faults
            .create(&request(serde_json::json!({
                "kind": "HTTPChaos", "action": "delay", "delay_ms": 10, "ttl_s": 60
            })))
            .unwrap();
        assert_eq!(view.spec.percent, Some(100.0));
        assert_eq!(view.spec.jitter_ms, Some(0));
        for _ in 1..MAX_LIVE {
            faults
                .create(&request(
                    serde_json::json!({"kind": "PodChaos", "action": "pod-failure", "ttl_s": 60}),
                ))
                .unwrap();
        }
        let over = faults
            .create(&request(
                serde_json::json!({"kind": "PodChaos", "action": "pod-failure", "ttl_s": 60}),
            ))
            .unwrap_err();
        assert_eq!(
            (over.status, over.code),
            (StatusCode::CONFLICT, "limit_reached")
        );
        faults.clear();
        assert!(faults.list().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_fault_reverts_by_itself_at_its_time_to_live() {
        let faults = on();
        let health = Health::default();
        let beat = health.worker("consumer", Duration::from_secs(600));
        faults.attach(&health, &Metrics::new("test"));
        faults
            .create(&request(
                serde_json::json!({"kind": "PodChaos", "action": "pod-failure", "ttl_s": 30}),
            ))
            .unwrap();
        faults
            .create(&request(serde_json::json!({"kind": "WorkerChaos", "action": "stall", "worker": "consumer", "ttl_s": 60})))
            .unwrap();
        assert_eq!(
            health.missing().await,
            vec![("faults".to_owned(), "fault".to_owned())]
        );
        let pace = tokio::spawn(async move { beat.pace().await });

        tokio::time::sleep(Duration::from_secs(29)).await;
        assert_eq!(faults.list().len(), 2);
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(faults.list().len(), 1, "the pod failure outlived its 30 s");
        assert!(health.missing().await.is_empty());
        assert!(!pace.is_finished());

        tokio::time::sleep(Duration::from_secs(30)).await;
        assert!(faults.list().is_empty());
        pace.await.unwrap();
    }

    #[tokio::test]
    async fn off_creates_nothing() {
        let faults = Faults::default();
        let e = faults
            .create(&request(
                serde_json::json!({"kind": "PodChaos", "action": "pod-failure", "ttl_s": 5}),
            ))
            .unwrap_err();
        assert_eq!(e.status, StatusCode::NOT_FOUND);
        let mut config = StorageConfig::Embedded {
            path: "x.db".into(),
            queue: hendu_storage::QueueConfig::default(),
        };
        faults.route_storage(&mut config).await.unwrap();
    }

    #[test]
    fn urls_are_routed_only_where_a_proxy_can_stand() {
        let (url, upstream) = routable(Target::Mysql, "mysql://u:p@db.example:3307/hendu").unwrap();
        assert_eq!(upstream, "db.example:3307");
        assert_eq!(url.password(), Some("p"));
        let (url, upstream) = routable(Target::Mongodb, "mongodb://mongo/hendu?appName=x").unwrap();
        assert_eq!(upstream, "mongo:27017");
        assert!(url.as_str().ends_with("directConnection=true"), "{url}");
        assert_eq!(
            routable(Target::Redis, "redis://[::1]").unwrap().1,
            "[::1]:6379"
        );
        for (target, url) in [
            (Target::Mongodb, "mongodb+srv://cluster.example/hendu"),
            (Target::Mongodb, "mongodb://a:1,b:2/hendu"),
            (Target::Mongodb, "mongodb://a/hendu?replicaSet=rs0"),
            (Target::Mongodb, "mongodb://a/hendu?tls=true"),
            (Target::Redis, "rediss://cache.example"),
            (Target::Mysql, "mysql://db/hendu?ssl-mode=VERIFY_IDENTITY"),
        ] {
            assert!(routable(target, url).is_err(), "{url}");
        }
    }

    #[test]
    fn the_setting_is_on_or_off_and_memory_is_bounded() {
        let get = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        assert!(!FaultSettings::from_lookup(get(&[])).unwrap().enabled);
        assert!(
            FaultSettings::from_lookup(get(&[("HENDU_FAULTS", "on")]))
                .unwrap()
                .enabled
        );
        assert!(FaultSettings::from_lookup(get(&[("HENDU_FAULTS", "yes")])).is_err());
        assert!(
            FaultSettings::from_lookup(get(&[("HENDU_FAULTS_MAX_MEMORY_MB", "4097")])).is_err()
        );
        let s = FaultSettings::from_lookup(get(&[("HENDU_FAULTS_MAX_MEMORY_MB", "16")])).unwrap();
        assert_eq!(s.max_memory, 16 * MIB);
    }

    #[test]
    fn jitter_stays_within_its_bounds() {
        let (d, j) = (Duration::from_millis(100), Duration::from_millis(30));
        let draws: Vec<Duration> = (0..2000).map(|_| jittered(d, j)).collect();
        assert!(draws.iter().all(|x| *x >= d - j && *x <= d + j));
        let mean = draws.iter().map(Duration::as_secs_f64).sum::<f64>() / 2000.0;
        assert!((mean - 0.1).abs() < 0.005, "mean {mean}");
        assert_eq!(
            jittered(Duration::from_millis(5), Duration::from_millis(50)).min(Duration::ZERO),
            Duration::ZERO
        );
    }
}
