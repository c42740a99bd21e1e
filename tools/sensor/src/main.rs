//! `hendu-sensor`: plays audio as one or many sensor devices.

use std::io::Write;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Parser;
use hendu_sensor::client::{Credentials, Protocol};
use hendu_sensor::programme::{self, Kind, Prepared};
use hendu_sensor::run::{Plan, run};

/// Plays an audio file (or a folder of them, in name order, looping) as
/// one or many sensor devices, over TCP v2, TCP v1 or REST, and prints
/// what was sent and what was acknowledged.
#[derive(Debug, Parser)]
#[command(
    name = "hendu-sensor",
    version,
    after_help = "Devices and their secrets (from POST /v1/devices, shown once):
  --device IMEI:SECRET        one device (repeat for more)
  --devices FILE              one device a line: IMEI SECRET (# comments)

Examples:
  hendu-sensor --device 356938035643809:$SECRET --to 127.0.0.1:7001 concert.flac
  hendu-sensor --devices fleet.txt --protocol v1 --to 10.0.0.5:7000 --realtime sets/
  hendu-sensor --devices fleet.txt --kind fingerprint --samples 20 --json set.mp3

Exit status: 0 when every sample was acknowledged, 1 when some were not,
2 for bad arguments."
)]
struct Cli {
    /// An audio file, or a folder of them.
    audio: PathBuf,
    /// Where to send: the v2 address, the v1 control port, or the HTTP API.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:7001")]
    to: String,
    /// v2: one framed session per device (the one to use); v1: the paper's
    /// control port and a data port per sample; rest: POST /v1/devices/{imei}/samples.
    #[arg(long, value_enum, default_value = "v2")]
    protocol: Protocol,
    /// Send the audio, or its fingerprint computed here as a device would.
    #[arg(long, value_enum, default_value = "audio")]
    kind: Kind,
    /// A device and its secret (repeat for more).
    #[arg(long = "device", value_name = "IMEI:SECRET")]
    device: Vec<String>,
    /// A file of devices, one a line: IMEI SECRET (# starts a comment).
    #[arg(long = "devices", value_name = "FILE")]
    devices: Option<PathBuf>,
    /// Seconds of audio per sample.
    #[arg(long, default_value_t = 30.0)]
    sample_s: f64,
    /// Samples per device, looping over the programme (default: the programme once).
    #[arg(long)]
    samples: Option<usize>,
    /// Send each sample when its audio has been "recorded" (a 30 s sample
    /// 30 s after the previous), instead of as fast as acknowledged.
    #[arg(long)]
    realtime: bool,
    /// Capture instant of the first sample, Unix milliseconds (default:
    /// now in real time; otherwise so that the last sample ends now).
    #[arg(long, value_name = "MS")]
    start_ms: Option<i64>,
    /// Attempts per sample after the first, reconnecting each time.
    #[arg(long, default_value_t = 5)]
    retries: u32,
    /// Print the summary as JSON on standard output (and nothing per sample).
    #[arg(long)]
    json: bool,
}

fn credentials(cli: &Cli) -> Result<Vec<Credentials>> {
    let mut out = Vec::new();
    let parse = |s: &str, whence: &str| -> Result<Credentials> {
        let (imei, secret) = s
            .split_once([':', ' ', '\t'])
            .with_context(|| format!("{whence}: {s:?} is not IMEI:SECRET"))?;
        Ok(Credentials {
            imei: imei.trim().to_owned(),
            secret: secret.trim().to_owned(),
        })
    };
    for d in &cli.device {
        out.push(parse(d, "--device")?);
    }
    if let Some(file) = &cli.devices {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            out.push(parse(line, &format!("{}:{}", file.display(), i + 1))?);
        }
    }
    if out.is_empty() {
        bail!("name at least one device: --device IMEI:SECRET or --devices FILE");
    }
    Ok(out)
}

fn target(s: &str) -> Result<SocketAddr> {
    s.to_socket_addrs()
        .with_context(|| format!("--to {s:?} is not HOST:PORT"))?
        .next()
        .with_context(|| format!("--to {s:?} names no address"))
}

fn main() {
    let cli = Cli::parse();
    match start(&cli) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(2);
        }
    }
}

fn start(cli: &Cli) -> Result<i32> {
    let devices = credentials(cli)?;
    let to = target(&cli.to)?;
    if !(cli.sample_s >= 1.0 && cli.sample_s <= 3600.0) {
        bail!("--sample-s must be within 1..=3600");
    }
    let audio = programme::read(&cli.audio)?;
    let prepared = Prepared::new(&audio, cli.sample_s, cli.kind);
    if prepared.is_empty() {
        bail!("the audio is shorter than a second");
    }
    let samples = cli.samples.unwrap_or(prepared.len());
    let now_ms = (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64;
    let start_ms = cli.start_ms.unwrap_or_else(|| {
        if cli.realtime {
            now_ms
        } else {
            let total: u64 = (0..samples)
                .map(|k| u64::from(prepared.duration_of(k)))
                .sum();
            now_ms - total as i64
        }
    });
    if !cli.json {
        eprintln!(
            "{} device(s), {samples} sample(s) each of {} ({} s, {:?}), over {:?} to {to}",
            devices.len(),
            cli.audio.display(),
            cli.sample_s,
            cli.kind,
            cli.protocol
        );
    }
    let plan = Plan {
        protocol: cli.protocol,
        target: to,
        devices,
        programme: Arc::new(prepared),
        samples_per_device: samples,
        realtime: cli.realtime,
        start_ms,
        retries: cli.retries,
        spread: Duration::from_secs_f64(cli.sample_s),
        verbose: !cli.json,
    };
    let runtime = tokio::runtime::Runtime::new()?;
    let summary = runtime.block_on(run(plan));
    let all = summary.acknowledged == summary.samples;
    if cli.json {
        let mut out = std::io::stdout().lock();
        serde_json::to_writer_pretty(&mut out, &summary)?;
        writeln!(out)?;
    } else {
        eprintln!(
            "{} of {} samples acknowledged ({} new, {} duplicate); refused {:?}; {} reconnects; {} bytes sent, {} received, {} round trips; ack latency p50 {:.1} ms, p99 {:.1} ms; {:.1} s",
            summary.acknowledged,
            summary.samples,
            summary.new,
            summary.duplicate,
            summary.refused,
            summary.reconnects,
            summary.wire.sent,
            summary.wire.received,
            summary.wire.round_trips,
            summary.latency_ms.p50,
            summary.latency_ms.p99,
            summary.elapsed_s
        );
    }
    Ok(if all { 0 } else { 1 })
}
