//! The pipeline end to end: the four services as processes on MariaDB,
//! Redis and a MongoDB wire-protocol server (and `hendu serve` on the
//! embedded store), fed a simulated broadcast by a device.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly by design.

use std::time::Duration;

use hendu_e2e::broadcast::{CATALOGUE, Client};
use hendu_e2e::eventually;
use hendu_e2e::pipeline::{
    IMEI, Pipeline, assert_plays_match_the_programme, recorded_plays, settled_plays, start_serve,
    the_broadcast, upload_catalogue, wait_for_catalogue,
};
use hendu_storage::Storage;
use hendu_storage::model::Source;
use hendu_storage::testing::{Kind, Place};

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
    let serve = start_serve(&place, &[]).await;
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
    let plays = recorded_plays(&storage, Source::Device(device), t0).await;
    assert_plays_match_the_programme(&plays, &ids, t0);
    let mut serve = serve;
    assert!(
        serve.stop().await.unwrap().success(),
        "a clean exit on SIGTERM"
    );
}
