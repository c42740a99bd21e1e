//! The radio monitor against stations that misbehave: the in-repo fault
//! server (drops mid-frame, clean ends, stalls, garbage, a wrong media
//! type, an HTML page, 404 and 500, HLS windows in MPEG-TS and fMP4, and
//! one that stops moving), in real time, with the monitor as a process on
//! MariaDB, Redis and a MongoDB wire-protocol server.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly by design.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::StreamExt;
use hendu_e2e::broadcast::{self, Content};
use hendu_e2e::faults::FaultServer;
use hendu_e2e::radio::{health, station_samples};
use hendu_e2e::{Service, eventually};
use hendu_storage::model::Role;
use hendu_storage::testing::{Kind, Place, user_with_token};
use hendu_storage::{Event, Storage};
use serde_json::{Value, json};
use time::OffsetDateTime;

/// Path on the fault server, and what the station is called.
const STATIONS: [&str; 12] = [
    "/live.mp3",
    "/drop.mp3",
    "/eof.mp3",
    "/stall.mp3",
    "/garbage.mp3",
    "/mislabelled",
    "/page.html",
    "/missing.mp3",
    "/broken.mp3",
    "/hls/ts/live.m3u8",
    "/hls/fmp4/live.m3u8",
    "/hls/stalled/live.m3u8",
];

/// Paths that play on one connection: each gives samples 30 s apart.
const PLAYING: [&str; 4] = [
    "/live.mp3",
    "/mislabelled",
    "/hls/ts/live.m3u8",
    "/hls/fmp4/live.m3u8",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misbehaving_stations_are_reconnected_their_gaps_recorded_and_nothing_breaks() {
    let place = Place::new(Kind::Servers).await;
    let storage = Storage::connect(&place.config).await.unwrap();
    let monitor = Service::start(
        "hendu-radio-monitor",
        "radio-monitor-faults",
        &place.config,
        &[
            ("HENDU_RADIO_SCAN_S", "0.5".into()),
            ("HENDU_RADIO_LEASE_S", "3".into()),
            ("HENDU_RADIO_STALL_S", "2".into()),
            ("HENDU_RADIO_BACKOFF_MAX_S", "2".into()),
            ("HENDU_RADIO_DOWN_S", "8".into()),
        ],
    )
    .await
    .unwrap();
    // Music all through (no dead air), 120 s, looped by the server.
    let programme = broadcast::sequence(&[
        (
            Content::Catalogue {
                index: 0,
                from_s: 0.0,
            },
            40.0,
        ),
        (Content::Other { seed: 5 }, 40.0),
        (
            Content::Catalogue {
                index: 2,
                from_s: 0.0,
            },
            40.0,
        ),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("programme.wav");
    std::fs::write(&wav, broadcast::wav(&broadcast::render_radio(&programme))).unwrap();
    let server = FaultServer::start(&wav, 1.0).await.unwrap();
    let mut events = storage.events.subscribe().await.unwrap();
    let (_, token) = user_with_token(&storage, "admin@faults.test", Role::Admin).await;
    let http = reqwest::Client::new();
    let mut ids = HashMap::new();
    for path in STATIONS {
        let answer = http
            .post(format!("{}/v1/radios", monitor.base))
            .bearer_auth(&token)
            .json(&json!({"name": format!("Station {path}"), "stream_url": server.url(path)}))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 201);
        let radio: Value = answer.json().await.unwrap();
        ids.insert(path, radio["id"].as_i64().unwrap());
    }
    let health = || async {
        let list = health(&http, &monitor.base, &token).await;
        let by_id: HashMap<i64, Value> = list
            .into_iter()
            .map(|h| (h["radio_id"].as_i64().unwrap(), h["status"].clone()))
            .collect();
        STATIONS
            .iter()
            .map(|p| (*p, by_id.get(&ids[p]).cloned().unwrap_or(Value::Null)))
            .collect::<HashMap<_, _>>()
    };
    let rss_early = {
        tokio::time::sleep(Duration::from_secs(15)).await;
        monitor.rss_kb()
    };

    // Two samples from every playing station, two reconnections of the
    // dropping ones.
    let settled = eventually(Duration::from_secs(120), || async {
        for path in PLAYING.iter().chain(&["/garbage.mp3"]) {
            if station_samples(&storage, ids[path]).await.len() < 2 {
                return None;
            }
        }
        let h = health().await;
        for path in ["/drop.mp3", "/eof.mp3", "/stall.mp3"] {
            if h[path]["reconnects"].as_u64().unwrap_or(0) < 2 {
                return None;
            }
        }
        Some(())
    })
    .await;
    let h = health().await;
    assert!(settled.is_some(), "the stations did not settle: {h:#?}");

    for path in PLAYING {
        let s = station_samples(&storage, ids[path]).await;
        for w in s.windows(2) {
            assert_eq!(
                w[1].captured_at,
                w[0].end(),
                "{path}: one connection's samples follow each other exactly"
            );
        }
        assert!(s.iter().all(|s| s.duration_ms == 30_000), "{path}: {s:?}");
        assert!(
            matches!(h[path]["state"].as_str(), Some("streaming")),
            "{path}: {}",
            h[path]
        );
    }
    assert!(
        h["/hls/ts/live.m3u8"]["codec"]
            .as_str()
            .unwrap()
            .contains("MPEG-TS"),
        "{}",
        h["/hls/ts/live.m3u8"]
    );
    assert!(
        h["/hls/fmp4/live.m3u8"]["codec"]
            .as_str()
            .unwrap()
            .contains("fMP4"),
        "{}",
        h["/hls/fmp4/live.m3u8"]
    );
    let skipped = monitor.metric("hendu_radio_skipped_packets_total").await;
    assert!(
        skipped.is_some_and(|n| n > 0.0),
        "the garbage was skipped and counted: {skipped:?}"
    );

    // Garbage may break a connection (a false frame header that names
    // another rate); its samples never overlap either.
    for path in ["/garbage.mp3"] {
        let s = station_samples(&storage, ids[path]).await;
        for w in s.windows(2) {
            assert!(w[1].captured_at >= w[0].end(), "{path}: overlap {w:?}");
        }
    }
    // Dropped, ended and stalled connections: samples that never overlap,
    // the short end of each connection kept.
    for path in ["/drop.mp3", "/eof.mp3", "/stall.mp3"] {
        let s = station_samples(&storage, ids[path]).await;
        assert!(s.len() >= 2, "{path}: {s:?}");
        for w in s.windows(2) {
            assert!(w[1].captured_at >= w[0].end(), "{path}: overlap {w:?}");
        }
        assert!(
            s.iter().any(|s| s.duration_ms < 30_000),
            "{path}: a connection's tail is a shorter sample: {s:?}"
        );
    }
    // A stall is seen within the stall time, and the audio missed while
    // waiting for it is a recorded gap.
    let now = OffsetDateTime::now_utc();
    let gaps = storage
        .relational
        .radio_gaps(
            ids["/stall.mp3"],
            now - time::Duration::hours(1),
            now + time::Duration::hours(1),
        )
        .await
        .unwrap();
    assert!(
        gaps.iter().any(|g| g.reason.contains("stalled")),
        "{gaps:?}"
    );
    assert!(
        gaps.iter()
            .all(|g| (g.ended_at - g.started_at) < time::Duration::seconds(10)),
        "{gaps:?}"
    );

    // What cannot be listened to says why.
    let state = |p: &str| h[p]["state"].as_str().unwrap_or("").to_owned();
    let detail = |p: &str| h[p]["detail"].as_str().unwrap_or("").to_owned();
    assert_eq!(
        state("/page.html"),
        "unsupported_codec",
        "{}",
        h["/page.html"]
    );
    assert!(
        detail("/page.html").contains("text/html"),
        "{}",
        h["/page.html"]
    );
    assert!(
        ["backoff", "down"].contains(&state("/missing.mp3").as_str())
            && detail("/missing.mp3").contains("404"),
        "{}",
        h["/missing.mp3"]
    );
    assert_eq!(state("/broken.mp3"), "down", "{}", h["/broken.mp3"]);
    assert!(
        detail("/broken.mp3").contains("500"),
        "{}",
        h["/broken.mp3"]
    );
    for path in ["/page.html", "/missing.mp3", "/broken.mp3"] {
        assert!(
            station_samples(&storage, ids[path]).await.is_empty(),
            "{path}"
        );
    }
    // The stalled HLS window: noticed, not played again on reconnecting
    // (nothing stale is stored as new), and down once it has not moved for
    // the down time.
    let stalled = &h["/hls/stalled/live.m3u8"];
    assert!(
        stalled["reconnects"].as_u64().unwrap_or(0) >= 1,
        "{stalled}"
    );
    assert_eq!(state("/hls/stalled/live.m3u8"), "down", "{stalled}");
    assert!(
        detail("/hls/stalled/live.m3u8").contains("not moved"),
        "{stalled}"
    );
    let logged = std::fs::read_to_string(&monitor.log).unwrap();
    assert!(
        logged.contains("stopped updating"),
        "the stalled playlist was noticed"
    );
    let stale = station_samples(&storage, ids["/hls/stalled/live.m3u8"]).await;
    assert!(stale.len() <= 1, "{stale:?}");

    // Down was announced.
    let mut down = Vec::new();
    while let Ok(Some(event)) =
        tokio::time::timeout(Duration::from_millis(200), events.next()).await
    {
        if let Event::StationDown { radio_id, .. } = event {
            down.push(radio_id);
        }
    }
    assert!(down.contains(&ids["/broken.mp3"]), "{down:?}");
    assert!(down.contains(&ids["/hls/stalled/live.m3u8"]), "{down:?}");

    // Nothing panicked; memory did not grow with the faults.
    assert!(!logged.contains("panicked"), "a panic in the monitor's log");
    let rss_late = monitor.rss_kb();
    println!(
        "monitor RSS with {} stations: {rss_early} KB after 15 s, {rss_late} KB at the end, peak {} KB",
        STATIONS.len(),
        monitor.peak_kb()
    );
    assert!(
        rss_late < rss_early + 24 * 1024,
        "the monitor grew from {rss_early} KB to {rss_late} KB"
    );
}
