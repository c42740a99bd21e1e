//! The radio monitor end to end: a real Icecast server with four mounts
//! (MP3, Ogg Vorbis, Ogg Opus, AAC in ADTS) fed by ffmpeg with a programme of
//! catalogue tracks, music that is not in the catalogue and dead air; the
//! services as processes on MariaDB, Redis and a MongoDB wire-protocol
//! server.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly by design.

use std::time::Duration;

use futures_util::StreamExt;
use hendu_e2e::broadcast::{
    self, ADMIN_EMAIL, ADMIN_PASSWORD, CATALOGUE, Client, Content, Stretch,
};
use hendu_e2e::radio::{
    Codec, Icecast, health, plays_of_every_station, station_plays, station_samples,
};
use hendu_e2e::{Service, eventually};
use hendu_storage::model::Play;
use hendu_storage::testing::{Kind, Place};
use hendu_storage::{Event, Storage};
use serde_json::{Value, json};

/// The feeds run this many times faster than real time: the monitor stamps
/// samples on the audio's own clock, so the plays' times are the
/// programme's whatever the speed.
const SPEED: f64 = 4.0;

/// 325 s: noise, two catalogue tracks, other music, 25 s of dead air, a
/// third track, noise.
fn programme() -> Vec<Stretch> {
    let parts = [
        (Content::Noise, 10.0),
        (
            Content::Catalogue {
                index: 0,
                from_s: 0.0,
            },
            90.0,
        ),
        (
            Content::Catalogue {
                index: 1,
                from_s: 0.0,
            },
            75.0,
        ),
        (Content::Other { seed: 99 }, 45.0),
        (Content::Silence, 25.0),
        (
            Content::Catalogue {
                index: 3,
                from_s: 0.0,
            },
            60.0,
        ),
        (Content::Noise, 20.0),
    ];
    broadcast::sequence(&parts)
}

fn env() -> Vec<(&'static str, String)> {
    vec![
        ("HENDU_ADMIN_EMAIL", ADMIN_EMAIL.into()),
        ("HENDU_ADMIN_PASSWORD", ADMIN_PASSWORD.into()),
        // A live source's samples come every 30 s / SPEED: a source is
        // quiet only after longer than that.
        ("HENDU_FILTER_FLUSH_S", "20".into()),
        ("HENDU_FILTER_SWEEP_S", "0.5".into()),
        ("HENDU_FILTER_LEASE_S", "3".into()),
        ("HENDU_FILTER_GAP_WAIT_S", "5".into()),
        ("HENDU_RADIO_SCAN_S", "0.5".into()),
        ("HENDU_RADIO_LEASE_S", "3".into()),
        ("HENDU_RADIO_SILENCE_S", "8".into()),
    ]
}

/// The programme as a station airs it, in a WAV file (in the folder returned).
fn programme_wav(programme: &[Stretch]) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("programme.wav");
    std::fs::write(&wav, broadcast::wav(&broadcast::render_radio(programme))).unwrap();
    (dir, wav)
}

/// Registers a station as the administrator; its record (201 asserted).
async fn register(base: &str, token: &str, station: Value) -> Value {
    let answer = reqwest::Client::new()
        .post(format!("{base}/v1/radios"))
        .bearer_auth(token)
        .json(&station)
        .send()
        .await
        .unwrap();
    let status = answer.status().as_u16();
    let radio: Value = answer.json().await.unwrap();
    assert_eq!(status, 201, "{radio}");
    radio
}

/// The plays are the programme's catalogue tracks in order, each within one
/// block (15 s) of its place in the programme. The programme's start on the
/// station's clock is where the first play says it is.
fn assert_plays_follow(plays: &[Play], ids: &[i64], programme: &[Stretch], what: &str) {
    let expected: Vec<(usize, f64, f64)> = programme
        .iter()
        .filter_map(|s| match s.content {
            Content::Catalogue { index, .. } => Some((
                index,
                f64::from(s.start_s),
                f64::from(s.start_s + s.seconds),
            )),
            _ => None,
        })
        .collect();
    let got: Vec<i64> = plays.iter().map(|p| p.music_id).collect();
    let want: Vec<i64> = expected.iter().map(|e| ids[e.0]).collect();
    assert_eq!(
        got, want,
        "{what}: the right tracks in order, none for the rest"
    );
    let t0 = plays[0].started_at - time::Duration::seconds_f64(expected[0].1);
    for (p, e) in plays.iter().zip(&expected) {
        let (start, end) = (
            (p.started_at - t0).as_seconds_f64(),
            (p.ended_at - t0).as_seconds_f64(),
        );
        assert!(
            (start - e.1).abs() <= 15.0 && (end - e.2).abs() <= 15.0,
            "{what}: track {} played {start:.1}-{end:.1} s, truly {}-{} s",
            e.0,
            e.1,
            e.2
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn icecast_stations_in_four_codecs_become_the_right_plays_and_dead_air_is_announced() {
    let place = Place::new(Kind::Servers).await;
    let config = &place.config;
    let storage = Storage::connect(config).await.unwrap();
    let env = env();
    let hash_generator = Service::start("hendu-hash-generator", "hash-generator", config, &env)
        .await
        .unwrap();
    let communication = Service::start("hendu-communication", "communication", config, &env)
        .await
        .unwrap();
    let recognition = Service::start("hendu-recognition", "recognition", config, &env)
        .await
        .unwrap();
    let _filter = Service::start("hendu-filter", "filter", config, &env)
        .await
        .unwrap();
    let monitor = Service::start("hendu-radio-monitor", "radio-monitor", config, &env)
        .await
        .unwrap();
    let client = Client::new(&hash_generator.base, &communication.base);
    let mut ids = Vec::new();
    for t in &CATALOGUE {
        ids.push(client.upload(t).await.unwrap());
    }
    let indexed = eventually(Duration::from_secs(15), || async {
        (recognition.metric("hendu_catalogue_tracks").await == Some(CATALOGUE.len() as f64))
            .then_some(())
    })
    .await;
    assert!(indexed.is_some(), "the recogniser indexed the catalogue");

    let programme = programme();
    let (_wav_dir, wav) = programme_wav(&programme);
    let icecast = Icecast::start().await.unwrap();
    let mut events = storage.events.subscribe().await.unwrap();
    let http = reqwest::Client::new();
    let token = client.token().await.unwrap().to_owned();
    let mut radios = Vec::new();
    let mut feeders = Vec::new();
    for codec in Codec::ALL {
        feeders.push(
            icecast
                .feed(codec.mount(), codec, &wav, SPEED)
                .await
                .unwrap_or_else(|e| panic!("{e}\n{}", icecast.error_log())),
        );
        let radio = register(
            &monitor.base,
            &token,
            json!({
                "name": format!("Radio {codec:?}"),
                "stream_url": icecast.url(codec.mount()),
                "location": "Asunción",
                "country": "py",
            }),
        )
        .await;
        assert_eq!(radio["country"], "PY");
        radios.push((codec, radio["id"].as_i64().unwrap()));
    }

    // Three plays per station, and nothing left undecided.
    let ids_of: Vec<i64> = radios.iter().map(|&(_, id)| id).collect();
    let all = match plays_of_every_station(&storage, &ids_of, 3, Duration::from_secs(240)).await {
        Ok(all) => all,
        Err(seen) => {
            let health = health(&http, &monitor.base, &token).await;
            panic!("not every station's plays were recorded: {seen:?}\nhealth: {health:#?}");
        }
    };
    for ((codec, id), plays) in radios.iter().zip(&all) {
        assert_plays_follow(plays, &ids, &programme, &format!("{codec:?}"));
        // The samples of a station never overlap, and lie 30 s apart.
        let spans = station_samples(&storage, *id).await;
        assert!(spans.len() >= 9, "{codec:?}: {} samples", spans.len());
        for w in spans.windows(2) {
            assert!(
                w[1].captured_at >= w[0].end(),
                "{codec:?}: overlapping samples {w:?}"
            );
        }
    }
    // Dead air was announced for every station.
    let mut silent = std::collections::HashSet::new();
    while let Ok(Some(event)) =
        tokio::time::timeout(Duration::from_millis(200), events.next()).await
    {
        if let Event::StationSilent { radio_id, .. } = event {
            silent.insert(radio_id);
        }
    }
    for &(codec, id) in &radios {
        assert!(
            silent.contains(&id),
            "{codec:?}: no StationSilent was published"
        );
    }
    // Operators see every station's state.
    let list = health(&http, &monitor.base, &token).await;
    assert_eq!(list.len(), Codec::ALL.len());
    for h in &list {
        assert_eq!(h["status"]["holder"], "radio-monitor", "{h}");
        assert!(h["status"]["samples"].as_u64().unwrap() >= 9, "{h}");
    }
    drop(feeders);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hendu_serve_monitors_a_station_on_the_embedded_store() {
    let place = Place::new(Kind::Embedded).await;
    let hendu_storage::StorageConfig::Embedded { path, .. } = &place.config else {
        unreachable!()
    };
    let dir = path.parent().unwrap().to_str().unwrap().to_owned();
    let serve = Service::start_with_args(
        "hendu",
        &["serve", "--store", &dir],
        "hendu-serve",
        &hendu_storage::StorageConfig::Embedded {
            path: "unused".into(),
            queue: hendu_storage::QueueConfig::default(),
        },
        &env(),
    )
    .await
    .unwrap();
    let client = Client::new(&serve.base, &serve.base);
    let mut ids = Vec::new();
    for t in &CATALOGUE {
        ids.push(client.upload(t).await.unwrap());
    }
    let programme = broadcast::sequence(&[
        (Content::Noise, 5.0),
        (
            Content::Catalogue {
                index: 0,
                from_s: 0.0,
            },
            90.0,
        ),
        (Content::Noise, 25.0),
    ]);
    let (_wav_dir, wav) = programme_wav(&programme);
    let icecast = Icecast::start().await.unwrap();
    let _feeder = icecast
        .feed(Codec::Mp3.mount(), Codec::Mp3, &wav, SPEED)
        .await
        .unwrap();
    let radio = register(
        &serve.base,
        client.token().await.unwrap(),
        json!({"name": "Radio Serve", "stream_url": icecast.url(Codec::Mp3.mount())}),
    )
    .await;
    let id = radio["id"].as_i64().unwrap();
    // The store is the service's file: read it once the service has recorded.
    let storage = Storage::connect(&place.config).await.unwrap();
    let plays = eventually(Duration::from_secs(120), || async {
        let plays = station_plays(&storage, id).await;
        (!plays.is_empty()
            && storage
                .documents
                .raw_result_sources()
                .await
                .ok()?
                .is_empty())
        .then_some(plays)
    })
    .await
    .expect("hendu serve recorded the station's play");
    assert_plays_follow(&plays, &ids, &programme, "hendu serve");
    let mut serve = serve;
    assert!(
        serve.stop().await.unwrap().success(),
        "a clean exit on SIGTERM"
    );
}
