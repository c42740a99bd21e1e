//! A pipeline on the servers for the end-to-end tests: the services as
//! processes, the catalogue uploaded, a broadcast's samples, and the check
//! that the plays are the programme's.

// A test harness: a failure stops the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use hendu_storage::model::{Play, Source};
use hendu_storage::testing::{Kind, Place};
use hendu_storage::{Queue, Storage, StorageConfig};
use time::OffsetDateTime;

use crate::broadcast::{self, ADMIN_EMAIL, ADMIN_PASSWORD, CATALOGUE, Client, Sample};
use crate::{Service, eventually};

pub const IMEI: &str = "490154203237518";

pub fn admin_env() -> Vec<(&'static str, String)> {
    vec![
        ("HENDU_ADMIN_EMAIL", ADMIN_EMAIL.into()),
        ("HENDU_ADMIN_PASSWORD", ADMIN_PASSWORD.into()),
    ]
}

pub fn filter_env() -> Vec<(&'static str, String)> {
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
#[allow(missing_debug_implementations)] // Services and a store: nothing to print.
pub struct Pipeline {
    pub storage: Storage,
    pub client: Client,
    pub recognition: Vec<Service>,
    pub filter: Vec<Service>,
    /// The hash-generator and the communication service.
    pub others: Vec<Service>,
    _place: Place,
}

impl Pipeline {
    /// Where the services' data lives, for starting more of them.
    pub fn config(&self) -> &StorageConfig {
        &self._place.config
    }

    pub async fn start(recognisers: usize, filters: usize) -> Self {
        Self::start_with(recognisers, filters, &[]).await
    }

    /// As [`Self::start`], with more settings for the communication service.
    pub async fn start_with(
        recognisers: usize,
        filters: usize,
        communication_env: &[(&'static str, String)],
    ) -> Self {
        let place = Place::new(Kind::Servers).await;
        let config = &place.config;
        let storage = Storage::connect(config).await.unwrap();
        let hash_generator = Service::start("hendu-hash-generator", "hash-generator", config, &[])
            .await
            .unwrap();
        let communication = Service::start("hendu-communication", "communication", config, &{
            let mut env = admin_env();
            env.extend_from_slice(communication_env);
            env
        })
        .await
        .unwrap();
        let recognition =
            crate::replicas("hendu-recognition", "recognition", recognisers, config, &[])
                .await
                .unwrap();
        let filter = crate::replicas("hendu-filter", "filter", filters, config, &filter_env())
            .await
            .unwrap();
        let client = Client::new(&hash_generator.base, &communication.base);
        Self {
            storage,
            client,
            recognition,
            filter,
            others: vec![hash_generator, communication],
            _place: place,
        }
    }
}

/// Uploads the catalogue; returns the music ids in catalogue order.
pub async fn upload_catalogue(client: &Client) -> Vec<i64> {
    let mut ids = Vec::new();
    for t in &CATALOGUE {
        ids.push(client.upload(t).await.unwrap());
    }
    ids
}

/// Waits until each recogniser's index holds `n` tracks.
pub async fn wait_for_catalogue(recognisers: &[Service], n: usize) {
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

pub fn the_broadcast() -> (OffsetDateTime, Vec<Sample>) {
    let t0 = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap() - time::Duration::hours(1);
    let audio = broadcast::render(&broadcast::programme());
    (t0, broadcast::samples(&audio, t0))
}

/// Waits until the filter has decided every raw result, then returns the plays.
pub async fn settled_plays(storage: &Storage, source: Source, t0: OffsetDateTime) -> Vec<Play> {
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
    plays_of(storage, source, t0).await
}

/// The plays of `source` recorded so far around a broadcast that began at `t0`.
pub async fn plays_of(storage: &Storage, source: Source, t0: OffsetDateTime) -> Vec<Play> {
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
pub fn assert_plays_match_the_programme(plays: &[Play], ids: &[i64], t0: OffsetDateTime) {
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

/// `hendu serve` on the embedded store of `place`, with the administrator,
/// the filter's test settings and `extra`.
pub async fn start_serve(place: &Place, extra: &[(&'static str, String)]) -> Service {
    let StorageConfig::Embedded { path, .. } = &place.config else {
        panic!("hendu serve runs on an embedded store")
    };
    let dir = path.parent().unwrap().to_str().unwrap().to_owned();
    let mut env = admin_env();
    env.extend(filter_env());
    env.extend_from_slice(extra);
    Service::start_with_args(
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
    .unwrap()
}

/// The plays `hendu serve` recorded for `source`, once the filter decided
/// every raw result (read from its store file while it runs).
pub async fn recorded_plays(storage: &Storage, source: Source, t0: OffsetDateTime) -> Vec<Play> {
    eventually(Duration::from_secs(60), || async {
        let plays = storage
            .relational
            .plays_of_source(
                source,
                t0 - time::Duration::hours(1),
                t0 + time::Duration::hours(2),
            )
            .await
            .ok()?;
        let undecided = storage.documents.raw_result_sources().await.ok()?;
        (plays.len() >= 4 && undecided.is_empty()).then_some(plays)
    })
    .await
    .expect("hendu serve recorded the plays")
}
