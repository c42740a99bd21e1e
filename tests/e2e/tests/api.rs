//! The JSON API as tools see it: `hendu serve` on the embedded store, with a
//! catalogue, a musician, a station, a device and a broadcast's plays. Its
//! OpenAPI document (`/v1/openapi.json`, generated from the handlers) must
//! name every route, validate as OpenAPI 3.1 (PyPI `openapi-spec-validator`),
//! and a property-based run against it (PyPI `schemathesis`, generating
//! valid and invalid requests for every operation, with an administrator's
//! token) must find no answer 500 or worse. `scripts/test.sh` installs both
//! into the project's `.venv`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::Duration;

use hendu_e2e::broadcast::{CATALOGUE, Client};
use hendu_e2e::pipeline::{IMEI, recorded_plays, start_serve, the_broadcast, wait_for_catalogue};
use hendu_storage::Storage;
use hendu_storage::model::Source;
use hendu_storage::testing::{Kind, Place};
use serde_json::{Value, json};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn venv_tool(name: &str) -> PathBuf {
    let path = root().join(".venv/bin").join(name);
    assert!(
        path.exists(),
        "{} is missing: scripts/test.sh installs it into .venv",
        path.display()
    );
    path
}

/// Every route a tool uses, by method and path, as the document must name it.
const ROUTES: [(&str, &str); 24] = [
    ("get", "/v1/plays"),
    ("get", "/v1/plays/{id}"),
    ("get", "/v1/reports"),
    ("post", "/v1/musics"),
    ("get", "/v1/musics"),
    ("get", "/v1/musics/{id}"),
    ("delete", "/v1/musics/{id}"),
    ("get", "/v1/claims"),
    ("post", "/v1/claims/{id}"),
    ("post", "/v1/radios"),
    ("get", "/v1/radios"),
    ("get", "/v1/radios/{id}"),
    ("patch", "/v1/radios/{id}"),
    ("delete", "/v1/radios/{id}"),
    ("get", "/v1/radios/health"),
    ("get", "/v1/radios/{id}/health"),
    ("post", "/v1/devices"),
    ("get", "/v1/devices/{imei}"),
    ("patch", "/v1/devices/{imei}"),
    ("post", "/v1/devices/{imei}/samples"),
    ("post", "/v1/tokens"),
    ("get", "/v1/tokens"),
    ("post", "/v1/users"),
    ("patch", "/v1/users/{id}"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_validates_and_fuzzing_it_finds_no_server_error() {
    let place = Place::new(Kind::Embedded).await;
    let serve = start_serve(&place, &[]).await;
    let client = Client::new(&serve.base, &serve.base);
    let token = client.token().await.unwrap().to_owned();
    // Data for the reads to find: a catalogue, a musician, a station, a
    // device and its broadcast's plays.
    for t in &CATALOGUE {
        client.upload(t).await.unwrap();
    }
    wait_for_catalogue(std::slice::from_ref(&serve), CATALOGUE.len()).await;
    client
        .create_user("ana@hendu.test", "musician", "a long musician password")
        .await
        .unwrap();
    let r = client
        .http
        .post(format!("{}/v1/radios", serve.base))
        .bearer_auth(&token)
        .json(&json!({"name": "Radio Apagada", "stream_url": "http://127.0.0.1:9/off.mp3", "enabled": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let (device, secret) = client.register_device(IMEI).await.unwrap();
    let (t0, samples) = the_broadcast();
    for s in &samples {
        assert_eq!(client.send(IMEI, &secret, s).await.unwrap(), 202);
    }
    let storage = Storage::connect(&place.config).await.unwrap();
    let plays = recorded_plays(&storage, Source::Device(device), t0).await;
    assert!(!plays.is_empty());

    // The plays API answers what the store holds.
    let page: Value = client
        .http
        .get(format!(
            "{}/v1/plays?sort=start&dir=asc&limit=1000",
            serve.base
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<i64> = page["plays"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, plays.iter().map(|p| p.id).collect::<Vec<_>>());
    assert_eq!(page["total"].as_u64(), Some(plays.len() as u64));

    // The document names every route and validates.
    let doc: Value = client
        .http
        .get(format!("{}/v1/openapi.json", serve.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for (method, path) in ROUTES {
        assert!(
            doc["paths"][path][method].is_object(),
            "the document lacks {method} {path}"
        );
    }
    let file = root().join("target/openapi.json");
    std::fs::write(&file, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
    let validated = tokio::process::Command::new(venv_tool("openapi-spec-validator"))
        .arg(&file)
        .output()
        .await
        .unwrap();
    assert!(
        validated.status.success(),
        "the OpenAPI document does not validate:\n{}{}",
        String::from_utf8_lossy(&validated.stdout),
        String::from_utf8_lossy(&validated.stderr)
    );

    // Property-based requests against every operation (but the revocation
    // of tokens, which would end the run's own): no server error.
    let started = std::time::Instant::now();
    let run = tokio::time::timeout(
        Duration::from_secs(600),
        tokio::process::Command::new(venv_tool("schemathesis"))
            .args([
                "run",
                &format!("{}/v1/openapi.json", serve.base),
                "--checks",
                "not_a_server_error",
                "--header",
                &format!("Authorization: Bearer {token}"),
                "--max-examples",
                "60",
                "--workers",
                "2",
                "--seed",
                "20261206",
                "--request-timeout",
                "30",
                "--exclude-path-regex",
                "^/v1/tokens/",
                "--generation-database",
                "none",
                "--no-color",
            ])
            .current_dir(root().join("target"))
            .output(),
    )
    .await
    .expect("schemathesis finishes within 10 minutes")
    .unwrap();
    let out = String::from_utf8_lossy(&run.stdout);
    eprintln!(
        "schemathesis ({:.0} s):\n{out}{}",
        started.elapsed().as_secs_f64(),
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(run.status.success(), "schemathesis found server errors");
    // "1534 generated, 1534 passed": it did send requests, and all passed.
    let counts = out
        .lines()
        .find_map(|l| {
            let (generated, passed) = l.trim().split_once(" generated, ")?;
            let passed = passed.strip_suffix(" passed")?;
            Some((generated.parse::<u64>().ok()?, passed.parse::<u64>().ok()?))
        })
        .expect("schemathesis says how many requests it made");
    assert!(counts.0 >= 1000 && counts.0 == counts.1, "{counts:?}");
    // The service is still up and ready after it.
    let ready = client
        .http
        .get(format!("{}/readyz", serve.base))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
}
