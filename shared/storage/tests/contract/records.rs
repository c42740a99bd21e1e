//! Radios, devices, users, plays, samples and raw results.

use hendu_storage::StorageError;
use hendu_storage::model::{
    ContentHash, Imei, NewDevice, NewMusic, NewPlay, NewRadio, NewSample, NewUser, RawMatch,
    RawResult, Role, Secret, Source,
};
use time::{Duration, OffsetDateTime};

use crate::harness::{Harness, Kind};

crate::contract!(records:
    a_retried_play_is_recorded_once_and_plays_come_back_in_time_order,
    devices_are_unique_by_imei_and_authenticate_by_secret,
    radios_and_users_refuse_clashes_but_accept_retries,
    samples_and_raw_results_are_idempotent_by_sample,
    a_lease_has_one_holder_until_it_is_released_or_expires,
    every_backend_answers_a_health_check,
);

fn t0() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_790_000_000).unwrap() + Duration::milliseconds(123)
}

async fn music(h: &Harness, seed: u8) -> i64 {
    let new = NewMusic::new("Song", None, 60_000, ContentHash::of(&[seed]), "song.ogg").unwrap();
    h.storage
        .add_music(&new, &[], 3750, None)
        .await
        .unwrap()
        .record
        .id
}

pub async fn a_retried_play_is_recorded_once_and_plays_come_back_in_time_order(kind: Kind) {
    let h = Harness::new(kind).await;
    let (m1, m2) = (music(&h, 1).await, music(&h, 2).await);
    let radio = h
        .storage
        .relational
        .add_radio(
            &NewRadio::new(
                "Radio Uno",
                "http://radio.example.org/live",
                Some("Asunción"),
            )
            .unwrap(),
        )
        .await
        .unwrap()
        .record;
    let play = |m, start: i64, key: &str| {
        NewPlay::new(
            m,
            Source::Radio(radio.id),
            Some("Asunción"),
            t0() + Duration::seconds(start),
            t0() + Duration::seconds(start + 180),
            0.9,
            key,
        )
        .unwrap()
    };
    let first = h
        .storage
        .relational
        .record_play(&play(m1, 600, "radio-1:m1:600"))
        .await
        .unwrap();
    assert!(first.created);
    let retried = h
        .storage
        .relational
        .record_play(&play(m1, 600, "radio-1:m1:600"))
        .await
        .unwrap();
    assert!(!retried.created);
    assert_eq!(retried.record, first.record);
    assert_eq!(first.record.started_at, t0() + Duration::seconds(600));

    h.storage
        .relational
        .record_play(&play(m2, 0, "radio-1:m2:0"))
        .await
        .unwrap();
    h.storage
        .relational
        .record_play(&play(m1, 0, "radio-1:m1:0"))
        .await
        .unwrap();

    let of_m1 = h
        .storage
        .relational
        .plays_of_music(m1, t0(), t0() + Duration::hours(1))
        .await
        .unwrap();
    assert_eq!(
        of_m1
            .iter()
            .map(|p| p.idempotency_key.as_str())
            .collect::<Vec<_>>(),
        ["radio-1:m1:0", "radio-1:m1:600"]
    );
    let of_radio = h
        .storage
        .relational
        .plays_of_source(Source::Radio(radio.id), t0(), t0() + Duration::seconds(600))
        .await
        .unwrap();
    assert_eq!(of_radio.len(), 2, "the window's end is exclusive");
    assert!(of_radio.iter().all(|p| p.source == Source::Radio(radio.id)));
    assert!(
        h.storage
            .relational
            .plays_of_source(Source::Device(radio.id), t0(), t0() + Duration::hours(1))
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn devices_are_unique_by_imei_and_authenticate_by_secret(kind: Kind) {
    let h = Harness::new(kind).await;
    assert!(Imei::parse("490154203237517").is_err(), "bad check digit");
    let imei = Imei::parse("490154203237518").unwrap();
    let new = NewDevice::new(
        imei.clone(),
        "Stage left",
        Some("Encarnación"),
        Secret::new("a long device secret"),
    )
    .unwrap();
    let device = h.storage.relational.add_device(&new).await.unwrap();
    assert!(device.enabled);
    assert!(
        device
            .secret_hash
            .verify(&Secret::new("a long device secret"))
    );
    assert!(
        !device
            .secret_hash
            .verify(&Secret::new("another secret value"))
    );
    assert!(!device.secret_hash.as_str().contains("a long device secret"));

    // The same registration retried is the same device; another one with the IMEI is a clash.
    assert_eq!(
        h.storage.relational.add_device(&new).await.unwrap().id,
        device.id
    );
    let other = NewDevice::new(
        imei.clone(),
        "Intruder",
        None,
        Secret::new("yet another secret"),
    )
    .unwrap();
    assert!(matches!(
        h.storage.relational.add_device(&other).await,
        Err(StorageError::Conflict(_))
    ));

    assert!(
        h.storage
            .relational
            .set_device_enabled(&imei, false)
            .await
            .unwrap()
    );
    assert!(
        !h.storage
            .relational
            .device_by_imei(&imei)
            .await
            .unwrap()
            .unwrap()
            .enabled
    );
    let unknown = Imei::parse("356938035643809").unwrap();
    assert!(
        h.storage
            .relational
            .device_by_imei(&unknown)
            .await
            .unwrap()
            .is_none()
    );
}

pub async fn radios_and_users_refuse_clashes_but_accept_retries(kind: Kind) {
    let h = Harness::new(kind).await;
    let r = NewRadio::new("FM Chaco", "https://chaco.example.org/stream.mp3", None).unwrap();
    let first = h.storage.relational.add_radio(&r).await.unwrap();
    assert!(first.created);
    assert!(!h.storage.relational.add_radio(&r).await.unwrap().created);
    let clash = NewRadio::new("FM Chaco", "https://other.example.org/x", None).unwrap();
    assert!(matches!(
        h.storage.relational.add_radio(&clash).await,
        Err(StorageError::Conflict(_))
    ));
    assert_eq!(h.storage.relational.radios().await.unwrap().len(), 1);

    let u = NewUser::new(
        "Ana@Example.org",
        "Ana",
        Role::Musician,
        Secret::new("twelve chars!"),
    )
    .unwrap();
    let user = h.storage.relational.add_user(&u).await.unwrap();
    assert_eq!(user.email, "ana@example.org");
    assert_eq!(h.storage.relational.add_user(&u).await.unwrap().id, user.id);
    let clash = NewUser::new(
        "ana@example.org",
        "Ana",
        Role::Admin,
        Secret::new("different pass"),
    )
    .unwrap();
    assert!(matches!(
        h.storage.relational.add_user(&clash).await,
        Err(StorageError::Conflict(_))
    ));
    let found = h
        .storage
        .relational
        .user_by_email("ANA@example.org")
        .await
        .unwrap()
        .unwrap();
    assert!(found.password_hash.verify(&Secret::new("twelve chars!")));
    assert_eq!(found.role, Role::Musician);
}

pub async fn samples_and_raw_results_are_idempotent_by_sample(kind: Kind) {
    let h = Harness::new(kind).await;
    let source = Source::Device(42);
    let sample = |i: i64| {
        NewSample::new(
            source,
            Some("Luque"),
            t0() + Duration::seconds(30 * i),
            30_000,
            vec![2, 1, 5, 0, 40],
        )
        .unwrap()
    };
    assert!(h.storage.documents.put_sample(&sample(0)).await.unwrap());
    assert!(
        !h.storage.documents.put_sample(&sample(0)).await.unwrap(),
        "a retried upload stores one sample"
    );
    assert_eq!(
        h.storage.documents.sample(&sample(0).id).await.unwrap(),
        Some(sample(0))
    );
    assert_eq!(
        h.storage.documents.sample("device-42-0").await.unwrap(),
        None
    );

    let raw = |i: i64, music: Option<i64>| RawResult {
        sample_id: sample(i).id,
        source,
        captured_at: sample(i).captured_at,
        duration_ms: 30_000,
        location: Some("Luque".into()),
        stored_at: None,
        matched: music.map(|m| RawMatch {
            music_id: m,
            block: 1,
            offset_s: 15.5,
            score: 40.0,
            confidence: 0.97,
        }),
    };
    // Out of order, and the first one written twice (a redelivered sample).
    for r in [
        raw(2, None),
        raw(0, Some(7)),
        raw(1, Some(7)),
        raw(0, Some(7)),
    ] {
        h.storage.documents.put_raw_result(&r).await.unwrap();
    }
    h.storage
        .documents
        .put_raw_result(&RawResult {
            source: Source::Radio(42),
            ..raw(9, None)
        })
        .await
        .unwrap();
    let got = h
        .storage
        .documents
        .raw_results(source, t0(), 100)
        .await
        .unwrap();
    let now = OffsetDateTime::now_utc();
    for r in &got {
        let stored = r
            .stored_at
            .expect("the store says when it received a result");
        assert!((now - stored).abs() < Duration::seconds(30), "{stored}");
    }
    let got: Vec<RawResult> = got
        .into_iter()
        .map(|r| RawResult {
            stored_at: None,
            ..r
        })
        .collect();
    assert_eq!(got, vec![raw(0, Some(7)), raw(1, Some(7)), raw(2, None)]);
    let later = h
        .storage
        .documents
        .raw_results(source, t0() + Duration::seconds(30), 1)
        .await
        .unwrap();
    assert_eq!(later.len(), 1);
    assert_eq!(later[0].sample_id, raw(1, None).sample_id);
    let mut sources = h.storage.documents.raw_result_sources().await.unwrap();
    sources.sort_by_key(|(s, _)| (s.kind(), s.id()));
    let names: Vec<Source> = sources.iter().map(|(s, _)| *s).collect();
    assert_eq!(names, vec![source, Source::Radio(42)]);
    let now = OffsetDateTime::now_utc();
    for (s, stored) in sources {
        assert!(
            (now - stored).abs() < Duration::seconds(30),
            "{s}: stored at {stored}, now {now}"
        );
    }

    h.storage
        .documents
        .delete_raw_results(&[sample(0).id, sample(1).id])
        .await
        .unwrap();
    assert_eq!(
        h.storage
            .documents
            .raw_results(source, t0(), 100)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.sample_id)
            .collect::<Vec<_>>(),
        vec![raw(2, None).sample_id]
    );
}

pub async fn every_backend_answers_a_health_check(kind: Kind) {
    let h = Harness::new(kind).await;
    let checks = h.storage.check().await;
    let names: Vec<_> = checks.iter().map(|(n, _)| *n).collect();
    match kind {
        Kind::Embedded => assert_eq!(names, ["embedded store"]),
        Kind::Servers => assert_eq!(names, ["mysql", "mongodb", "redis"]),
    }
    assert!(checks.iter().all(|(_, why)| why.is_none()), "{checks:?}");
    if kind == Kind::Embedded {
        h.storage.close().await;
        let checks = h.storage.check().await;
        assert!(
            checks[0].1.is_some(),
            "a closed store is reported: {checks:?}"
        );
    }
}

pub async fn a_lease_has_one_holder_until_it_is_released_or_expires(kind: Kind) {
    let h = Harness::new(kind).await;
    let leases = &h.storage.leases;
    let long = std::time::Duration::from_secs(30);
    assert!(leases.acquire("source:device-1", "a", long).await.unwrap());
    assert!(
        !leases.acquire("source:device-1", "b", long).await.unwrap(),
        "held by a"
    );
    assert!(
        leases.acquire("source:device-1", "a", long).await.unwrap(),
        "the holder renews"
    );
    assert!(
        leases.acquire("source:device-2", "b", long).await.unwrap(),
        "names are independent"
    );
    leases.release("source:device-1", "b").await.unwrap();
    assert!(
        !leases.acquire("source:device-1", "b", long).await.unwrap(),
        "only the holder releases"
    );
    leases.release("source:device-1", "a").await.unwrap();
    assert!(leases.acquire("source:device-1", "b", long).await.unwrap());

    // A holder that stops renewing loses the lease when it expires.
    let short = std::time::Duration::from_millis(300);
    assert!(
        leases
            .acquire("source:radio-9", "dead", short)
            .await
            .unwrap()
    );
    assert!(
        !leases
            .acquire("source:radio-9", "live", long)
            .await
            .unwrap()
    );
    tokio::time::sleep(std::time::Duration::from_millis(450)).await;
    assert!(
        leases
            .acquire("source:radio-9", "live", long)
            .await
            .unwrap()
    );
    assert!(
        !leases
            .acquire("source:radio-9", "dead", short)
            .await
            .unwrap(),
        "an expired holder cannot take it back"
    );
}
