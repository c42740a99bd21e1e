//! HENDU's services as processes on this machine: launched on free ports
//! with a store's settings, waited for until ready, measured, killed,
//! stopped. The experiment runner's local target and the end-to-end tests
//! both start services this way.
//!
//! The binaries are looked up in `HENDU_BIN_DIR`, or else next to the
//! running executable's folder (`target/<profile>/`).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hendu_storage::StorageConfig;
use tokio::process::{Child, Command};

/// `n` consecutive ports free now on 127.0.0.1 (for a v1 data-port range).
pub fn free_ports(n: u16) -> std::ops::RangeInclusive<u16> {
    loop {
        let base = 20_000 + (free_port() % 30_000);
        let held: Vec<_> = (base..base + n)
            .map_while(|p| std::net::TcpListener::bind(("127.0.0.1", p)).ok())
            .collect();
        if held.len() == usize::from(n) {
            return base..=base + n - 1;
        }
    }
}

/// Where the service binaries are.
pub fn bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("HENDU_BIN_DIR") {
        return dir.into();
    }
    let exe = std::env::current_exe().unwrap_or_default();
    let mut dir = exe.parent().map(PathBuf::from).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir
}

/// A free TCP port on the loopback interface.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// One service process.
#[derive(Debug)]
pub struct Service {
    pub name: String,
    pub base: String,
    pub child: Child,
    /// From launch to the first `200` of `/readyz`.
    pub ready_after: Duration,
    pub log: PathBuf,
}

impl Service {
    /// Launches `binary` on a free port with the store's and `extra`
    /// environment, and waits until it is ready.
    pub async fn start(
        binary: &str,
        name: &str,
        store: &StorageConfig,
        extra: &[(&str, String)],
    ) -> Result<Self> {
        Self::start_with_args(binary, &[], name, store, extra).await
    }

    /// As [`Service::start`], with command-line arguments.
    pub async fn start_with_args(
        binary: &str,
        args: &[&str],
        name: &str,
        store: &StorageConfig,
        extra: &[(&str, String)],
    ) -> Result<Self> {
        Self::launch(
            binary,
            args,
            name,
            store,
            extra,
            &bin_dir().join("e2e-logs"),
        )
        .await
    }

    /// As [`Service::start_with_args`], its log in `logs`.
    pub async fn launch(
        binary: &str,
        args: &[&str],
        name: &str,
        store: &StorageConfig,
        extra: &[(&str, String)],
        logs: &std::path::Path,
    ) -> Result<Self> {
        let path = bin_dir().join(binary);
        if !path.exists() {
            bail!(
                "{} is missing: build the services first (cargo build --bins), or set HENDU_BIN_DIR",
                path.display()
            );
        }
        let port = free_port();
        std::fs::create_dir_all(logs)?;
        let log = logs.join(format!("{name}-{port}.log"));
        let file = std::fs::File::create(&log)?;
        let mut command = Command::new(&path);
        command
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HENDU_HTTP_ADDR", format!("127.0.0.1:{port}"))
            .env("HENDU_LOG", "info")
            .env("HENDU_REPLICA", name)
            .env("HENDU_SHUTDOWN_GRACE_S", "5")
            // The sensors' TCP ports are fixed by default: off unless a test asks.
            .env("HENDU_TCP_ADDR", "off")
            .env("HENDU_TCP_V2_ADDR", "off")
            .envs(hendu_storage::config::env_vars(store))
            .envs(extra.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .kill_on_drop(true);
        let started = Instant::now();
        let child = command
            .spawn()
            .with_context(|| format!("cannot start {}", path.display()))?;
        let mut service = Self {
            name: name.to_owned(),
            base: format!("http://127.0.0.1:{port}"),
            child,
            ready_after: Duration::ZERO,
            log,
        };
        service.wait_ready(started).await?;
        Ok(service)
    }

    async fn wait_ready(&mut self, started: Instant) -> Result<()> {
        let client = reqwest::Client::new();
        let url = format!("{}/readyz", self.base);
        while started.elapsed() < Duration::from_secs(60) {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "{} exited with {status} before it was ready; log: {}",
                    self.name,
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            if let Ok(r) = client.get(&url).send().await
                && r.status().is_success()
            {
                self.ready_after = started.elapsed();
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        bail!(
            "{} was not ready within 60 s; log: {}",
            self.name,
            self.log.display()
        )
    }

    pub fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    /// Resident memory, in kilobytes.
    pub fn rss_kb(&self) -> u64 {
        self.status_kb("VmRSS:")
    }

    /// The most resident memory the process has had, in kilobytes.
    pub fn peak_kb(&self) -> u64 {
        self.status_kb("VmHWM:")
    }

    fn status_kb(&self, field: &str) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix(field))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            })
            .unwrap_or(0)
    }

    /// SIGKILL: no chance to finish or hand back anything.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }

    /// SIGTERM, then waits for the exit.
    pub async fn stop(&mut self) -> Result<std::process::ExitStatus> {
        let pid = self.pid().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().await?;
        Ok(tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await??)
    }

    /// The value of a metric line that starts with `prefix` (Prometheus text).
    pub async fn metric(&self, prefix: &str) -> Option<f64> {
        let text = reqwest::get(format!("{}/metrics", self.base))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .reduce(|a, b| a + b)
    }
}

/// `count` replicas of `binary`, named `<name>-0`, `<name>-1`, ..., started one after another.
pub async fn replicas(
    binary: &str,
    name: &str,
    count: usize,
    store: &StorageConfig,
    extra: &[(&str, String)],
) -> Result<Vec<Service>> {
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        out.push(Service::start(binary, &format!("{name}-{i}"), store, extra).await?);
    }
    Ok(out)
}

/// Waits until `check` returns `Some`, up to `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(v) = check().await {
            return Some(v);
        }
        if started.elapsed() > limit {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
