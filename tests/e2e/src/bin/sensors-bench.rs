//! Sensors over TCP, measured against the communication service as a
//! process (release build) on the test servers:
//!
//! 1. one upload of a 30 s sample (on-device fingerprint, and 16 kHz WAV)
//!    over v1, v2 and REST: bytes on the wire each way, round trips and
//!    connections, from the client's side;
//! 2. idle v2 sessions held (logged in, silent): the service's resident
//!    memory before and after, per connection, and a new device served
//!    while they are held;
//! 3. many devices each sending a 30 s fingerprint every 30 s over v2, in
//!    real time: the acknowledgement latency.
//!
//! Usage: bench/sensors/run.sh [--idle N] [--devices N] [--minutes M]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures_util::StreamExt;
use hendu_e2e::Service;
use hendu_e2e::broadcast::{self, ADMIN_EMAIL, ADMIN_PASSWORD, Client};
use hendu_sensor::client::{self, Credentials, Protocol, V2, Wire};
use hendu_sensor::programme::{self, Audio, Kind, Prepared};
use hendu_sensor::run::{Plan, run};
use hendu_storage::testing::{Kind as StoreKind, Place};

struct Args {
    idle: usize,
    devices: usize,
    minutes: f64,
}

fn args() -> Result<Args> {
    let mut a = Args {
        idle: 10_000,
        devices: 1_000,
        minutes: 3.0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--idle" => a.idle = value.parse()?,
            "--devices" => a.devices = value.parse()?,
            "--minutes" => a.minutes = value.parse()?,
            _ => bail!("unknown flag {flag}; see the file's header"),
        }
    }
    Ok(a)
}

fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// The `i`-th test IMEI (14 digits and the Luhn check digit).
fn imei(i: usize) -> String {
    let body = format!("{:014}", 35_000_000_000_000u64 + i as u64);
    let digit = hendu_storage::model::Imei::check_digit(&body);
    format!("{body}{digit}")
}

fn row(name: &str, w: &Wire) {
    println!(
        "| {name} | {} | {} | {} | {} |",
        w.sent, w.received, w.round_trips, w.connections
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = args()?;
    let place = Place::new(StoreKind::Servers).await;
    let (control, v2, data) = (
        hendu_e2e::free_port(),
        hendu_e2e::free_port(),
        hendu_e2e::free_ports(8),
    );
    let limit = (args.idle + args.devices + 100).to_string();
    let env = [
        ("HENDU_ADMIN_EMAIL", ADMIN_EMAIL.to_owned()),
        ("HENDU_ADMIN_PASSWORD", ADMIN_PASSWORD.to_owned()),
        ("HENDU_LOG", "warn".to_owned()),
        ("HENDU_TCP_ADDR", format!("127.0.0.1:{control}")),
        ("HENDU_TCP_V2_ADDR", format!("127.0.0.1:{v2}")),
        (
            "HENDU_TCP_DATA_PORTS",
            format!("{}-{}", data.start(), data.end()),
        ),
        ("HENDU_TCP_MAX_CONNECTIONS", limit.clone()),
        ("HENDU_TCP_MAX_PER_ADDRESS", limit),
        ("HENDU_TCP_IDLE_TIMEOUT_S", "600".to_owned()),
    ];
    let service =
        Service::start("hendu-communication", "communication", &place.config, &env).await?;
    let http_port: u16 = service.base.rsplit(':').next().unwrap_or("0").parse()?;
    let api: SocketAddr = ([127, 0, 0, 1], http_port).into();
    let v2_addr: SocketAddr = ([127, 0, 0, 1], v2).into();
    let control_addr: SocketAddr = ([127, 0, 0, 1], control).into();
    let admin = Client::new(&service.base, &service.base);
    let audio = broadcast::render(&broadcast::programme());
    let thirty = &audio[..programme::RATE as usize * 30];
    println!(
        "Machine: {} cores; {}",
        std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
        time::OffsetDateTime::now_utc().date()
    );

    // 1. One upload each way.
    let (_, secret) = admin.register_device(&imei(0)).await?;
    let device = Credentials {
        imei: imei(0),
        secret,
    };
    println!("\n### One 30 s sample: bytes on the wire (client side)\n");
    println!("| upload | bytes sent | bytes received | round trips | TCP connections |");
    println!("| --- | --- | --- | --- | --- |");
    for kind in [Kind::Fingerprint, Kind::Audio] {
        let mut at = now_ms() - 3_600_000 + if kind == Kind::Audio { 60_000 } else { 0 };
        let mut next = || {
            at += 10_000;
            programme::sample(thirty, at, kind)
        };
        let body = next().body.len();
        let label = |p: &str| format!("{p}, {kind:?} ({body} bytes)");
        let mut w = Wire::default();
        client::v1_upload(control_addr, &device, &next(), &mut w).await?;
        row(&label("v1"), &w);
        let mut session = V2::connect(v2_addr, &device).await?;
        let login = session.wire;
        session.send(&next()).await?;
        let first = session.wire;
        session.send(&next()).await?;
        let steady = Wire {
            sent: session.wire.sent - first.sent,
            received: session.wire.received - first.received,
            round_trips: session.wire.round_trips - first.round_trips,
            connections: 0,
        };
        session.bye().await;
        row(&label("v2, a new session (login + sample)"), &first);
        row(&label("v2, in an open session"), &steady);
        let _ = login;
        let mut w = Wire::default();
        client::rest_upload(api, &device, &next(), &mut w).await?;
        row(&label("REST (HTTP/1.1, no TLS)"), &w);
    }

    // 2. Idle sessions.
    let before_kb = service.rss_kb();
    let started = Instant::now();
    let device = Arc::new(device);
    let sessions: Vec<Result<V2, client::Failure>> = futures_util::stream::iter(0..args.idle)
        .map(|_| {
            let device = device.clone();
            async move { V2::connect(v2_addr, &device).await }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    let opened = sessions.iter().filter(|s| s.is_ok()).count();
    let failed: Vec<String> = sessions
        .iter()
        .filter_map(|s| s.as_ref().err().map(ToString::to_string))
        .take(3)
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after_kb = service.rss_kb();
    // A new device is served while they are held.
    let (_, other_secret) = admin.register_device(&imei(1)).await?;
    let other = Credentials {
        imei: imei(1),
        secret: other_secret,
    };
    let t = Instant::now();
    let mut fresh = V2::connect(v2_addr, &other).await?;
    let ack = fresh
        .send(&programme::sample(
            thirty,
            now_ms() - 120_000,
            Kind::Fingerprint,
        ))
        .await?;
    let served_ms = t.elapsed().as_secs_f64() * 1000.0;
    fresh.bye().await;
    println!("\n### Idle v2 sessions held\n");
    println!(
        "| sessions asked | held | opened in | service RSS before | after | per session | a new device's login + first ack |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    println!(
        "| {} | {opened} | {:.1} s | {:.1} MB | {:.1} MB | {:.2} KB | {served_ms:.1} ms ({}) |",
        args.idle,
        started.elapsed().as_secs_f64(),
        before_kb as f64 / 1024.0,
        after_kb as f64 / 1024.0,
        (after_kb.saturating_sub(before_kb)) as f64 / opened.max(1) as f64,
        ack.sample_id
    );
    if !failed.is_empty() {
        println!("\nFailures opening sessions (first 3): {failed:?}");
    }
    drop(sessions);
    tokio::time::sleep(Duration::from_secs(2)).await;

    // 3. Devices in real time.
    let mut fleet = Vec::new();
    for i in 0..args.devices {
        let (_, secret) = admin.register_device(&imei(10 + i)).await?;
        fleet.push(Credentials {
            imei: imei(10 + i),
            secret,
        });
    }
    let prepared = Prepared::new(
        &[Audio {
            name: "broadcast".into(),
            samples: audio.clone(),
        }],
        30.0,
        Kind::Fingerprint,
    );
    let samples_per_device = ((args.minutes * 2.0).round() as usize).max(1);
    let rss_before = service.rss_kb();
    let summary = run(Plan {
        protocol: Protocol::V2,
        target: v2_addr,
        devices: fleet,
        programme: Arc::new(prepared),
        samples_per_device,
        realtime: true,
        start_ms: now_ms() - 30_000,
        retries: 3,
        spread: Duration::from_secs(30),
        verbose: false,
    })
    .await;
    println!("\n### Devices sending a 30 s fingerprint every 30 s over v2\n");
    println!(
        "| devices | samples | acknowledged | refused | ack p50 | p90 | p99 | max | service RSS during | run |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    println!(
        "| {} | {} | {} | {:?} | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} → {:.1} MB | {:.0} s |",
        summary.devices,
        summary.samples,
        summary.acknowledged,
        summary.refused,
        summary.latency_ms.p50,
        summary.latency_ms.p90,
        summary.latency_ms.p99,
        summary.latency_ms.max,
        rss_before as f64 / 1024.0,
        service.rss_kb() as f64 / 1024.0,
        summary.elapsed_s
    );
    Ok(())
}
