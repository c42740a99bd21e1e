//! The hash-generator over HTTP, on a real embedded store, bound to port 0.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly by design.

use std::io::Cursor;
use std::time::Duration;

use hendu_fingerprint::synth::music;
use hendu_fingerprint::{
    Clip, IndexBuilder, PeakProfile, SearchOptions, Searcher, fingerprint_clip,
};
use hendu_hash_generator::{Config, SERVICE, install};
use hendu_service::Application;
use hendu_storage::{QueueConfig, Storage};
use reqwest::multipart::{Form, Part};
use serde_json::Value;

const RATE: u32 = 22_050;

fn wav(samples: &[f32]) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: RATE,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::new(&mut out, spec).unwrap();
    for s in samples {
        w.write_sample((s.clamp(-1.0, 1.0) * 32767.0) as i16)
            .unwrap();
    }
    w.finalize().unwrap();
    out.into_inner()
}

struct TestApp {
    base: String,
    storage: Storage,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    _dir: tempfile::TempDir,
}

async fn spawn(max_upload: usize) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::embedded(&dir.path().join("hendu.db"), QueueConfig::default())
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut app = Application::new(SERVICE, listener, storage.clone(), Duration::from_secs(5));
    install(&mut app, &Config { max_upload });
    let base = format!("http://{}", app.local_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    TestApp {
        base,
        storage,
        stop: Some(stop),
        server,
        _dir: dir,
    }
}

fn form(bytes: Vec<u8>, name: &str, title: Option<&str>) -> Form {
    let form = Form::new().part("file", Part::bytes(bytes).file_name(name.to_owned()));
    match title {
        Some(t) => form
            .text("title", t.to_owned())
            .text("artist", "Los Ejemplos"),
        None => form,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_becomes_a_recognisable_music_once() {
    let app = spawn(50_000_000).await;
    let http = reqwest::Client::new();
    let track = music(3, 40.0, RATE);
    let audio = wav(&track);

    let created = http
        .post(format!("{}/v1/musics", app.base))
        .multipart(form(audio.clone(), "cancion.wav", Some("Canción")))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let location = created.headers()["location"].to_str().unwrap().to_owned();
    assert!(created.headers().contains_key("x-request-id"));
    let body: Value = created.json().await.unwrap();
    assert_eq!(body["title"], "Canción");
    assert_eq!(body["artist"], "Los Ejemplos");
    assert_eq!(body["blocks"], 2);
    assert_eq!(body["state"], "ready");
    let id = body["id"].as_i64().unwrap();
    assert_eq!(location, format!("/v1/musics/{id}"));

    // The same audio again, under another name: the same music.
    let again = http
        .post(format!("{}/v1/musics", app.base))
        .multipart(form(audio.clone(), "copy.wav", None))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 200);
    assert_eq!(again.json::<Value>().await.unwrap()["id"], id);

    let listed: Value = get_json(format!("{}/v1/musics", app.base)).await;
    assert_eq!(listed["musics"].as_array().unwrap().len(), 1);
    let one: Value = get_json(format!("{}{location}", app.base)).await;
    assert_eq!(one["id"], id);

    // What was stored recognises a clip of the track.
    let catalogue = app.storage.load_catalogue().await.unwrap().tracks;
    assert_eq!(catalogue.len(), 1);
    let mut builder = IndexBuilder::new();
    builder
        .add(&catalogue[0].peaks, catalogue[0].frames)
        .unwrap();
    let index = builder.build();
    let clip = Clip {
        sample_rate: RATE,
        samples: track[20 * RATE as usize..26 * RATE as usize].to_vec(),
    };
    let found = index
        .search(
            &fingerprint_clip(&clip, PeakProfile::QUERY),
            &SearchOptions::default(),
            &mut Searcher::default(),
        )
        .expect("the clip matches");
    assert!((found.offset_s - 20.0).abs() < 0.1, "{found:?}");

    // The audio itself is kept, byte for byte.
    let mut stored = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(
        &mut app.storage.documents.binary(id).await.unwrap().unwrap(),
        &mut stored,
    )
    .await
    .unwrap();
    assert!(stored == audio);
    stop(app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_uploads_get_a_clear_error_and_store_nothing() {
    let app = spawn(300_000).await;
    let http = reqwest::Client::new();
    let post = |f: Form| {
        http.post(format!("{}/v1/musics", app.base))
            .multipart(f)
            .send()
    };

    let corrupt = post(form(
        b"this is not audio at all".repeat(100),
        "notes.mp3",
        Some("x"),
    ))
    .await
    .unwrap();
    assert_eq!(corrupt.status(), 422);
    let body: Value = corrupt.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unsupported_audio", "{body}");

    // Just over the limit: the unread rest fits the socket's buffers, so the
    // client finishes sending and reads the answer.
    let too_big = post(form(wav(&music(1, 7.5, RATE)), "long.wav", None))
        .await
        .unwrap();
    assert_eq!(too_big.status(), 413);
    assert_eq!(
        too_big.json::<Value>().await.unwrap()["error"]["code"],
        "payload_too_large"
    );

    let no_file = post(Form::new().text("title", "x")).await.unwrap();
    assert_eq!(no_file.status(), 400);
    assert_eq!(
        no_file.json::<Value>().await.unwrap()["error"]["code"],
        "missing_file"
    );

    let long_title = "t".repeat(300);
    let bad_title = post(form(wav(&music(2, 3.0, RATE)), "a.wav", Some(&long_title)))
        .await
        .unwrap();
    assert_eq!(bad_title.status(), 422);
    assert_eq!(
        bad_title.json::<Value>().await.unwrap()["error"]["code"],
        "invalid_input"
    );

    let listed: Value = get_json(format!("{}/v1/musics", app.base)).await;
    assert_eq!(listed["musics"], Value::Array(vec![]));
    assert_eq!(catalogue_size(&app).await, 0);
    stop(app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_music_is_gone_from_the_api_and_the_catalogue() {
    let app = spawn(50_000_000).await;
    let http = reqwest::Client::new();
    let body: Value = http
        .post(format!("{}/v1/musics", app.base))
        .multipart(form(wav(&music(4, 20.0, RATE)), "gone.wav", None))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let url = format!("{}/v1/musics/{}", app.base, body["id"]);
    assert_eq!(http.delete(&url).send().await.unwrap().status(), 204);
    let missing = http.get(&url).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(
        missing.json::<Value>().await.unwrap()["error"]["code"],
        "not_found"
    );
    assert_eq!(http.delete(&url).send().await.unwrap().status(), 404);
    assert_eq!(catalogue_size(&app).await, 0);
    stop(app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_metrics_answer() {
    let app = spawn(1000).await;
    let http = reqwest::Client::new();
    let health = http
        .get(format!("{}/healthz", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let ready: Value = get_json(format!("{}/readyz", app.base)).await;
    assert_eq!(ready["status"], "ready");
    http.get(format!("{}/v1/musics/12", app.base))
        .send()
        .await
        .unwrap();
    let metrics = http
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"route="/v1/musics/{id}""#)
            && metrics.contains("hendu_http_request_duration_seconds"),
        "{metrics}"
    );

    // A store that stops answering makes the service not ready, and says what is missing.
    app.storage.close().await;
    let not_ready = http
        .get(format!("{}/readyz", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(not_ready.status(), 503);
    let body: Value = not_ready.json().await.unwrap();
    assert_eq!(body["missing"][0]["name"], "embedded store", "{body}");
    stop(app).await;
}

async fn get_json(url: String) -> Value {
    reqwest::get(url).await.unwrap().json().await.unwrap()
}

async fn catalogue_size(app: &TestApp) -> usize {
    app.storage.load_catalogue().await.unwrap().tracks.len()
}

async fn stop(mut app: TestApp) {
    app.stop.take().unwrap().send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), app.server)
        .await
        .expect("stops within the grace period")
        .unwrap()
        .unwrap();
}
