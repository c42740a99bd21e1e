//! Radios, devices, users, plays, samples and raw results.

use hendu_storage::StorageError;
use hendu_storage::credentials::{AuthKey, Purpose, issue_token, new_device_secret, split_token};
use hendu_storage::model::{
    ClaimState, ContentHash, Imei, LoginVerifier, MusicState, NewDevice, NewMusic, NewPlay,
    NewRadio, NewSample, NewToken, NewUser, RadioGap, RawMatch, RawResult, Role, Secret, Source,
    StationState,
};
use time::{Duration, OffsetDateTime};

use crate::harness::{Harness, Kind};

crate::contract!(records:
    a_retried_play_is_recorded_once_and_plays_come_back_in_time_order,
    devices_are_unique_by_imei_and_authenticate_by_secret,
    radios_and_users_refuse_clashes_but_accept_retries,
    tokens_belong_to_a_user_and_can_be_revoked,
    a_claim_on_owned_music_waits_for_an_administrator,
    samples_and_raw_results_are_idempotent_by_sample,
    a_lease_has_one_holder_until_it_is_released_or_expires,
    a_holder_whose_lease_was_taken_over_cannot_record_plays,
    every_backend_answers_a_health_check,
    a_station_is_changed_reports_its_state_and_gaps_and_goes_only_without_plays,
    a_sources_samples_are_listed_in_time_with_their_title,
    live_leases_are_listed_by_prefix_with_their_holders,
    a_shards_first_answer_stands_and_a_samples_answers_come_together,
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
    let key = AuthKey::load(&h.storage).await.unwrap();
    assert!(Imei::parse("490154203237517").is_err(), "bad check digit");
    let imei = Imei::parse("490154203237518").unwrap();
    let secret = new_device_secret();
    let digest = key.digest(Purpose::DeviceSecret, secret.expose());
    let new = NewDevice::new(imei.clone(), "Stage left", Some("Encarnación"), digest)
        .unwrap()
        .with_login_verifier(LoginVerifier([7; 32]));
    let device = h.storage.relational.add_device(&new).await.unwrap();
    assert!(device.enabled);
    assert_eq!(device.login_verifier, Some(LoginVerifier([7; 32])));
    let stored = device.secret_digest.as_ref();
    assert!(key.verify(Purpose::DeviceSecret, secret.expose(), stored));
    assert!(!key.verify(Purpose::DeviceSecret, "another secret value", stored));

    // Secrets are the server's: a second registration of the IMEI is a clash.
    assert!(matches!(
        h.storage.relational.add_device(&new).await,
        Err(StorageError::Conflict(_))
    ));
    let rotated = new_device_secret();
    assert!(
        h.storage
            .relational
            .set_device_secret(
                &imei,
                &key.digest(Purpose::DeviceSecret, rotated.expose()),
                &LoginVerifier([8; 32])
            )
            .await
            .unwrap()
    );
    let again = h
        .storage
        .relational
        .device_by_imei(&imei)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.login_verifier, Some(LoginVerifier([8; 32])));
    assert!(key.verify(
        Purpose::DeviceSecret,
        rotated.expose(),
        again.secret_digest.as_ref()
    ));
    assert!(!key.verify(
        Purpose::DeviceSecret,
        secret.expose(),
        again.secret_digest.as_ref()
    ));
    assert_eq!(
        AuthKey::load(&h.storage)
            .await
            .unwrap()
            .digest(Purpose::DeviceSecret, "x"),
        key.digest(Purpose::DeviceSecret, "x"),
        "the installation keeps one key"
    );

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

async fn user(h: &Harness, email: &str, role: Role) -> hendu_storage::model::User {
    let new = NewUser::new(email, email, role, Secret::new("twelve chars!")).unwrap();
    h.storage.relational.add_user(&new).await.unwrap()
}

pub async fn tokens_belong_to_a_user_and_can_be_revoked(kind: Kind) {
    let h = Harness::new(kind).await;
    let key = AuthKey::load(&h.storage).await.unwrap();
    let ana = user(&h, "ana@example.org", Role::Musician).await;
    let op = user(&h, "op@example.org", Role::Operator).await;
    assert_eq!(op.role, Role::Operator);
    assert!(!ana.disabled);

    let issued = issue_token(&key);
    let stored = h
        .storage
        .relational
        .add_token(&NewToken::new(&issued.public_id, &issued.digest, &ana, "laptop").unwrap())
        .await
        .unwrap();
    assert_eq!((stored.user_id, stored.scope), (ana.id, Role::Musician));
    assert!(stored.last_used_at.is_none() && stored.revoked_at.is_none());
    let (public_id, secret) = split_token(issued.token.expose()).unwrap();
    let found = h
        .storage
        .relational
        .token(public_id)
        .await
        .unwrap()
        .unwrap();
    assert!(key.verify(Purpose::ApiToken, secret, found.digest.as_ref()));
    assert!(
        h.storage
            .relational
            .token("0000000000000000")
            .await
            .unwrap()
            .is_none()
    );

    let at = t0();
    h.storage
        .relational
        .touch_token(stored.id, at)
        .await
        .unwrap();
    let other = issue_token(&key);
    h.storage
        .relational
        .add_token(&NewToken::new(&other.public_id, &other.digest, &op, "station").unwrap())
        .await
        .unwrap();
    let anas = h.storage.relational.tokens(Some(ana.id)).await.unwrap();
    assert_eq!(anas.len(), 1);
    assert_eq!(anas[0].last_used_at, Some(at));
    assert_eq!(h.storage.relational.tokens(None).await.unwrap().len(), 2);

    assert!(h.storage.relational.revoke_token(stored.id).await.unwrap());
    assert!(
        !h.storage.relational.revoke_token(stored.id).await.unwrap(),
        "once"
    );
    let revoked = h
        .storage
        .relational
        .token(public_id)
        .await
        .unwrap()
        .unwrap();
    assert!(revoked.revoked_at.is_some());

    assert!(
        h.storage
            .relational
            .set_user_disabled(ana.id, true)
            .await
            .unwrap()
    );
    assert!(
        h.storage
            .relational
            .user(ana.id)
            .await
            .unwrap()
            .unwrap()
            .disabled
    );
    let everyone = h.storage.relational.users(0, 10).await.unwrap();
    assert_eq!(
        everyone.iter().map(|u| u.id).collect::<Vec<_>>(),
        vec![ana.id, op.id]
    );
    assert!(
        !h.storage
            .relational
            .set_user_disabled(9999, true)
            .await
            .unwrap()
    );
}

pub async fn a_claim_on_owned_music_waits_for_an_administrator(kind: Kind) {
    let h = Harness::new(kind).await;
    let ana = user(&h, "ana@example.org", Role::Musician).await;
    let bea = user(&h, "bea@example.org", Role::Musician).await;
    let mut new = NewMusic::new("Song", None, 60_000, ContentHash::of(b"s"), "song.ogg").unwrap();
    new.owner = Some(ana.id);
    let music = h
        .storage
        .add_music(&new, &[], 3750, None)
        .await
        .unwrap()
        .record;
    assert_eq!(music.owner, Some(ana.id));
    let owned = |u| {
        let storage = h.storage.clone();
        async move {
            storage
                .relational
                .musics_owned(u, MusicState::Ready, 0, 10)
                .await
                .unwrap()
                .len()
        }
    };
    assert_eq!((owned(ana.id).await, owned(bea.id).await), (1, 0));

    let claim = h
        .storage
        .relational
        .add_claim(music.id, bea.id)
        .await
        .unwrap();
    assert!(claim.created);
    assert_eq!(claim.record.state, ClaimState::Pending);
    let again = h
        .storage
        .relational
        .add_claim(music.id, bea.id)
        .await
        .unwrap();
    assert_eq!((again.created, again.record.id), (false, claim.record.id));
    let pending = h
        .storage
        .relational
        .claims(ClaimState::Pending, 0, 10)
        .await
        .unwrap();
    assert_eq!(pending.len(), 1);

    let granted = h
        .storage
        .relational
        .resolve_claim(claim.record.id, true)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(granted.state, ClaimState::Granted);
    assert!(granted.resolved_at.is_some());
    assert!(
        h.storage
            .relational
            .resolve_claim(claim.record.id, false)
            .await
            .unwrap()
            .is_none(),
        "a settled claim stays settled"
    );
    assert_eq!((owned(ana.id).await, owned(bea.id).await), (0, 1));
    assert!(
        h.storage
            .relational
            .claims(ClaimState::Pending, 0, 10)
            .await
            .unwrap()
            .is_empty()
    );
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

    let docs = &h.storage.documents;
    let far = OffsetDateTime::now_utc() + Duration::days(365);
    let ids = [sample(0).id, sample(1).id, sample(2).id];
    assert_eq!(
        docs.samples_with_raw_results(&ids).await.unwrap(),
        ids.iter().cloned().collect()
    );
    assert_eq!(
        docs.unsettled_samples(far, 10).await.unwrap(),
        [(sample(0).id, source)],
        "recognised is not settled: the filter has not decided it"
    );
    docs.delete_raw_results(&[sample(0).id, sample(1).id])
        .await
        .unwrap();
    assert_eq!(
        docs.samples_with_raw_results(&ids).await.unwrap(),
        [sample(2).id].into_iter().collect()
    );
    assert_eq!(
        docs.unsettled_samples(far, 10).await.unwrap(),
        [],
        "decided, its sample is settled"
    );
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

pub async fn a_holder_whose_lease_was_taken_over_cannot_record_plays(kind: Kind) {
    let h = Harness::new(kind).await;
    let leases = &h.storage.leases;
    let m = music(&h, 7).await;
    let radio = NewRadio::new("FM Fence", "https://fence.example.org/s.mp3", None).unwrap();
    let source = Source::Radio(
        h.storage
            .relational
            .add_radio(&radio)
            .await
            .unwrap()
            .record
            .id,
    );
    let play = |key: &str, minute: i64| {
        NewPlay::new(
            m,
            source,
            None,
            t0() + Duration::minutes(minute),
            t0() + Duration::minutes(minute + 1),
            9.0,
            key,
        )
        .unwrap()
    };
    let short = std::time::Duration::from_millis(300);
    let a = leases
        .acquire_fenced("filter:device-3", "a", short)
        .await
        .unwrap()
        .unwrap();
    let renewed = leases
        .acquire_fenced("filter:device-3", "a", short)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(renewed.token, a.token, "a renewal keeps the token");
    let rel = &h.storage.relational;
    assert!(
        rel.record_play_fenced(&play("k1", 0), &a)
            .await
            .unwrap()
            .created
    );
    assert!(
        leases
            .acquire_fenced("filter:device-3", "b", short)
            .await
            .unwrap()
            .is_none()
    );

    // A pauses past its lease; B takes it over and writes.
    tokio::time::sleep(std::time::Duration::from_millis(450)).await;
    let b = leases
        .acquire_fenced("filter:device-3", "b", short * 100)
        .await
        .unwrap()
        .unwrap();
    assert!(b.token > a.token, "{b:?} after {a:?}");
    let recorded = rel.record_play_fenced(&play("k2", 5), &b).await.unwrap();

    // A wakes up and still believes it holds the lease: its writes are refused.
    assert!(matches!(
        rel.record_play_fenced(&play("k3", 10), &a).await,
        Err(StorageError::Fenced(_))
    ));
    assert!(matches!(
        rel.check_fence(&a).await,
        Err(StorageError::Fenced(_))
    ));
    assert!(matches!(
        rel.extend_play_fenced(recorded.record.id, t0(), t0() + Duration::hours(1), &a)
            .await,
        Err(StorageError::Fenced(_))
    ));
    assert!(
        leases
            .acquire_fenced("filter:device-3", "a", short)
            .await
            .unwrap()
            .is_none()
    );
    let plays = rel
        .plays_of_source(source, t0(), t0() + Duration::hours(2))
        .await
        .unwrap();
    assert_eq!(
        plays
            .iter()
            .map(|p| p.idempotency_key.as_str())
            .collect::<Vec<_>>(),
        vec!["k1", "k2"],
        "nothing of the stale holder's"
    );
    rel.check_fence(&b).await.unwrap();
    let widened = rel
        .extend_play_fenced(
            recorded.record.id,
            t0() + Duration::minutes(4),
            t0() + Duration::minutes(7),
            &b,
        )
        .await
        .unwrap();
    assert_eq!(
        (widened.started_at, widened.ended_at),
        (t0() + Duration::minutes(4), t0() + Duration::minutes(7))
    );

    // Tokens only grow, across releases too.
    leases.release("filter:device-3", "b").await.unwrap();
    let c = leases
        .acquire_fenced("filter:device-3", "c", short)
        .await
        .unwrap()
        .unwrap();
    assert!(c.token > b.token);
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

pub async fn a_station_is_changed_reports_its_state_and_gaps_and_goes_only_without_plays(
    kind: Kind,
) {
    let h = Harness::new(kind).await;
    let db = &h.storage.relational;
    let operator = db
        .add_user(
            &NewUser::new(
                "ops@radio.example",
                "Operator",
                Role::Operator,
                Secret::new("twelve chars!"),
            )
            .unwrap(),
        )
        .await
        .unwrap();
    let new = NewRadio::new("FM Itá", "http://ita.example.org/live", Some("Itá"))
        .unwrap()
        .in_country(Some("py"))
        .unwrap()
        .owned_by(Some(operator.id));
    assert!(
        NewRadio::new("x", "http://x.example/", None)
            .unwrap()
            .in_country(Some("Paraguay"))
            .is_err()
    );
    let radio = db.add_radio(&new).await.unwrap().record;
    assert_eq!(radio.country.as_deref(), Some("PY"));
    assert_eq!(radio.owner, Some(operator.id));
    assert_eq!(db.radio(radio.id).await.unwrap(), Some(radio.clone()));

    // Changed: every field; a name another station has is a conflict.
    let mut changed = radio.to_new();
    changed.stream_url = "https://ita.example.org/hq".into();
    changed.enabled = false;
    changed.country = None;
    let updated = db.update_radio(radio.id, &changed).await.unwrap().unwrap();
    assert_eq!(updated.stream_url, "https://ita.example.org/hq");
    assert!(!updated.enabled && updated.country.is_none());
    let other = db
        .add_radio(&NewRadio::new("FM Other", "http://other.example/", None).unwrap())
        .await
        .unwrap()
        .record;
    let mut clash = other.to_new();
    clash.name = "FM Itá".into();
    assert!(matches!(
        db.update_radio(other.id, &clash).await,
        Err(StorageError::Conflict(_))
    ));
    assert_eq!(db.update_radio(9999, &changed).await.unwrap(), None);

    // Its status is replaced by each report.
    let mut status = hendu_storage::model::RadioStatus {
        radio_id: radio.id,
        state: StationState::Connecting,
        detail: None,
        since: t0(),
        holder: Some("monitor-a".into()),
        codec: Some("audio/mpeg".into()),
        title: None,
        bytes_per_s: 0.0,
        reconnects: 0,
        samples: 0,
        silence_s: 0.0,
        last_sample_end: None,
        updated_at: t0(),
    };
    db.put_radio_status(&status).await.unwrap();
    status.state = StationState::Streaming;
    status.title = Some("Artista - Canción".into());
    status.samples = 3;
    status.bytes_per_s = 16_000.5;
    status.last_sample_end = Some(t0() + Duration::seconds(90));
    status.updated_at = t0() + Duration::seconds(90);
    db.put_radio_status(&status).await.unwrap();
    assert_eq!(db.radio_statuses().await.unwrap(), vec![status.clone()]);
    status.radio_id = 9999;
    assert!(matches!(
        db.put_radio_status(&status).await,
        Err(StorageError::NotFound { .. })
    ));

    // Gaps: recorded once per start, listed by start.
    let gap = |from: i64, to: i64| RadioGap {
        radio_id: radio.id,
        started_at: t0() + Duration::seconds(from),
        ended_at: t0() + Duration::seconds(to),
        reason: "stalled".into(),
    };
    db.add_radio_gap(&gap(200, 212)).await.unwrap();
    db.add_radio_gap(&gap(100, 104)).await.unwrap();
    db.add_radio_gap(&gap(100, 104)).await.unwrap();
    let gaps = db
        .radio_gaps(radio.id, t0(), t0() + Duration::hours(1))
        .await
        .unwrap();
    assert_eq!(gaps, vec![gap(100, 104), gap(200, 212)]);

    // A station with plays stays; one without goes, with its status and gaps.
    let m = music(&h, 9).await;
    let play = NewPlay::new(
        m,
        Source::Radio(other.id),
        None,
        t0(),
        t0() + Duration::seconds(60),
        0.9,
        "radio-play",
    )
    .unwrap();
    db.record_play(&play).await.unwrap();
    assert!(matches!(
        db.delete_radio(other.id).await,
        Err(StorageError::Conflict(_))
    ));
    assert!(db.delete_radio(radio.id).await.unwrap());
    assert!(!db.delete_radio(radio.id).await.unwrap());
    assert_eq!(db.radio(radio.id).await.unwrap(), None);
    assert!(db.radio_statuses().await.unwrap().is_empty());
    assert!(
        db.radio_gaps(radio.id, t0(), t0() + Duration::hours(1))
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn a_sources_samples_are_listed_in_time_with_their_title(kind: Kind) {
    let h = Harness::new(kind).await;
    let docs = &h.storage.documents;
    let source = Source::Radio(3);
    assert_eq!(docs.last_sample(source).await.unwrap(), None);
    for k in [2, 0, 1] {
        let s = NewSample::new(
            source,
            None,
            t0() + Duration::seconds(30 * k),
            30_000,
            vec![1, 2, 3],
        )
        .unwrap()
        .with_title(Some(&format!("Song {k}\u{7}")));
        docs.put_sample(&s).await.unwrap();
    }
    let other = NewSample::new(
        Source::Radio(4),
        None,
        t0() + Duration::hours(1),
        30_000,
        vec![],
    )
    .unwrap();
    docs.put_sample(&other).await.unwrap();
    let spans = docs
        .sample_spans(source, t0(), t0() + Duration::seconds(90), 10)
        .await
        .unwrap();
    let starts: Vec<i64> = spans
        .iter()
        .map(|s| (s.captured_at - t0()).whole_seconds())
        .collect();
    assert_eq!(starts, [0, 30, 60]);
    assert_eq!(
        spans[1].title.as_deref(),
        Some("Song 1"),
        "controls dropped"
    );
    assert_eq!(spans[0].end(), spans[1].captured_at);
    let last = docs.last_sample(source).await.unwrap().unwrap();
    assert_eq!(last, spans[2]);
    assert_eq!(
        docs.sample(&last.id)
            .await
            .unwrap()
            .unwrap()
            .title
            .as_deref(),
        Some("Song 2")
    );
    assert_eq!(
        docs.sample_spans(source, t0(), t0() + Duration::seconds(90), 2)
            .await
            .unwrap()
            .len(),
        2
    );
}

pub async fn live_leases_are_listed_by_prefix_with_their_holders(kind: Kind) {
    let h = Harness::new(kind).await;
    let leases = &h.storage.leases;
    let long = std::time::Duration::from_secs(30);
    let short = std::time::Duration::from_millis(200);
    assert!(
        leases
            .acquire("radio-monitor/station/2", "b", long)
            .await
            .unwrap()
    );
    assert!(
        leases
            .acquire("radio-monitor/station/1", "a", long)
            .await
            .unwrap()
    );
    assert!(
        leases
            .acquire("radio-monitor/station/3", "a", short)
            .await
            .unwrap()
    );
    assert!(
        leases
            .acquire("radio-monitor/replica/a", "a", long)
            .await
            .unwrap()
    );
    // Glob and LIKE characters in a name are only characters.
    assert!(
        leases
            .acquire("radio-monitor/station%*", "c", long)
            .await
            .unwrap()
    );
    leases
        .release("radio-monitor/station/2", "b")
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let held = leases.held("radio-monitor/station/").await.unwrap();
    assert_eq!(
        held,
        vec![("radio-monitor/station/1".to_owned(), "a".to_owned())]
    );
    assert_eq!(
        leases.held("radio-monitor/replica/").await.unwrap().len(),
        1
    );
    assert!(leases.held("nothing/").await.unwrap().is_empty());
}

pub async fn a_shards_first_answer_stands_and_a_samples_answers_come_together(kind: Kind) {
    use hendu_storage::shards::{ShardAnswer, ShardCandidate, ShardReply};

    let h = Harness::new(kind).await;
    let docs = &h.storage.documents;
    let answer = |sample: &str, shard: u32, reply: ShardReply, at: OffsetDateTime| ShardAnswer {
        sample_id: sample.into(),
        shard,
        shards: 3,
        reply,
        answered_at: at,
    };
    let best = ShardReply::Best(Some(ShardCandidate {
        matched: RawMatch {
            music_id: 7,
            block: 2,
            offset_s: 61.5,
            score: 40.0,
            confidence: 0.9,
        },
        rival_votes: 6,
        z: 9.5,
        penalty: 0.0,
    }));
    let first = docs
        .put_shard_answer(&answer("s1", 2, best.clone(), t0()))
        .await
        .unwrap();
    assert_eq!(first, vec![answer("s1", 2, best.clone(), t0())]);
    // A late answer of the same shard does not replace the first.
    let again = docs
        .put_shard_answer(&answer("s1", 2, ShardReply::TimedOut, t0()))
        .await
        .unwrap();
    assert_eq!(again, first);
    let later = t0() + Duration::seconds(5);
    let all = docs
        .put_shard_answer(&answer("s1", 1, ShardReply::Best(None), later))
        .await
        .unwrap();
    assert_eq!(
        all.iter()
            .map(|a| (a.shard, a.reply.clone()))
            .collect::<Vec<_>>(),
        [(1, ShardReply::Best(None)), (2, best.clone())]
    );
    docs.put_shard_answer(&answer("s2", 3, ShardReply::TimedOut, later))
        .await
        .unwrap();
    // Another split of the same sample is another set.
    let mut other = answer("s1", 1, ShardReply::Best(None), later);
    other.shards = 2;
    assert_eq!(docs.put_shard_answer(&other).await.unwrap().len(), 1);

    let both = docs
        .shard_answers(&["s1".into(), "s2".into(), "s3".into()], 3)
        .await
        .unwrap();
    assert_eq!(
        both.iter()
            .map(|a| (a.sample_id.as_str(), a.shard))
            .collect::<Vec<_>>(),
        [("s1", 1), ("s1", 2), ("s2", 3)]
    );
    assert_eq!(
        docs.prune_shard_answers(later).await.unwrap(),
        1,
        "the one before"
    );
    assert_eq!(
        docs.shard_answers(&["s1".into()], 3).await.unwrap().len(),
        1
    );
}
