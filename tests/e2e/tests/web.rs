//! The web pages in a real browser: `hendu serve` on the embedded store, a
//! musician with a catalogue, Debian's chromium driven by
//! `tests/browser/musician.mjs` (playwright-core). While the musician's
//! dashboard is open, a device sends a broadcast through the real pipeline,
//! and its first play must appear on the page, without a reload, within 2 s
//! of the filter recording it. The script then opens the plays, a play, the
//! CSV and the Spanish pages, checks each for accessibility and saves
//! screenshots (`HENDU_SCREENSHOTS`, default `target/screenshots`). Then
//! `tests/browser/staff.mjs`: an operator downloads a report, and the
//! administrator disables the device, whose next sample is refused.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hendu_e2e::broadcast::{ADMIN_EMAIL, ADMIN_PASSWORD, CATALOGUE, Client};
use hendu_e2e::eventually;
use hendu_e2e::pipeline::{
    IMEI, assert_plays_match_the_programme, recorded_plays, start_serve, the_broadcast,
    wait_for_catalogue,
};
use hendu_storage::Storage;
use hendu_storage::model::Source;
use hendu_storage::testing::{Kind, Place};
use tokio::io::{AsyncBufReadExt, BufReader};

const MUSICIAN: &str = "ana@hendu.test";
const OPERATOR: &str = "radio.operator@hendu.test";
const PASSWORD: &str = "a long musician password";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn epoch_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_musician_sees_a_play_arrive_live_and_reads_their_plays_in_a_browser() {
    let place = Place::new(Kind::Embedded).await;
    let serve = start_serve(&place, &[]).await;
    let client = Client::new(&serve.base, &serve.base);
    let ana = client
        .create_user(MUSICIAN, "musician", PASSWORD)
        .await
        .unwrap();
    let mut ids = Vec::new();
    for t in &CATALOGUE {
        ids.push(client.upload_for(t, Some(ana)).await.unwrap());
    }
    wait_for_catalogue(std::slice::from_ref(&serve), CATALOGUE.len()).await;
    let (device, secret) = client.register_device(IMEI).await.unwrap();
    let (t0, samples) = the_broadcast();

    let shots = std::env::var("HENDU_SCREENSHOTS")
        .unwrap_or_else(|_| root().join("target/screenshots").display().to_string());
    let mut browser = tokio::process::Command::new("node")
        .arg("tests/browser/musician.mjs")
        .current_dir(root())
        .env("HENDU_WEB", &serve.base)
        .env("HENDU_EMAIL", MUSICIAN)
        .env("HENDU_PASSWORD", PASSWORD)
        .env("HENDU_SCREENSHOTS", &shots)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("node runs (scripts/test.sh installs it and the browser)");
    let mut said = BufReader::new(browser.stdout.take().unwrap()).lines();
    let mut next_line = async || {
        tokio::time::timeout(Duration::from_secs(240), said.next_line())
            .await
            .expect("the browser script says what it does")
            .unwrap()
            .expect("the browser script ended early (its errors are above)")
    };
    assert_eq!(next_line().await, "OPEN");

    // The broadcast, through the pipeline, while the dashboard is open.
    let storage = Storage::connect(&place.config).await.unwrap();
    let feeding = {
        let client = client.clone();
        let secret = secret.clone();
        tokio::spawn(async move {
            for s in &samples {
                assert_eq!(client.send(IMEI, &secret, s).await.unwrap(), 202);
            }
        })
    };
    let first = eventually(Duration::from_secs(180), || async {
        let plays = storage
            .relational
            .plays_of_source(
                Source::Device(device),
                t0 - time::Duration::hours(1),
                t0 + time::Duration::hours(2),
            )
            .await
            .ok()?;
        plays.first().map(|p| (p.id, epoch_ms()))
    })
    .await
    .expect("the filter records a play");
    let live = next_line().await;
    let mut words = live.split_whitespace();
    assert_eq!(words.next(), Some("LIVE"), "{live}");
    let shown: i64 = words.next().unwrap().parse().unwrap();
    let shown_at: u128 = words.next().unwrap().parse().unwrap();
    assert_eq!(shown, first.0, "the first play recorded is the first shown");
    let after = shown_at.saturating_sub(first.1);
    eprintln!("the first play was on the open dashboard {after} ms after the store had it");
    assert!(after <= 2_000, "shown {after} ms after it was recorded");

    let status = tokio::time::timeout(Duration::from_secs(240), browser.wait())
        .await
        .expect("the browser script finishes")
        .unwrap();
    assert!(status.success(), "the browser's checks passed");
    feeding.await.unwrap();
    let plays = recorded_plays(&storage, Source::Device(device), t0).await;
    assert_plays_match_the_programme(&plays, &ids, t0);

    // An operator downloads a report; the administrator disables the device.
    client
        .create_user(OPERATOR, "operator", PASSWORD)
        .await
        .unwrap();
    let staff = tokio::process::Command::new("node")
        .arg("tests/browser/staff.mjs")
        .current_dir(root())
        .env("HENDU_WEB", &serve.base)
        .env("HENDU_OPERATOR_EMAIL", OPERATOR)
        .env("HENDU_OPERATOR_PASSWORD", PASSWORD)
        .env("HENDU_ADMIN_EMAIL", ADMIN_EMAIL)
        .env("HENDU_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .env("HENDU_IMEI", IMEI)
        .env("HENDU_SCREENSHOTS", &shots)
        .kill_on_drop(true)
        .output();
    let staff = tokio::time::timeout(Duration::from_secs(240), staff)
        .await
        .expect("the staff's script finishes")
        .unwrap();
    eprint!("{}", String::from_utf8_lossy(&staff.stderr));
    assert!(
        staff.status.success(),
        "the operator's and administrator's checks passed"
    );
    assert_eq!(
        String::from_utf8_lossy(&staff.stdout).trim(),
        format!("DISABLED {IMEI}")
    );
    let device = storage
        .relational
        .device_by_imei(&hendu_storage::model::Imei::parse(IMEI).unwrap())
        .await
        .unwrap()
        .unwrap();
    assert!(!device.enabled, "disabled in the store");
    let (_, more) = the_broadcast();
    assert_eq!(
        client.send(IMEI, &secret, &more[0]).await.unwrap(),
        403,
        "a disabled device's samples are refused"
    );
}
