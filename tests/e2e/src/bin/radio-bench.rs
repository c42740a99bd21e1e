//! Radio monitor figures on this machine: how many 128 kbit/s MP3 stations
//! one core keeps up with in real time, memory per station, and the time to
//! reconnect after a drop; beside the ceiling, Symphonia's MP3 decoding
//! alone (and decoding with fingerprinting) on the same audio.
//!
//! Run by `bench/radio/run.sh` (release binaries). A real Icecast server
//! (Debian's `icecast2`) serves one mount fed in real time by ffmpeg, looped;
//! every station is a listener of it. One monitor replica on the embedded
//! store (samples queue up; nothing recognises them) listens to N stations;
//! its CPU time over a window says what N streams cost.

#![allow(clippy::unwrap_used, clippy::expect_used)] // A benchmark fails loudly.

use std::path::Path;
use std::time::{Duration, Instant};

use hendu_e2e::broadcast::{RATE, wav};
use hendu_e2e::radio::{Codec, Icecast, encode_mp3};
use hendu_e2e::{Service, eventually};
use hendu_fingerprint::synth::music;
use hendu_fingerprint::{AudioReader, Fingerprinter, PeakProfile};
use hendu_storage::model::Role;
use hendu_storage::testing::user_with_token;
use hendu_storage::{QueueConfig, Storage, StorageConfig};
use serde_json::{Value, json};
use time::OffsetDateTime;

const PROGRAMME_S: f32 = 300.0;
const STATIONS: [usize; 3] = [10, 30, 60];
const WARMUP: Duration = Duration::from_secs(45);
const WINDOW: Duration = Duration::from_secs(60);

/// CPU seconds (user and system) a process has used.
fn cpu_s(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0 // USER_HZ on Linux
}

/// Real-time factors of decoding `mp3` alone, and of decoding and
/// fingerprinting it in 30 s samples as the monitor does.
fn ceiling(mp3: &Path) -> (f64, f64) {
    let decode = |fingerprint: bool| {
        let started = Instant::now();
        let mut reader = AudioReader::open(mp3).unwrap();
        let mut frames = 0u64;
        let mut fp: Option<(Fingerprinter, u64)> = None;
        let mut peaks = Vec::new();
        while let Some(chunk) = reader.next_chunk().unwrap() {
            frames += chunk.samples.len() as u64;
            if fingerprint {
                let rate = chunk.sample_rate;
                let (f, n) =
                    fp.get_or_insert_with(|| (Fingerprinter::new(rate, PeakProfile::QUERY), 0));
                f.push(chunk.samples, &mut peaks);
                *n += chunk.samples.len() as u64;
                if *n >= u64::from(rate) * 30 {
                    f.finish(&mut peaks);
                    peaks.clear();
                    fp = None;
                }
            }
        }
        let audio_s = frames as f64 / f64::from(reader.sample_rate().unwrap());
        audio_s / started.elapsed().as_secs_f64()
    };
    // Best of three each: the ceiling.
    let best = |f: bool| (0..3).map(|_| decode(f)).fold(0.0, f64::max);
    (best(false), best(true))
}

async fn call(
    http: &reqwest::Client,
    token: &str,
    method: reqwest::Method,
    url: String,
    body: Option<Value>,
) -> Value {
    let mut r = http.request(method, url).bearer_auth(token);
    if let Some(b) = body {
        r = r.json(&b);
    }
    let r = r.send().await.unwrap();
    let text = r.text().await.unwrap();
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let audio = music(4242, PROGRAMME_S, RATE);
    let wav_path = dir.path().join("programme.wav");
    std::fs::write(&wav_path, wav(&audio)).unwrap();
    let mp3 = dir.path().join("programme.mp3");
    encode_mp3(&wav_path, &mp3, &[]).unwrap();
    let (decode_x, full_x) = ceiling(&mp3);
    println!(
        "ceiling, one core: MP3 decoding {decode_x:.0}x real time, decoding + fingerprinting {full_x:.0}x"
    );

    let icecast = Icecast::start().await.unwrap();
    let mut feeder = icecast
        .feed_with(Codec::Mp3.mount(), Codec::Mp3, &wav_path, 1.0, true)
        .await
        .unwrap();
    let url = icecast.url(Codec::Mp3.mount());

    let store = dir.path().join("store");
    std::fs::create_dir_all(&store).unwrap();
    let path = store.join("hendu.db");
    let config = StorageConfig::Embedded {
        path: path.clone(),
        queue: QueueConfig::default(),
    };
    let token = {
        let storage = Storage::embedded(&path, QueueConfig::default())
            .await
            .unwrap();
        let (_, token) = user_with_token(&storage, "bench@hendu.test", Role::Admin).await;
        storage.close().await;
        token
    };
    let env = [
        ("HENDU_RADIO_SCAN_S", "1".to_owned()),
        ("HENDU_RADIO_LEASE_S", "10".to_owned()),
        ("HENDU_LOG", "warn".to_owned()),
    ];
    let monitor = Service::start("hendu-radio-monitor", "radio-monitor", &config, &env)
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let idle_kb = monitor.rss_kb();
    println!("monitor idle: {} MB resident", idle_kb / 1024);
    println!();
    println!(
        "| stations | CPU (cores) | streams per core | of the decode ceiling | resident per station | slowest station's lag |"
    );
    println!("| --- | --- | --- | --- | --- | --- |");
    let mut ids: Vec<i64> = Vec::new();
    for n in STATIONS {
        while ids.len() < n {
            let r = call(
                &http,
                &token,
                reqwest::Method::POST,
                format!("{}/v1/radios", monitor.base),
                Some(json!({"name": format!("Bench {}", ids.len()), "stream_url": url})),
            )
            .await;
            ids.push(r["id"].as_i64().expect("a station"));
        }
        tokio::time::sleep(WARMUP).await;
        let cpu0 = cpu_s(monitor.pid());
        let t0 = Instant::now();
        tokio::time::sleep(WINDOW).await;
        let cores = (cpu_s(monitor.pid()) - cpu0) / t0.elapsed().as_secs_f64();
        let rss_kb = monitor.rss_kb();
        let health = call(
            &http,
            &token,
            reqwest::Method::GET,
            format!("{}/v1/radios/health", monitor.base),
            None,
        )
        .await;
        let now = OffsetDateTime::now_utc();
        let lags: Vec<f64> = health
            .as_array()
            .unwrap()
            .iter()
            .map(|h| {
                h["status"]["last_sample_end"]
                    .as_str()
                    .and_then(|s| {
                        OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
                            .ok()
                    })
                    .map_or(f64::INFINITY, |end| (now - end).as_seconds_f64())
            })
            .collect();
        let worst = lags.iter().copied().fold(0.0, f64::max);
        let per_core = n as f64 / cores;
        println!(
            "| {n} | {cores:.3} | {per_core:.0} | {:.0}% | {:.0} KB | {worst:.1} s |",
            100.0 * per_core / decode_x,
            (rss_kb.saturating_sub(idle_kb)) as f64 / n as f64
        );
    }
    // A drop: the source goes and comes back; how long until each station streams again.
    let n = ids.len();
    let _ = feeder.child.kill().await;
    let dropped = OffsetDateTime::now_utc();
    feeder = icecast
        .feed_with(Codec::Mp3.mount(), Codec::Mp3, &wav_path, 1.0, true)
        .await
        .unwrap();
    let back = OffsetDateTime::now_utc();
    let again = eventually(Duration::from_secs(120), || async {
        let health = call(
            &http,
            &token,
            reqwest::Method::GET,
            format!("{}/v1/radios/health", monitor.base),
            None,
        )
        .await;
        let times: Vec<f64> = health
            .as_array()?
            .iter()
            .filter_map(|h| {
                let s = &h["status"];
                (s["state"] == "streaming" && s["reconnects"].as_u64()? >= 1).then(|| {
                    let since = OffsetDateTime::parse(
                        s["since"].as_str()?,
                        &time::format_description::well_known::Rfc3339,
                    )
                    .ok()?;
                    Some((since - back).as_seconds_f64())
                })?
            })
            .collect();
        (times.len() == n).then_some(times)
    })
    .await;
    println!();
    println!(
        "source dropped at +0 s, back on air at +{:.1} s",
        (back - dropped).as_seconds_f64()
    );
    match again {
        Some(times) => println!(
            "{n} stations streaming again, after the source was back: median {:.1} s, slowest {:.1} s",
            median(times.clone()),
            times.iter().copied().fold(0.0, f64::max)
        ),
        None => println!("not every station was streaming again within 120 s"),
    }
    drop(feeder);
}
