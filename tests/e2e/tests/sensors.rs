//! Sensors over TCP end to end: the communication service as a process on
//! MariaDB, Redis and a MongoDB wire-protocol server, one device sending a
//! broadcast over protocol v2 and another over v1 (through
//! `hendu-sensor`'s client, as the simulator does): the plays come out as
//! they do over REST.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use hendu_e2e::broadcast::{Body, CATALOGUE, Client, Sample};
use hendu_e2e::pipeline::{
    IMEI, Pipeline, assert_plays_match_the_programme, recorded_plays, settled_plays, start_serve,
    the_broadcast, upload_catalogue, wait_for_catalogue,
};
use hendu_sensor::client::{self, Credentials, V2, Wire};
use hendu_sensor::programme;
use hendu_storage::Storage;
use hendu_storage::model::Source;
use hendu_storage::testing::{Kind, Place};

const OTHER_IMEI: &str = "356938035643809";

fn as_device_sends(s: &Sample) -> programme::Sample {
    programme::Sample {
        captured_at_ms: (s.captured_at.unix_timestamp_nanos() / 1_000_000) as i64,
        duration_ms: 30_000,
        body: match s.body {
            Body::Audio => programme::Body::Audio(s.bytes.clone()),
            Body::Fingerprint => programme::Body::Fingerprint(s.bytes.clone()),
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broadcast_over_v2_and_over_v1_becomes_the_programmes_plays() {
    let control = hendu_e2e::free_port();
    let v2 = hendu_e2e::free_port();
    let data = hendu_e2e::free_ports(4);
    let env = [
        ("HENDU_TCP_ADDR", format!("127.0.0.1:{control}")),
        ("HENDU_TCP_V2_ADDR", format!("127.0.0.1:{v2}")),
        (
            "HENDU_TCP_DATA_PORTS",
            format!("{}-{}", data.start(), data.end()),
        ),
    ];
    let p = Pipeline::start_with(1, 1, &env).await;
    let ids = upload_catalogue(&p.client).await;
    wait_for_catalogue(&p.recognition, CATALOGUE.len()).await;
    let (framed, framed_secret) = p.client.register_device(IMEI).await.unwrap();
    let (lined, lined_secret) = p.client.register_device(OTHER_IMEI).await.unwrap();
    let (t0, samples) = the_broadcast();
    let samples: Vec<programme::Sample> = samples.iter().map(as_device_sends).collect();

    // v2: one session for the whole broadcast.
    let v2_addr = format!("127.0.0.1:{v2}").parse().unwrap();
    let framed_device = Credentials {
        imei: IMEI.into(),
        secret: framed_secret,
    };
    let mut session = V2::connect(v2_addr, &framed_device).await.unwrap();
    let mut acked = Vec::new();
    for s in &samples {
        let ack = session.send(s).await.unwrap();
        assert!(!ack.duplicate);
        acked.push(ack.sample_id);
    }
    session.bye().await;

    // v1: a port and a ticket for each sample.
    let control_addr = format!("127.0.0.1:{control}").parse().unwrap();
    let lined_device = Credentials {
        imei: OTHER_IMEI.into(),
        secret: lined_secret,
    };
    let mut wire = Wire::default();
    for s in &samples {
        let ack = client::v1_upload(control_addr, &lined_device, s, &mut wire)
            .await
            .unwrap();
        assert!(!ack.duplicate);
    }
    assert_eq!(wire.connections, 2 * samples.len() as u64);

    let plays = settled_plays(&p.storage, Source::Device(framed), t0).await;
    assert_plays_match_the_programme(&plays, &ids, t0);
    let lined_plays = settled_plays(&p.storage, Source::Device(lined), t0).await;
    assert_plays_match_the_programme(&lined_plays, &ids, t0);

    // A device that never saw its acks resends on a new session: the same
    // ids, duplicates, and no new play.
    let mut again = V2::connect(v2_addr, &framed_device).await.unwrap();
    for (s, id) in samples.iter().zip(&acked).take(4) {
        let ack = again.send(s).await.unwrap();
        assert_eq!((&ack.sample_id, ack.duplicate), (id, true));
    }
    assert_eq!(
        settled_plays(&p.storage, Source::Device(framed), t0).await,
        plays
    );
    let comm = &p.others[1];
    assert!(
        comm.metric("hendu_tcp_samples_total").await.unwrap_or(0.0) >= 2.0 * samples.len() as f64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hendu_serve_takes_a_broadcast_over_v2_on_the_embedded_store() {
    let place = Place::new(Kind::Embedded).await;
    let v2 = hendu_e2e::free_port();
    let serve = start_serve(&place, &[("HENDU_TCP_V2_ADDR", format!("127.0.0.1:{v2}"))]).await;
    let client = Client::new(&serve.base, &serve.base);
    let ids = upload_catalogue(&client).await;
    wait_for_catalogue(std::slice::from_ref(&serve), CATALOGUE.len()).await;
    let (device, secret) = client.register_device(IMEI).await.unwrap();
    let (t0, samples) = the_broadcast();
    let device_creds = Credentials {
        imei: IMEI.into(),
        secret,
    };
    let mut session = V2::connect(([127, 0, 0, 1], v2).into(), &device_creds)
        .await
        .unwrap();
    for s in &samples {
        session.send(&as_device_sends(s)).await.unwrap();
    }
    session.bye().await;
    let storage = Storage::connect(&place.config).await.unwrap();
    let plays = recorded_plays(&storage, Source::Device(device), t0).await;
    assert_plays_match_the_programme(&plays, &ids, t0);
}
