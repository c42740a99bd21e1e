//! Who may do what: every route of every service (all of them installed in
//! one process, as `hendu serve` runs them), called by anyone, two
//! musicians, an operator, an administrator and a revoked token. Each cell
//! asserts the status, and that nothing of another owner's leaks into the
//! answer.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly by design.

use std::time::Duration;

use hendu_fingerprint::hostile;
use hendu_fingerprint::synth::music;
use hendu_service::{Application, Auth};
use hendu_storage::model::Role;
use hendu_storage::testing::user_with_token;
use hendu_storage::{QueueConfig, Storage};
use reqwest::Method;
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};

const RATE: u32 = 8000;
const SECRET_TITLE: &str = "Ana's unreleased song";
const IMEI: &str = "356938035643809";

fn wav(seed: u64) -> Vec<u8> {
    hostile::wav(&music(seed, 20.0, RATE), RATE)
}

/// The callers, in the order of each row's expectations.
const WHO: [&str; 6] = ["anonymous", "ana", "bea", "operator", "admin", "revoked"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_each_role_as_it_should_and_leaks_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::embedded(&dir.path().join("hendu.db"), QueueConfig::default())
        .await
        .unwrap();
    let (_, ana) = user_with_token(&storage, "ana@hendu.test", Role::Musician).await;
    let (bea_user, bea) = user_with_token(&storage, "bea@hendu.test", Role::Musician).await;
    let (_, operator) = user_with_token(&storage, "op@hendu.test", Role::Operator).await;
    let (_, admin) = user_with_token(&storage, "root@hendu.test", Role::Admin).await;
    let (_, revoked) = user_with_token(&storage, "gone@hendu.test", Role::Admin).await;
    let revoked_id = storage
        .relational
        .tokens(None)
        .await
        .unwrap()
        .last()
        .unwrap()
        .id;
    storage.relational.revoke_token(revoked_id).await.unwrap();
    let admin_token_id = storage.relational.tokens(None).await.unwrap()[3].id;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let auth = Auth::load(&storage).await.unwrap();
    let mut app = Application::new(
        "hendu",
        listener,
        storage.clone(),
        auth,
        Duration::from_secs(5),
    );
    // Installed as `hendu serve` installs them.
    hendu_hash_generator::install(
        &mut app,
        &hendu_hash_generator::Config {
            max_upload: 10_000_000,
            max_track_s: 120.0,
            spool: dir.path().to_owned(),
        },
    );
    hendu_communication::install(
        &mut app,
        &hendu_communication::Config {
            max_sample_bytes: 1_000_000,
            max_sample_s: 60.0,
            admin: None,
            tcp: hendu_communication::tcp::TcpConfig::off(),
        },
    )
    .unwrap();
    hendu_recognition::install(&mut app, &hendu_recognition::Config::from_env().unwrap());
    hendu_filter::install(&mut app, &hendu_filter::Config::from_env().unwrap());
    let base = format!("http://{}", app.local_addr());
    tokio::spawn(app.run_until_stopped(std::future::pending()));
    let http = reqwest::Client::new();
    let tokens = [
        None,
        Some(&ana),
        Some(&bea),
        Some(&operator),
        Some(&admin),
        Some(&revoked),
    ];

    // Ana's track, and a device.
    let created: Value = http
        .post(format!("{base}/v1/musics"))
        .bearer_auth(&ana)
        .multipart(
            Form::new()
                .part("file", Part::bytes(wav(1)).file_name("a.wav"))
                .text("title", SECRET_TITLE),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let track = created["id"].as_i64().expect("Ana's upload");
    let device: Value = http
        .post(format!("{base}/v1/devices"))
        .bearer_auth(&admin)
        .json(&json!({ "imei": IMEI, "name": "Stage" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(device["secret"].is_string(), "{device}");

    enum Body {
        None,
        Json(Value),
        Upload,
    }
    let bea_id = bea_user.id;
    let rows: Vec<(Method, String, Body, [u16; 6])> = vec![
        (
            Method::POST,
            "/v1/musics".into(),
            Body::Upload,
            [401, 201, 201, 403, 201, 401],
        ),
        (
            Method::GET,
            "/v1/musics".into(),
            Body::None,
            [401, 200, 200, 403, 200, 401],
        ),
        (
            Method::GET,
            format!("/v1/musics/{track}"),
            Body::None,
            [401, 200, 404, 403, 200, 401],
        ),
        (
            Method::DELETE,
            format!("/v1/musics/{track}"),
            Body::None,
            [401, 0, 404, 403, 0, 401],
        ),
        (
            Method::GET,
            "/v1/claims".into(),
            Body::None,
            [401, 403, 403, 403, 200, 401],
        ),
        (
            Method::POST,
            "/v1/claims/999".into(),
            Body::Json(json!({ "grant": true })),
            [401, 403, 403, 403, 404, 401],
        ),
        (
            Method::POST,
            "/v1/devices".into(),
            Body::Json(json!({ "imei": "490154203237518", "name": "x" })),
            [401, 403, 403, 403, 201, 401],
        ),
        (
            Method::GET,
            format!("/v1/devices/{IMEI}"),
            Body::None,
            [401, 403, 403, 403, 200, 401],
        ),
        (
            Method::PATCH,
            format!("/v1/devices/{IMEI}"),
            Body::Json(json!({ "enabled": true })),
            [401, 403, 403, 403, 200, 401],
        ),
        // A token is not a device's secret.
        (
            Method::POST,
            format!("/v1/devices/{IMEI}/samples"),
            Body::Json(json!({})),
            [401; 6],
        ),
        (
            Method::GET,
            "/v1/tokens".into(),
            Body::None,
            [401, 200, 200, 200, 200, 401],
        ),
        (
            Method::POST,
            "/v1/tokens".into(),
            Body::Json(json!({ "name": "more" })),
            [401, 201, 201, 201, 201, 401],
        ),
        (
            Method::DELETE,
            format!("/v1/tokens/{admin_token_id}"),
            Body::None,
            [401, 404, 404, 404, 0, 401],
        ),
        (
            Method::GET,
            "/v1/users".into(),
            Body::None,
            [401, 403, 403, 403, 200, 401],
        ),
        (
            Method::POST,
            "/v1/users".into(),
            Body::Json(
                json!({ "email": "new@hendu.test", "display_name": "N", "role": "musician", "password": "twelve chars!" }),
            ),
            [401, 403, 403, 403, 201, 401],
        ),
        (
            Method::PATCH,
            format!("/v1/users/{bea_id}"),
            Body::Json(json!({ "disabled": false })),
            [401, 403, 403, 403, 200, 401],
        ),
        (
            Method::GET,
            "/v1/dead-letters/samples".into(),
            Body::None,
            [401, 403, 403, 403, 200, 401],
        ),
        (
            Method::GET,
            "/v1/dead-letters/raw-results".into(),
            Body::None,
            [401, 403, 403, 403, 200, 401],
        ),
        (Method::GET, "/healthz".into(), Body::None, [200; 6]),
        (Method::GET, "/readyz".into(), Body::None, [200; 6]),
        (Method::GET, "/metrics".into(), Body::None, [200; 6]),
    ];
    let mut seed = 100;
    let mut failures = Vec::new();
    for (method, path, body, expected) in &rows {
        for (i, token) in tokens.iter().enumerate() {
            if expected[i] == 0 {
                continue; // would change what the other cells look at
            }
            let mut request = http.request(method.clone(), format!("{base}{path}"));
            if let Some(t) = token {
                request = request.bearer_auth(t);
            }
            request = match body {
                Body::None => request,
                Body::Json(v) => request.json(v),
                Body::Upload => {
                    seed += 1;
                    request.multipart(
                        Form::new().part("file", Part::bytes(wav(seed)).file_name("n.wav")),
                    )
                }
            };
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let text = response.text().await.unwrap();
            if status != expected[i] {
                failures.push(format!(
                    "{method} {path} as {}: {status}, expected {} ({text})",
                    WHO[i], expected[i]
                ));
            }
            let owner_or_admin = matches!(WHO[i], "ana" | "admin");
            if !owner_or_admin
                && (text.contains(SECRET_TITLE) || text.contains("hnd_"))
                && !path.starts_with("/v1/tokens")
            {
                failures.push(format!("{method} {path} as {} leaks: {text}", WHO[i]));
            }
            if status >= 400 {
                let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                if !v["error"]["code"].is_string() {
                    failures.push(format!(
                        "{method} {path} as {}: not the error shape: {text}",
                        WHO[i]
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Tokens listed to a musician are their own only.
    let listed: Value = http
        .get(format!("{base}/v1/tokens"))
        .bearer_auth(&bea)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        listed["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["user_id"] == bea_id),
        "{listed}"
    );
    assert!(
        !listed.to_string().contains(&bea[21..]),
        "no secret is listed"
    );
    // Bea's list of tracks holds only her own.
    let listed: Value = http
        .get(format!("{base}/v1/musics"))
        .bearer_auth(&bea)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        listed["musics"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["owner"] == bea_id),
        "{listed}"
    );
    // Finally the owner deletes.
    let deleted = http
        .delete(format!("{base}/v1/musics/{track}"))
        .bearer_auth(&ana)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
}
