//! What refusing hostile input costs the services, and what checking a
//! credential costs per request.
//!
//! For each hostile input, a fresh service process (release build, on the
//! test servers) gets one request; the figures are the time to its answer
//! and how much the process's peak resident memory grew. A watchdog kills a
//! process past 4 GB and a request past 120 s, so that the service without
//! limits can be measured too: `--legacy` talks to binaries built before the
//! limits (no tokens; devices registered with HTTP Basic and a secret of the
//! client's), in `HENDU_BIN_DIR`.
//!
//! Then, in this process against the same servers, the cost of one token
//! check and one device check (right secret, wrong secret, unknown IMEI).
//!
//! Usage: bench/limits/run.sh [--legacy]

use std::net::IpAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use hendu_e2e::Service;
use hendu_fingerprint::hostile;
use hendu_fingerprint::wire::MEDIA_TYPE;
use hendu_service::Auth;
use hendu_storage::credentials::{AuthKey, Purpose, new_device_secret};
use hendu_storage::model::{Imei, NewDevice, Role};
use hendu_storage::testing::{Kind, Place, user_with_token};
use hendu_storage::{Storage, StorageConfig};
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};

const ADMIN_EMAIL: &str = "admin@hendu.test";
const ADMIN_PASSWORD: &str = "a long admin password";
const IMEI: &str = "490154203237518";
const WATCHDOG_KB: u64 = 4 << 20;
const REQUEST_LIMIT: Duration = Duration::from_secs(120);

enum Target {
    Upload(&'static str),
    Sample { media: &'static str },
}

struct Input {
    name: &'static str,
    bytes: Vec<u8>,
    target: Target,
}

fn inputs() -> Vec<Input> {
    let normal_fingerprint = hostile::dense_sample_fingerprint(30_000, 60, 4);
    vec![
        Input {
            name: "silent FLAC, 8 MB (about 250 h), as a catalogue upload",
            bytes: hostile::silent_flac_sized(8 << 20, 44_100),
            target: Target::Upload("silence.flac"),
        },
        Input {
            name: "WAV claiming 13.5 h, holding 30 s, as a catalogue upload",
            bytes: hostile::lying_wav(13.5 * 3600.0, 30.0, 22_050),
            target: Target::Upload("lies.wav"),
        },
        Input {
            name: "CAF claiming 2^32-1 frames per packet, as a catalogue upload",
            bytes: hostile::huge_packet_caf(2),
            target: Target::Upload("huge.caf"),
        },
        Input {
            name: "1 MB of random bytes, as a catalogue upload",
            bytes: hostile::random_bytes(7, 1 << 20),
            target: Target::Upload("noise.mp3"),
        },
        Input {
            name: "silent FLAC, 512 KB (about 14.5 h), as a device sample",
            bytes: hostile::silent_flac_sized(512 << 10, 44_100),
            target: Target::Sample {
                media: "audio/flac",
            },
        },
        Input {
            name: "device fingerprint, 60 s at 5,000 peaks/s",
            bytes: hostile::dense_sample_fingerprint(60_000, 5_000, 64),
            target: Target::Sample { media: MEDIA_TYPE },
        },
        Input {
            name: "normal device fingerprint, 30 s (for comparison)",
            bytes: normal_fingerprint,
            target: Target::Sample { media: MEDIA_TYPE },
        },
    ]
}

/// The answer, or what became of the process.
async fn send(service: &Service, request: reqwest::RequestBuilder) -> (String, Duration) {
    let started = Instant::now();
    let sent = tokio::spawn(request.timeout(REQUEST_LIMIT).send());
    loop {
        if sent.is_finished() {
            let outcome = match sent.await {
                Ok(Ok(r)) => {
                    let status = r.status().as_u16();
                    let body: Value = r.json().await.unwrap_or(Value::Null);
                    let code = body["error"]["code"].as_str().unwrap_or("").to_owned();
                    format!("{status} {code}")
                }
                Ok(Err(e)) if e.is_timeout() => {
                    format!("no answer within {} s", REQUEST_LIMIT.as_secs())
                }
                Ok(Err(_)) => "connection lost (the process died)".to_owned(),
                Err(e) => format!("client failed: {e}"),
            };
            return (outcome, started.elapsed());
        }
        if service.rss_kb() > WATCHDOG_KB {
            sent.abort();
            return ("killed past 4 GB".to_owned(), started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn token(base: &str) -> Result<String> {
    let r: Value = reqwest::Client::new()
        .post(format!("{base}/v1/tokens"))
        .basic_auth(ADMIN_EMAIL, Some(ADMIN_PASSWORD))
        .json(&json!({ "name": "bench" }))
        .send()
        .await?
        .json()
        .await?;
    r["token"].as_str().map(str::to_owned).context("no token")
}

async fn hostile_inputs(config: &StorageConfig, legacy: bool) -> Result<()> {
    let admin = vec![
        ("HENDU_ADMIN_EMAIL", ADMIN_EMAIL.to_owned()),
        ("HENDU_ADMIN_PASSWORD", ADMIN_PASSWORD.to_owned()),
    ];
    let http = reqwest::Client::new();
    // A device to send samples as.
    let mut communication =
        Service::start("hendu-communication", "communication", config, &admin).await?;
    let secret = if legacy {
        let secret = "bench secret 1234".to_owned();
        http.post(format!("{}/v1/devices", communication.base))
            .basic_auth(ADMIN_EMAIL, Some(ADMIN_PASSWORD))
            .json(&json!({ "imei": IMEI, "name": "bench", "secret": secret }))
            .send()
            .await?
            .error_for_status()?;
        secret
    } else {
        let t = token(&communication.base).await?;
        let r: Value = http
            .post(format!("{}/v1/devices", communication.base))
            .bearer_auth(&t)
            .json(&json!({ "imei": IMEI, "name": "bench" }))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        r["secret"].as_str().context("no secret")?.to_owned()
    };
    let admin_token = if legacy {
        None
    } else {
        Some(token(&communication.base).await?)
    };
    communication.stop().await?;

    println!("| input | answer | time | peak memory growth |");
    println!("| --- | --- | --- | --- |");
    for input in inputs() {
        let (binary, name) = match input.target {
            Target::Upload(_) => ("hendu-hash-generator", "hash-generator"),
            Target::Sample { .. } => ("hendu-communication", "communication"),
        };
        let mut service = Service::start(binary, name, config, &admin).await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let before = service.peak_kb();
        let request = match input.target {
            Target::Upload(file) => {
                let mut r = http
                    .post(format!("{}/v1/musics", service.base))
                    .multipart(Form::new().part("file", Part::bytes(input.bytes).file_name(file)));
                if let Some(t) = &admin_token {
                    r = r.bearer_auth(t);
                }
                r
            }
            Target::Sample { media } => http
                .post(format!("{}/v1/devices/{IMEI}/samples", service.base))
                .header("x-hendu-device-secret", &secret)
                .header("x-hendu-captured-at", "2026-11-24T21:30:00Z")
                .header("content-type", media)
                .body(input.bytes),
        };
        let (outcome, took) = send(&service, request).await;
        let grew = service.peak_kb().saturating_sub(before);
        println!(
            "| {} | {outcome} | {:.2} s | {:.1} MB |",
            input.name,
            took.as_secs_f64(),
            grew as f64 / 1024.0
        );
        service.kill().await;
    }
    Ok(())
}

fn summary(mut micros: Vec<f64>) -> String {
    micros.sort_by(f64::total_cmp);
    let at = |p: f64| micros[((micros.len() - 1) as f64 * p).round() as usize];
    format!("p50 {:.0} µs, p99 {:.0} µs", at(0.5), at(0.99))
}

/// Per-call cost of the credential checks, in this process.
async fn credential_checks(storage: &Storage) -> Result<()> {
    const N: usize = 2000;
    let (_, token) = user_with_token(storage, "bench@hendu.test", Role::Musician).await;
    let key = AuthKey::load(storage).await?;
    let secret = new_device_secret();
    let imei = Imei::parse("356938035643809")?;
    let device = NewDevice::new(
        imei.clone(),
        "bench",
        None,
        key.digest(Purpose::DeviceSecret, secret.expose()),
    )?;
    storage.relational.add_device(&device).await?;
    let unknown = Imei::parse(IMEI)?;
    let mut headers = axum::http::HeaderMap::new();
    headers.insert("authorization", format!("Bearer {token}").parse()?);
    let mut bad_headers = axum::http::HeaderMap::new();
    bad_headers.insert("authorization", "Bearer hnd_0123456789abcdef_0000000000000000000000000000000000000000000000000000000000000000".parse()?);
    let client: IpAddr = [10, 0, 0, 1].into();
    let mut rows: Vec<(&str, Vec<f64>)> = Vec::new();
    for (what, case) in [
        ("token, valid", 0),
        ("token, unknown", 1),
        ("device, right secret", 2),
        ("device, wrong secret", 3),
        ("device, unknown IMEI", 4),
    ] {
        let mut times = Vec::with_capacity(N);
        let mut auth = Auth::new(storage.clone(), key.clone());
        for i in 0..N {
            // A fresh limiter every few failures: the cost measured is the
            // check's, not the refusal of a limited address.
            if i % 8 == 0 {
                auth = Auth::new(storage.clone(), key.clone());
            }
            let t = Instant::now();
            let ok = match case {
                0 => auth.bearer(&headers, client).await.is_ok(),
                1 => auth.bearer(&bad_headers, client).await.is_ok(),
                2 => auth.device(&imei, secret.expose(), client).await.is_ok(),
                3 => auth.device(&imei, "a wrong secret", client).await.is_ok(),
                _ => auth
                    .device(&unknown, "a wrong secret", client)
                    .await
                    .is_ok(),
            };
            times.push(t.elapsed().as_secs_f64() * 1e6);
            assert_eq!(ok, matches!(case, 0 | 2), "{what}");
        }
        rows.push((what, times));
    }
    println!("\n| check ({N} calls, MySQL and this process on one machine) | cost |");
    println!("| --- | --- |");
    for (what, times) in rows {
        println!("| {what} | {} |", summary(times));
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let legacy = std::env::args().any(|a| a == "--legacy");
    let place = Place::new(Kind::Servers).await;
    hostile_inputs(&place.config, legacy).await?;
    if !legacy {
        let storage = Storage::connect(&place.config).await?;
        credential_checks(&storage).await?;
    }
    Ok(())
}
