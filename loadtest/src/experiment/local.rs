//! The local target: the services as processes on this machine, over the
//! real MySQL (MariaDB), MongoDB and Redis named by `HENDU_TEST_MYSQL_URL`,
//! `HENDU_TEST_MONGO_URL` and `HENDU_TEST_REDIS_URL`, in a database (and
//! Redis prefix) made for the run and dropped after it.
//!
//! While the load runs, the faults happen on their schedule, and every
//! replica's `/metrics` is read each second. Then the pipeline gets the
//! settle time to finish, the invariants are checked against the stores,
//! and every service is stopped with SIGTERM.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use hendu_storage::testing::{Kind, Place};
use hendu_storage::{Queue, QueueConfig, Storage, StorageConfig};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::balancer::{self, Backends};
use super::scaling::Metric;
use super::{Action, SERVICES, Spec};
use crate::local::{Service, eventually, free_port};

const ADMIN_EMAIL: &str = "experiments@hendu.invalid";

/// The running replicas, by service.
struct Fleet {
    services: BTreeMap<&'static str, Vec<Service>>,
    config: StorageConfig,
    env: Vec<(String, String)>,
    logs: PathBuf,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet").finish_non_exhaustive()
    }
}

fn binary(service: &str) -> String {
    format!("hendu-{service}")
}

impl Fleet {
    async fn start_one(&self, service: &str, name: &str) -> Result<Service> {
        let env: Vec<(&str, String)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.clone()))
            .collect();
        Service::launch(&binary(service), &[], name, &self.config, &env, &self.logs).await
    }

    fn base(&self, service: &str) -> Result<String> {
        self.services
            .get(service)
            .and_then(|r| r.first())
            .map(|s| s.base.clone())
            .with_context(|| format!("no {service} running"))
    }
}

/// The experiment's own Redis server, which `stop` faults stop and start.
#[derive(Debug)]
struct OwnRedis {
    port: u16,
    dir: PathBuf,
    child: Option<tokio::process::Child>,
}

impl OwnRedis {
    async fn start(&mut self) -> Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let child = tokio::process::Command::new("redis-server")
            .args([
                "--bind",
                "127.0.0.1",
                "--port",
                &self.port.to_string(),
                "--save",
                "",
            ])
            .args(["--appendonly", "yes", "--appendfsync", "always", "--dir"])
            .arg(&self.dir)
            .stdout(std::fs::File::create(self.dir.join("redis.log"))?)
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("cannot start redis-server (Debian: redis-server)")?;
        self.child = Some(child);
        let up = eventually(Duration::from_secs(10), || async {
            tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .ok()
                .map(|_| ())
        })
        .await;
        up.context("the experiment's Redis did not start")
    }

    /// SIGTERM: Redis finishes its append-only file and exits.
    async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Some(pid) = child.id() {
                let _ = tokio::process::Command::new("kill")
                    .args(["-TERM", &pid.to_string()])
                    .status()
                    .await;
            }
            let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
            let _ = child.kill().await;
        }
    }
}

/// One line of `events.csv`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Happened {
    pub at_s: f64,
    pub action: String,
    pub service: String,
    pub replica: String,
    pub detail: String,
}

/// What a local run produced, besides the load's own results.
#[derive(Debug)]
pub struct Report {
    pub events: Vec<Happened>,
    pub invariants: super::invariants::Checked,
    pub load: Value,
    /// From the end of the load until the queues were empty and every
    /// accepted sample settled (None: not within the settle time).
    pub drained_after_s: Option<f64>,
}

/// Runs `spec` on this machine, writing into `out`.
///
/// # Errors
/// A service that does not start, the stores not answering, a load that
/// cannot be set up; the invariants' failures are in the report, not errors.
#[allow(clippy::too_many_lines)]
pub async fn run(spec: &Spec, out: &Path) -> Result<Report> {
    std::fs::create_dir_all(out)?;
    let place = Place::new(Kind::Servers).await;
    let mut config = place.config.clone();
    let own_redis = if spec.deployment.own_redis {
        let mut r = OwnRedis {
            port: free_port(),
            dir: out.join("redis"),
            child: None,
        };
        r.start().await?;
        Some(Arc::new(Mutex::new(r)))
    } else {
        None
    };
    if let StorageConfig::Servers(s) = &mut config {
        // Production's queue timing, not the tests' short one (unless the
        // experiment sets it).
        s.queue = QueueConfig::default();
        if let Some(r) = &own_redis {
            s.redis_url = hendu_storage::config::DbUrl::new(format!(
                "redis://127.0.0.1:{}",
                r.lock().await.port
            ));
        }
    }
    let password = format!("pw-{:016x}", rand::random::<u64>());
    let mut env: Vec<(String, String)> = vec![
        ("HENDU_ADMIN_EMAIL".into(), ADMIN_EMAIL.into()),
        ("HENDU_ADMIN_PASSWORD".into(), password.clone()),
        ("HENDU_SHUTDOWN_GRACE_S".into(), "10".into()),
    ];
    if spec.injects() {
        env.push(("HENDU_FAULTS".into(), "on".into()));
    }
    let tcp = (spec.load.transport == crate::scenario::Transport::TcpV2)
        .then(|| format!("127.0.0.1:{}", free_port()));
    env.extend(
        spec.deployment
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone())),
    );
    let mut fleet = Fleet {
        services: BTreeMap::new(),
        config: config.clone(),
        env,
        logs: out.join("logs"),
    };
    eprintln!("starting the services");
    for service in SERVICES {
        let mut replicas = Vec::new();
        for k in 0..spec.deployment.replicas_of(service) {
            let name = format!("{service}-{k}");
            let started = if service == "communication"
                && let Some(tcp) = &tcp
            {
                let mut extra: Vec<(&str, String)> = fleet
                    .env
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.clone()))
                    .collect();
                extra.push(("HENDU_TCP_V2_ADDR", tcp.clone()));
                Service::launch(&binary(service), &[], &name, &config, &extra, &fleet.logs).await?
            } else {
                fleet.start_one(service, &name).await?
            };
            replicas.push(started);
        }
        fleet.services.insert(service, replicas);
    }
    let http = crate::scenario::http_client(Duration::from_secs(30))?;
    let token = admin_token(&http, &fleet.base("communication")?, &password).await?;
    // The load reaches every communication replica through a balancer.
    let stop = tokio_util::sync::CancellationToken::new();
    let backends = Backends::default();
    backends.set(addrs(&fleet, "communication"));
    let front = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let communication = format!("http://{}", front.local_addr()?);
    tokio::spawn(balancer::serve(front, backends.clone(), stop.clone()));

    let mut load = spec.load.clone();
    load.api = communication.clone();
    load.hash_generator = fleet.base("hash-generator")?;
    if let Some(tcp) = &tcp {
        load.tcp = tcp.clone();
    }
    load.token = Some(token.clone());
    // The sample-to-play latency, from the run's own stores.
    load.e2e = load.scenario == crate::load::What::Samples;
    load.out = Some(out.join("load"));
    let mut plan = load.plan().await?;
    plan.keep_deliveries = true;
    plan.stores = Some(config.clone());
    plan.settings = json!({ "experiment": spec.name, "load": plan.settings });
    if let Some(samples) = &plan.samples {
        let tracks = samples.music_ids.iter().flatten().count();
        for r in &fleet.services["recognition"] {
            eventually(Duration::from_secs(60), || async {
                (r.metric("hendu_catalogue_tracks").await >= Some(tracks as f64)).then_some(())
            })
            .await
            .with_context(|| format!("{} never loaded the programme's {tracks} tracks", r.name))?;
        }
    }
    let seconds = plan.arrivals.seconds();
    let fleet = Arc::new(Mutex::new(fleet));
    let events = Arc::new(std::sync::Mutex::new(Vec::<Happened>::new()));
    let start = Instant::now();

    // The faults, each on its own schedule.
    let mut faults = tokio::task::JoinSet::new();
    for (k, fault) in spec.faults.iter().enumerate() {
        let fault = fault.clone();
        let fleet = fleet.clone();
        let events = events.clone();
        let http = http.clone();
        let token = token.clone();
        let stop = stop.clone();
        let seed = spec.load.seed.wrapping_add(k as u64);
        let own_redis = own_redis.clone();
        faults.spawn(async move {
            let mut rng = SmallRng::seed_from_u64(seed);
            let Ok(schedule) = fault.schedule() else {
                return;
            };
            for at in schedule.instants(seconds) {
                tokio::select! {
                    () = tokio::time::sleep_until(start + at) => {}
                    () = stop.cancelled() => return,
                }
                let note = |action: &str, replica: &str, detail: String| {
                    events
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(Happened {
                            at_s: start.elapsed().as_secs_f64(),
                            action: action.into(),
                            service: fault.service.clone(),
                            replica: replica.into(),
                            detail,
                        });
                };
                match fault.action {
                    Action::Stop => {
                        let Some(redis) = &own_redis else { continue };
                        redis.lock().await.stop().await;
                        note("stop", "redis", "SIGTERM".into());
                        tokio::time::sleep(fault.lasting().unwrap_or(Duration::from_secs(30)))
                            .await;
                        let started = redis.lock().await.start().await;
                        match started {
                            Ok(()) => note("started", "redis", String::new()),
                            Err(e) => note("start_failed", "redis", e.to_string()),
                        }
                    }
                    Action::Kill => {
                        let (name, killed_at) = {
                            let mut f = fleet.lock().await;
                            let Some(replicas) = f.services.get_mut(fault.service.as_str()) else {
                                continue;
                            };
                            if replicas.is_empty() {
                                continue;
                            }
                            let i = rng.random_range(0..replicas.len());
                            let mut victim = replicas.remove(i);
                            victim.kill().await;
                            (victim.name.clone(), Instant::now())
                        };
                        note("kill", &name, "SIGKILL".into());
                        let wait = fault.restart_after().unwrap_or(Duration::from_secs(1));
                        tokio::time::sleep(wait).await;
                        let started = {
                            let f = fleet.lock().await;
                            f.start_one(&fault.service, &name).await
                        };
                        match started {
                            Ok(s) => {
                                let ready = killed_at.elapsed();
                                note(
                                    "restarted",
                                    &name,
                                    format!(
                                        "ready {:.0} ms after the kill",
                                        ready.as_secs_f64() * 1000.0
                                    ),
                                );
                                let mut f = fleet.lock().await;
                                if let Some(r) = f.services.get_mut(fault.service.as_str()) {
                                    r.push(s);
                                }
                            }
                            Err(e) => note("restart_failed", &name, e.to_string()),
                        }
                    }
                    Action::Inject => {
                        let Ok(body) = fault.fault_json() else {
                            continue;
                        };
                        let bases: Vec<(String, String)> = {
                            let f = fleet.lock().await;
                            f.services
                                .get(fault.service.as_str())
                                .map(|r| {
                                    r.iter().map(|s| (s.name.clone(), s.base.clone())).collect()
                                })
                                .unwrap_or_default()
                        };
                        for (name, base) in bases {
                            let answer = http
                                .post(format!("{base}/v1/faults"))
                                .bearer_auth(&token)
                                .json(&body)
                                .send()
                                .await;
                            let detail = match answer {
                                Ok(r) => format!("{} {}", r.status().as_u16(), body),
                                Err(e) => format!("not sent: {e}"),
                            };
                            note("inject", &name, detail);
                        }
                    }
                }
            }
        });
    }

    // Every replica's metrics, each second.
    let scraped = {
        let fleet = fleet.clone();
        let backends = backends.clone();
        let http = http.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut csv = String::from("second,service,replica,series,value\n");
            let mut replicas_csv = String::from("second,service,replicas\n");
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    () = stop.cancelled() => break,
                }
                let t = start.elapsed().as_secs();
                let targets: Vec<(&'static str, String, String)> = {
                    let f = fleet.lock().await;
                    backends.set(addrs(&f, "communication"));
                    for (service, r) in &f.services {
                        let _ = writeln!(replicas_csv, "{t},{service},{}", r.len());
                    }
                    f.services
                        .iter()
                        .flat_map(|(s, r)| {
                            r.iter().map(move |x| (*s, x.name.clone(), x.base.clone()))
                        })
                        .collect()
                };
                for (service, name, base) in targets {
                    let Ok(r) = http
                        .get(format!("{base}/metrics"))
                        .timeout(Duration::from_millis(800))
                        .send()
                        .await
                    else {
                        continue;
                    };
                    let Ok(text) = r.text().await else { continue };
                    for line in text.lines() {
                        if line.starts_with('#')
                            || line.contains("_bucket{")
                            || line.contains("_created")
                        {
                            continue;
                        }
                        if let Some((series, value)) = line.rsplit_once(' ') {
                            let _ = writeln!(
                                csv,
                                "{t},{service},{name},\"{}\",{value}",
                                series.replace('"', "'")
                            );
                        }
                    }
                }
            }
            (csv, replicas_csv)
        })
    };

    // Connected here: the compiler cannot prove the connection's future
    // Send inside a spawned task (its retry closures).
    let scaling_store = match &spec.scaling {
        Some(_) => Some(Storage::connect(&config).await?),
        None => None,
    };
    let scaler = spec
        .scaling
        .clone()
        .zip(scaling_store)
        .map(|(policy, storage)| {
            let fleet = fleet.clone();
            let events = events.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                match scale(policy, fleet, events, stop, storage, start).await {
                    Ok(trace) => Some(trace),
                    Err(e) => {
                        eprintln!("the scaling policy stopped: {e:#}");
                        None
                    }
                }
            })
        });
    eprintln!("load: {}", spec.load.flags());
    let outcome = crate::run(plan).await?;
    let load_ended = Instant::now();
    stop.cancel();
    while faults.join_next().await.is_some() {}
    if let Some(s) = scaler
        && let Ok(Some(trace)) = s.await
    {
        std::fs::write(out.join("scaling.csv"), trace)?;
    }

    // The pipeline finishes what it was given.
    let storage = Storage::connect(&config)
        .await
        .context("cannot open the run's stores")?;
    let accepted: Vec<String> = outcome
        .delivered
        .iter()
        .flat_map(|d| d.iter().map(|(_, id, _)| id.clone()))
        .collect();
    let drained = eventually(spec.settle(), || async {
        let mut idle = true;
        for q in [Queue::Samples, Queue::RawResults] {
            match storage.queue.backlog(q).await {
                Ok(b) => idle &= b.waiting == 0 && b.pending == 0,
                Err(_) => idle = false,
            }
        }
        let unsettled = storage
            .documents
            .unsettled_samples(time::OffsetDateTime::now_utc(), 1)
            .await
            .map(|v| v.is_empty())
            .unwrap_or(false);
        (idle && unsettled).then(|| load_ended.elapsed().as_secs_f64())
    })
    .await;
    let invariants = super::invariants::check(&storage, &outcome, &accepted).await?;
    storage.close().await;
    let (metrics_csv, replicas_csv) = scraped.await.unwrap_or_default();

    let mut fleet = Arc::try_unwrap(fleet)
        .map_err(|_| anyhow::anyhow!("a fault still holds the services"))?
        .into_inner();
    let mut stopped = Vec::new();
    for replicas in fleet.services.values_mut() {
        for s in replicas.iter_mut() {
            let status = s
                .stop()
                .await
                .map(|st| st.to_string())
                .unwrap_or_else(|e| e.to_string());
            stopped.push(json!({ "replica": s.name, "exit": status }));
        }
    }
    drop(place);
    if let Some(r) = own_redis {
        r.lock().await.stop().await;
    }

    let events = events.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut events_csv = String::from("second,action,service,replica,detail\n");
    for e in &events {
        let _ = writeln!(
            events_csv,
            "{:.3},{},{},{},\"{}\"",
            e.at_s,
            e.action,
            e.service,
            e.replica,
            e.detail.replace('"', "'")
        );
    }
    std::fs::write(out.join("events.csv"), events_csv)?;
    std::fs::write(out.join("metrics.csv"), metrics_csv)?;
    std::fs::write(out.join("replicas.csv"), replicas_csv)?;
    if let Some(first) = stopped
        .iter()
        .find(|s| !s["exit"].as_str().unwrap_or("").contains("exit status: 0"))
    {
        eprintln!("note: a service did not exit cleanly: {first}");
    }
    let mut load_summary = outcome.summary.clone();
    load_summary["stopped"] = Value::Array(stopped);
    Ok(Report {
        events,
        invariants,
        load: load_summary,
        drained_after_s: drained,
    })
}

/// The addresses of a service's live replicas.
fn addrs(fleet: &Fleet, service: &str) -> Vec<std::net::SocketAddr> {
    fleet
        .services
        .get(service)
        .map(|r| {
            r.iter()
                .filter_map(|s| balancer::addr_of(&s.base))
                .collect()
        })
        .unwrap_or_default()
}

/// CPU seconds a process has used (user and system), from `/proc`.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command's closing parenthesis; utime and stime are
    // the 14th and 15th of the line, in clock ticks (100 a second on Linux).
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// Runs the scaling policy until `stop`.
async fn scale(
    policy: super::scaling::Scaling,
    fleet: Arc<Mutex<Fleet>>,
    events: Arc<std::sync::Mutex<Vec<Happened>>>,
    stop: tokio_util::sync::CancellationToken,
    storage: Storage,
    start: Instant,
) -> Result<String> {
    let service = policy.service.clone();
    let queue = if service == "filter" {
        Queue::RawResults
    } else {
        Queue::Samples
    };
    let mut tick = tokio::time::interval(policy.interval()?);
    let mut last_change: Option<Instant> = None;
    let mut cpu_before: BTreeMap<u32, (f64, Instant)> = BTreeMap::new();
    let mut served_before: BTreeMap<String, Served> = BTreeMap::new();
    let http = crate::scenario::http_client(Duration::from_secs(2))?;
    let mut trace = String::from("second,replicas,value,wanted\n");
    let mut next_name = {
        let f = fleet.lock().await;
        f.services.get(service.as_str()).map_or(0, Vec::len)
    };
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => break,
        }
        let mut pids: Vec<u32> = Vec::new();
        let mut bases: Vec<(String, String)> = Vec::new();
        {
            let f = fleet.lock().await;
            if let Some(r) = f.services.get(service.as_str()) {
                for s in r {
                    pids.push(s.pid());
                    bases.push((format!("{}@{}", s.name, s.pid()), s.base.clone()));
                }
            }
        }
        let replicas = pids.len();
        let value = match policy.metric {
            Metric::Lag => match storage.queue.backlog(queue).await {
                Ok(b) => (b.waiting + b.pending) as f64,
                Err(_) => continue,
            },
            Metric::Cpu => {
                let now = Instant::now();
                let mut used = Vec::new();
                for pid in &pids {
                    if let Some(cpu) = cpu_seconds(*pid) {
                        if let Some((before, at)) = cpu_before.get(pid) {
                            used.push(
                                (cpu - before) / now.duration_since(*at).as_secs_f64().max(1e-3),
                            );
                        }
                        cpu_before.insert(*pid, (cpu, now));
                    }
                }
                if used.is_empty() {
                    continue;
                }
                used.iter().sum::<f64>() / used.len() as f64
            }
            Metric::P99 | Metric::Busy => {
                let mut delta = Served::default();
                let mut seconds = 0.0;
                for (key, base) in &bases {
                    let Some(now) = served(&http, base).await else {
                        continue;
                    };
                    if let Some(before) = served_before.get(key) {
                        delta.add_difference(&now, before);
                        seconds = now.at.duration_since(before.at).as_secs_f64().max(seconds);
                    }
                    served_before.insert(key.clone(), now);
                }
                if seconds <= 0.0 {
                    continue;
                }
                if policy.metric == Metric::Busy {
                    delta.refused / seconds / replicas.max(1) as f64
                } else {
                    delta.p99_ms()
                }
            }
        };
        let _ = writeln!(
            trace,
            "{:.1},{replicas},{value:.3},{}",
            start.elapsed().as_secs_f64(),
            policy.wanted(replicas, value)
        );
        let Some(wanted) = policy.decide(replicas, value, last_change.map(|t| t.elapsed())) else {
            continue;
        };
        last_change = Some(Instant::now());
        let note = format!(
            "from {replicas} to {wanted} ({:?} {value:.2})",
            policy.metric
        );
        events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Happened {
                at_s: start.elapsed().as_secs_f64(),
                action: "scale".into(),
                service: service.clone(),
                replica: String::new(),
                detail: note,
            });
        if wanted > replicas {
            for _ in replicas..wanted {
                let name = format!("{service}-{next_name}");
                next_name += 1;
                let started = {
                    let f = fleet.lock().await;
                    f.start_one(&service, &name).await
                };
                match started {
                    Ok(s) => {
                        let mut f = fleet.lock().await;
                        if let Some(r) = f.services.get_mut(service.as_str()) {
                            r.push(s);
                        }
                    }
                    Err(e) => eprintln!("cannot start {name}: {e:#}"),
                }
            }
        } else {
            let gone = {
                let mut f = fleet.lock().await;
                f.services.get_mut(service.as_str()).and_then(Vec::pop)
            };
            if let Some(mut s) = gone {
                let _ = s.stop().await;
            }
        }
    }
    storage.close().await;
    Ok(trace)
}

/// What a replica's latency histogram says, at one instant.
#[derive(Debug, Clone)]
struct Served {
    at: Instant,
    /// Requests answered within each bucket's bound (seconds), cumulative.
    buckets: BTreeMap<String, (f64, f64)>,
    refused: f64,
}

impl Default for Served {
    fn default() -> Self {
        Self {
            at: Instant::now(),
            buckets: BTreeMap::new(),
            refused: 0.0,
        }
    }
}

impl Served {
    fn add_difference(&mut self, now: &Self, before: &Self) {
        self.refused += (now.refused - before.refused).max(0.0);
        for (le, (bound, n)) in &now.buckets {
            let was = before.buckets.get(le).map_or(0.0, |b| b.1);
            self.buckets.entry(le.clone()).or_insert((*bound, 0.0)).1 += (n - was).max(0.0);
        }
    }

    /// The bound of the bucket that holds the 99th percentile, in ms.
    fn p99_ms(&self) -> f64 {
        let mut bounds: Vec<(f64, f64)> = self.buckets.values().copied().collect();
        bounds.sort_by(|a, b| a.0.total_cmp(&b.0));
        let total = bounds.last().map_or(0.0, |b| b.1);
        if total <= 0.0 {
            return 0.0;
        }
        bounds
            .iter()
            .find(|(_, n)| *n >= 0.99 * total)
            .map_or(0.0, |(bound, _)| {
                if bound.is_finite() {
                    bound * 1000.0
                } else {
                    60_000.0
                }
            })
    }
}

/// A replica's request latency histogram (every route and status summed
/// per bucket) and its 503 answers, from its `/metrics`.
async fn served(http: &reqwest::Client, base: &str) -> Option<Served> {
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let mut out = Served::default();
    for line in text.lines() {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        if let Some(labels) = series.strip_prefix("hendu_http_request_duration_seconds_bucket{") {
            let Some(le) = labels
                .split("le=\"")
                .nth(1)
                .and_then(|r| r.split('"').next())
            else {
                continue;
            };
            let bound = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().unwrap_or(f64::INFINITY)
            };
            out.buckets.entry(le.to_owned()).or_insert((bound, 0.0)).1 += value;
        } else if series.starts_with("hendu_http_request_duration_seconds_count{")
            && series.contains("status=\"503\"")
        {
            out.refused += value;
        }
    }
    Some(out)
}

async fn admin_token(
    http: &reqwest::Client,
    communication: &str,
    password: &str,
) -> Result<String> {
    let r = http
        .post(format!("{communication}/v1/tokens"))
        .basic_auth(ADMIN_EMAIL, Some(password))
        .json(&json!({ "name": "experiment" }))
        .send()
        .await?;
    if !r.status().is_success() {
        bail!(
            "cannot get an administrator's token: {}",
            r.text().await.unwrap_or_default()
        );
    }
    let body: Value = r.json().await?;
    body["token"]
        .as_str()
        .map(str::to_owned)
        .context("no token in the answer")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn served(buckets: &[(f64, f64)], refused: f64) -> Served {
        Served {
            at: Instant::now(),
            buckets: buckets
                .iter()
                .map(|&(b, n)| (b.to_string(), (b, n)))
                .collect(),
            refused,
        }
    }

    #[test]
    fn the_p99_and_the_refusals_are_read_over_the_interval() {
        // Before: 100 fast requests. After: 100 more, of which 2 slow.
        let before = served(
            &[
                (0.01, 100.0),
                (0.1, 100.0),
                (1.0, 100.0),
                (f64::INFINITY, 100.0),
            ],
            5.0,
        );
        let now = served(
            &[
                (0.01, 198.0),
                (0.1, 198.0),
                (1.0, 200.0),
                (f64::INFINITY, 200.0),
            ],
            25.0,
        );
        let mut d = Served::default();
        d.add_difference(&now, &before);
        assert_eq!(d.refused, 20.0);
        assert_eq!(d.p99_ms(), 1000.0);
        let mut quiet = Served::default();
        quiet.add_difference(&before, &before);
        assert_eq!(quiet.p99_ms(), 0.0);
    }
}
