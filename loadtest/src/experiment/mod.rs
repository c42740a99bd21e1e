//! A declared experiment (a TOML file): the deployment, the load, the
//! faults on a schedule; run into data and plots with one command,
//! `hendu-experiment run FILE`.
//!
//! ```toml
//! name = "chaos"
//! [deployment]
//! target = "local"                 # or "kubernetes" (a dry run: prints what it would do)
//! replicas = { recognition = 2, filter = 2 }
//! env = { HENDU_FILTER_FLUSH_S = "5" }
//! [load]                           # the flags of `hendu-load run`, as keys
//! rate = "20"
//! duration = "10m"
//! upload_programme = true
//! [[faults]]                       # SIGKILL a random replica every 20 s from 30 s
//! action = "kill"
//! service = "recognition"
//! at = "30s"
//! every = "20s"
//! [[faults]]                       # POST /v1/faults to every replica
//! action = "inject"
//! service = "filter"
//! at = "2m"
//! fault = { kind = "HTTPChaos", action = "delay", delay_ms = 200, ttl_s = 30 }
//! ```
//!
//! - [`local`]: the local target: the services as processes on this
//!   machine over the real databases, a fresh database per run.
//! - [`kubernetes`]: the same experiment as `kubectl` commands (dry run).
//! - [`scaling`]: a scaling policy for the local target (backlog or CPU).
//! - [`balancer`]: connections spread over a service's live replicas.
//! - [`invariants`]: what must hold after any run: every accepted sample
//!   recognised and decided, nothing dead-lettered, every expected play
//!   there, none twice.

pub mod balancer;
pub mod invariants;
pub mod kubernetes;
pub mod local;
pub mod scaling;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use serde::Deserialize;

use crate::arrival::parse_duration;
use crate::load::Load;

/// The services an experiment can deploy, in start order.
pub const SERVICES: [&str; 4] = ["hash-generator", "communication", "recognition", "filter"];

/// An experiment file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub deployment: Deployment,
    pub load: Load,
    #[serde(default)]
    pub faults: Vec<Fault>,
    /// A scaling policy (the local target).
    #[serde(default)]
    pub scaling: Option<scaling::Scaling>,
    /// After the load, how long the pipeline may take to finish its work
    /// before the invariants are checked (default 60 s).
    #[serde(default)]
    pub settle: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    Local,
    Kubernetes,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deployment {
    pub target: Target,
    /// Replicas per service (1 when not named).
    #[serde(default)]
    pub replicas: BTreeMap<String, usize>,
    /// Settings for every service (the local target).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// The kustomize overlay (the Kubernetes target).
    #[serde(default)]
    pub overlay: Option<String>,
    /// Runs a Redis server of the experiment's own (Debian's
    /// `redis-server`, appending every write to its file), which `stop`
    /// faults may stop and start again (the local target).
    #[serde(default)]
    pub own_redis: bool,
}

impl Deployment {
    pub fn replicas_of(&self, service: &str) -> usize {
        self.replicas.get(service).copied().unwrap_or(1)
    }
}

/// A fault on the schedule.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    pub action: Action,
    pub service: String,
    /// When it first happens, from the start of the load.
    pub at: String,
    /// Then again every this long, until the load ends.
    #[serde(default)]
    pub every: Option<String>,
    /// `kill`: how long the replica stays dead before it is started again
    /// (an orchestrator's restart; default 1 s).
    #[serde(default)]
    pub restart_after: Option<String>,
    /// `inject`: the fault, as `POST /v1/faults` takes it.
    #[serde(default)]
    pub fault: Option<toml::Value>,
    /// `stop`: how long the server stays stopped.
    #[serde(default, rename = "for")]
    pub lasting: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// SIGKILL a random replica of the service, then start it again.
    Kill,
    /// Inject a fault into every replica through its fault API.
    Inject,
    /// Stop a database server (`service = "redis"`, with `own_redis`) for
    /// `for`, then start it again.
    Stop,
}

/// A fault's instants within a load of `seconds`.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    pub first: Duration,
    pub every: Option<Duration>,
}

impl Schedule {
    pub fn instants(&self, seconds: f64) -> Vec<Duration> {
        let end = Duration::from_secs_f64(seconds);
        let mut out = Vec::new();
        let mut t = self.first;
        while t < end {
            out.push(t);
            match self.every {
                Some(e) if !e.is_zero() => t += e,
                _ => break,
            }
        }
        out
    }
}

impl Fault {
    /// # Errors
    /// A malformed duration.
    pub fn schedule(&self) -> Result<Schedule> {
        Ok(Schedule {
            first: parse_duration(&self.at)?,
            every: self.every.as_deref().map(parse_duration).transpose()?,
        })
    }

    pub fn restart_after(&self) -> Result<Duration> {
        self.restart_after
            .as_deref()
            .map_or(Ok(Duration::from_secs(1)), parse_duration)
    }

    /// How long a `stop` lasts (default 30 s).
    pub fn lasting(&self) -> Result<Duration> {
        self.lasting
            .as_deref()
            .map_or(Ok(Duration::from_secs(30)), parse_duration)
    }

    /// The injected fault as JSON.
    pub fn fault_json(&self) -> Result<serde_json::Value> {
        let f = self
            .fault
            .as_ref()
            .context("an inject fault names its `fault`")?;
        Ok(serde_json::to_value(f)?)
    }
}

/// `loadtest/results/<name>-<UTC time>`.
pub fn default_out(name: &str) -> std::path::PathBuf {
    let t = time::OffsetDateTime::now_utc();
    format!(
        "loadtest/results/{name}-{:04}{:02}{:02}-{:02}{:02}{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
    .into()
}

/// Runs `spec` (read from `file`) on this machine into `out`: the load's
/// results in `out/load/`, the faults in `events.csv`, every replica's
/// metrics in `metrics.csv`, the replicas over time in `replicas.csv`, the
/// services' logs in `logs/`, and `experiment.json` (the spec, the
/// provenance, the load's summary, the drain time, the invariants).
/// Returns whether the invariants hold.
///
/// # Errors
/// What stopped the run (a service that does not start, a store down).
pub async fn run_local(spec: &Spec, file: &Path, out: &Path) -> Result<bool> {
    let report = local::run(spec, out).await?;
    let doc = serde_json::json!({
        "experiment": spec.name,
        "description": spec.description,
        "file": file.display().to_string(),
        "spec": std::fs::read_to_string(file).unwrap_or_default(),
        "scaling": spec.scaling.as_ref().map(|p| serde_json::json!({"service": p.service, "metric": p.metric, "target": p.target, "min": p.min, "max": p.max, "cooldown": p.cooldown, "interval": p.interval})),
        "replicas": SERVICES.iter().map(|s| (s.to_string(), spec.deployment.replicas_of(s))).collect::<BTreeMap<_, _>>(),
        "provenance": crate::report::provenance(serde_json::Value::Null),
        "load": report.load,
        "faults_applied": report.events.len(),
        "drained_after_s": report.drained_after_s,
        "invariants": report.invariants,
    });
    std::fs::write(
        out.join("experiment.json"),
        serde_json::to_string_pretty(&doc)? + "\n",
    )?;
    let i = &report.invariants;
    println!(
        "{}: {} due, {} ok, p50 {} ms, p99 {} ms; {} faults applied; drained {}; invariants {} ({} accepted, {} expected plays, {} missing, {} twice, {} unsettled, {} dead letters); results in {}",
        spec.name,
        report.load["requests"]["due"],
        report.load["requests"]["ok"],
        report.load["latency_ms"]["p50"],
        report.load["latency_ms"]["p99"],
        report.events.len(),
        report
            .drained_after_s
            .map_or("not within the settle time".into(), |s| format!(
                "{s:.1} s after the load"
            )),
        if i.holds { "hold" } else { "DO NOT HOLD" },
        i.accepted,
        i.expected_plays,
        i.missing_plays_count,
        i.duplicate_plays_count,
        i.unsettled,
        i.dead_letters,
        out.display()
    );
    Ok(i.holds)
}

impl Spec {
    /// Reads and checks an experiment file.
    ///
    /// # Errors
    /// An unreadable file, TOML that is not an experiment (with the line),
    /// a service or setting that does not exist.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let spec: Self = toml::from_str(&text)
            .with_context(|| format!("{} is not an experiment", path.display()))?;
        spec.check()?;
        Ok(spec)
    }

    /// # Errors
    /// What is wrong, named.
    pub fn check(&self) -> Result<()> {
        ensure!(
            !self.name.is_empty()
                && self
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')),
            "an experiment's name is letters, digits, - _ . (it names its results directory)"
        );
        for (service, n) in &self.deployment.replicas {
            ensure!(
                SERVICES.contains(&service.as_str()),
                "no service {service:?} (one of {SERVICES:?})"
            );
            ensure!((1..=16).contains(n), "{service}: between 1 and 16 replicas");
        }
        for (k, f) in self.faults.iter().enumerate() {
            if f.action == Action::Stop {
                ensure!(
                    f.service == "redis" && self.deployment.own_redis,
                    "fault {}: stop is for the experiment's own Redis (service = \"redis\", own_redis = true)",
                    k + 1
                );
                f.lasting().with_context(|| format!("fault {}", k + 1))?;
            } else {
                ensure!(
                    SERVICES.contains(&f.service.as_str()),
                    "fault {}: no service {:?}",
                    k + 1,
                    f.service
                );
            }
            f.schedule().with_context(|| format!("fault {}", k + 1))?;
            f.restart_after()
                .with_context(|| format!("fault {}", k + 1))?;
            match f.action {
                Action::Inject => {
                    f.fault_json().with_context(|| format!("fault {}", k + 1))?;
                }
                Action::Kill | Action::Stop => {
                    ensure!(
                        f.fault.is_none(),
                        "fault {}: only inject takes a `fault`",
                        k + 1
                    );
                }
            }
        }
        if let Some(p) = &self.scaling {
            ensure!(
                SERVICES.contains(&p.service.as_str()),
                "scaling: no service {:?}",
                p.service
            );
            p.check()?;
            let n = self.deployment.replicas_of(&p.service);
            ensure!(
                (p.min..=p.max).contains(&n),
                "scaling: {} starts with {n} replicas, outside min..max",
                p.service
            );
        }
        if self.load.transport == crate::scenario::Transport::TcpV2 {
            ensure!(
                self.deployment.replicas_of("communication") == 1
                    && self
                        .scaling
                        .as_ref()
                        .is_none_or(|p| p.service != "communication"),
                "TCP v2 samples go to one communication replica here: keep it at one"
            );
        }
        if let Some(s) = &self.settle {
            parse_duration(s).context("settle")?;
        }
        if self.deployment.target == Target::Local && self.deployment.overlay.is_some() {
            bail!("an overlay is for the kubernetes target");
        }
        Ok(())
    }

    pub fn settle(&self) -> Duration {
        self.settle
            .as_deref()
            .and_then(|s| parse_duration(s).ok())
            .unwrap_or(Duration::from_secs(60))
    }

    pub fn injects(&self) -> bool {
        self.faults.iter().any(|f| f.action == Action::Inject)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHAOS: &str = r#"
name = "chaos"
[deployment]
target = "local"
replicas = { recognition = 2, filter = 2 }
[load]
rate = "20"
duration = "1m"
[[faults]]
action = "kill"
service = "recognition"
at = "10s"
every = "20s"
[[faults]]
action = "inject"
service = "filter"
at = "5s"
fault = { kind = "HTTPChaos", action = "delay", delay_ms = 200, ttl_s = 30 }
"#;

    #[test]
    fn an_experiment_file_reads_into_its_parts() {
        let spec: Spec = toml::from_str(CHAOS).unwrap();
        spec.check().unwrap();
        assert_eq!(spec.deployment.replicas_of("recognition"), 2);
        assert_eq!(spec.deployment.replicas_of("communication"), 1);
        assert_eq!(spec.load.rate.as_deref(), Some("20"));
        // The load's other keys keep the flags' defaults.
        assert_eq!(spec.load.devices, 100);
        let kills = spec.faults[0].schedule().unwrap().instants(60.0);
        assert_eq!(kills, [10, 30, 50].map(Duration::from_secs));
        assert_eq!(spec.faults[1].fault_json().unwrap()["delay_ms"], 200);
        assert!(spec.injects());
    }

    #[test]
    fn mistakes_are_named() {
        let e = |text: &str| {
            toml::from_str::<Spec>(text)
                .map_err(anyhow::Error::from)
                .and_then(|s| s.check())
                .unwrap_err()
                .to_string()
        };
        assert!(e(&CHAOS.replace("recognition = 2", "recogniser = 2")).contains("no service"));
        assert!(e(&CHAOS.replace("rate = \"20\"", "rat = \"20\"")).contains("unknown field"));
        assert!(e(&CHAOS.replace("every = \"20s\"", "every = \"soon\"")).contains("fault 1"));
        assert!(e(&CHAOS.replace("name = \"chaos\"", "name = \"../x\"")).contains("name"));
    }
}
