//! What the web service asks: plays within a viewer's scope (filtered,
//! sorted, paged, totalled), browser sessions, disputes.

use hendu_storage::StorageError;
use hendu_storage::credentials::{AuthKey, Purpose, new_device_secret};
use hendu_storage::model::{
    ContentHash, Imei, NewDevice, NewMusic, NewPlay, NewRadio, NewUser, Role, Secret, SecretHash,
    Source, User,
};
use hendu_storage::queries::{
    DisputeState, Grouping, PlayFilter, PlayOrder, PlayPage, PlayScope, WebSession,
};
use time::{Duration, OffsetDateTime, UtcOffset};

use crate::harness::{Harness, Kind};

crate::contract!(web:
    plays_are_seen_only_in_their_viewers_scope_filtered_sorted_paged_and_totalled,
    a_session_lives_until_it_expires_or_is_ended,
    a_dispute_is_recorded_once_and_settled_once,
    an_event_organisers_devices_are_theirs_as_a_stations_operators_stations,
);

fn t0() -> OffsetDateTime {
    // 2026-09-21 14:13:20.123 UTC
    OffsetDateTime::from_unix_timestamp(1_790_000_000).unwrap() + Duration::milliseconds(123)
}

async fn user(h: &Harness, email: &str, role: Role) -> User {
    let new = NewUser::new(email, email, role, Secret::new("twelve chars!")).unwrap();
    h.storage.relational.add_user(&new).await.unwrap()
}

async fn music(h: &Harness, title: &str, owner: Option<i64>, seed: u8) -> i64 {
    let mut new = NewMusic::new(
        title,
        Some("Artist"),
        240_000,
        ContentHash::of(&[seed]),
        "x.ogg",
    )
    .unwrap();
    new.owner = owner;
    h.storage
        .add_music(&new, &[], 3750, None)
        .await
        .unwrap()
        .record
        .id
}

fn page(order: PlayOrder, descending: bool, offset: u32, limit: u32) -> PlayPage {
    PlayPage {
        order,
        descending,
        offset,
        limit,
    }
}

pub async fn plays_are_seen_only_in_their_viewers_scope_filtered_sorted_paged_and_totalled(
    kind: Kind,
) {
    let h = Harness::new(kind).await;
    let rel = &h.storage.relational;
    let a = user(&h, "a@example.org", Role::Musician).await;
    let b = user(&h, "b@example.org", Role::Musician).await;
    let x = user(&h, "x@example.org", Role::Operator).await;
    let y = user(&h, "y@example.org", Role::Operator).await;
    let alpha = music(&h, "Alpha", Some(a.id), 1).await;
    let beta = music(&h, "Beta", Some(a.id), 2).await;
    let gamma = music(&h, "Gamma", Some(b.id), 3).await;
    let radio = rel
        .add_radio(
            &NewRadio::new(
                "Radio Uno",
                "http://radio.example.org/live",
                Some("Asunción"),
            )
            .unwrap()
            .owned_by(Some(x.id)),
        )
        .await
        .unwrap()
        .record;
    let key = AuthKey::load(&h.storage).await.unwrap();
    let digest = key.digest(Purpose::DeviceSecret, new_device_secret().expose());
    let imei = Imei::parse("490154203237518").unwrap();
    let device = rel
        .add_device(&NewDevice::new(imei, "Stage left", Some("Encarnación"), digest).unwrap())
        .await
        .unwrap();
    assert_eq!(rel.devices(0, 10).await.unwrap(), vec![device.clone()]);
    assert!(rel.devices(device.id, 10).await.unwrap().is_empty());
    let (on_radio, on_device) = (Source::Radio(radio.id), Source::Device(device.id));
    // (music, source, start after t0, seconds played)
    let plays = [
        (alpha, on_radio, Duration::ZERO, 180),
        (beta, on_device, Duration::hours(1), 120),
        (alpha, on_radio, Duration::days(1), 200),
        (gamma, on_radio, Duration::hours(2), 150),
    ];
    let mut ids = Vec::new();
    for (i, (m, source, at, seconds)) in plays.into_iter().enumerate() {
        let location = match source {
            Source::Radio(_) => "Asunción",
            Source::Device(_) => "Encarnación",
        };
        let new = NewPlay::new(
            m,
            source,
            Some(location),
            t0() + at,
            t0() + at + Duration::seconds(seconds),
            0.9,
            &format!("play-{i}"),
        )
        .unwrap();
        ids.push(rel.record_play(&new).await.unwrap().record.id);
    }

    let of = |scope| PlayFilter::scoped(scope);
    let count = |f: PlayFilter| async move { rel.count_plays(&f).await.unwrap() };
    assert_eq!(count(of(PlayScope::Everything)).await, 4);
    assert_eq!(count(of(PlayScope::OwnedBy(a.id))).await, 3);
    assert_eq!(count(of(PlayScope::OwnedBy(b.id))).await, 1);
    assert_eq!(
        count(of(PlayScope::OperatedBy(x.id))).await,
        3,
        "the radio's"
    );
    assert_eq!(count(of(PlayScope::OperatedBy(y.id))).await, 0);
    assert_eq!(count(of(PlayScope::OperatedBy(a.id))).await, 0);

    let rows = rel
        .play_rows(
            &of(PlayScope::OwnedBy(a.id)),
            page(PlayOrder::Started, true, 0, 10),
        )
        .await
        .unwrap();
    assert_eq!(
        rows.iter().map(|r| r.play.id).collect::<Vec<_>>(),
        [ids[2], ids[1], ids[0]],
        "newest first"
    );
    assert_eq!(rows[0].title, "Alpha");
    assert_eq!(rows[0].artist.as_deref(), Some("Artist"));
    assert_eq!(rows[0].owner, Some(a.id));
    assert_eq!(rows[0].source_name, "Radio Uno");
    assert_eq!(rows[1].source_name, "Stage left");
    assert_eq!(rows[0].play.started_at, t0() + Duration::days(1));

    // Paging, and the other orders.
    let second = rel
        .play_rows(
            &of(PlayScope::OwnedBy(a.id)),
            page(PlayOrder::Started, true, 2, 2),
        )
        .await
        .unwrap();
    assert_eq!(
        second.iter().map(|r| r.play.id).collect::<Vec<_>>(),
        [ids[0]]
    );
    let by_length = rel
        .play_rows(
            &of(PlayScope::Everything),
            page(PlayOrder::Duration, false, 0, 10),
        )
        .await
        .unwrap();
    assert_eq!(
        by_length.iter().map(|r| r.play.id).collect::<Vec<_>>(),
        [ids[1], ids[3], ids[0], ids[2]]
    );
    let by_track = rel
        .play_rows(
            &of(PlayScope::Everything),
            page(PlayOrder::Track, true, 0, 10),
        )
        .await
        .unwrap();
    assert_eq!(by_track[0].title, "Gamma");
    let by_source = rel
        .play_rows(
            &of(PlayScope::Everything),
            page(PlayOrder::Source, false, 0, 10),
        )
        .await
        .unwrap();
    assert_eq!(by_source[0].source_name, "Radio Uno");
    assert_eq!(by_source[3].source_name, "Stage left");
    let recorded = rel
        .play_rows(
            &of(PlayScope::Everything),
            page(PlayOrder::Recorded, false, 0, 10),
        )
        .await
        .unwrap();
    assert_eq!(recorded.iter().map(|r| r.play.id).collect::<Vec<_>>(), ids);

    // Filters narrow the scope and never widen it.
    let narrowed = |scope, f: &dyn Fn(&mut PlayFilter)| {
        let mut filter = PlayFilter::scoped(scope);
        f(&mut filter);
        filter
    };
    let in_a = PlayScope::OwnedBy(a.id);
    assert_eq!(count(narrowed(in_a, &|f| f.music = Some(alpha))).await, 2);
    assert_eq!(
        count(narrowed(PlayScope::OwnedBy(b.id), &|f| f.music = Some(alpha))).await,
        0
    );
    assert_eq!(
        count(narrowed(in_a, &|f| f.source = Some(on_device))).await,
        1
    );
    assert_eq!(
        count(narrowed(in_a, &|f| f.location = Some("Asunción".into()))).await,
        2
    );
    assert_eq!(
        count(narrowed(in_a, &|f| {
            f.from = Some(t0() + Duration::minutes(30));
            f.to = Some(t0() + Duration::days(1));
        }))
        .await,
        1,
        "from is inclusive, to exclusive"
    );
    assert_eq!(count(narrowed(in_a, &|f| f.after = Some(ids[1]))).await, 1);
    assert_eq!(count(narrowed(in_a, &|f| f.play = Some(ids[0]))).await, 1);
    assert_eq!(
        count(narrowed(PlayScope::OwnedBy(b.id), &|f| f.play = Some(ids[0]))).await,
        0,
        "another owner's play is not found"
    );
    assert_eq!(
        count(narrowed(PlayScope::OperatedBy(x.id), &|f| f.play = Some(ids[1]))).await,
        0,
        "a device play is not an operator's"
    );

    // Totals.
    let totals = |scope, by, offset| {
        let filter = PlayFilter::scoped(scope);
        async move { rel.play_totals(&filter, by, offset, 100).await.unwrap() }
    };
    let by_source = totals(in_a, Grouping::Source, 0).await;
    assert_eq!(
        by_source
            .iter()
            .map(|t| (t.key.as_str(), t.label.as_str(), t.plays, t.seconds))
            .collect::<Vec<_>>(),
        [
            (
                format!("radio:{}", radio.id).as_str(),
                "Radio Uno",
                2,
                380.0
            ),
            (
                format!("device:{}", device.id).as_str(),
                "Stage left",
                1,
                120.0
            ),
        ]
    );
    let by_track = totals(PlayScope::Everything, Grouping::Track, 0).await;
    assert_eq!(
        by_track
            .iter()
            .map(|t| (t.label.as_str(), t.plays))
            .collect::<Vec<_>>(),
        [("Alpha", 2), ("Beta", 1), ("Gamma", 1)]
    );
    assert_eq!(by_track[0].key, alpha.to_string());
    let by_location = totals(in_a, Grouping::Location, 0).await;
    assert_eq!(
        by_location
            .iter()
            .map(|t| (t.key.as_str(), t.plays))
            .collect::<Vec<_>>(),
        [("Asunción", 2), ("Encarnación", 1)]
    );
    // Days in the viewer's zone: 14:13 UTC is the next day at UTC+10.
    for offset_h in [0, 10, -15] {
        let zone = UtcOffset::from_hms(offset_h, 0, 0).unwrap();
        let day = |at: OffsetDateTime| at.to_offset(zone).date().to_string();
        let mut expected: Vec<(String, u64)> = Vec::new();
        for at in [t0(), t0() + Duration::hours(1), t0() + Duration::days(1)] {
            match expected.last_mut() {
                Some((d, n)) if *d == day(at) => *n += 1,
                _ => expected.push((day(at), 1)),
            }
        }
        let by_day = totals(in_a, Grouping::Day, offset_h as i32 * 3600).await;
        assert_eq!(
            by_day
                .iter()
                .map(|t| (t.key.clone(), t.plays))
                .collect::<Vec<_>>(),
            expected,
            "at UTC{offset_h:+}"
        );
    }
    assert!(
        totals(PlayScope::OperatedBy(y.id), Grouping::Day, 0)
            .await
            .is_empty()
    );
}

pub async fn a_session_lives_until_it_expires_or_is_ended(kind: Kind) {
    let h = Harness::new(kind).await;
    let rel = &h.storage.relational;
    let a = user(&h, "a@example.org", Role::Musician).await;
    let now = OffsetDateTime::now_utc();
    let session = |digest: &str, expires_at| WebSession {
        digest: digest.repeat(64),
        user_id: a.id,
        csrf: "c".repeat(64),
        created_at: now,
        expires_at,
    };
    let live = session("1", now + Duration::hours(1));
    rel.add_session(&live).await.unwrap();
    let found = rel.session(&live.digest).await.unwrap().unwrap();
    assert_eq!(found.user_id, a.id);
    assert_eq!(found.csrf, live.csrf);
    assert!(rel.session(&"f".repeat(64)).await.unwrap().is_none());

    let expired = session("2", now - Duration::seconds(1));
    rel.add_session(&expired).await.unwrap();
    assert!(rel.session(&expired.digest).await.unwrap().is_none());
    // Forgotten when the next session is added, so not brought back.
    let third = session("3", now + Duration::hours(1));
    rel.add_session(&third).await.unwrap();
    rel.extend_session(&expired.digest, now + Duration::hours(2))
        .await
        .unwrap();
    assert!(rel.session(&expired.digest).await.unwrap().is_none());

    rel.delete_session(&live.digest).await.unwrap();
    assert!(rel.session(&live.digest).await.unwrap().is_none());
    assert!(rel.session(&third.digest).await.unwrap().is_some());

    // A new password ends every session of the user.
    let hash = SecretHash::hash(&Secret::new("another password"))
        .await
        .unwrap();
    assert!(rel.set_user_password(a.id, &hash).await.unwrap());
    rel.delete_sessions_of(a.id).await.unwrap();
    assert!(rel.session(&third.digest).await.unwrap().is_none());
    let stored = rel.user(a.id).await.unwrap().unwrap();
    assert!(
        stored
            .password_hash
            .verify(&Secret::new("another password"))
    );
    assert!(!rel.set_user_password(a.id + 1000, &hash).await.unwrap());
}

pub async fn a_dispute_is_recorded_once_and_settled_once(kind: Kind) {
    let h = Harness::new(kind).await;
    let rel = &h.storage.relational;
    let a = user(&h, "a@example.org", Role::Musician).await;
    let m = music(&h, "Alpha", Some(a.id), 1).await;
    let radio = rel
        .add_radio(&NewRadio::new("Radio Uno", "http://radio.example.org/live", None).unwrap())
        .await
        .unwrap()
        .record;
    let play = NewPlay::new(
        m,
        Source::Radio(radio.id),
        None,
        t0(),
        t0() + Duration::seconds(60),
        0.9,
        "p",
    )
    .unwrap();
    let play = rel.record_play(&play).await.unwrap().record;
    let first = rel
        .add_dispute(play.id, a.id, "that was a cover version")
        .await
        .unwrap();
    assert!(first.created);
    assert_eq!(first.record.state, DisputeState::Open);
    let again = rel.add_dispute(play.id, a.id, "other words").await.unwrap();
    assert!(!again.created);
    assert_eq!(again.record.reason, "that was a cover version");
    assert!(matches!(
        rel.add_dispute(play.id + 1000, a.id, "no such play").await,
        Err(StorageError::NotFound { .. })
    ));
    let open = rel.disputes(DisputeState::Open, 0, 10).await.unwrap();
    assert_eq!(open, vec![first.record.clone()]);
    assert_eq!(rel.disputes_of(play.id).await.unwrap().len(), 1);

    let settled = rel
        .resolve_dispute(first.record.id, true)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(settled.state, DisputeState::Upheld);
    assert!(settled.resolved_at.is_some());
    assert!(
        rel.resolve_dispute(first.record.id, false)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        rel.disputes(DisputeState::Open, 0, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn an_event_organisers_devices_are_theirs_as_a_stations_operators_stations(kind: Kind) {
    let h = Harness::new(kind).await;
    let rel = &h.storage.relational;
    let ana = user(&h, "ana@example.org", Role::Musician).await;
    let fest = user(&h, "fest@example.org", Role::Operator).await;
    let other = user(&h, "other@example.org", Role::Operator).await;
    let song = music(&h, "Alpha", Some(ana.id), 1).await;
    let key = AuthKey::load(&h.storage).await.unwrap();
    let device = |imei: &str, owner| {
        let digest = key.digest(Purpose::DeviceSecret, new_device_secret().expose());
        NewDevice::new(Imei::parse(imei).unwrap(), "Stage", Some("Luque"), digest)
            .unwrap()
            .owned_by(owner)
    };
    let stage = rel
        .add_device(&device("490154203237518", Some(fest.id)))
        .await
        .unwrap();
    assert_eq!(stage.owner, Some(fest.id));
    let loose = rel
        .add_device(&device("356938035643809", None))
        .await
        .unwrap();
    for (i, d) in [&stage, &loose, &stage].into_iter().enumerate() {
        let at = t0() + Duration::hours(i as i64);
        let new = NewPlay::new(
            song,
            Source::Device(d.id),
            Some("Luque"),
            at,
            at + Duration::seconds(100),
            0.9,
            &format!("event-{i}"),
        )
        .unwrap();
        rel.record_play(&new).await.unwrap();
    }
    let seen = |operator: i64| async move {
        rel.play_rows(
            &PlayFilter::scoped(PlayScope::OperatedBy(operator)),
            page(PlayOrder::Recorded, false, 0, 10),
        )
        .await
        .unwrap()
    };
    let rows = seen(fest.id).await;
    assert_eq!(
        rows.len(),
        2,
        "the organiser's device's plays, not the other's"
    );
    assert!(
        rows.iter()
            .all(|r| r.play.source == Source::Device(stage.id))
    );
    assert!(rows.iter().all(|r| r.operator == Some(fest.id)));
    assert!(seen(other.id).await.is_empty());
    let totals = rel
        .play_totals(
            &PlayFilter::scoped(PlayScope::OperatedBy(fest.id)),
            Grouping::Source,
            0,
            10,
        )
        .await
        .unwrap();
    assert_eq!(totals.len(), 1);
    assert_eq!(totals[0].plays, 2);
    assert_eq!(
        rel.devices_owned(fest.id, 0, 10).await.unwrap(),
        vec![stage.clone()]
    );

    // Given to another organiser, its plays are theirs; given to nobody, no
    // operator's; given to no such user, refused.
    assert!(
        rel.set_device_owner(&stage.imei, Some(other.id))
            .await
            .unwrap()
    );
    assert!(seen(fest.id).await.is_empty());
    assert_eq!(seen(other.id).await.len(), 2);
    assert!(rel.devices_owned(fest.id, 0, 10).await.unwrap().is_empty());
    assert!(rel.set_device_owner(&stage.imei, None).await.unwrap());
    assert!(seen(other.id).await.is_empty());
    assert!(matches!(
        rel.set_device_owner(&stage.imei, Some(999_999)).await,
        Err(StorageError::NotFound { .. })
    ));
    let unknown = Imei::parse("352099001761481").unwrap();
    assert!(!rel.set_device_owner(&unknown, None).await.unwrap());
}
