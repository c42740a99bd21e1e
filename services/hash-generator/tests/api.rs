//! The hash-generator over HTTP, on a real embedded store, bound to port 0.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly by design.

use std::io::Cursor;
use std::time::Duration;

use hendu_fingerprint::hostile;
use hendu_fingerprint::synth::music;
use hendu_fingerprint::{
    Clip, IndexBuilder, PeakProfile, SearchOptions, Searcher, fingerprint_clip,
};
use hendu_hash_generator::{Config, SERVICE, install};
use hendu_service::limits::CpuQueue;
use hendu_service::{Application, Auth};
use hendu_storage::model::Role;
use hendu_storage::testing::user_with_token;
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
    /// Clients that send the token of: an administrator, musician Ana,
    /// musician Bea, an operator.
    admin: reqwest::Client,
    ana: reqwest::Client,
    bea: reqwest::Client,
    operator: reqwest::Client,
    spool: std::path::PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    _dir: tempfile::TempDir,
}

fn client(token: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {token}").parse().unwrap(),
    );
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap()
}

async fn spawn(max_upload: usize) -> TestApp {
    spawn_with(max_upload, 120.0).await
}

async fn spawn_with(max_upload: usize, max_track_s: f64) -> TestApp {
    spawn_with_cpu(max_upload, max_track_s, CpuQueue::per_core()).await
}

/// The service with its own limits and its own queue for CPU-heavy work.
async fn spawn_with_cpu(max_upload: usize, max_track_s: f64, cpu: CpuQueue) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::embedded(&dir.path().join("hendu.db"), QueueConfig::default())
        .await
        .unwrap();
    let token = |email: &'static str, role| {
        let storage = storage.clone();
        async move { client(&user_with_token(&storage, email, role).await.1) }
    };
    let admin = token("root@hendu.test", Role::Admin).await;
    let ana = token("ana@hendu.test", Role::Musician).await;
    let bea = token("bea@hendu.test", Role::Musician).await;
    let operator = token("op@hendu.test", Role::Operator).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let auth = Auth::load(&storage).await.unwrap();
    // A balancer's grace: the listener stays open this long after the signal.
    let mut app = Application::new(
        SERVICE,
        listener,
        storage.clone(),
        auth,
        Duration::from_secs(5),
    )
    .with_shutdown_delay(Duration::from_millis(600));
    app.cpu = cpu;
    let spool = dir.path().join("spool");
    std::fs::create_dir_all(&spool).unwrap();
    install(
        &mut app,
        &Config {
            max_upload,
            max_track_s,
            spool: spool.clone(),
        },
    );
    let base = format!("http://{}", app.local_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    TestApp {
        base,
        storage,
        admin,
        ana,
        bea,
        operator,
        spool,
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
    let http = app.ana.clone();
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

    let listed: Value = get_json(&http, format!("{}/v1/musics", app.base)).await;
    assert_eq!(listed["musics"].as_array().unwrap().len(), 1);
    let one: Value = get_json(&http, format!("{}{location}", app.base)).await;
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
    let http = app.ana.clone();
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

    let listed: Value = get_json(&http, format!("{}/v1/musics", app.base)).await;
    assert_eq!(listed["musics"], Value::Array(vec![]));
    assert_eq!(catalogue_size(&app).await, 0);
    stop(app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_music_is_gone_from_the_api_and_the_catalogue() {
    let app = spawn(50_000_000).await;
    let http = app.ana.clone();
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
    let http = app.ana.clone();
    let health = http
        .get(format!("{}/healthz", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let ready: Value = get_json(&http, format!("{}/readyz", app.base)).await;
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
    assert_eq!(
        body["missing"][0]["reason"], "unreachable",
        "a stable code, not the driver's words"
    );
    stop(app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_fails_as_soon_as_shutdown_begins_while_requests_are_still_served() {
    let mut app = spawn(1000).await;
    let http = app.ana.clone();
    assert_eq!(
        get_json(&http, format!("{}/readyz", app.base)).await["status"],
        "ready"
    );
    app.stop.take().unwrap().send(()).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let draining = http
        .get(format!("{}/readyz", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(draining.status(), 503);
    let body: Value = draining.json().await.unwrap();
    assert_eq!(body["missing"][0]["reason"], "shutting_down", "{body}");
    // Other requests are still answered during the delay.
    let listed = http
        .get(format!("{}/v1/musics", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 200);
    tokio::time::timeout(Duration::from_secs(10), app.server)
        .await
        .expect("stops after the delay")
        .unwrap()
        .unwrap();
}

async fn get_json(http: &reqwest::Client, url: String) -> Value {
    http.get(url).send().await.unwrap().json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracks_belong_to_their_owner_and_a_second_owner_files_a_claim() {
    let app = spawn(50_000_000).await;
    let audio = wav(&music(5, 20.0, RATE));
    let upload = |http: &reqwest::Client, f: Form| {
        http.post(format!("{}/v1/musics", app.base))
            .multipart(f)
            .send()
    };
    // Refusals come before the body is read: a short body, so that the
    // answer is not lost to a broken pipe while the client is still sending.
    let short = wav(&music(5, 0.5, RATE));
    let anonymous = reqwest::Client::new()
        .post(format!("{}/v1/musics", app.base))
        .multipart(form(short.clone(), "a.wav", None))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    let refused = upload(&app.operator, form(short, "a.wav", None))
        .await
        .unwrap();
    assert_eq!(refused.status(), 403, "operators do not own tracks");

    let created = upload(&app.ana, form(audio.clone(), "a.wav", Some("Ana's")))
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let music: Value = created.json().await.unwrap();
    let url = format!("{}/v1/musics/{}", app.base, music["id"]);

    // Bea sees nothing of it, and cannot delete it.
    assert_eq!(app.bea.get(&url).send().await.unwrap().status(), 404);
    assert_eq!(app.bea.delete(&url).send().await.unwrap().status(), 404);
    let listed = get_json(&app.bea, format!("{}/v1/musics", app.base)).await;
    assert_eq!(listed["musics"], Value::Array(vec![]));

    // The same audio from Bea is not merged into Ana's, and does not reveal it.
    let claimed = upload(&app.bea, form(audio.clone(), "mine.wav", None))
        .await
        .unwrap();
    assert_eq!(claimed.status(), 409);
    let body = claimed.text().await.unwrap();
    assert!(body.contains("already_claimed"), "{body}");
    assert!(
        !body.contains("Ana") && !body.contains(&music["id"].to_string()),
        "{body}"
    );
    let claims = get_json(&app.admin, format!("{}/v1/claims", app.base)).await;
    assert_eq!(claims["claims"].as_array().unwrap().len(), 1, "{claims}");
    assert_eq!(
        app.bea
            .get(format!("{}/v1/claims", app.base))
            .send()
            .await
            .unwrap()
            .status(),
        403
    );

    let id = claims["claims"][0]["id"].as_i64().unwrap();
    let granted = app
        .admin
        .post(format!("{}/v1/claims/{id}", app.base))
        .json(&serde_json::json!({ "grant": true }))
        .send()
        .await
        .unwrap();
    assert_eq!(granted.status(), 200);
    assert_eq!(
        app.bea.get(&url).send().await.unwrap().status(),
        200,
        "now Bea's"
    );
    assert_eq!(
        app.ana.get(&url).send().await.unwrap().status(),
        404,
        "no longer Ana's"
    );
    let everyone = get_json(&app.admin, format!("{}/v1/musics", app.base)).await;
    assert_eq!(
        everyone["musics"].as_array().unwrap().len(),
        1,
        "administrators see all"
    );
    stop(app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_file_that_decodes_to_hours_is_refused_at_the_limit() {
    let app = spawn_with(50_000_000, 60.0).await;
    // 10 hours of silence in about 360 KB.
    let flac = hostile::silent_flac(10.0 * 3600.0, 44_100);
    assert!(flac.len() < 400_000, "{}", flac.len());
    let started = std::time::Instant::now();
    let r = app
        .ana
        .post(format!("{}/v1/musics", app.base))
        .multipart(form(flac, "silence.flac", None))
        .send()
        .await
        .unwrap();
    let took = started.elapsed();
    assert_eq!(r.status(), 422);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "audio_too_long", "{v}");
    // 60 s of audio decoded, not 10 h (decoding all of it takes minutes).
    assert!(took < Duration::from_secs(20), "{took:?}");
    let lying = app
        .ana
        .post(format!("{}/v1/musics", app.base))
        .multipart(form(
            hostile::lying_wav(36_000.0, 1.0, 8000),
            "lies.wav",
            None,
        ))
        .send()
        .await
        .unwrap();
    assert!(
        matches!(lying.status().as_u16(), 201 | 422),
        "{}",
        lying.status()
    );
    assert_eq!(
        catalogue_size(&app).await,
        usize::from(lying.status() == 201)
    );
    assert!(
        std::fs::read_dir(&app.spool).unwrap().next().is_none(),
        "no temporary file is left behind"
    );
    stop(app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_killed_upload_left_is_cleaned_up() {
    use hendu_storage::model::{ContentHash, MusicState, NewMusic};
    let app = spawn(50_000_000).await;
    // A row left `ingesting`, as by a SIGKILL between the row and the fingerprints.
    let new = NewMusic::new("Half", None, 60_000, ContentHash::of(b"half"), "half.wav").unwrap();
    let row = app
        .storage
        .relational
        .upsert_music(&new)
        .await
        .unwrap()
        .record;
    assert_eq!(row.state, MusicState::Ingesting);
    assert_eq!(
        app.storage
            .abandon_stale_ingests(Duration::from_secs(3600))
            .await
            .unwrap(),
        0
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(
        app.storage
            .abandon_stale_ingests(Duration::from_millis(1))
            .await
            .unwrap(),
        1
    );
    let gone = app.storage.relational.music(row.id).await.unwrap().unwrap();
    assert_eq!(gone.state, MusicState::Deleted);
    // An old temporary upload file is removed; a fresh one is not.
    let old = app
        .spool
        .join(format!("{}old", hendu_service::catalogue::SPOOL_PREFIX));
    std::fs::write(&old, b"x").unwrap();
    let other = app.spool.join("not-ours");
    std::fs::write(&other, b"x").unwrap();
    assert_eq!(
        hendu_service::catalogue::sweep_spool(&app.spool, Duration::from_secs(3600)),
        0
    );
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(
        hendu_service::catalogue::sweep_spool(&app.spool, Duration::from_millis(1)),
        1
    );
    assert!(!old.exists() && other.exists());
    stop(app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decoding_stops_when_the_client_goes_away_and_when_the_service_stops() {
    // One decode at a time: a decode that went on would hold the only turn.
    let app = spawn_with_cpu(50_000_000, 300.0 * 3600.0, CpuQueue::new(1, 4)).await;
    // 200 hours of silence in about 7 MB: minutes of decoding if nothing stops it.
    let long = hostile::silent_flac(200.0 * 3600.0, 44_100);
    let gave_up = app
        .ana
        .post(format!("{}/v1/musics", app.base))
        .multipart(form(long.clone(), "long.flac", None))
        .timeout(Duration::from_secs(2))
        .send()
        .await;
    assert!(gave_up.is_err(), "the client gave up: {gave_up:?}");
    // The next upload gets the turn as soon as the abandoned decode stops.
    let started = std::time::Instant::now();
    let next = app
        .ana
        .post(format!("{}/v1/musics", app.base))
        .multipart(form(wav(&music(21, 20.0, RATE)), "next.wav", Some("Next")))
        .send()
        .await
        .unwrap();
    assert_eq!(next.status(), 201, "{:?}", next.text().await);
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "the abandoned decode held the turn for {:?}",
        started.elapsed()
    );

    // At shutdown a decode in progress is cancelled and answered as retryable.
    let pending = {
        let (http, base) = (app.ana.clone(), app.base.clone());
        tokio::spawn(async move {
            http.post(format!("{base}/v1/musics"))
                .multipart(form(long, "long.flac", None))
                .send()
                .await
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop(app).await;
    let answer = pending.await.unwrap().unwrap();
    assert_eq!(answer.status(), 503);
    let v: Value = answer.json().await.unwrap();
    assert_eq!(v["error"]["code"], "cancelled", "{v}");
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
