//! Fault injection against a running application: every kind, through the
//! API as an experiment runner drives it, measured from outside (latency,
//! status, probes, the process's CPU time and resident memory), and each
//! seen to revert by itself. The dependency faults run against the real
//! MariaDB and Redis of the test command (`HENDU_TEST_MYSQL_URL`,
//! `HENDU_TEST_REDIS_URL`; `scripts/test.sh` starts them).

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly by design.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::routing::get;
use hendu_service::faults::{FaultSettings, Target};
use hendu_service::{Application, Auth, Faults};
use hendu_storage::model::Role;
use hendu_storage::testing::{MysqlDatabase, user_with_token};
use hendu_storage::{QueueConfig, Storage};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// CPU time and resident memory are the process's: the tests that measure
/// them must not share it with others, so every test here runs alone.
static ALONE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const WORKER: &str = "ticker";
const ALLOWANCE: Duration = Duration::from_millis(300);

struct App {
    base: String,
    admin: String,
    musician: String,
    http: reqwest::Client,
    /// Iterations of the test's worker loop.
    ticks: Arc<AtomicU64>,
    _dir: tempfile::TempDir,
}

impl App {
    async fn start(enabled: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::embedded(&dir.path().join("hendu.db"), QueueConfig::default())
            .await
            .unwrap();
        Self::start_on(storage, None, enabled, dir).await
    }

    /// An application over `storage`, with `faults` (or a new registry).
    async fn start_on(
        storage: Storage,
        faults: Option<(Faults, Storage)>,
        enabled: bool,
        dir: tempfile::TempDir,
    ) -> Self {
        let (faults, served) = faults.unwrap_or_else(|| {
            (
                Faults::new(FaultSettings {
                    enabled,
                    max_memory: 256 << 20,
                }),
                storage.clone(),
            )
        });
        let (_, admin) = user_with_token(&storage, "root@hendu.test", Role::Admin).await;
        let (_, musician) = user_with_token(&storage, "ana@hendu.test", Role::Musician).await;
        let auth = Auth::load(&storage).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut app = Application::new("test", listener, served, auth, Duration::from_secs(2))
            .with_faults(faults);
        app.route(
            axum::Router::new()
                .route("/v1/slow", get(|| async { "slow" }))
                .route(
                    "/v1/fast",
                    get(|| async { "fast" }).post(|| async { "posted" }),
                )
                .route("/v1/half", get(|| async { "half" })),
        );
        let ticks = Arc::new(AtomicU64::new(0));
        let counted = ticks.clone();
        app.worker(WORKER, ALLOWANCE, move |beat, stop| async move {
            while !stop.is_cancelled() {
                beat.pace().await;
                beat.beat();
                counted.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        let base = format!("http://{}", app.local_addr());
        tokio::spawn(app.run_until_stopped(std::future::pending()));
        Self {
            base,
            admin,
            musician,
            http: reqwest::Client::new(),
            ticks,
            _dir: dir,
        }
    }

    async fn inject(&self, fault: Value) -> Value {
        let (status, body) = self.post_fault(Some(&self.admin), &fault).await;
        assert_eq!(status, StatusCode::CREATED, "{fault} -> {body}");
        body
    }

    /// `POST /v1/faults` with `token`: the status and the body.
    async fn post_fault(&self, token: Option<&str>, fault: &Value) -> (StatusCode, Value) {
        let mut r = self
            .http
            .post(format!("{}/v1/faults", self.base))
            .json(fault);
        if let Some(token) = token {
            r = r.bearer_auth(token);
        }
        let r = r.send().await.unwrap();
        (r.status(), r.json().await.unwrap_or(Value::Null))
    }

    /// `GET /v1/faults` as the administrator.
    async fn list(&self) -> Value {
        self.http
            .get(format!("{}/v1/faults", self.base))
            .bearer_auth(&self.admin)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// `DELETE /v1/faults/{id}` as the administrator.
    async fn revert(&self, id: u64) -> StatusCode {
        self.http
            .delete(format!("{}/v1/faults/{id}", self.base))
            .bearer_auth(&self.admin)
            .send()
            .await
            .unwrap()
            .status()
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        let status = r.status();
        let text = r.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn timed(&self, path: &str) -> (StatusCode, Duration) {
        let started = Instant::now();
        let status = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap()
            .status();
        (status, started.elapsed())
    }

    async fn metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Polls `path` until it answers `status`, for at most `within`.
    async fn until(&self, path: &str, status: StatusCode, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let (got, body) = self.get(path).await;
            if got == status {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "{path} still answers {got} ({body}), not {status}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The metric's value (the first series whose line holds every one of `parts`).
fn metric(text: &str, parts: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| parts.iter().all(|p| l.contains(p)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn off_the_routes_do_not_exist_and_on_only_administrators_use_them() {
    let _alone = ALONE.lock().await;
    let off = App::start(false).await;
    for r in [
        off.http.get(format!("{}/v1/faults", off.base)),
        off.http
            .post(format!("{}/v1/faults", off.base))
            .json(&json!({"kind": "PodChaos", "action": "pod-failure", "ttl_s": 5})),
        off.http.delete(format!("{}/v1/faults/1", off.base)),
    ] {
        let r = r.bearer_auth(&off.admin).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
    }
    let (_, doc) = off.get("/v1/openapi.json").await;
    assert!(doc.pointer("/paths/~1v1~1faults").is_none());
    assert!(!off.metrics().await.contains("faults_injected"));

    let on = App::start(true).await;
    let fault = json!({"kind": "PodChaos", "action": "pod-failure", "ttl_s": 5});
    let (status, _) = on.post_fault(Some(&on.musician), &fault).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = on.post_fault(None, &fault).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let r = on
        .http
        .get(format!("{}/v1/faults", on.base))
        .bearer_auth(&on.musician)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let (ready, _) = on.get("/readyz").await;
    assert_eq!(ready, StatusCode::OK, "the refused faults did nothing");

    // A bad request is named.
    let (status, body) = on
        .post_fault(
            Some(&on.admin),
            &json!({"kind": "HTTPChaos", "action": "delay", "ttl_s": 5}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "missing_field", "{body}");

    let (_, doc) = on.get("/v1/openapi.json").await;
    assert_eq!(
        doc.pointer("/paths/~1v1~1faults/post/operationId"),
        Some(&json!("create_fault"))
    );
    // The listing says what faults can act on.
    let list = on.list().await;
    assert_eq!(list["faults"], json!([]));
    assert_eq!(list["workers"], json!([WORKER]));
    assert_eq!(list["targets"][0]["proxied"], json!(false));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_delay_slows_only_its_route_and_share_and_abort_answers_until_expiry() {
    let _alone = ALONE.lock().await;
    let app = App::start(true).await;
    let delay = Duration::from_millis(300);
    let slow = app
        .inject(
            json!({"kind": "HTTPChaos", "action": "delay", "route": "/v1/slow", "method": "GET",
                       "percent": 100, "delay_ms": 300, "jitter_ms": 20, "ttl_s": 30}),
        )
        .await;
    assert!(
        slow["id"].as_u64().is_some() && slow["expires"].is_string(),
        "{slow}"
    );
    app.inject(
        json!({"kind": "HTTPChaos", "action": "delay", "route": "/v1/fast",
                      "percent": 0, "delay_ms": 300, "ttl_s": 30}),
    )
    .await;
    app.inject(
        json!({"kind": "HTTPChaos", "action": "delay", "route": "/v1/half",
                      "percent": 50, "delay_ms": 300, "ttl_s": 30}),
    )
    .await;
    // Only POST on /v1/fast is aborted.
    app.inject(
        json!({"kind": "HTTPChaos", "action": "abort", "route": "/v1/fast", "method": "POST",
                      "status": 429, "ttl_s": 1}),
    )
    .await;

    let rounds = 60;
    let timed = |path: &'static str| {
        let app = &app;
        futures_util::future::join_all((0..rounds).map(move |_| app.timed(path)))
    };
    let (slow, fast, half) = tokio::join!(timed("/v1/slow"), timed("/v1/fast"), timed("/v1/half"));
    let delayed = |runs: &[(StatusCode, Duration)]| {
        assert!(runs.iter().all(|(s, _)| *s == StatusCode::OK));
        runs.iter()
            .filter(|(_, d)| *d >= delay - Duration::from_millis(30))
            .count()
    };
    assert_eq!(delayed(&slow), rounds, "every request of a 100 % delay");
    assert_eq!(delayed(&fast), 0, "no request of a 0 % delay");
    let half = delayed(&half);
    // Binomial(60, 0.5): 12..=48 is more than six standard deviations wide.
    assert!(
        (12..=48).contains(&half),
        "{half} of {rounds} delayed at 50 %"
    );
    let metrics = app.metrics().await;
    let effects = metric(
        &metrics,
        &[
            "hendu_fault_effects_total",
            "kind=\"HTTPChaos\"",
            "action=\"delay\"",
        ],
    );
    assert_eq!(effects, (rounds + half) as f64, "{metrics}");
    assert_eq!(
        metric(&metrics, &["hendu_faults_active", "action=\"delay\""]),
        3.0
    );
    // The delay shows in the request latency the service reports.
    assert!(metrics.contains("route=\"/v1/slow\""));

    let post = |app: &App| app.http.post(format!("{}/v1/fast", app.base)).send();
    let aborted = post(&app).await.unwrap();
    assert_eq!(aborted.status(), StatusCode::TOO_MANY_REQUESTS);
    let body: Value = aborted.json().await.unwrap();
    assert_eq!(body["error"]["code"], "fault_injected");
    assert_eq!(
        app.get("/v1/fast").await.0,
        StatusCode::OK,
        "GET is not aborted"
    );
    assert_eq!(
        app.get("/healthz").await.0,
        StatusCode::OK,
        "probes are never faulted"
    );

    // The abort lived one second.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(post(&app).await.unwrap().status(), StatusCode::OK);
    let metrics = app.metrics().await;
    assert_eq!(
        metric(&metrics, &["hendu_faults_active", "action=\"abort\""]),
        0.0
    );
    assert_eq!(
        metric(
            &metrics,
            &["hendu_faults_injected_total", "action=\"abort\""]
        ),
        1.0
    );

    // Reverted early: the route is fast again.
    let id = slow_id(&app).await;
    assert_eq!(app.revert(id).await, StatusCode::OK);
    assert!(app.timed("/v1/slow").await.1 < delay / 2);
    assert_eq!(app.revert(id).await, StatusCode::NOT_FOUND);
}

async fn slow_id(app: &App) -> u64 {
    app.list().await["faults"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["route"] == "/v1/slow")
        .and_then(|f| f["id"].as_u64())
        .expect("the /v1/slow fault is listed")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_fails_and_a_worker_stalls_until_their_time_runs_out() {
    let _alone = ALONE.lock().await;
    let app = App::start(true).await;
    app.until("/readyz", StatusCode::OK, Duration::from_secs(5))
        .await;
    app.inject(json!({"kind": "PodChaos", "action": "pod-failure", "ttl_s": 2}))
        .await;
    let (status, body) = app.get("/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        body["missing"],
        json!([{"name": "faults", "reason": "fault"}])
    );

    app.inject(json!({"kind": "WorkerChaos", "action": "stall", "worker": WORKER, "ttl_s": 3}))
        .await;
    let stuck = app
        .until("/healthz", StatusCode::SERVICE_UNAVAILABLE, ALLOWANCE * 3)
        .await;
    assert_eq!(stuck["stuck"][0]["worker"], WORKER, "{stuck}");
    let held = app.ticks.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        app.ticks.load(Ordering::Relaxed),
        held,
        "the stalled loop went on"
    );

    // Readiness comes back first (2 s), then the worker (3 s).
    app.until("/readyz", StatusCode::OK, Duration::from_secs(3))
        .await;
    app.until("/healthz", StatusCode::OK, Duration::from_secs(3))
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        app.ticks.load(Ordering::Relaxed) > held,
        "the worker did not resume"
    );
}

/// CPU time of this process (user and system), from /proc.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    // utime and stime are fields 14 and 15 of the line (11 and 12 after the name).
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // USER_HZ is 100 on every Linux this runs on.
    Duration::from_millis(ticks * 10)
}

/// Resident memory of this process, from /proc.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb * 1024
}

async fn cpu_over(span: Duration) -> Duration {
    let before = cpu_time();
    tokio::time::sleep(span).await;
    cpu_time() - before
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_and_memory_stress_show_in_the_process_and_end_with_their_time() {
    let _alone = ALONE.lock().await;
    let app = App::start(true).await;
    let second = Duration::from_secs(1);
    let idle = cpu_over(second).await;
    app.inject(
        json!({"kind": "StressChaos", "stressor": "cpu", "workers": 1, "load": 80, "ttl_s": 3}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let burning = cpu_over(second).await;
    assert!(
        burning >= idle + Duration::from_millis(550),
        "80 % of a core burnt {burning:?} a second (idle: {idle:?})"
    );
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let after = cpu_over(second).await;
    assert!(
        after < idle + Duration::from_millis(250),
        "still burning {after:?} a second after expiry (idle: {idle:?})"
    );

    let size: u64 = 200 << 20;
    let base = rss();
    app.inject(
        json!({"kind": "StressChaos", "stressor": "memory", "size_bytes": size,
                      "rate_bytes_per_s": 400 << 20, "ttl_s": 3}),
    )
    .await;
    // At 400 MiB/s the 200 MiB take about half a second.
    tokio::time::sleep(Duration::from_millis(150)).await;
    let growing = rss().saturating_sub(base);
    assert!(
        growing < size * 3 / 4,
        "grew {growing} at once despite the rate"
    );
    let deadline = Instant::now() + Duration::from_secs(2);
    while rss().saturating_sub(base) < size * 9 / 10 {
        assert!(
            Instant::now() < deadline,
            "resident grew by only {}",
            rss() - base
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Beyond the setting's 256 MiB: refused.
    let more =
        json!({"kind": "StressChaos", "stressor": "memory", "size_bytes": 100 << 20, "ttl_s": 3});
    let (status, _) = app.post_fault(Some(&app.admin), &more).await;
    assert_eq!(status, StatusCode::CONFLICT);
    let deadline = Instant::now() + Duration::from_secs(5);
    while rss() > base + size / 4 {
        assert!(
            Instant::now() < deadline,
            "memory still held: {} over",
            rss() - base
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// --- NetworkChaos, against the real servers -----------------------------------

fn env_or(var: &str, default: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| default.to_owned())
}

async fn timed<T>(call: impl Future<Output = T>) -> (T, Duration) {
    let started = Instant::now();
    let out = call.await;
    (out, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dependency_delay_and_partition_act_on_the_wire_and_end_with_their_time() {
    let _alone = ALONE.lock().await;
    let database = MysqlDatabase::create().await;
    let redis_url = env_or("HENDU_TEST_REDIS_URL", "redis://127.0.0.1:6379");
    let faults = Faults::new(FaultSettings {
        enabled: true,
        max_memory: 1 << 20,
    });
    let mysql = faults
        .proxy_url(Target::Mysql, &database.url)
        .await
        .unwrap()
        .expect("a plain mysql:// URL is proxied");
    let redis = faults
        .proxy_url(Target::Redis, &redis_url)
        .await
        .unwrap()
        .expect("a plain redis:// URL is proxied");
    assert!(
        mysql.contains("127.0.0.1") && !mysql.contains(":3306"),
        "{mysql}"
    );

    // Tokens and documents on the embedded store; the relational store and
    // the queue on the servers, through the proxies. The embedded store's
    // readiness check covers all three.
    let dir = tempfile::tempdir().unwrap();
    let embedded = Storage::embedded(&dir.path().join("hendu.db"), QueueConfig::default())
        .await
        .unwrap();
    let mut served = embedded.clone();
    served.relational = Arc::new(
        hendu_storage::mysql::MySqlStore::connect(&mysql, 2)
            .await
            .unwrap(),
    );
    let prefix = format!("hendu_faults_{}:", std::process::id());
    served.queue = Arc::new(
        hendu_storage::redis::RedisStore::connect(&redis, &prefix, QueueConfig::default())
            .await
            .unwrap(),
    );
    let app = App::start_on(embedded, Some((faults, served.clone())), true, dir).await;
    app.until("/readyz", StatusCode::OK, Duration::from_secs(5))
        .await;
    let list = app.list().await;
    assert_eq!(
        list["targets"][0],
        json!({"target": "mysql", "proxied": true})
    );
    assert_eq!(
        list["targets"][1]["proxied"],
        json!(false),
        "mongodb was not routed"
    );

    let (ok, quick) = timed(served.queue.ping()).await;
    ok.unwrap();
    assert!(quick < Duration::from_millis(100), "{quick:?}");

    // Delay: each chunk held 150 ms, both ways, so a round trip takes 300 ms.
    app.inject(
        json!({"kind": "NetworkChaos", "action": "delay", "target": "redis",
                      "delay_ms": 150, "jitter_ms": 10, "ttl_s": 2}),
    )
    .await;
    app.inject(
        json!({"kind": "NetworkChaos", "action": "delay", "target": "mysql",
                      "delay_ms": 150, "ttl_s": 2}),
    )
    .await;
    let (ok, slow) = timed(served.queue.ping()).await;
    ok.unwrap();
    assert!(
        slow >= Duration::from_millis(270),
        "a Redis PING took {slow:?}"
    );
    let (ok, slow) = timed(served.relational.ping()).await;
    ok.unwrap();
    assert!(
        slow >= Duration::from_millis(290),
        "a MySQL query took {slow:?}"
    );
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let (ok, quick) = timed(served.queue.ping()).await;
    ok.unwrap();
    assert!(
        quick < Duration::from_millis(100),
        "still delayed: {quick:?}"
    );
    let (ok, quick) = timed(served.relational.ping()).await;
    ok.unwrap();
    assert!(
        quick < Duration::from_millis(100),
        "still delayed: {quick:?}"
    );

    // Partition: connections cut, new ones refused; readiness says so.
    app.inject(
        json!({"kind": "NetworkChaos", "action": "partition", "target": "redis", "ttl_s": 3}),
    )
    .await;
    app.inject(
        json!({"kind": "NetworkChaos", "action": "partition", "target": "mysql", "ttl_s": 3}),
    )
    .await;
    let (failed, _) = timed(tokio::time::timeout(
        Duration::from_secs(3),
        served.queue.ping(),
    ))
    .await;
    assert!(
        !matches!(failed, Ok(Ok(()))),
        "Redis answered through a partition"
    );
    let (failed, _) = timed(tokio::time::timeout(
        Duration::from_secs(3),
        served.relational.ping(),
    ))
    .await;
    assert!(
        !matches!(failed, Ok(Ok(()))),
        "MySQL answered through a partition"
    );
    let body = app
        .until(
            "/readyz",
            StatusCode::SERVICE_UNAVAILABLE,
            Duration::from_secs(3),
        )
        .await;
    assert_eq!(body["missing"][0]["reason"], "unreachable", "{body}");
    let metrics = app.metrics().await;
    assert!(
        metric(
            &metrics,
            &[
                "hendu_fault_effects_total",
                "kind=\"NetworkChaos\"",
                "action=\"partition\""
            ]
        ) >= 1.0,
        "{metrics}"
    );

    // After the partition: the drivers reconnect and the service is ready.
    app.until("/readyz", StatusCode::OK, Duration::from_secs(20))
        .await;
    served.queue.ping().await.unwrap();
    served.relational.ping().await.unwrap();
    database.drop_database().await;
}
