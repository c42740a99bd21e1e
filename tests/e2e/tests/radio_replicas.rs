//! Three radio monitor replicas share twenty stations on a real Icecast
//! server, in real time: each station is listened to by exactly one replica
//! at every moment (Icecast's own listener counts, and the stored samples:
//! none overlap), a replica killed with SIGKILL has its stations taken over
//! within the lease time, a replica that joins is handed its share, and
//! every station's plays are the programme's, killed or not.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly by design.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use hendu_e2e::broadcast::{
    self, ADMIN_EMAIL, ADMIN_PASSWORD, CATALOGUE, Client, Content, Stretch,
};
use hendu_e2e::radio::{
    Icecast, encode_mp3, health, listeners, plays_of_every_station, station_plays, station_samples,
};
use hendu_e2e::{Service, eventually};
use hendu_radio_monitor::supervisor::chosen;
use hendu_storage::Storage;
use hendu_storage::testing::{Kind, Place};
use serde_json::{Value, json};

const STATIONS: usize = 20;
const LEASE_S: f64 = 3.0;

/// 150 s: noise, two catalogue tracks, noise.
fn programme() -> Vec<Stretch> {
    broadcast::sequence(&[
        (Content::Noise, 5.0),
        (
            Content::Catalogue {
                index: 0,
                from_s: 0.0,
            },
            60.0,
        ),
        (
            Content::Catalogue {
                index: 1,
                from_s: 0.0,
            },
            60.0,
        ),
        (Content::Noise, 25.0),
    ])
}

fn env(replica: Option<&str>) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("HENDU_ADMIN_EMAIL", ADMIN_EMAIL.into()),
        ("HENDU_ADMIN_PASSWORD", ADMIN_PASSWORD.into()),
        ("HENDU_FILTER_FLUSH_S", "45".into()),
        ("HENDU_FILTER_SWEEP_S", "0.5".into()),
        ("HENDU_FILTER_LEASE_S", "3".into()),
        ("HENDU_FILTER_GAP_WAIT_S", "5".into()),
        ("HENDU_RADIO_SCAN_S", "0.5".into()),
        ("HENDU_RADIO_LEASE_S", LEASE_S.to_string()),
    ];
    if let Some(name) = replica {
        env.push(("HENDU_REPLICA", name.to_owned()));
    }
    env
}

/// Each station's listening replica, from the stored statuses.
async fn holders(http: &reqwest::Client, base: &str, token: &str) -> HashMap<i64, String> {
    health(http, base, token)
        .await
        .iter()
        .filter(|h| h["state"] == "streaming" && !h["stale"].as_bool().unwrap_or(true))
        .filter_map(|h| {
            Some((
                h["radio_id"].as_i64()?,
                h["status"]["holder"].as_str()?.to_owned(),
            ))
        })
        .collect()
}

fn count_by_holder(holders: &HashMap<i64, String>) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for h in holders.values() {
        *counts.entry(h.clone()).or_insert(0) += 1;
    }
    counts
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_stations_take_over_a_killed_one_and_hand_a_share_to_a_new_one() {
    let place = Place::new(Kind::Servers).await;
    let config = &place.config;
    let storage = Storage::connect(config).await.unwrap();
    let hash_generator =
        Service::start("hendu-hash-generator", "hash-generator", config, &env(None))
            .await
            .unwrap();
    let communication = Service::start("hendu-communication", "communication", config, &env(None))
        .await
        .unwrap();
    let recognition = Service::start("hendu-recognition", "recognition", config, &env(None))
        .await
        .unwrap();
    let _filter = Service::start("hendu-filter", "filter", config, &env(None))
        .await
        .unwrap();
    let client = Client::new(&hash_generator.base, &communication.base);
    let mut ids = Vec::new();
    for t in &CATALOGUE[..2] {
        ids.push(client.upload(t).await.unwrap());
    }
    let indexed = eventually(Duration::from_secs(15), || async {
        (recognition.metric("hendu_catalogue_tracks").await == Some(2.0)).then_some(())
    })
    .await;
    assert!(indexed.is_some(), "the recogniser indexed the catalogue");

    let mut monitors = Vec::new();
    for i in 0..3 {
        let name = format!("radio-monitor-{i}");
        monitors.push(
            Service::start("hendu-radio-monitor", &name, config, &env(Some(&name)))
                .await
                .unwrap(),
        );
    }
    let base = monitors[1].base.clone();

    // The programme, encoded once and relayed to every mount as it is.
    let programme = programme();
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("programme.wav");
    std::fs::write(&wav, broadcast::wav(&broadcast::render_radio(&programme))).unwrap();
    let mp3 = dir.path().join("programme.mp3");
    encode_mp3(&wav, &mp3, &[]).unwrap();
    let icecast = Icecast::start().await.unwrap();
    let token = client.token().await.unwrap().to_owned();
    let http = reqwest::Client::new();
    let mut feeders = Vec::new();
    let mut radios = Vec::new();
    let mut on_air = Vec::new();
    for n in 0..STATIONS {
        let mount = format!("/station{n}.mp3");
        on_air.push(Instant::now());
        feeders.push(
            icecast
                .relay(&mount, &mp3, 1.0)
                .await
                .unwrap_or_else(|e| panic!("{e}\n{}", icecast.error_log())),
        );
        let answer = http
            .post(format!("{base}/v1/radios"))
            .bearer_auth(&token)
            .json(&json!({"name": format!("Station {n}"), "stream_url": icecast.url(&mount)}))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 201);
        let radio: Value = answer.json().await.unwrap();
        radios.push(radio["id"].as_i64().unwrap());
    }
    let started = Instant::now();

    // Never two listeners on a mount, whatever happens below.
    let watch = {
        let port = icecast.port;
        tokio::spawn(async move {
            let mut most = 0;
            while let Ok(mounts) = listeners(port).await {
                for (mount, n) in mounts {
                    assert!(n <= 1, "{n} listeners on {mount}");
                    most = most.max(n);
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            most
        })
    };

    // When each play first shows in the results.
    let seen_plays = {
        let storage = storage.clone();
        let radios = radios.clone();
        tokio::spawn(async move {
            let mut seen: HashMap<(i64, i64), Instant> = HashMap::new();
            while seen.len() < radios.len() * 2 {
                for &id in &radios {
                    for p in station_plays(&storage, id).await {
                        seen.entry((id, p.music_id)).or_insert_with(Instant::now);
                    }
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            seen
        })
    };

    // Every station streaming, spread over the three replicas.
    let spread = eventually(Duration::from_secs(30), || async {
        let h = holders(&http, &base, &token).await;
        (h.len() == STATIONS).then_some(h)
    })
    .await
    .expect("every station is listened to");
    let counts = count_by_holder(&spread);
    println!("stations per replica at start: {counts:?}");
    assert_eq!(counts.len(), 3, "{counts:?}");
    assert!(counts.values().all(|&n| n <= 12), "{counts:?}");
    let three: Vec<String> = (0..3).map(|i| format!("radio-monitor-{i}")).collect();
    for (id, holder) in &spread {
        assert_eq!(chosen(*id, &three), Some(holder.as_str()), "station {id}");
    }

    // A sample from each station, then SIGKILL the first replica.
    let sampled = eventually(Duration::from_secs(60), || async {
        for &id in &radios {
            if station_samples(&storage, id).await.is_empty() {
                return None;
            }
        }
        Some(())
    })
    .await;
    assert!(sampled.is_some(), "every station gave a sample");
    let killed: Vec<i64> = spread
        .iter()
        .filter(|(_, h)| h.as_str() == "radio-monitor-0")
        .map(|(&id, _)| id)
        .collect();
    let before: HashMap<i64, usize> = {
        let mut m = HashMap::new();
        for &id in &killed {
            m.insert(id, station_samples(&storage, id).await.len());
        }
        m
    };
    let mut dead = monitors.remove(0);
    dead.kill().await;
    let kill = Instant::now();
    println!(
        "killed radio-monitor-0 at {:.1} s with {} stations",
        started.elapsed().as_secs_f64(),
        killed.len()
    );
    let mut listening_again = HashMap::new();
    let mut new_sample = HashMap::new();
    while kill.elapsed() < Duration::from_secs(60) && new_sample.len() < killed.len() {
        let h = holders(&http, &base, &token).await;
        for &id in &killed {
            if !listening_again.contains_key(&id)
                && h.get(&id).is_some_and(|r| r != "radio-monitor-0")
            {
                listening_again.insert(id, kill.elapsed().as_secs_f64());
            }
            if !new_sample.contains_key(&id)
                && station_samples(&storage, id).await.len() > before[&id]
            {
                new_sample.insert(id, kill.elapsed().as_secs_f64());
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(listening_again.len(), killed.len(), "{listening_again:?}");
    assert_eq!(new_sample.len(), killed.len(), "{new_sample:?}");
    let again: Vec<f64> = listening_again.values().copied().collect();
    let sample: Vec<f64> = new_sample.values().copied().collect();
    let slowest = again.iter().copied().fold(0.0, f64::max);
    let slowest_sample = sample.iter().copied().fold(0.0, f64::max);
    println!(
        "takeover after SIGKILL ({} stations, lease {LEASE_S} s): streaming again after median {:.1} s, slowest {slowest:.1} s; next sample stored after median {:.1} s, slowest {slowest_sample:.1} s",
        killed.len(),
        median(again),
        median(sample)
    );
    // Within the lease, plus scans and connecting on a loaded machine.
    assert!(slowest <= LEASE_S + 5.0, "{listening_again:?}");
    assert!(slowest_sample <= LEASE_S + 30.0 + 6.0, "{new_sample:?}");

    // A replica joins: it is handed its share.
    let joined = Service::start(
        "hendu-radio-monitor",
        "radio-monitor-3",
        config,
        &env(Some("radio-monitor-3")),
    )
    .await
    .unwrap();
    let join = Instant::now();
    // It gets the stations hashing now gives it, and only those move;
    // listeners hand over after their next sample.
    let live: Vec<String> = (1..4).map(|i| format!("radio-monitor-{i}")).collect();
    let shared = eventually(Duration::from_secs(80), || async {
        let h = holders(&http, &base, &token).await;
        (h.len() == STATIONS
            && radios
                .iter()
                .all(|id| chosen(*id, &live) == Some(h[id].as_str())))
        .then(|| count_by_holder(&h))
    })
    .await;
    assert!(
        shared.is_some(),
        "the new replica was handed the stations hashing gives it"
    );
    println!(
        "after radio-monitor-3 joined: {:?} within {:.1} s",
        shared.unwrap(),
        join.elapsed().as_secs_f64()
    );

    // Every station's plays: the two tracks, each within a block of its place.
    let all = plays_of_every_station(&storage, &radios, 2, Duration::from_secs(180))
        .await
        .unwrap_or_else(|seen| panic!("not every station's plays were recorded: {seen:#?}"));
    for (&id, p) in radios.iter().zip(&all) {
        let got: Vec<i64> = p.iter().map(|p| p.music_id).collect();
        assert_eq!(got, ids, "station {id}: one play per track");
        let t0 = p[0].started_at - time::Duration::seconds(5);
        for (play, (from, to)) in p.iter().zip([(5.0, 65.0), (65.0, 125.0)]) {
            let start = (play.started_at - t0).as_seconds_f64();
            let end = (play.ended_at - t0).as_seconds_f64();
            // A killed replica's unfinished sample is lost with it (up to
            // a sample of audio, recorded as a gap).
            let tolerance = if killed.contains(&id) { 30.0 } else { 15.0 };
            assert!(
                (start - from).abs() <= tolerance && (end - to).abs() <= tolerance,
                "station {id}: played {start:.1}-{end:.1} s, truly {from}-{to} s"
            );
        }
        // One listener at a time: stored samples never overlap.
        let spans = station_samples(&storage, id).await;
        for w in spans.windows(2) {
            assert!(w[1].captured_at >= w[0].end(), "station {id}: {w:?}");
        }
    }
    // From a track going on air to its play in the results.
    let seen = seen_plays.await.unwrap();
    let mut from_start = Vec::new();
    let mut from_end = Vec::new();
    // From the end of the first track (followed by the second) and of the
    // second (followed by noise, then the end of the programme).
    let mut from_end_by_track = [Vec::new(), Vec::new()];
    for (n, &id) in radios.iter().enumerate() {
        for (k, &music) in ids.iter().enumerate() {
            let start = on_air[n] + Duration::from_secs(5 + 60 * k as u64);
            let at = seen[&(id, music)];
            from_start.push(at.duration_since(start).as_secs_f64());
            let after_end = at
                .saturating_duration_since(start + Duration::from_secs(60))
                .as_secs_f64();
            from_end.push(after_end);
            from_end_by_track[k].push(after_end);
        }
    }
    let pick = |v: &mut Vec<f64>, q: f64| {
        v.sort_by(f64::total_cmp);
        v[((v.len() - 1) as f64 * q).round() as usize]
    };
    println!(
        "track on air to play in results ({} plays, filter flush 45 s): from the track's start median {:.1} s, p90 {:.1} s, max {:.1} s; from its end median {:.1} s, p90 {:.1} s, max {:.1} s",
        from_start.len(),
        pick(&mut from_start, 0.5),
        pick(&mut from_start, 0.9),
        pick(&mut from_start, 1.0),
        pick(&mut from_end, 0.5),
        pick(&mut from_end, 0.9),
        pick(&mut from_end, 1.0),
    );
    println!(
        "from a track's end to its play: median {:.1} s for the first track (the next one follows), {:.1} s for the second (noise, then the programme ends)",
        pick(&mut from_end_by_track[0], 0.5),
        pick(&mut from_end_by_track[1], 0.5),
    );
    drop(feeders);
    drop(icecast);
    let most = watch.await.unwrap();
    assert!(most <= 1);
    drop(joined);
}
