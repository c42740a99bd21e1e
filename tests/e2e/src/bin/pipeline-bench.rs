//! Pipeline figures on this machine: each service's start-up and idle
//! memory, samples per second through recognition with one and two
//! replicas, and the latency from a sample's upload to its play.
//!
//! Run by `bench/pipeline/run.sh` (release binaries, the test servers).
//! The catalogue is synthetic (`hendu_fingerprint::synth`), so the run needs
//! no corpus: `TRACKS` tracks of 150-240 s.

#![allow(clippy::unwrap_used, clippy::expect_used)] // A benchmark fails loudly.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use hendu_e2e::broadcast::{
    ADMIN_EMAIL, ADMIN_PASSWORD, Body, Client, Sample, Track, fingerprint_body, track_audio,
};
use hendu_e2e::{Service, eventually};
use hendu_storage::model::{Imei, Source};
use hendu_storage::testing::{Kind, Place};
use hendu_storage::{Event, Queue, QueueConfig, Storage, StorageConfig};
use time::OffsetDateTime;

const TRACKS: u64 = 40;
const DEVICES_PER_GROUP: usize = 10;
const TRACKS_PER_PROGRAMME: usize = 8;
const LATENCY_DEVICES: usize = 8;
const UPLOAD_EVERY: Duration = Duration::from_secs(1);
/// Batches drained per number of recognisers (one run varies by 15%).
const ROUNDS: usize = 5;

fn catalogue() -> Vec<Track> {
    (0..TRACKS)
        .map(|i| Track {
            seed: 1000 + i,
            title: "Synthetic",
            seconds: 150.0 + (i * 37 % 90) as f32,
        })
        .collect()
}

/// A device's day: catalogue tracks back to back, cut into 30 s samples
/// sent as on-device fingerprints.
fn programme(device: u64, tracks: &[Track], t0: OffsetDateTime) -> Vec<Sample> {
    let mut audio = Vec::new();
    for k in 0..TRACKS_PER_PROGRAMME as u64 {
        let t = &tracks[((device * 7 + k * 13) % tracks.len() as u64) as usize];
        audio.extend(track_audio(t));
    }
    let rate = hendu_e2e::broadcast::RATE as usize;
    audio
        .chunks(30 * rate)
        .enumerate()
        .map(|(k, chunk)| {
            let captured_at = t0 + Duration::from_secs(30 * k as u64);
            Sample {
                captured_at,
                body: Body::Fingerprint,
                bytes: fingerprint_body(chunk, captured_at),
            }
        })
        .collect()
}

fn imei(n: u64) -> String {
    // 14 digits, then the Luhn check digit.
    let body = format!("35693803{:06}", n);
    format!("{body}{}", Imei::check_digit(&body))
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

async fn drained(storage: &Storage, queue: Queue) {
    eventually(Duration::from_secs(1800), || async {
        let b = storage.queue.backlog(queue).await.ok()?;
        (b.waiting + b.pending == 0).then_some(())
    })
    .await
    .expect("the queue drains");
}

async fn recognisers(n: usize, config: &StorageConfig) -> Vec<Service> {
    hendu_e2e::replicas("hendu-recognition", "recognition", n, config, &[])
        .await
        .unwrap()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let place = Place::new(Kind::Servers).await;
    // The production claim timeout, not the tests' short one.
    let mut config = place.config.clone();
    if let StorageConfig::Servers(s) = &mut config {
        s.queue = QueueConfig::default();
    }
    let storage = Storage::connect(&config).await?;
    let admin = vec![
        ("HENDU_ADMIN_EMAIL", ADMIN_EMAIL.to_owned()),
        ("HENDU_ADMIN_PASSWORD", ADMIN_PASSWORD.to_owned()),
    ];
    let mut started: Vec<(String, Duration, u64)> = Vec::new();

    let hash_generator =
        Service::start("hendu-hash-generator", "hash-generator", &config, &[]).await?;
    let communication =
        Service::start("hendu-communication", "communication", &config, &admin).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    for s in [&hash_generator, &communication] {
        started.push((
            format!("{} (just started)", s.name),
            s.ready_after,
            s.rss_kb(),
        ));
    }
    let client = Client::new(&hash_generator.base, &communication.base);

    let tracks = catalogue();
    let audio_s: f32 = tracks.iter().map(|t| t.seconds).sum();
    let t = Instant::now();
    for track in &tracks {
        client.upload(track).await?;
    }
    let upload = t.elapsed();
    println!(
        "catalogue: {} synthetic tracks, {:.1} h, uploaded one by one in {:.1} s ({:.0}x real time, upload and WAV included)",
        tracks.len(),
        audio_s / 3600.0,
        upload.as_secs_f64(),
        f64::from(audio_s) / upload.as_secs_f64()
    );

    // Latency first, on a store that holds the catalogue and nothing more
    // (the MongoDB stand-in slows down as it holds more: docs/benchmarks.md):
    // everything running, devices uploading in real pace (sped up).
    let t0 = OffsetDateTime::now_utc().replace_nanosecond(0)? - time::Duration::days(1);
    let mut device_no = 0u64;
    let mut recognition = recognisers(1, &config).await;
    let filter_env = vec![("HENDU_FILTER_FLUSH_S", "5".to_owned())];
    let mut filter = Service::start("hendu-filter", "filter", &config, &filter_env).await?;
    drained(&storage, Queue::RawResults).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    for s in [&hash_generator, &communication, &recognition[0], &filter] {
        started.push((
            format!("{} (after the catalogue)", s.name),
            s.ready_after,
            s.rss_kb(),
        ));
    }

    let mut sources: HashMap<i64, usize> = HashMap::new();
    let mut devices = Vec::new();
    for d in 0..LATENCY_DEVICES {
        device_no += 1;
        let imei = imei(device_no);
        let (id, secret) = client.register_device(&imei).await?;
        sources.insert(id, d);
        devices.push((imei, secret, programme(device_no, &tracks, t0)));
    }
    // uploads[d] = upload completion instants, in order.
    let uploads: Arc<Mutex<Vec<Vec<Instant>>>> =
        Arc::new(Mutex::new(vec![Vec::new(); LATENCY_DEVICES]));
    let mut events = storage.events.subscribe().await?;
    let plays: Arc<Mutex<Vec<(usize, Instant)>>> = Arc::new(Mutex::new(Vec::new()));
    let listener = {
        let plays = plays.clone();
        let sources = sources.clone();
        tokio::spawn(async move {
            while let Some(e) = events.next().await {
                if let Event::PlayRecognised {
                    source: Source::Device(id),
                    ..
                } = e
                    && let Some(&d) = sources.get(&id)
                {
                    plays.lock().unwrap().push((d, Instant::now()));
                }
            }
        })
    };
    let mut senders = Vec::new();
    let run_started = Instant::now();
    for (d, (imei, secret, samples)) in devices.into_iter().enumerate() {
        let client = client.clone();
        let uploads = uploads.clone();
        senders.push(tokio::spawn(async move {
            // Devices start a fraction of a second apart, as real ones do.
            tokio::time::sleep(UPLOAD_EVERY.mul_f64(d as f64 / LATENCY_DEVICES as f64)).await;
            let mut tick = tokio::time::interval(UPLOAD_EVERY);
            for s in &samples {
                tick.tick().await;
                assert_eq!(client.send(&imei, &secret, s).await.unwrap(), 202);
                uploads.lock().unwrap()[d].push(Instant::now());
            }
        }));
    }
    for s in senders {
        s.await?;
    }
    let sent_at = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    listener.abort();
    let uploads = uploads.lock().unwrap().clone();
    let heard = plays.lock().unwrap().clone();
    // A device's last play is decided by the quiet-source flush once it has
    // stopped sending: that is the flush time, not the pipeline's latency.
    let flushed = heard
        .iter()
        .filter(|(d, at)| uploads[*d].last().is_some_and(|last| at > last))
        .count();
    let mut latencies: Vec<f64> = heard
        .iter()
        .filter(|(d, at)| uploads[*d].last().is_some_and(|last| at <= last))
        .filter_map(|&(d, at)| {
            let last = uploads[d].iter().rev().find(|u| **u <= at)?;
            Some((at - *last).as_secs_f64() * 1000.0)
        })
        .collect();
    latencies.sort_by(f64::total_cmp);
    let total_samples: usize = uploads.iter().map(Vec::len).sum();
    println!(
        "latency, upload of the deciding sample to play event: {} plays from {LATENCY_DEVICES} devices ({total_samples} samples, one per device per {} s, {:.0} s): p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        latencies.len(),
        UPLOAD_EVERY.as_secs_f64(),
        (sent_at - run_started).as_secs_f64(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or(f64::NAN)
    );
    println!(
        "(a play's deciding sample is taken as its device's last upload before the event, valid while latencies stay under the {} s between uploads; {flushed} last plays, decided by the quiet-source flush after their device stopped, are left out)",
        UPLOAD_EVERY.as_secs_f64()
    );

    filter.stop().await?;
    recognition[0].stop().await?;
    drained(&storage, Queue::Samples).await;
    place.forget_samples().await;

    // Samples per second through recognition: queue a batch, then start replicas.
    let mut throughput = Vec::new();
    // Each round sends the same programmes under new devices (fingerprinting
    // them is the slow part of the set-up), into an idle queue and an empty
    // samples collection, so that a round does not pay for the one before.
    let programmes: Vec<Vec<Sample>> = (1..=DEVICES_PER_GROUP as u64)
        .map(|slot| programme(slot, &tracks, t0))
        .collect();
    let count: usize = programmes.iter().map(Vec::len).sum();
    for replicas in [1usize, 2] {
        let mut rates = Vec::new();
        for round in 0..ROUNDS {
            let mut batch = Vec::new();
            for samples in &programmes {
                device_no += 1;
                let imei = imei(device_no);
                let (_, secret) = client.register_device(&imei).await?;
                batch.push((imei, secret, samples));
            }
            let t = Instant::now();
            for (imei, secret, samples) in &batch {
                for s in samples.iter() {
                    assert_eq!(client.send(imei, secret, s).await?, 202);
                }
            }
            let sending = t.elapsed();
            let mut running = recognisers(replicas, &config).await;
            let t = Instant::now();
            drained(&storage, Queue::Samples).await;
            let took = t.elapsed();
            let rate = count as f64 / took.as_secs_f64();
            println!(
                "recognition x{replicas}, round {}: {count} samples in {:.2} s = {rate:.0} samples/s (uploads of those fingerprints: {:.0}/s, one client)",
                round + 1,
                took.as_secs_f64(),
                count as f64 / sending.as_secs_f64()
            );
            rates.push(rate);
            for r in &mut running {
                if round == 0 {
                    started.push((
                        format!("{} (after the batch, {replicas} replica(s))", r.name),
                        r.ready_after,
                        r.rss_kb(),
                    ));
                }
                let t = Instant::now();
                r.stop().await?;
                println!("  {} stopped on SIGTERM in {}", r.name, ms(t.elapsed()));
            }
            place.forget_samples().await;
        }
        rates.sort_by(f64::total_cmp);
        throughput.push((replicas, rates));
    }

    println!("\n| service | start-up to ready | idle memory |");
    println!("| --- | --- | --- |");
    for (name, ready, rss) in &started {
        if *rss > 0 {
            println!(
                "| {name} | {} | {:.0} MB |",
                ms(*ready),
                *rss as f64 / 1024.0
            );
        } else {
            println!("| {name} | {} | |", ms(*ready));
        }
    }
    for (replicas, rates) in throughput {
        println!(
            "| recognition throughput, {replicas} replica(s), median of {ROUNDS} (range) | {:.0} samples/s ({:.0}-{:.0}) | |",
            percentile(&rates, 0.5),
            rates[0],
            rates[rates.len() - 1]
        );
    }
    drop(place);
    Ok(())
}
