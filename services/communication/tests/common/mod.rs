//! The communication service in process, on a real embedded store bound to
//! port 0, for the test binaries of this crate.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)] // Each binary uses a part.

use std::time::Duration;

use std::net::SocketAddr;

use hendu_communication::tcp::{Listeners, TcpConfig, TcpLimits};
use hendu_communication::{Config, SERVICE, bootstrap_admin, install_with};
use hendu_service::{Application, Auth};
use hendu_storage::model::{Role, Secret};
use hendu_storage::testing::user_with_token;
use hendu_storage::{QueueConfig, Storage};
use serde_json::{Value, json};

pub const IMEI: &str = "356938035643809";

pub struct TestApp {
    pub base: String,
    pub storage: Storage,
    pub http: reqwest::Client,
    pub admin: String,
    /// The TCP protocols, when started: v1's control port, v2's address.
    pub control: Option<SocketAddr>,
    pub v2: Option<SocketAddr>,
    _dir: tempfile::TempDir,
}

pub async fn spawn() -> TestApp {
    spawn_with(100_000, 60.0).await
}

/// The service with its own limits on a sample's size and duration.
pub async fn spawn_with(max_sample_bytes: usize, max_sample_s: f64) -> TestApp {
    spawn_full(max_sample_bytes, max_sample_s, None).await
}

/// The service with the TCP protocols on 127.0.0.1: `data_ports` v1 data
/// ports, and `limits`.
pub async fn spawn_tcp(data_ports: usize, limits: TcpLimits) -> TestApp {
    spawn_full(1_000_000, 60.0, Some((data_ports, limits))).await
}

async fn spawn_full(
    max_sample_bytes: usize,
    max_sample_s: f64,
    tcp: Option<(usize, TcpLimits)>,
) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::embedded(&dir.path().join("hendu.db"), QueueConfig::default())
        .await
        .unwrap();
    let config = Config {
        max_sample_bytes,
        max_sample_s,
        admin: Some(("root@hendu.test".into(), Secret::new("root password 1"))),
        tcp: TcpConfig {
            limits: tcp.as_ref().map(|(_, l)| l.clone()).unwrap_or_default(),
            ..TcpConfig::off()
        },
    };
    let bind = || {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        l
    };
    let listeners = match &tcp {
        Some((ports, _)) => Listeners {
            control: Some(bind()),
            data: (0..*ports).map(|_| bind()).collect(),
            v2: Some(bind()),
        },
        None => Listeners::default(),
    };
    let (control, v2) = (listeners.control_addr(), listeners.v2_addr());
    // Twice: a restart finds the administrator already there.
    bootstrap_admin(&storage, &config).await.unwrap();
    bootstrap_admin(&storage, &config).await.unwrap();
    let (_, admin) = user_with_token(&storage, "root@hendu.test", Role::Admin).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let auth = Auth::load(&storage).await.unwrap();
    let mut app = Application::new(
        SERVICE,
        listener,
        storage.clone(),
        auth,
        Duration::from_secs(5),
    );
    install_with(&mut app, &config, listeners).unwrap();
    let base = format!("http://{}", app.local_addr());
    tokio::spawn(app.run_until_stopped(std::future::pending()));
    TestApp {
        base,
        storage,
        http: reqwest::Client::new(),
        admin,
        control,
        v2,
        _dir: dir,
    }
}

impl TestApp {
    pub async fn call(
        &self,
        token: &str,
        method: reqwest::Method,
        path: &str,
        body: Value,
    ) -> (u16, Value) {
        let r = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    pub async fn admin(&self, method: reqwest::Method, path: &str, body: Value) -> (u16, Value) {
        self.call(&self.admin, method, path, body).await
    }

    pub async fn sample(&self, secret: &str, body: Vec<u8>, media: &str) -> (u16, Value) {
        self.send_sample(secret, body, media, None).await
    }

    /// An audio sample captured at `at` (RFC 3339).
    pub async fn audio_sample(&self, secret: &str, body: Vec<u8>, at: &str) -> (u16, Value) {
        self.send_sample(secret, body, "application/octet-stream", Some(at))
            .await
    }

    async fn send_sample(
        &self,
        secret: &str,
        body: Vec<u8>,
        media: &str,
        captured_at: Option<&str>,
    ) -> (u16, Value) {
        let mut request = self
            .http
            .post(format!("{}/v1/devices/{IMEI}/samples", self.base))
            .header("x-hendu-device-secret", secret)
            .header("content-type", media);
        if let Some(at) = captured_at {
            request = request.header("x-hendu-captured-at", at);
        }
        let r = request.body(body).send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    /// Registers the test device; returns its secret.
    pub async fn register(&self) -> String {
        let (status, v) = self
            .admin(
                reqwest::Method::POST,
                "/v1/devices",
                json!({ "imei": IMEI, "name": "Stage left", "location": "Luque" }),
            )
            .await;
        assert_eq!(status, 201, "{v}");
        v["secret"].as_str().unwrap().to_owned()
    }
}
