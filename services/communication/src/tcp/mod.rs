//! The sensors' TCP entry: protocol v1 (the paper's: a control port, then
//! one upload on a data port) and v2 (one framed connection), specified in
//! `docs/sensor-protocol.md` and spoken through [`hendu_sensor_protocol`].
//!
//! Both end in the same sample path as REST ([`crate::ingest`]). What any
//! client can hold is bounded: connections (in all and per address), the
//! time to log in, to send a frame or a line once started, to stay silent,
//! to take what the server writes, and the bytes of sample payloads being
//! received at once across all connections (past that budget a connection
//! is not read until others finish, and TCP slows its sender).
//!
//! # Layout
//! - [`conn`]: admission (the connection limits) and reads and writes with
//!   deadlines, for both versions.
//! - [`v1`]: the control port and the data ports.
//! - [`v2`]: the framed sessions.

pub mod conn;
pub mod v1;
pub mod v2;

use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use hendu_service::Application;
use hendu_service::settings::var_or;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

use crate::AppState;
use conn::Gate;

pub mod vars {
    pub const ADDR: &str = "HENDU_TCP_ADDR";
    pub const DATA_PORTS: &str = "HENDU_TCP_DATA_PORTS";
    pub const V2_ADDR: &str = "HENDU_TCP_V2_ADDR";
    pub const MAX_CONNECTIONS: &str = "HENDU_TCP_MAX_CONNECTIONS";
    pub const MAX_PER_ADDRESS: &str = "HENDU_TCP_MAX_PER_ADDRESS";
    pub const LOGIN_TIMEOUT_S: &str = "HENDU_TCP_LOGIN_TIMEOUT_S";
    pub const IDLE_TIMEOUT_S: &str = "HENDU_TCP_IDLE_TIMEOUT_S";
    pub const READ_TIMEOUT_S: &str = "HENDU_TCP_READ_TIMEOUT_S";
    pub const TICKET_S: &str = "HENDU_TCP_TICKET_S";
}

pub const HELP: &str =
    "  HENDU_TCP_ADDR          v1 control port for sensors (default 0.0.0.0:7000; off: no v1)
  HENDU_TCP_DATA_PORTS    v1 data ports, every replica listens on all (default 7100-7199)
  HENDU_TCP_V2_ADDR       v2 framed protocol for sensors (default 0.0.0.0:7001; off: no v2)
  HENDU_TCP_MAX_CONNECTIONS  TCP connections held at once (default 20000)
  HENDU_TCP_MAX_PER_ADDRESS  of them from one address (default 2000: a venue's NAT)
  HENDU_TCP_LOGIN_TIMEOUT_S  from connecting to logged in (default 10)
  HENDU_TCP_IDLE_TIMEOUT_S   a v2 session silent this long is closed (default 90;
                          devices are told to PING after a third of it)
  HENDU_TCP_READ_TIMEOUT_S   a frame or line once started must arrive within it,
                          plus 1 s per 16 KiB of its length (default 20)
  HENDU_TCP_TICKET_S      how long a v1 ticket and its data port are held (default 30)";

/// Where the TCP protocols listen, and their limits.
#[derive(Debug, Clone)]
pub struct TcpConfig {
    /// The v1 control port and the data ports (on the control port's address).
    pub v1: Option<(SocketAddr, RangeInclusive<u16>)>,
    pub v2: Option<SocketAddr>,
    pub limits: TcpLimits,
}

#[derive(Debug, Clone)]
pub struct TcpLimits {
    pub max_connections: usize,
    pub max_per_address: usize,
    pub login_timeout: Duration,
    pub idle_timeout: Duration,
    pub read_timeout: Duration,
    pub write_timeout: Duration,
    pub ticket_ttl: Duration,
    /// Bytes of sample payloads received at once, over all connections.
    pub payload_budget: usize,
}

impl Default for TcpLimits {
    fn default() -> Self {
        Self {
            max_connections: 20_000,
            max_per_address: 2_000,
            login_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(90),
            read_timeout: Duration::from_secs(20),
            write_timeout: Duration::from_secs(10),
            ticket_ttl: Duration::from_secs(30),
            payload_budget: 256 << 20,
        }
    }
}

fn addr_or_off(var: &str, default: SocketAddr) -> anyhow::Result<Option<SocketAddr>> {
    match std::env::var(var).ok().map(|v| v.trim().to_owned()) {
        Some(v) if v.eq_ignore_ascii_case("off") => Ok(None),
        Some(v) if !v.is_empty() => v.parse().map(Some).with_context(|| {
            format!("{var}={v:?} is not an address such as 0.0.0.0:7000, nor off")
        }),
        _ => Ok(Some(default)),
    }
}

/// `7100-7199` (or one port).
///
/// # Errors
/// Anything else, or an empty or reversed range.
pub fn parse_ports(s: &str) -> anyhow::Result<RangeInclusive<u16>> {
    let (a, b) = s.split_once('-').unwrap_or((s, s));
    let (a, b): (u16, u16) = (a.trim().parse()?, b.trim().parse()?);
    if a == 0 || b < a {
        anyhow::bail!("{s:?} is not a range of ports such as 7100-7199");
    }
    Ok(a..=b)
}

impl TcpConfig {
    /// Nothing listens (tests of the REST API, tools).
    pub fn off() -> Self {
        Self {
            v1: None,
            v2: None,
            limits: TcpLimits::default(),
        }
    }

    /// From the environment; unset addresses listen on `host`.
    ///
    /// # Errors
    /// A malformed variable.
    pub fn from_env(host: IpAddr) -> anyhow::Result<Self> {
        let control = addr_or_off(vars::ADDR, SocketAddr::new(host, 7000))?;
        let ports = match std::env::var(vars::DATA_PORTS) {
            Ok(v) if !v.trim().is_empty() => {
                parse_ports(&v).with_context(|| format!("{}={v:?}", vars::DATA_PORTS))?
            }
            _ => 7100..=7199,
        };
        let secs = |var, default: u64| -> anyhow::Result<Duration> {
            let s: u64 = var_or(var, default, "whole seconds")?;
            if s == 0 || s > 3600 {
                anyhow::bail!("{var} must be within 1..=3600 seconds");
            }
            Ok(Duration::from_secs(s))
        };
        let d = TcpLimits::default();
        Ok(Self {
            v1: control.map(|c| (c, ports)),
            v2: addr_or_off(vars::V2_ADDR, SocketAddr::new(host, 7001))?,
            limits: TcpLimits {
                max_connections: var_or(vars::MAX_CONNECTIONS, d.max_connections, "a count")?,
                max_per_address: var_or(vars::MAX_PER_ADDRESS, d.max_per_address, "a count")?,
                login_timeout: secs(vars::LOGIN_TIMEOUT_S, 10)?,
                idle_timeout: secs(vars::IDLE_TIMEOUT_S, 90)?,
                read_timeout: secs(vars::READ_TIMEOUT_S, 20)?,
                ticket_ttl: secs(vars::TICKET_S, 30)?,
                ..d
            },
        })
    }
}

/// The sockets, bound before the service starts (an address in use is an
/// error at start, not in a log later).
#[derive(Debug, Default)]
pub struct Listeners {
    pub control: Option<std::net::TcpListener>,
    pub data: Vec<std::net::TcpListener>,
    pub v2: Option<std::net::TcpListener>,
}

impl Listeners {
    /// # Errors
    /// An address in use or not ours.
    pub fn bind(config: &TcpConfig) -> anyhow::Result<Self> {
        let bind = |addr: SocketAddr| -> anyhow::Result<std::net::TcpListener> {
            let l = std::net::TcpListener::bind(addr)
                .with_context(|| format!("cannot listen on {addr}"))?;
            l.set_nonblocking(true)?;
            Ok(l)
        };
        let mut out = Self::default();
        if let Some((control, ports)) = &config.v1 {
            out.control = Some(bind(*control)?);
            for port in ports.clone() {
                out.data.push(bind(SocketAddr::new(control.ip(), port))?);
            }
        }
        if let Some(v2) = config.v2 {
            out.v2 = Some(bind(v2)?);
        }
        Ok(out)
    }

    pub fn control_addr(&self) -> Option<SocketAddr> {
        self.control.as_ref().and_then(|l| l.local_addr().ok())
    }

    pub fn v2_addr(&self) -> Option<SocketAddr> {
        self.v2.as_ref().and_then(|l| l.local_addr().ok())
    }

    pub fn data_ports(&self) -> Vec<u16> {
        self.data
            .iter()
            .filter_map(|l| l.local_addr().ok().map(|a| a.port()))
            .collect()
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProtocolLabels {
    pub protocol: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    pub protocol: &'static str,
    pub code: &'static str,
}

#[derive(Clone, Debug, Default)]
pub struct Meters {
    pub connections: Family<ProtocolLabels, Gauge>,
    pub samples: Family<ProtocolLabels, Counter>,
    pub refusals: Family<RefusalLabels, Counter>,
}

impl Meters {
    fn register(&self, metrics: &hendu_service::Metrics) {
        metrics.register(
            "tcp_connections",
            "TCP connections of sensors held now",
            self.connections.clone(),
        );
        metrics.register(
            "tcp_samples",
            "samples acknowledged over TCP",
            self.samples.clone(),
        );
        metrics.register(
            "tcp_refusals",
            "errors sent to sensors over TCP, by code",
            self.refusals.clone(),
        );
    }

    pub fn refused(&self, protocol: &'static str, code: hendu_sensor_protocol::Code) {
        self.refusals
            .get_or_create(&RefusalLabels {
                protocol,
                code: code.name(),
            })
            .inc();
    }
}

/// What every TCP connection shares.
#[derive(Debug, Clone)]
pub struct Tcp {
    pub state: AppState,
    pub limits: TcpLimits,
    /// The largest v2 frame: a sample at the service's size limit.
    pub max_frame: u32,
    pub gate: Gate,
    pub budget: Arc<Semaphore>,
    /// Signs v1 tickets; derived from the credential key, so the same on
    /// every replica.
    pub ticket_key: [u8; 32],
    pub data_ports: Arc<[u16]>,
    pub meters: Meters,
    pub tasks: TaskTracker,
}

impl Tcp {
    pub fn new(state: AppState, limits: TcpLimits, data_ports: Vec<u16>) -> Self {
        let max_frame = u32::try_from(state.max_sample_bytes + 64).unwrap_or(u32::MAX);
        Self {
            max_frame,
            gate: Gate::new(limits.max_connections, limits.max_per_address),
            // At least one frame of the largest size fits, or it would wait forever.
            budget: Arc::new(Semaphore::new(
                limits.payload_budget.max(max_frame as usize),
            )),
            ticket_key: state.auth.key().derive("hendu v1 ticket"),
            data_ports: data_ports.into(),
            meters: Meters::default(),
            tasks: TaskTracker::new(),
            state,
            limits,
        }
    }

    /// How long a frame or line of `len` bytes may take once started.
    pub fn allowance(&self, len: usize) -> Duration {
        self.limits.read_timeout + Duration::from_secs((len / (16 << 10)) as u64)
    }
}

/// Adds the TCP listeners' accept loops to `app`.
///
/// # Errors
/// A listener that tokio cannot take.
pub fn install(
    app: &mut Application,
    state: AppState,
    listeners: Listeners,
    limits: TcpLimits,
) -> anyhow::Result<()> {
    let tcp = Tcp::new(state, limits, listeners.data_ports());
    tcp.meters.register(&app.ops.metrics);
    let take = |l: std::net::TcpListener| tokio::net::TcpListener::from_std(l);
    if let Some(control) = listeners.control {
        let control = take(control)?;
        let data = listeners
            .data
            .into_iter()
            .map(take)
            .collect::<Result<Vec<_>, _>>()?;
        tracing::info!(addr = %control.local_addr()?, ports = data.len(), "sensor protocol v1 listening");
        let tcp = tcp.clone();
        app.worker("tcp-v1", conn::BEAT * 3, move |beat, stop| {
            v1::serve(tcp, control, data, beat, stop)
        });
    }
    if let Some(v2) = listeners.v2 {
        let v2 = take(v2)?;
        tracing::info!(addr = %v2.local_addr()?, "sensor protocol v2 listening");
        app.worker("tcp-v2", conn::BEAT * 3, move |beat, stop| {
            v2::serve(tcp, v2, beat, stop)
        });
    }
    Ok(())
}
