//! Sharded recognition end to end: recognisers holding a shard of the
//! catalogue each, as processes on MariaDB, Redis and a MongoDB
//! wire-protocol server, fed a simulated broadcast by a device.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly by design.

use std::time::Duration;

use hendu_e2e::broadcast;
use hendu_e2e::pipeline::{
    IMEI, Pipeline, assert_plays_match_the_programme, plays_of, settled_plays, the_broadcast,
    upload_catalogue,
};
use hendu_e2e::{Service, eventually};
use hendu_storage::Shard;
use hendu_storage::model::Source;
use time::OffsetDateTime;

/// A recogniser of `shard`, with `extra` settings.
async fn shard_replica(
    p: &Pipeline,
    shard: Shard,
    name: &str,
    extra: &[(&str, String)],
) -> Service {
    let mut env = vec![("HENDU_RECOGNITION_SHARD", shard.to_string())];
    env.extend(extra.iter().map(|(k, v)| (*k, v.clone())));
    Service::start("hendu-recognition", name, p.config(), &env)
        .await
        .unwrap()
}

/// Waits until each replica's index holds its shard's share of `ids`.
async fn wait_for_shares(replicas: &[(Shard, &Service)], ids: &[i64]) {
    for (shard, r) in replicas {
        let share = ids.iter().filter(|&&id| shard.owns(id)).count();
        let seen = eventually(Duration::from_secs(15), || async {
            (r.metric("hendu_catalogue_tracks").await == Some(share as f64)).then_some(())
        })
        .await;
        assert!(seen.is_some(), "{} never held its {share} tracks", r.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_shards_find_every_play_one_finds_and_a_killed_shard_loses_nothing() {
    let p = Pipeline::start(0, 1).await;
    let ids = upload_catalogue(&p.client).await;
    let shards: Vec<Shard> = Shard::new(1, 3).unwrap().siblings().collect();
    let mut replicas = Vec::new();
    for s in &shards {
        replicas.push(shard_replica(&p, *s, &format!("shard-{}", s.index()), &[]).await);
    }
    let pairs: Vec<(Shard, &Service)> = shards.iter().copied().zip(&replicas).collect();
    wait_for_shares(&pairs, &ids).await;
    let held: Vec<usize> = shards
        .iter()
        .map(|s| ids.iter().filter(|&&id| s.owns(id)).count())
        .collect();
    assert!(
        held.iter().filter(|&&n| n > 0).count() >= 2,
        "the catalogue is spread over the shards: {held:?}"
    );
    let (device, secret) = p.client.register_device(IMEI).await.unwrap();

    // Half the broadcast, then the shard holding the most tracks is killed
    // while it works, and comes back after the rest was sent.
    let (t0, samples) = the_broadcast();
    let half = samples.len() / 2;
    for s in &samples[..half] {
        assert_eq!(p.client.send(IMEI, &secret, s).await.unwrap(), 202);
    }
    let victim = (0..3).max_by_key(|&i| held[i]).unwrap();
    let busy = eventually(Duration::from_secs(20), || async {
        (replicas[victim]
            .metric("hendu_samples_total")
            .await
            .unwrap_or(0.0)
            > 0.0)
            .then_some(())
    })
    .await;
    assert!(busy.is_some(), "shard {} took no sample", shards[victim]);
    replicas[victim].kill().await;
    for s in &samples[half..] {
        assert_eq!(p.client.send(IMEI, &secret, s).await.unwrap(), 202);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let back = shard_replica(&p, shards[victim], "shard-back", &[]).await;
    replicas[victim] = back;

    let plays = settled_plays(&p.storage, Source::Device(device), t0).await;
    assert_plays_match_the_programme(&plays, &ids, t0);
    let keys: std::collections::HashSet<_> = plays.iter().map(|p| &p.idempotency_key).collect();
    assert_eq!(keys.len(), plays.len(), "no play twice");
    for r in &replicas {
        let answered = r
            .metric(r#"hendu_samples_total{service="recognition",outcome="answered"}"#)
            .await
            .unwrap_or(0.0);
        let decided = r
            .metric(r#"hendu_samples_total{service="recognition",outcome="match"}"#)
            .await
            .unwrap_or(0.0)
            + r.metric(r#"hendu_samples_total{service="recognition",outcome="no_match"}"#)
                .await
                .unwrap_or(0.0);
        assert!(answered + decided > 0.0, "{} answered nothing", r.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_shard_is_waited_for_then_decided_without_and_its_late_answers_change_nothing() {
    let p = Pipeline::start(0, 1).await;
    let ids = upload_catalogue(&p.client).await;
    let first = Shard::new(1, 2).unwrap();
    let quick = [
        ("HENDU_SHARD_WAIT_S", "2".to_owned()),
        ("HENDU_RECONCILE_S", "1".to_owned()),
    ];
    let only = shard_replica(&p, first, "shard-1", &quick).await;
    wait_for_shares(&[(first, &only)], &ids).await;
    let (device, secret) = p.client.register_device(IMEI).await.unwrap();
    let (t0, samples) = the_broadcast();
    for s in &samples {
        assert_eq!(p.client.send(IMEI, &secret, s).await.unwrap(), 202);
    }

    // Shard 2 of 2 never answers: the samples are decided without it, and
    // only the tracks of shard 1 are played.
    let expected: Vec<i64> = broadcast::expected()
        .iter()
        .map(|e| ids[e.index])
        .filter(|&id| first.owns(id))
        .collect();
    assert!(!expected.is_empty() && expected.len() < broadcast::expected().len());
    let docs = &p.storage.documents;
    let decided = eventually(Duration::from_secs(60), || async {
        let unsettled = docs
            .unsettled_samples(OffsetDateTime::now_utc(), 1000)
            .await
            .ok()?;
        let undecided = docs.raw_result_sources().await.ok()?;
        (unsettled.is_empty() && undecided.is_empty()).then_some(())
    })
    .await;
    assert!(
        decided.is_some(),
        "the samples were not decided without the silent shard"
    );
    let plays = plays_of(&p.storage, Source::Device(device), t0).await;
    assert_eq!(
        plays.iter().map(|p| p.music_id).collect::<Vec<_>>(),
        expected,
        "{plays:?}"
    );
    assert!(
        only.metric("hendu_samples_decided_overdue_total")
            .await
            .unwrap_or(0.0)
            >= samples.len() as f64,
        "every sample counted as decided without a shard"
    );

    // The silent shard comes back and answers everything late: nothing changes.
    let second = shard_replica(&p, Shard::new(2, 2).unwrap(), "shard-2", &quick).await;
    let caught_up = eventually(Duration::from_secs(60), || async {
        let answered = second
            .metric(r#"hendu_samples_total{service="recognition",outcome="answered"}"#)
            .await?;
        (answered >= samples.len() as f64).then_some(())
    })
    .await;
    assert!(
        caught_up.is_some(),
        "the late shard did not answer every sample"
    );
    let all = settled_plays(&p.storage, Source::Device(device), t0).await;
    assert_eq!(all, plays, "late answers change no decision");
}
