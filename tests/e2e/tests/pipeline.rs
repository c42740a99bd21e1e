//! The pipeline end to end: the four services as processes on MariaDB,
//! Redis and a MongoDB wire-protocol server (and `hendu serve` on the
//! embedded store), fed a simulated broadcast by a device.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly by design.

use std::time::Duration;

use hendu_e2e::broadcast::{self, ADMIN_EMAIL, ADMIN_PASSWORD, CATALOGUE, Client, Sample};
use hendu_e2e::{Service, eventually};
use hendu_storage::model::{Play, Source};
use hendu_storage::testing::{Kind, Place};
use hendu_storage::{Queue, Storage, StorageConfig};
use time::OffsetDateTime;

const IMEI: &str = "490154203237518";

fn admin_env() -> Vec<(&'static str, String)> {
    vec![
        ("HENDU_ADMIN_EMAIL", ADMIN_EMAIL.into()),
        ("HENDU_ADMIN_PASSWORD", ADMIN_PASSWORD.into()),
    ]
}

fn filter_env() -> Vec<(&'static str, String)> {
    vec![
        ("HENDU_FILTER_FLUSH_S", "2".into()),
        ("HENDU_FILTER_SWEEP_S", "0.5".into()),
        ("HENDU_FILTER_LEASE_S", "3".into()),
        // The queue hands a dead consumer's entries on after 0.6 s here.
        ("HENDU_FILTER_GAP_WAIT_S", "5".into()),
    ]
}

/// The services on the servers: one hash-generator, one communication, and
/// `recognisers` and `filters` replicas.
struct Pipeline {
    storage: Storage,
    client: Client,
    recognition: Vec<Service>,
    filter: Vec<Service>,
    _others: Vec<Service>,
    _place: Place,
}

impl Pipeline {
    async fn start(recognisers: usize, filters: usize) -> Self {
        let place = Place::new(Kind::Servers).await;
        let config = &place.config;
        let storage = Storage::connect(config).await.unwrap();
        let hash_generator = Service::start("hendu-hash-generator", "hash-generator", config, &[])
            .await
            .unwrap();
        let communication =
            Service::start("hendu-communication", "communication", config, &admin_env())
                .await
                .unwrap();
        let recognition =
            hendu_e2e::replicas("hendu-recognition", "recognition", recognisers, config, &[])
                .await
                .unwrap();
        let filter = hendu_e2e::replicas("hendu-filter", "filter", filters, config, &filter_env())
            .await
            .unwrap();
        let client = Client::new(&hash_generator.base, &communication.base);
        Self {
            storage,
            client,
            recognition,
            filter,
            _others: vec![hash_generator, communication],
            _place: place,
        }
    }
}

/// Uploads the catalogue; returns the music ids in catalogue order.
async fn upload_catalogue(client: &Client) -> Vec<i64> {
    let mut ids = Vec::new();
    for t in &CATALOGUE {
        ids.push(client.upload(t).await.unwrap());
    }
    ids
}

/// Waits until each recogniser's index holds `n` tracks.
async fn wait_for_catalogue(recognisers: &[Service], n: usize) {
    for r in recognisers {
        let seen = eventually(Duration::from_secs(15), || async {
            (r.metric("hendu_catalogue_tracks").await == Some(n as f64)).then_some(())
        })
        .await;
        assert!(
            seen.is_some(),
            "{} never had {n} tracks in its index",
            r.name
        );
    }
}

fn the_broadcast() -> (OffsetDateTime, Vec<Sample>) {
    let t0 = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap() - time::Duration::hours(1);
    let audio = broadcast::render(&broadcast::programme());
    (t0, broadcast::samples(&audio, t0))
}

/// Waits until the filter has decided every raw result, then returns the plays.
async fn settled_plays(storage: &Storage, source: Source, t0: OffsetDateTime) -> Vec<Play> {
    let settled = eventually(Duration::from_secs(90), || async {
        let backlog = storage.queue.backlog(Queue::Samples).await.ok()?;
        let raw_backlog = storage.queue.backlog(Queue::RawResults).await.ok()?;
        let undecided = storage.documents.raw_result_sources().await.ok()?;
        (backlog.waiting + backlog.pending + raw_backlog.waiting + raw_backlog.pending == 0
            && undecided.is_empty())
        .then_some(())
    })
    .await;
    assert!(
        settled.is_some(),
        "the pipeline did not drain: samples {:?}, raw results {:?}, undecided {:?}",
        storage.queue.backlog(Queue::Samples).await,
        storage.queue.backlog(Queue::RawResults).await,
        storage.documents.raw_result_sources().await
    );
    storage
        .relational
        .plays_of_source(
            source,
            t0 - time::Duration::hours(1),
            t0 + time::Duration::hours(2),
        )
        .await
        .unwrap()
}

/// The plays are the programme's catalogue tracks, in order, each within
/// one block (15 s) of its true start and end.
fn assert_plays_match_the_programme(plays: &[Play], ids: &[i64], t0: OffsetDateTime) {
    let expected = broadcast::expected();
    let got: Vec<(i64, f64, f64)> = plays
        .iter()
        .map(|p| {
            (
                p.music_id,
                (p.started_at - t0).as_seconds_f64(),
                (p.ended_at - t0).as_seconds_f64(),
            )
        })
        .collect();
    assert_eq!(
        got.iter().map(|g| g.0).collect::<Vec<_>>(),
        expected.iter().map(|e| ids[e.index]).collect::<Vec<_>>(),
        "the right tracks in the right order, none for the other music or the noise: {got:?}"
    );
    for (g, e) in got.iter().zip(&expected) {
        assert!(
            (g.1 - f64::from(e.start_s)).abs() <= 15.0 && (g.2 - f64::from(e.end_s)).abs() <= 15.0,
            "play of track {} at {:.1}-{:.1} s, truly {}-{} s",
            e.index,
            g.1,
            g.2,
            e.start_s,
            e.end_s
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broadcast_becomes_the_right_plays_in_the_right_order() {
    let p = Pipeline::start(1, 1).await;
    let ids = upload_catalogue(&p.client).await;
    wait_for_catalogue(&p.recognition, CATALOGUE.len()).await;
    let (device, secret) = p.client.register_device(IMEI).await.unwrap();

    let (t0, samples) = the_broadcast();
    for s in &samples {
        assert_eq!(p.client.send(IMEI, &secret, s).await.unwrap(), 202);
    }
    let plays = settled_plays(&p.storage, Source::Device(device), t0).await;
    assert_plays_match_the_programme(&plays, &ids, t0);
    assert!(
        plays
            .iter()
            .all(|p| p.location.as_deref() == Some("Asunción"))
    );

    // The same samples again (a device retrying): nothing new.
    for s in &samples[..4] {
        assert_eq!(p.client.send(IMEI, &secret, s).await.unwrap(), 202);
    }
    let again = settled_plays(&p.storage, Source::Device(device), t0).await;
    assert_eq!(again, plays, "retried samples add no play");
    assert!(p.filter[0].metric("hendu_plays_total").await.unwrap_or(0.0) >= 4.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_recogniser_and_a_filter_mid_run_loses_and_duplicates_nothing() {
    let mut p = Pipeline::start(2, 2).await;
    let ids = upload_catalogue(&p.client).await;
    wait_for_catalogue(&p.recognition, CATALOGUE.len()).await;
    let (device, secret) = p.client.register_device(IMEI).await.unwrap();

    let (t0, samples) = the_broadcast();
    let half = samples.len() / 2;
    for s in &samples[..half] {
        assert_eq!(p.client.send(IMEI, &secret, s).await.unwrap(), 202);
    }
    // Kill replicas that are doing their share of the work.
    for r in &p.recognition {
        let busy = eventually(Duration::from_secs(20), || async {
            (r.metric("hendu_samples_total").await.unwrap_or(0.0) > 0.0).then_some(())
        })
        .await;
        assert!(busy.is_some(), "{} took no sample", r.name);
    }
    p.recognition[0].kill().await;
    p.filter[0].kill().await;
    for s in &samples[half..] {
        assert_eq!(p.client.send(IMEI, &secret, s).await.unwrap(), 202);
    }
    let plays = settled_plays(&p.storage, Source::Device(device), t0).await;
    assert_plays_match_the_programme(&plays, &ids, t0);
    let keys: std::collections::HashSet<_> = plays.iter().map(|p| &p.idempotency_key).collect();
    assert_eq!(keys.len(), plays.len());
    assert!(
        p.recognition[1]
            .metric("hendu_samples_total")
            .await
            .unwrap_or(0.0)
            > 0.0,
        "the survivor recognised samples"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hendu_serve_runs_the_whole_pipeline_on_the_embedded_store() {
    let place = Place::new(Kind::Embedded).await;
    let StorageConfig::Embedded { path, .. } = &place.config else {
        unreachable!()
    };
    let dir = path.parent().unwrap().to_str().unwrap().to_owned();
    let mut env = admin_env();
    env.extend(filter_env());
    let serve = Service::start_with_args(
        "hendu",
        &["serve", "--store", &dir],
        "hendu-serve",
        &StorageConfig::Embedded {
            path: "unused".into(),
            queue: hendu_storage::QueueConfig::default(),
        },
        &env,
    )
    .await
    .unwrap();
    let client = Client::new(&serve.base, &serve.base);
    let ids = upload_catalogue(&client).await;
    wait_for_catalogue(std::slice::from_ref(&serve), CATALOGUE.len()).await;
    let (device, secret) = client.register_device(IMEI).await.unwrap();
    let (t0, samples) = the_broadcast();
    for s in &samples {
        assert_eq!(client.send(IMEI, &secret, s).await.unwrap(), 202);
    }
    // The store is the service's file: read it only once the service is done.
    let storage = Storage::connect(&place.config).await.unwrap();
    let plays = eventually(Duration::from_secs(60), || async {
        let plays = storage
            .relational
            .plays_of_source(
                Source::Device(device),
                t0 - time::Duration::hours(1),
                t0 + time::Duration::hours(2),
            )
            .await
            .ok()?;
        let undecided = storage.documents.raw_result_sources().await.ok()?;
        (plays.len() >= 4 && undecided.is_empty()).then_some(plays)
    })
    .await
    .expect("hendu serve recorded the plays");
    assert_plays_match_the_programme(&plays, &ids, t0);
    let mut serve = serve;
    assert!(
        serve.stop().await.unwrap().success(),
        "a clean exit on SIGTERM"
    );
}
