//! `hendu-load`: sends HENDU an open-loop load and writes what it measured.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use hendu_loadtest::arrival::{Arrivals, Process, parse_duration};
use hendu_loadtest::drive::Bounds;
use hendu_loadtest::scenario::{self, Device, Get, Samples, Scenario, Transport, Uploads};
use hendu_loadtest::{Plan, null_server, setup};
use hendu_sensor::programme::{Audio, Kind, Prepared, RATE};
use serde_json::json;

#[derive(Debug, Parser)]
#[command(
    name = "hendu-load",
    version,
    about = "Sends HENDU an open-loop load and writes what it measured",
    long_about = "Sends HENDU an open-loop load: requests go out at the instants of a declared \
arrival process whatever the answers do, and each one's latency is measured from its intended \
send time into HDR histograms (no coordinated omission). Writes a results directory: \
summary.json (provenance, totals, percentiles, errors by kind), seconds.csv, errors.csv, \
latency.hgrm, and throughput and latency plots as SVG and PNG."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs a load and writes its results directory.
    Run(Box<RunArgs>),
    /// Answers every request at once with 200: the other end for measuring
    /// the generator's own ceiling.
    NullServer {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8099")]
        addr: SocketAddr,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum What {
    /// Device samples (set --transport and --body).
    Samples,
    /// Catalogue uploads: a new synthetic track each request.
    Uploads,
    /// `GET --url`.
    Get,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Body {
    /// WAV audio.
    Audio,
    /// The device's own fingerprint.
    Fingerprint,
}

#[derive(Debug, Args)]
#[allow(clippy::struct_excessive_bools)]
struct RunArgs {
    /// What each request is.
    #[arg(long, value_enum, default_value = "samples")]
    scenario: What,

    // --- arrivals
    /// The rate, requests per second: `100`, a ramp over the run `10..200`,
    /// or steps `10/30s,50/30s,100/1m` (their durations make the run).
    #[arg(long, conflicts_with_all = ["bursts", "trace"])]
    rate: Option<String>,
    /// How the rate is spent: evenly spaced or as a Poisson process.
    #[arg(long, default_value = "uniform")]
    process: Process,
    /// Bursts `SIZE/PERIOD`: e.g. `100/5s`, the HENDU paper's load.
    #[arg(long, conflicts_with = "trace")]
    bursts: Option<String>,
    /// A recorded trace: one instant per line in seconds, replayed from its first.
    #[arg(long)]
    trace: Option<PathBuf>,
    /// How long the run lasts (with --rate or --bursts): `90s`, `10m`.
    #[arg(long, default_value = "60s")]
    duration: String,
    /// The Poisson process's seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,

    // --- targets
    /// The communication service (device registration; REST samples).
    #[arg(long, env = "HENDU_LOAD_API", default_value = "http://127.0.0.1:8081")]
    api: String,
    /// The communication service's TCP v2 address (--transport tcp-v2).
    #[arg(long, env = "HENDU_LOAD_TCP", default_value = "127.0.0.1:7071")]
    tcp: String,
    /// The hash-generator (catalogue uploads; --upload-programme).
    #[arg(
        long,
        env = "HENDU_LOAD_HASH_GENERATOR",
        default_value = "http://127.0.0.1:8080"
    )]
    hash_generator: String,
    /// The URL of --scenario get.
    #[arg(long)]
    url: Option<String>,
    /// An administrator's API token (to register devices and upload tracks).
    #[arg(long, env = "HENDU_LOAD_TOKEN", hide_env_values = true)]
    token: Option<String>,

    // --- device samples
    /// How device samples travel.
    #[arg(long, value_enum, default_value = "rest")]
    transport: Transport,
    /// What a device sample carries.
    #[arg(long, value_enum, default_value = "fingerprint")]
    body: Body,
    /// Devices to register and send from (request k is device k mod n's next sample).
    #[arg(long, default_value_t = 100)]
    devices: usize,
    /// Audio files the devices play (any format the engine decodes); without
    /// them, synthetic tracks.
    #[arg(long, num_args = 1..)]
    programme: Vec<PathBuf>,
    /// How many synthetic tracks (120 s each) without --programme.
    #[arg(long, default_value_t = 4)]
    synthetic: usize,
    /// Uploads the programme's tracks to the catalogue first, so that the
    /// samples make plays.
    #[arg(long)]
    upload_programme: bool,
    /// Seconds of audio per sample.
    #[arg(long, default_value_t = 10.0)]
    sample_s: f64,
    /// Measures the end-to-end latency (sample to play) from the stores'
    /// play events: needs HENDU_MYSQL_URL, HENDU_MONGO_URL, HENDU_REDIS_URL
    /// (and HENDU_REDIS_PREFIX) as the services have them.
    #[arg(long)]
    e2e: bool,
    /// After the last answer, how long to wait for the last plays.
    #[arg(long, default_value = "5s")]
    e2e_settle: String,

    // --- bounds
    /// Requests in flight at most; more are not sent and counted `not_sent`.
    #[arg(long, default_value_t = 10_000)]
    in_flight: usize,
    /// Each request's time to answer before it counts as `timeout`.
    #[arg(long, default_value = "60s")]
    timeout: String,
    /// After the last request is due, how long answers may still come.
    #[arg(long, default_value = "60s")]
    drain: String,

    /// The results directory (default: loadtest/results/<UTC time>-<scenario>).
    #[arg(long)]
    out: Option<PathBuf>,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    runtime.block_on(async move {
        match cli.command {
            Command::NullServer { addr } => {
                let listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot listen on {addr}"))?;
                eprintln!("null server on {}", listener.local_addr()?);
                null_server::serve(listener).await?;
                Ok(())
            }
            Command::Run(args) => run(*args).await,
        }
    })
}

async fn run(a: RunArgs) -> Result<()> {
    let seconds = parse_duration(&a.duration)?.as_secs_f64();
    let arrivals = match (&a.rate, &a.bursts, &a.trace) {
        (_, _, Some(trace)) => Arrivals::trace(trace)?,
        (_, Some(bursts), None) => Arrivals::bursts(bursts, seconds)?,
        (Some(rate), None, None) => Arrivals::rate(rate, Some(seconds), a.process, a.seed)?,
        (None, None, None) => bail!("say when requests are due: --rate, --bursts or --trace"),
    };
    let timeout = parse_duration(&a.timeout)?;
    let http = scenario::http_client(timeout)?;
    let mut e2e_devices = None;
    let scenario: Arc<dyn Scenario> = match a.scenario {
        What::Get => Arc::new(Get {
            url: a.url.clone().context("--scenario get needs --url")?,
            http,
        }),
        What::Uploads => Arc::new(Uploads {
            url: format!("{}/v1/musics", a.hash_generator.trim_end_matches('/')),
            token: a
                .token
                .clone()
                .context("uploads need an administrator's --token")?,
            http,
            seconds: 60.0,
            seed_base: fresh(),
        }),
        What::Samples => {
            let token = a.token.clone().context(
                "device samples need an administrator's --token to register the devices",
            )?;
            anyhow::ensure!(
                (1..=100_000).contains(&a.devices),
                "--devices is between 1 and 100,000"
            );
            anyhow::ensure!(
                (1.0..=300.0).contains(&a.sample_s),
                "--sample-s is between 1 and 300"
            );
            let audio = programme(&a)?;
            if a.upload_programme {
                eprintln!("uploading the programme's {} tracks", audio.len());
                let tracks = audio
                    .iter()
                    .map(|t| (t.name.clone(), hendu_sensor::programme::wav(&t.samples)))
                    .collect();
                setup::upload_tracks(
                    &http,
                    a.hash_generator.trim_end_matches('/'),
                    &token,
                    tracks,
                )
                .await?;
            }
            let kind = match a.body {
                Body::Audio => Kind::Audio,
                Body::Fingerprint => Kind::Fingerprint,
            };
            let prepared = Arc::new(Prepared::new(&audio, a.sample_s, kind));
            anyhow::ensure!(
                !prepared.is_empty(),
                "the programme has no sample of a second or more"
            );
            eprintln!("registering {} devices", a.devices);
            let api = a.api.trim_end_matches('/');
            let registered =
                setup::register_devices(&http, api, &token, &setup::imeis(a.devices, fresh()))
                    .await?;
            if a.e2e {
                e2e_devices = Some(
                    registered
                        .iter()
                        .enumerate()
                        .map(|(k, r)| (r.id, k))
                        .collect::<HashMap<_, _>>(),
                );
            }
            let target = match a.transport {
                Transport::Rest => address_of(api)?,
                Transport::TcpV2 => resolve(&a.tcp)?,
            };
            // The samples' capture instants end about now: a device's
            // clock is never ahead of the service's.
            let per_device = (arrivals.expected() / a.devices as f64).ceil() + 1.0;
            let now_ms = time::OffsetDateTime::now_utc().unix_timestamp() * 1000;
            let start_ms = now_ms - (per_device * a.sample_s * 1000.0) as i64 - 60_000;
            Arc::new(Samples::new(
                a.transport,
                target,
                registered
                    .into_iter()
                    .map(|r| Device::new(r.credentials))
                    .collect(),
                prepared,
                start_ms,
            ))
        }
    };
    let out = a.out.clone().unwrap_or_else(|| {
        let t = time::OffsetDateTime::now_utc();
        let stamp = format!(
            "{:04}{:02}{:02}-{:02}{:02}{:02}",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        );
        PathBuf::from(format!("loadtest/results/{stamp}-{:?}", a.scenario).to_lowercase())
    });
    let settings = json!({
        "rate": a.rate, "process": a.process, "bursts": a.bursts, "trace": a.trace, "duration": a.duration,
        "seed": a.seed, "api": a.api, "tcp": a.tcp, "hash_generator": a.hash_generator, "url": a.url,
        "transport": a.transport, "body": format!("{:?}", a.body).to_lowercase(), "devices": a.devices,
        "programme": a.programme, "synthetic": a.synthetic, "sample_s": a.sample_s, "e2e": a.e2e,
        "in_flight": a.in_flight, "timeout": a.timeout, "drain": a.drain,
    });
    let outcome = hendu_loadtest::run(Plan {
        arrivals,
        scenario,
        bounds: Bounds {
            in_flight: a.in_flight,
            drain: parse_duration(&a.drain)?,
        },
        out,
        e2e_devices,
        e2e_settle: parse_duration(&a.e2e_settle)?,
        settings,
    })
    .await?;
    let s = &outcome.summary;
    println!(
        "{} due, {} ok ({}/s), {} errors; latency p50 {} ms, p99 {} ms, max {} ms; results in {}",
        s["requests"]["due"],
        s["requests"]["ok"],
        s["requests"]["ok_per_s"],
        s["requests"]["errors"],
        s["latency_ms"]["p50"],
        s["latency_ms"]["p99"],
        s["latency_ms"]["max"],
        outcome.out.display()
    );
    if !s["end_to_end"].is_null() {
        println!("end to end (sample to play): {}", s["end_to_end"]);
    }
    Ok(())
}

/// A number no earlier run used (IMEI stems, upload seeds).
fn fresh() -> u64 {
    let mut b = [0u8; 8];
    // Without the OS's randomness, the clock is fresh enough.
    if getrandom::fill(&mut b).is_ok() {
        u64::from_le_bytes(b)
    } else {
        time::OffsetDateTime::now_utc().unix_timestamp_nanos() as u64
    }
}

/// The programme: files, or synthetic tracks.
fn programme(a: &RunArgs) -> Result<Vec<Audio>> {
    if a.programme.is_empty() {
        anyhow::ensure!(
            (1..=100).contains(&a.synthetic),
            "--synthetic is between 1 and 100"
        );
        let base = 7_000_000;
        return Ok((0..a.synthetic as u64)
            .map(|k| Audio {
                name: format!("Load programme {}", base + k),
                samples: hendu_fingerprint::synth::music(base + k, 120.0, RATE),
            })
            .collect());
    }
    let mut audio = Vec::new();
    for path in &a.programme {
        audio.extend(hendu_sensor::programme::read(path)?);
    }
    Ok(audio)
}

/// `host:port` of an `http://host:port` URL, resolved.
fn address_of(url: &str) -> Result<SocketAddr> {
    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("REST samples go over plain http://, not {url}"))?;
    resolve(rest.split('/').next().unwrap_or(rest))
}

fn resolve(host_port: &str) -> Result<SocketAddr> {
    use std::net::ToSocketAddrs;
    host_port
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {host_port}"))?
        .next()
        .with_context(|| format!("{host_port} has no address"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn a_run_needs_a_schedule_and_refuses_two() {
        assert!(
            Cli::try_parse_from(["hendu-load", "run", "--rate", "10", "--bursts", "1/1s"]).is_err()
        );
        assert!(Cli::try_parse_from(["hendu-load", "run", "--rate", "10"]).is_ok());
    }

    #[test]
    fn rest_samples_go_to_the_apis_address() {
        assert!(address_of("https://x").is_err());
        assert_eq!(address_of("http://127.0.0.1:8081/").unwrap().port(), 8081);
    }
}
