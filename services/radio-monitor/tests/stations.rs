//! The stations API and a station's life on one replica, in process on a
//! real embedded store.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly by design.

use std::time::{Duration, Instant};

use hendu_radio_monitor::supervisor::STATION_LEASES;
use hendu_radio_monitor::{Config, SERVICE, install};
use hendu_service::{Application, Auth};
use hendu_storage::model::Role;
use hendu_storage::testing::user_with_token;
use hendu_storage::{QueueConfig, Storage};
use reqwest::Method;
use serde_json::{Value, json};

struct TestApp {
    base: String,
    storage: Storage,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

fn config() -> Config {
    Config {
        lease: Duration::from_secs(2),
        scan_every: Duration::from_millis(200),
        stall: Duration::from_secs(2),
        silence_dbfs: -50.0,
        silence: Duration::from_secs(15),
        down_after: Duration::from_secs(60),
        backoff_max: Duration::from_secs(2),
        max_stations: 10,
        replica: "monitor-test".into(),
    }
}

async fn spawn() -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::embedded(&dir.path().join("hendu.db"), QueueConfig::default())
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let auth = Auth::load(&storage).await.unwrap();
    let mut app = Application::new(
        SERVICE,
        listener,
        storage.clone(),
        auth,
        Duration::from_secs(5),
    );
    install(&mut app, &config());
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
    async fn patch(&self, token: &str, id: i64, body: Value) -> (u16, Value) {
        self.call(
            token,
            Method::PATCH,
            &format!("/v1/radios/{id}"),
            Some(body),
        )
        .await
    }

    /// The station leases held now.
    async fn held(&self) -> Vec<(String, String)> {
        self.storage.leases.held(STATION_LEASES).await.unwrap()
    }

    async fn call(
        &self,
        token: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut r = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token);
        if let Some(body) = body {
            r = r.json(&body);
        }
        let r = r.send().await.unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn administrators_manage_stations_and_operators_see_only_theirs() {
    let app = spawn().await;
    let (_, admin) = user_with_token(&app.storage, "root@hendu.test", Role::Admin).await;
    let (operator, op_token) =
        user_with_token(&app.storage, "ops@radio.test", Role::Operator).await;
    let (musician, mus_token) =
        user_with_token(&app.storage, "ana@music.test", Role::Musician).await;
    let station = json!({
        "name": "Radio Cáritas", "stream_url": "http://127.0.0.1:9/live.mp3",
        "country": "py", "owner_id": operator.id, "enabled": false,
    });
    let (status, radio) = app
        .call(&admin, Method::POST, "/v1/radios", Some(station.clone()))
        .await;
    assert_eq!(status, 201, "{radio}");
    assert_eq!(
        (radio["country"].as_str(), radio["owner"].as_i64()),
        (Some("PY"), Some(operator.id))
    );
    let id = radio["id"].as_i64().unwrap();
    // The same again is a retry; the name with another stream a clash.
    assert_eq!(
        app.call(&admin, Method::POST, "/v1/radios", Some(station.clone()))
            .await
            .0,
        200
    );
    let mut clash = station.clone();
    clash["stream_url"] = json!("http://elsewhere.example/");
    assert_eq!(
        app.call(&admin, Method::POST, "/v1/radios", Some(clash))
            .await
            .0,
        409
    );
    for (field, value, code) in [
        ("country", json!("Paraguay"), "invalid_input"),
        ("stream_url", json!("ftp://x.example/s"), "invalid_input"),
        ("owner_id", json!(musician.id), "invalid_owner"),
    ] {
        let mut bad = station.clone();
        bad["name"] = json!("Another");
        bad[field] = value;
        let (status, body) = app
            .call(&admin, Method::POST, "/v1/radios", Some(bad))
            .await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (422, Some(code)),
            "{field}: {body}"
        );
    }
    let (status, other) = app
        .call(&admin, Method::POST, "/v1/radios", Some(json!({"name": "Radio Ajena", "stream_url": "http://127.0.0.1:9/x", "enabled": false})))
        .await;
    assert_eq!(status, 201);
    let other_id = other["id"].as_i64().unwrap();

    // Operators read their own stations; musicians none; nobody but an
    // administrator changes them.
    let (_, list) = app.call(&op_token, Method::GET, "/v1/radios", None).await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(
        app.call(
            &op_token,
            Method::GET,
            &format!("/v1/radios/{other_id}"),
            None
        )
        .await
        .0,
        404
    );
    assert_eq!(
        app.call(
            &op_token,
            Method::GET,
            &format!("/v1/radios/{id}/health"),
            None
        )
        .await
        .0,
        200
    );
    assert_eq!(
        app.call(&mus_token, Method::GET, "/v1/radios", None)
            .await
            .0,
        403
    );
    assert_eq!(
        app.patch(&op_token, id, json!({"enabled": true})).await.0,
        403
    );
    let (_, list) = app.call(&admin, Method::GET, "/v1/radios", None).await;
    assert_eq!(list.as_array().unwrap().len(), 2);

    // PATCH: absent keeps, null clears.
    let (status, changed) = app
        .patch(&admin, id, json!({"country": null, "location": "Luque"}))
        .await;
    assert_eq!(status, 200, "{changed}");
    assert_eq!(changed["country"], Value::Null);
    assert_eq!(changed["location"], "Luque");
    assert_eq!(changed["owner"].as_i64(), Some(operator.id));
    assert_eq!(
        app.patch(&admin, id, json!({"name": "Radio Ajena"}))
            .await
            .0,
        409
    );
    assert_eq!(app.patch(&admin, id, json!({"colour": "red"})).await.0, 400);
    let (_, health) = app
        .call(
            &admin,
            Method::GET,
            &format!("/v1/radios/{id}/health"),
            None,
        )
        .await;
    assert_eq!(health["state"], "disabled");
    assert_eq!(health["stale"], false);

    assert_eq!(
        app.call(&admin, Method::DELETE, &format!("/v1/radios/{id}"), None)
            .await
            .0,
        204
    );
    assert_eq!(
        app.call(&admin, Method::DELETE, &format!("/v1/radios/{id}"), None)
            .await
            .0,
        404
    );
    assert_eq!(
        app.call(&admin, Method::GET, &format!("/v1/radios/{id}"), None)
            .await
            .0,
        404
    );
}

async fn until(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < Duration::from_secs(20), "{what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_station_backs_off_and_a_disabled_one_is_let_go() {
    let app = spawn().await;
    let (_, admin) = user_with_token(&app.storage, "root@hendu.test", Role::Admin).await;
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (status, radio) = app
        .call(&admin, Method::POST, "/v1/radios", Some(json!({"name": "Radio Muda", "stream_url": format!("http://127.0.0.1:{closed}/live")})))
        .await;
    assert_eq!(status, 201);
    let id = radio["id"].as_i64().unwrap();
    let path = format!("/v1/radios/{id}/health");
    until("the station is tried and backs off", async || {
        let (_, h) = app.call(&admin, Method::GET, &path, None).await;
        h["state"] == "backoff"
    })
    .await;
    let (_, h) = app.call(&admin, Method::GET, &path, None).await;
    assert_eq!(h["status"]["holder"], "monitor-test", "{h}");
    assert!(
        h["status"]["detail"].as_str().unwrap().contains("error"),
        "{h}"
    );
    let held = app.held().await;
    assert_eq!(
        held,
        vec![(format!("{STATION_LEASES}{id}"), "monitor-test".to_owned())]
    );
    // It keeps trying: reconnections are counted.
    until("reconnections are counted", async || {
        let (_, h) = app.call(&admin, Method::GET, &path, None).await;
        h["status"]["reconnects"].as_u64().unwrap_or(0) >= 2
    })
    .await;

    // Disabled: the replica lets it go at its next scan.
    assert_eq!(
        app.patch(&admin, id, json!({"enabled": false})).await.0,
        200
    );
    until("the lease is released", async || {
        app.held().await.is_empty()
    })
    .await;
    let (_, h) = app.call(&admin, Method::GET, &path, None).await;
    assert_eq!(h["state"], "disabled");
    // Deleted while held: the listener stops and the row goes with its status.
    assert_eq!(app.patch(&admin, id, json!({"enabled": true})).await.0, 200);
    until("taken again", async || !app.held().await.is_empty()).await;
    assert_eq!(
        app.call(&admin, Method::DELETE, &format!("/v1/radios/{id}"), None)
            .await
            .0,
        204
    );
    until("let go after the deletion", async || {
        app.held().await.is_empty()
    })
    .await;
    assert!(
        app.storage
            .relational
            .radio_statuses()
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_stops_sending_is_a_stall_and_is_reconnected() {
    let app = spawn().await;
    let (_, admin) = user_with_token(&app.storage, "root@hendu.test", Role::Admin).await;
    // A server that answers the head of a stream, then sends nothing.
    let server = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = server.local_addr().unwrap().port();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut held = Vec::new();
        loop {
            let (mut socket, _) = server.accept().await.unwrap();
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut head = [0u8; 1024];
            let _ = socket.read(&mut head).await;
            let _ = socket
                .write_all(b"HTTP/1.0 200 OK\r\nContent-Type: audio/mpeg\r\n\r\n")
                .await;
            held.push(socket);
        }
    });
    let (status, radio) = app
        .call(&admin, Method::POST, "/v1/radios", Some(json!({"name": "Radio Quieta", "stream_url": format!("http://127.0.0.1:{port}/live")})))
        .await;
    assert_eq!(status, 201);
    let path = format!("/v1/radios/{}/health", radio["id"].as_i64().unwrap());
    until("the stall is noticed", async || {
        let (_, h) = app.call(&admin, Method::GET, &path, None).await;
        h["status"]["detail"]
            .as_str()
            .is_some_and(|d| d.starts_with("stalled"))
    })
    .await;
    until("it reconnects", async || {
        accepted.load(std::sync::atomic::Ordering::SeqCst) >= 2
    })
    .await;
}
