//! The communication API over HTTP, on a real embedded store: who may send
//! samples, what a sample may be, and the administrators' device API.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly by design.

use std::time::Duration;

use hendu_communication::{Config, SERVICE, bootstrap_admin, install};
use hendu_fingerprint::Peak;
use hendu_fingerprint::wire::{MEDIA_TYPE, SampleFingerprint};
use hendu_service::Application;
use hendu_storage::model::Secret;
use hendu_storage::queue::SampleQueued;
use hendu_storage::{Queue, QueueConfig, Storage};
use serde_json::{Value, json};

const IMEI: &str = "356938035643809";
const SECRET: &str = "a device secret";

struct TestApp {
    base: String,
    storage: Storage,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

async fn spawn() -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::embedded(&dir.path().join("hendu.db"), QueueConfig::default())
        .await
        .unwrap();
    let config = Config {
        max_sample_bytes: 100_000,
        admin: Some(("root@hendu.test".into(), Secret::new("root password 1"))),
    };
    // Twice: a restart finds the administrator already there.
    bootstrap_admin(&storage, &config).await.unwrap();
    bootstrap_admin(&storage, &config).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut app = Application::new(SERVICE, listener, storage.clone(), Duration::from_secs(5));
    install(&mut app, &config);
    let base = format!("http://{}", app.local_addr());
    tokio::spawn(app.run_until_stopped(std::future::pending()));
    TestApp {
        base,
        storage,
        http: reqwest::Client::new(),
        _dir: dir,
    }
}

impl TestApp {
    async fn admin(&self, method: reqwest::Method, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .http
            .request(method, format!("{}{path}", self.base))
            .basic_auth("root@hendu.test", Some("root password 1"))
            .json(&body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    async fn sample(&self, secret: &str, body: Vec<u8>, media: &str) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}/v1/devices/{IMEI}/samples", self.base))
            .header("x-hendu-device-secret", secret)
            .header("content-type", media)
            .body(body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    async fn register(&self) {
        let (status, v) = self
            .admin(
                reqwest::Method::POST,
                "/v1/devices",
                json!({ "imei": IMEI, "name": "Stage left", "location": "Luque", "secret": SECRET }),
            )
            .await;
        assert_eq!(status, 201, "{v}");
    }
}

fn fingerprint(at_ms: i64) -> Vec<u8> {
    SampleFingerprint {
        captured_at_ms: at_ms,
        duration_ms: 30_000,
        peaks: vec![Peak {
            frame: 10,
            bin: 40.5,
        }],
    }
    .encode()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_administrators_register_devices() {
    let app = spawn().await;
    let body = json!({ "imei": IMEI, "name": "Stage left", "location": "Luque", "secret": SECRET });
    let anonymous = app
        .http
        .post(format!("{}/v1/devices", app.base))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    let wrong = app
        .http
        .post(format!("{}/v1/devices", app.base))
        .basic_auth("root@hendu.test", Some("not the password"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let v: Value = wrong.json().await.unwrap();
    assert_eq!(v["error"]["code"], "unauthorized");

    let (status, device) = app
        .admin(reqwest::Method::POST, "/v1/devices", body.clone())
        .await;
    assert_eq!(status, 201, "{device}");
    assert_eq!(device["imei"], IMEI);
    assert!(device.get("secret").is_none() && device.get("secret_hash").is_none());
    let (status, again) = app.admin(reqwest::Method::POST, "/v1/devices", body).await;
    assert_eq!(
        (status, &again["id"]),
        (201, &device["id"]),
        "a retried registration is the same device"
    );
    let other = json!({ "imei": IMEI, "name": "Stage right", "secret": "another secret" });
    let (status, v) = app.admin(reqwest::Method::POST, "/v1/devices", other).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (409, Some("conflict")),
        "an IMEI belongs to one device"
    );
    let (status, v) = app
        .admin(
            reqwest::Method::POST,
            "/v1/devices",
            json!({ "imei": "356938035643808", "name": "x", "secret": SECRET }),
        )
        .await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (400, Some("invalid_imei"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_sample_is_stored_and_queued_only_with_the_right_secret() {
    let app = spawn().await;
    app.register().await;
    let at = 1_790_000_000_000;

    let (status, v) = app
        .sample("wrong secret!!", fingerprint(at), MEDIA_TYPE)
        .await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (401, Some("unauthorized"))
    );
    let (status, v) = app
        .sample(SECRET, b"not a fingerprint".to_vec(), MEDIA_TYPE)
        .await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (422, Some("invalid_fingerprint"))
    );
    let (status, v) = app.sample(SECRET, b"garbage".to_vec(), "audio/wav").await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (400, Some("missing_capture_time")),
        "audio needs its capture instant"
    );
    let (status, v) = app.sample(SECRET, vec![0; 200_000], MEDIA_TYPE).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (413, Some("payload_too_large")),
        "over the configured limit"
    );
    let (status, _) = app
        .sample("wrong secret!!", vec![0; 200_000], MEDIA_TYPE)
        .await;
    assert_eq!(
        status, 401,
        "a stranger is refused before the body is judged"
    );
    let backlog = app.storage.queue.backlog(Queue::Samples).await.unwrap();
    assert_eq!(backlog.waiting, 0, "nothing refused was queued");

    let (status, v) = app.sample(SECRET, fingerprint(at), MEDIA_TYPE).await;
    assert_eq!(status, 202, "{v}");
    let id = v["sample_id"].as_str().unwrap().to_owned();
    assert_eq!(v["duplicate"], false);
    let stored = app.storage.documents.sample(&id).await.unwrap().unwrap();
    assert_eq!(stored.location.as_deref(), Some("Luque"));
    assert_eq!(stored.duration_ms, 30_000);
    let queued = app
        .storage
        .queue
        .read(Queue::Samples, "t", 10, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(queued.len(), 1);
    let entry: SampleQueued = serde_json::from_slice(&queued[0].payload).unwrap();
    assert_eq!(entry.sample_id, id);

    let (status, v) = app.sample(SECRET, fingerprint(at), MEDIA_TYPE).await;
    assert_eq!(
        (status, &v["duplicate"]),
        (202, &json!(true)),
        "a retry is one sample"
    );

    let (status, device) = app
        .admin(
            reqwest::Method::PATCH,
            &format!("/v1/devices/{IMEI}"),
            json!({ "enabled": false }),
        )
        .await;
    assert_eq!((status, &device["enabled"]), (200, &json!(false)));
    let (status, v) = app
        .sample(SECRET, fingerprint(at + 30_000), MEDIA_TYPE)
        .await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (403, Some("device_disabled"))
    );
    assert!(
        app.storage
            .documents
            .sample(&format!("device-1-{}", at + 30_000))
            .await
            .unwrap()
            .is_none(),
        "nothing stored for a disabled device"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_device_is_refused_like_a_wrong_secret() {
    let app = spawn().await;
    let (status, v) = app.sample(SECRET, fingerprint(0), MEDIA_TYPE).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (401, Some("unauthorized"))
    );
    let r = app
        .http
        .post(format!("{}/v1/devices/{IMEI}/samples", app.base))
        .body(fingerprint(0))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "missing_credentials");
}
