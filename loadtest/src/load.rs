//! A load, as `hendu-load run` flags or an experiment file's `[load]`
//! table: what the requests are, when they are due, where they go; and
//! everything set up before it starts (the programme in the catalogue, the
//! devices registered).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, ValueEnum};
use hendu_sensor::programme::{Audio, Kind, Prepared, RATE};
use serde::Deserialize;
use serde_json::json;

use crate::Plan;
use crate::arrival::{Arrivals, Process, parse_duration};
use crate::drive::Bounds;
use crate::scenario::{self, Device, Get, Samples, Scenario, Transport, Uploads};
use crate::setup;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum What {
    /// Device samples (set --transport and --body).
    Samples,
    /// Catalogue uploads: a new synthetic track each request.
    Uploads,
    /// `GET --url`.
    Get,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Body {
    /// WAV audio.
    Audio,
    /// The device's own fingerprint.
    Fingerprint,
}

#[derive(Debug, Clone, Args, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[allow(clippy::struct_excessive_bools)]
pub struct Load {
    /// What each request is.
    #[arg(long, value_enum, default_value = "samples")]
    pub scenario: What,

    // --- arrivals
    /// The rate, requests per second: `100`, a ramp over the run `10..200`,
    /// or steps `10/30s,50/30s,100/1m` (their durations make the run).
    #[arg(long, conflicts_with_all = ["bursts", "trace"])]
    pub rate: Option<String>,
    /// How the rate is spent: evenly spaced or as a Poisson process.
    #[arg(long, default_value = "uniform")]
    pub process: Process,
    /// Bursts `SIZE/PERIOD`: e.g. `100/5s`, the HENDU paper's load.
    #[arg(long, conflicts_with = "trace")]
    pub bursts: Option<String>,
    /// A recorded trace: one instant per line in seconds, replayed from its first.
    #[arg(long)]
    pub trace: Option<PathBuf>,
    /// How long the run lasts (with --rate or --bursts): `90s`, `10m`.
    #[arg(long, default_value = "60s")]
    pub duration: String,
    /// The Poisson process's seed.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,

    // --- targets
    /// The communication service (device registration; REST samples).
    #[arg(long, env = "HENDU_LOAD_API", default_value = "http://127.0.0.1:8080")]
    pub api: String,
    /// The communication service's TCP v2 address (--transport tcp-v2).
    #[arg(long, env = "HENDU_LOAD_TCP", default_value = "127.0.0.1:7071")]
    pub tcp: String,
    /// The hash-generator (catalogue uploads; --upload-programme).
    #[arg(
        long,
        env = "HENDU_LOAD_HASH_GENERATOR",
        default_value = "http://127.0.0.1:8081"
    )]
    pub hash_generator: String,
    /// The URL of --scenario get.
    #[arg(long)]
    pub url: Option<String>,
    /// An administrator's API token (to register devices and upload tracks).
    #[arg(long, env = "HENDU_LOAD_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    // --- device samples
    /// How device samples travel.
    #[arg(long, value_enum, default_value = "rest")]
    pub transport: Transport,
    /// What a device sample carries.
    #[arg(long, value_enum, default_value = "fingerprint")]
    pub body: Body,
    /// Devices to register and send from (request k is device k mod n's next sample).
    #[arg(long, default_value_t = 100)]
    pub devices: usize,
    /// Audio files the devices play (any format the engine decodes); without
    /// them, synthetic tracks.
    #[arg(long, num_args = 1..)]
    pub programme: Vec<PathBuf>,
    /// How many synthetic tracks (120 s each) without --programme.
    #[arg(long, default_value_t = 4)]
    pub synthetic: usize,
    /// Uploads the programme's tracks to the catalogue first, so that the
    /// samples make plays.
    #[arg(long)]
    pub upload_programme: bool,
    /// Seconds of audio per sample.
    #[arg(long, default_value_t = 10.0)]
    pub sample_s: f64,
    /// Resends a sample refused as busy (503, 429) or cut off, after the
    /// service's Retry-After (at least 1 s), up to this many times, as a
    /// device does; its latency still runs from the first intended send.
    #[arg(long, default_value_t = 0)]
    pub retries: u32,
    /// Measures the end-to-end latency (sample to play) from the stores'
    /// play events: needs HENDU_MYSQL_URL, HENDU_MONGO_URL, HENDU_REDIS_URL
    /// (and HENDU_REDIS_PREFIX) as the services have them.
    #[arg(long)]
    pub e2e: bool,
    /// After the last answer, how long to wait for the last plays.
    #[arg(long, default_value = "5s")]
    pub e2e_settle: String,

    // --- bounds
    /// Requests in flight at most; more are not sent and counted `not_sent`.
    #[arg(long, default_value_t = 10_000)]
    pub in_flight: usize,
    /// Each request's time to answer before it counts as `timeout`.
    #[arg(long, default_value = "60s")]
    pub timeout: String,
    /// After the last request is due, how long answers may still come.
    #[arg(long, default_value = "60s")]
    pub drain: String,

    /// The results directory (default: loadtest/results/<UTC time>-<scenario>).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// What device samples were set up with, for checks after the run.
#[derive(Debug, Clone)]
pub struct SamplesSetup {
    /// The devices' ids, by their number in the run.
    pub device_ids: Vec<i64>,
    /// The catalogue id of each programme track (uploaded by the run).
    pub music_ids: Vec<Option<i64>>,
    /// Which programme track each sample of a pass is cut from.
    pub track_of_stretch: Vec<usize>,
    /// Each sample's length in a pass, in ms.
    pub stretch_ms: Vec<u32>,
    /// When every device's first sample was captured (ms since the epoch).
    pub start_ms: i64,
}

impl Default for Load {
    /// The flags' defaults (and their environment variables).
    fn default() -> Self {
        #[derive(Parser)]
        struct Defaults {
            #[command(flatten)]
            load: Load,
        }
        Defaults::parse_from(["hendu-load"]).load
    }
}

impl Load {
    /// When requests are due.
    ///
    /// # Errors
    /// A malformed or missing schedule.
    pub fn arrivals(&self) -> Result<Arrivals> {
        let seconds = parse_duration(&self.duration)?.as_secs_f64();
        match (&self.rate, &self.bursts, &self.trace) {
            (_, _, Some(trace)) => Arrivals::trace(trace),
            (_, Some(bursts), None) => Arrivals::bursts(bursts, seconds),
            (Some(rate), None, None) => {
                Arrivals::rate(rate, Some(seconds), self.process, self.seed)
            }
            (None, None, None) => bail!("say when requests are due: rate, bursts or trace"),
        }
    }

    /// How long the load lasts (0 when its schedule is malformed).
    pub fn duration_s(&self) -> f64 {
        self.arrivals().map_or(0.0, |a| a.seconds())
    }

    /// The load as `hendu-load run` flags (without targets and token).
    pub fn flags(&self) -> String {
        let mut f = vec![format!(
            "--scenario {}",
            format!("{:?}", self.scenario).to_lowercase()
        )];
        if let Some(r) = &self.rate {
            f.push(format!(
                "--rate {r} --process {}",
                format!("{:?}", self.process).to_lowercase()
            ));
        }
        if let Some(b) = &self.bursts {
            f.push(format!("--bursts {b}"));
        }
        if let Some(t) = &self.trace {
            f.push(format!("--trace {}", t.display()));
        }
        f.push(format!("--duration {}", self.duration));
        if self.scenario == What::Samples {
            f.push(format!(
                "--transport {} --body {} --devices {} --sample-s {}",
                if self.transport == Transport::Rest {
                    "rest"
                } else {
                    "tcp-v2"
                },
                format!("{:?}", self.body).to_lowercase(),
                self.devices,
                self.sample_s
            ));
            if self.upload_programme {
                f.push("--upload-programme".into());
            }
        }
        f.join(" ")
    }

    /// Sets the load up (the programme uploaded, the devices registered)
    /// and makes the run's plan, writing into `out` (default:
    /// `loadtest/results/<UTC time>-<scenario>`).
    ///
    /// # Errors
    /// A malformed setting, named; a service refusing the set-up.
    pub async fn plan(&self) -> Result<Plan> {
        let a = self;
        let arrivals = a.arrivals()?;
        let timeout = parse_duration(&a.timeout)?;
        let http = scenario::http_client(timeout)?;
        let mut e2e_devices = None;
        let mut samples = None;
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
                let audio = programme(a)?;
                let music_ids = if a.upload_programme {
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
                    .await?
                } else {
                    vec![None; audio.len()]
                };
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
                let mut track_of_stretch = Vec::new();
                for (t, track) in audio.iter().enumerate() {
                    let n = hendu_sensor::programme::cut(&track.samples, a.sample_s).len();
                    track_of_stretch.extend(std::iter::repeat_n(t, n));
                }
                samples = Some(SamplesSetup {
                    device_ids: registered.iter().map(|r| r.id).collect(),
                    music_ids,
                    track_of_stretch,
                    stretch_ms: (0..prepared.len())
                        .map(|k| prepared.duration_of(k))
                        .collect(),
                    start_ms,
                });
                anyhow::ensure!(a.retries <= 100, "--retries is at most 100");
                Arc::new(
                    Samples::new(
                        a.transport,
                        target,
                        registered
                            .into_iter()
                            .map(|r| Device::new(r.credentials))
                            .collect(),
                        prepared,
                        start_ms,
                    )
                    .with_retries(a.retries),
                )
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
            "programme": a.programme, "synthetic": a.synthetic, "sample_s": a.sample_s, "retries": a.retries, "e2e": a.e2e,
            "in_flight": a.in_flight, "timeout": a.timeout, "drain": a.drain,
        });
        Ok(Plan {
            arrivals,
            scenario,
            bounds: Bounds {
                in_flight: a.in_flight,
                drain: parse_duration(&a.drain)?,
            },
            out,
            e2e_devices,
            stores: None,
            e2e_settle: parse_duration(&a.e2e_settle)?,
            keep_deliveries: false,
            samples,
            settings,
        })
    }
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
fn programme(a: &Load) -> Result<Vec<Audio>> {
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
pub fn address_of(url: &str) -> Result<SocketAddr> {
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
