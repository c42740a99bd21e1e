//! Many devices at once: each plays the programme from its own connection,
//! in real time (a sample when its 30 s have been "recorded") or as fast as
//! the service acknowledges, reconnecting and resending after a failure.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::client::{self, Ack, Credentials, Failure, Protocol, Then, V2, Wire};
use crate::programme::{Prepared, Sample};

/// What to play, as whom, where.
#[derive(Debug, Clone)]
pub struct Plan {
    pub protocol: Protocol,
    /// The v2 address, the v1 control port, or the REST API's address.
    pub target: SocketAddr,
    pub devices: Vec<Credentials>,
    pub programme: Arc<Prepared>,
    /// Samples each device sends (looping over the programme).
    pub samples_per_device: usize,
    /// Wait for each sample's audio to have been "recorded" before sending.
    pub realtime: bool,
    /// Capture instant of every device's first sample (Unix ms).
    pub start_ms: i64,
    /// Attempts per sample after the first, reconnecting each time.
    pub retries: u32,
    /// In real time, spread the devices' first sample over this long (a
    /// thousand devices switched on together do not all send at once).
    pub spread: Duration,
    /// Print a line per sample.
    pub verbose: bool,
}

/// What happened, over all devices.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Summary {
    pub devices: usize,
    pub protocol: Option<Protocol>,
    pub samples: u64,
    pub acknowledged: u64,
    pub new: u64,
    pub duplicate: u64,
    /// Samples given up on, by the last refusal's code (or `connection`).
    pub refused: BTreeMap<String, u64>,
    pub reconnects: u64,
    pub wire: Wire,
    /// Time from sending a sample to its acknowledgement, milliseconds.
    pub latency_ms: Latency,
    pub elapsed_s: f64,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

impl Latency {
    pub fn of(mut ms: Vec<f64>) -> Self {
        if ms.is_empty() {
            return Self::default();
        }
        ms.sort_by(f64::total_cmp);
        let at = |q: f64| ms[((ms.len() as f64 - 1.0) * q).round() as usize];
        Self {
            p50: at(0.5),
            p90: at(0.9),
            p99: at(0.99),
            max: ms[ms.len() - 1],
        }
    }
}

#[derive(Debug, Default)]
struct DeviceReport {
    samples: u64,
    acks: Vec<Ack>,
    refused: BTreeMap<String, u64>,
    reconnects: u64,
    wire: Wire,
    latency_ms: Vec<f64>,
}

/// Plays `plan`; the summary when every device is done.
pub async fn run(plan: Plan) -> Summary {
    let began = Instant::now();
    let plan = Arc::new(plan);
    let n = plan.devices.len();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, device) in plan.devices.iter().cloned().enumerate() {
        let plan = plan.clone();
        let offset = if plan.realtime && n > 1 {
            plan.spread.mul_f64(i as f64 / n as f64)
        } else {
            Duration::ZERO
        };
        tasks.spawn(async move { play(&plan, &device, offset).await });
    }
    let mut summary = Summary {
        devices: n,
        protocol: Some(plan.protocol),
        ..Summary::default()
    };
    let mut latency = Vec::new();
    while let Some(done) = tasks.join_next().await {
        let Ok(r) = done else { continue };
        summary.samples += r.samples;
        summary.acknowledged += r.acks.len() as u64;
        summary.duplicate += r.acks.iter().filter(|a| a.duplicate).count() as u64;
        for (k, v) in r.refused {
            *summary.refused.entry(k).or_default() += v;
        }
        summary.reconnects += r.reconnects;
        summary.wire += r.wire;
        latency.extend(r.latency_ms);
    }
    summary.new = summary.acknowledged - summary.duplicate;
    summary.latency_ms = Latency::of(latency);
    summary.elapsed_s = began.elapsed().as_secs_f64();
    summary
}

async fn play(plan: &Plan, device: &Credentials, offset: Duration) -> DeviceReport {
    let mut report = DeviceReport::default();
    let mut session: Option<V2> = None;
    let started = tokio::time::Instant::now() + offset;
    let mut at_ms = plan.start_ms;
    let mut recorded = Duration::ZERO;
    'samples: for k in 0..plan.samples_per_device {
        let duration = plan.programme.duration_of(k);
        recorded += Duration::from_millis(u64::from(duration));
        if plan.realtime {
            wait_until(started + recorded, &mut session, &mut report.wire).await;
        }
        let sample = plan.programme.sample(k, at_ms);
        at_ms += i64::from(duration);
        report.samples += 1;
        let mut attempt = 0;
        loop {
            let sent = Instant::now();
            match upload(plan, device, &sample, &mut session, &mut report.wire).await {
                Ok(ack) => {
                    let ms = sent.elapsed().as_secs_f64() * 1000.0;
                    if plan.verbose {
                        eprintln!(
                            "{} sample {} {} in {ms:.1} ms",
                            device.imei,
                            ack.sample_id,
                            if ack.duplicate { "duplicate" } else { "new" }
                        );
                    }
                    report.latency_ms.push(ms);
                    report.acks.push(ack);
                    break;
                }
                Err(failure) => {
                    if plan.verbose {
                        eprintln!(
                            "{} sample at {}: {failure}",
                            device.imei, sample.captured_at_ms
                        );
                    }
                    let (name, then, at_least) = match &failure {
                        Failure::Refused(r) => (
                            r.name.clone(),
                            r.then(plan.protocol),
                            Duration::from_secs(u64::from(r.retry_after_s)),
                        ),
                        Failure::Protocol(_) => ("protocol".to_owned(), Then::Stop, Duration::ZERO),
                        _ => ("connection".to_owned(), Then::Retry, Duration::ZERO),
                    };
                    if then != Then::Retry || attempt >= plan.retries {
                        *report.refused.entry(name).or_default() += 1;
                        if then == Then::Stop {
                            break 'samples;
                        }
                        break;
                    }
                    attempt += 1;
                    report.reconnects += 1;
                    tokio::time::sleep(backoff(attempt).max(at_least)).await;
                }
            }
        }
    }
    if let Some(s) = session {
        report.wire += s.bye().await;
    }
    report
}

/// The pause before attempt `n` (1, 2, ...): 1 s, 2 s, 4 s, ... up to a
/// minute, less up to a quarter at random, so that devices that lost the
/// same replica do not all come back at the same instant.
pub fn backoff(n: u32) -> Duration {
    let base = Duration::from_secs(1u64 << n.saturating_sub(1).min(6)).min(Duration::from_secs(60));
    let mut r = [0u8; 2];
    let _ = getrandom::fill(&mut r);
    base.mul_f64(1.0 - f64::from(u16::from_le_bytes(r)) / f64::from(u16::MAX) / 4.0)
}

/// Sleeps until `deadline`, keeping a v2 session alive with heartbeats.
async fn wait_until(deadline: tokio::time::Instant, session: &mut Option<V2>, wire: &mut Wire) {
    loop {
        let beat = session
            .as_ref()
            .map(|s| Duration::from_secs(u64::from(s.welcome.heartbeat_s.max(1))));
        let next = match beat {
            Some(b) => deadline.min(tokio::time::Instant::now() + b),
            None => deadline,
        };
        tokio::time::sleep_until(next).await;
        if next >= deadline {
            return;
        }
        if let Some(s) = session.as_mut()
            && s.ping().await.is_err()
        {
            // Its bytes are counted when the session is handed back.
            *wire += s.wire;
            *session = None;
        }
    }
}

async fn upload(
    plan: &Plan,
    device: &Credentials,
    sample: &Sample,
    session: &mut Option<V2>,
    wire: &mut Wire,
) -> Result<Ack, Failure> {
    match plan.protocol {
        Protocol::V2 => {
            if session.is_none() {
                match V2::connect(plan.target, device).await {
                    Ok(s) => *session = Some(s),
                    Err(e) => {
                        wire.connections += 1;
                        return Err(e);
                    }
                }
            }
            let s = session
                .as_mut()
                .ok_or_else(|| Failure::Protocol("no session".into()))?;
            let result = s.send(sample).await;
            // A refusal that does not close leaves the session open;
            // anything else ends it (its bytes are counted then).
            let open = match &result {
                Ok(_) => true,
                Err(Failure::Refused(r)) => !r.closing,
                Err(_) => false,
            };
            if !open && let Some(s) = session.take() {
                *wire += s.wire;
            }
            result
        }
        Protocol::V1 => client::v1_upload(plan.target, device, sample, wire).await,
        Protocol::Rest => client::rest_upload(plan.target, device, sample, wire).await,
    }
}
