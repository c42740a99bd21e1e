//! The communication API over HTTP, on a real embedded store: who may send
//! samples, what a sample may be, the administrators' device API, the
//! accounts API, and the limits on failed attempts.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly by design.

mod common;

use std::time::Duration;

use common::{IMEI, spawn};
use hendu_fingerprint::Peak;
use hendu_fingerprint::packed::unpack_query;
use hendu_fingerprint::wire::{MEDIA_TYPE, SampleFingerprint};
use hendu_storage::Queue;
use hendu_storage::model::Role;
use hendu_storage::queue::SampleQueued;
use hendu_storage::testing::user_with_token;
use serde_json::{Value, json};

fn fingerprint(at_ms: i64) -> Vec<u8> {
    SampleFingerprint {
        captured_at_ms: at_ms,
        duration_ms: 30_000,
        peaks: vec![Peak {
            frame: 10,
            bin: 40.5,
        }],
        // Wire version 2: the sparse peaks the DJ search proposes warps from.
        sparse: vec![Peak {
            frame: 12,
            bin: 60.0,
        }],
    }
    .encode()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_administrators_register_devices_and_the_server_makes_the_secret() {
    let app = spawn().await;
    let body = json!({ "imei": IMEI, "name": "Stage left", "location": "Luque" });
    let anonymous = app
        .http
        .post(format!("{}/v1/devices", app.base))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    let v: Value = anonymous.json().await.unwrap();
    assert_eq!(v["error"]["code"], "missing_credentials");
    let (status, v) = app
        .call(
            "hnd_0123456789abcdef_00",
            reqwest::Method::POST,
            "/v1/devices",
            body.clone(),
        )
        .await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (401, Some("unauthorized"))
    );
    let (_, musician) = user_with_token(&app.storage, "ana@hendu.test", Role::Musician).await;
    let (status, v) = app
        .call(
            &musician,
            reqwest::Method::POST,
            "/v1/devices",
            body.clone(),
        )
        .await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (403, Some("forbidden"))
    );

    let (status, device) = app
        .admin(reqwest::Method::POST, "/v1/devices", body.clone())
        .await;
    assert_eq!(status, 201, "{device}");
    assert_eq!(device["imei"], IMEI);
    let secret = device["secret"].as_str().unwrap();
    assert_eq!(secret.len(), 64, "256 bits, shown once");
    let (status, shown) = app
        .admin(
            reqwest::Method::GET,
            &format!("/v1/devices/{IMEI}"),
            Value::Null,
        )
        .await;
    assert_eq!(status, 200);
    assert!(shown.get("secret").is_none() && shown.get("secret_hash").is_none());
    let (status, v) = app.admin(reqwest::Method::POST, "/v1/devices", body).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (409, Some("conflict")),
        "an IMEI belongs to one device"
    );
    let (status, v) = app
        .admin(
            reqwest::Method::POST,
            "/v1/devices",
            json!({ "imei": "490154203237518", "name": "x", "secret": "my own secret" }),
        )
        .await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (422, Some("invalid_input"))
    );
    let (status, v) = app
        .admin(
            reqwest::Method::POST,
            "/v1/devices",
            json!({ "imei": "356938035643808", "name": "x" }),
        )
        .await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (400, Some("invalid_imei"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_sample_is_stored_and_queued_only_with_the_right_secret() {
    let app = spawn().await;
    let secret = app.register().await;
    let at = 1_790_000_000_000;

    let (status, v) = app
        .sample("wrong secret!!", fingerprint(at), MEDIA_TYPE)
        .await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (401, Some("unauthorized"))
    );
    let (status, v) = app
        .sample(&secret, b"not a fingerprint".to_vec(), MEDIA_TYPE)
        .await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (422, Some("invalid_fingerprint"))
    );
    let (status, v) = app.sample(&secret, b"garbage".to_vec(), "audio/wav").await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (400, Some("missing_capture_time")),
        "audio needs its capture instant"
    );
    // Refused from the head (the declared length); the answer arrives whole
    // although the client is still sending.
    let (status, v) = app.sample(&secret, vec![0; 200_000], MEDIA_TYPE).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (413, Some("payload_too_large")),
        "over the configured limit"
    );
    let (status, v) = app
        .sample("wrong secret!!", vec![0; 200_000], MEDIA_TYPE)
        .await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (401, Some("unauthorized")),
        "a stranger is refused before the body is judged"
    );
    let (status, v) = app.sample(&secret, fingerprint(0), MEDIA_TYPE).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (422, Some("capture_time_too_early")),
        "a device without a clock is told so, not asked to retry"
    );
    let backlog = app.storage.queue.backlog(Queue::Samples).await.unwrap();
    assert_eq!(backlog.waiting, 0, "nothing refused was queued");

    let (status, v) = app.sample(&secret, fingerprint(at), MEDIA_TYPE).await;
    assert_eq!(status, 202, "{v}");
    let id = v["sample_id"].as_str().unwrap().to_owned();
    assert_eq!(v["duplicate"], false);
    let stored = app.storage.documents.sample(&id).await.unwrap().unwrap();
    assert_eq!(stored.location.as_deref(), Some("Luque"));
    assert_eq!(stored.duration_ms, 30_000);
    let sent = SampleFingerprint::decode(&fingerprint(at)).unwrap();
    assert_eq!(
        unpack_query(&stored.peaks).unwrap(),
        (sent.peaks, sent.sparse),
        "both lists are stored for the recogniser"
    );
    let queued = app
        .storage
        .queue
        .read(Queue::Samples, "t", 10, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(queued.len(), 1);
    let entry: SampleQueued = serde_json::from_slice(&queued[0].payload).unwrap();
    assert_eq!(entry.sample_id, id);

    let (status, v) = app.sample(&secret, fingerprint(at), MEDIA_TYPE).await;
    assert_eq!(
        (status, &v["duplicate"]),
        (202, &json!(true)),
        "a retry is one sample"
    );

    let (status, device) = app
        .admin(
            reqwest::Method::PATCH,
            &format!("/v1/devices/{IMEI}"),
            json!({ "enabled": false }),
        )
        .await;
    assert_eq!((status, &device["enabled"]), (200, &json!(false)));
    let (status, v) = app
        .sample(&secret, fingerprint(at + 30_000), MEDIA_TYPE)
        .await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (403, Some("device_disabled"))
    );
    assert!(
        app.storage
            .documents
            .sample(&format!("device-1-{}", at + 30_000))
            .await
            .unwrap()
            .is_none(),
        "nothing stored for a disabled device"
    );

    let (status, rotated) = app
        .admin(
            reqwest::Method::PATCH,
            &format!("/v1/devices/{IMEI}"),
            json!({ "enabled": true, "rotate_secret": true }),
        )
        .await;
    assert_eq!(status, 200, "{rotated}");
    let new_secret = rotated["secret"].as_str().unwrap();
    let (status, _) = app
        .sample(&secret, fingerprint(at + 60_000), MEDIA_TYPE)
        .await;
    assert_eq!(status, 401, "the old secret no longer works");
    let (status, _) = app
        .sample(new_secret, fingerprint(at + 60_000), MEDIA_TYPE)
        .await;
    assert_eq!(status, 202);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_secrets_are_limited_per_device_then_refused_before_any_check() {
    let app = spawn().await;
    let secret = app.register().await;
    for _ in 0..hendu_service::limits::MAX_FAILURES {
        let (status, _) = app
            .sample("wrong secret!!", fingerprint(1_790_000_000_000), MEDIA_TYPE)
            .await;
        assert_eq!(status, 401);
    }
    let r = app
        .http
        .post(format!("{}/v1/devices/{IMEI}/samples", app.base))
        .header("x-hendu-device-secret", &secret)
        .header("content-type", MEDIA_TYPE)
        .body(fingerprint(1_790_000_000_000))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        429,
        "even the right secret waits out the window"
    );
    let wait: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "too_many_attempts");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_device_is_refused_like_a_wrong_secret() {
    let app = spawn().await;
    let (status, v) = app
        .sample("a device secret", fingerprint(0), MEDIA_TYPE)
        .await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (401, Some("unauthorized"))
    );
    let r = app
        .http
        .post(format!("{}/v1/devices/{IMEI}/samples", app.base))
        .body(fingerprint(0))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "missing_credentials");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn people_get_tokens_with_their_password_and_revoke_them() {
    let app = spawn().await;
    let login = |password: &'static str| {
        app.http
            .post(format!("{}/v1/tokens", app.base))
            .basic_auth("root@hendu.test", Some(password))
            .json(&json!({ "name": "laptop" }))
            .send()
    };
    assert_eq!(login("not the password").await.unwrap().status(), 401);
    let made: Value = login("root password 1")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = made["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("hnd_"));
    let (status, listed) = app
        .call(&token, reqwest::Method::GET, "/v1/tokens", Value::Null)
        .await;
    assert_eq!(status, 200);
    assert!(
        !listed.to_string().contains(&token[21..]),
        "no secret is listed"
    );

    let (status, user) = app
        .call(
            &token,
            reqwest::Method::POST,
            "/v1/users",
            json!({ "email": "ana@hendu.test", "display_name": "Ana", "role": "musician", "password": "twelve chars!" }),
        )
        .await;
    assert_eq!(status, 201, "{user}");
    let ana: Value = app
        .http
        .post(format!("{}/v1/tokens", app.base))
        .basic_auth("ana@hendu.test", Some("twelve chars!"))
        .json(&json!({ "name": "phone" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ana_token = ana["token"].as_str().unwrap();
    let (status, _) = app
        .call(ana_token, reqwest::Method::GET, "/v1/users", Value::Null)
        .await;
    assert_eq!(status, 403, "musicians do not manage users");
    let id = made["details"]["id"].as_i64().unwrap();
    let (status, _) = app
        .call(
            ana_token,
            reqwest::Method::DELETE,
            &format!("/v1/tokens/{id}"),
            Value::Null,
        )
        .await;
    assert_eq!(status, 404, "another user's token is not found");

    let (status, _) = app
        .call(
            &token,
            reqwest::Method::DELETE,
            &format!("/v1/tokens/{id}"),
            Value::Null,
        )
        .await;
    assert_eq!(status, 204);
    let (status, v) = app
        .call(&token, reqwest::Method::GET, "/v1/tokens", Value::Null)
        .await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (401, Some("unauthorized")),
        "revoked"
    );

    let user_id = user["id"].as_i64().unwrap();
    let (status, _) = app
        .admin(
            reqwest::Method::PATCH,
            &format!("/v1/users/{user_id}"),
            json!({ "disabled": true }),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = app
        .call(ana_token, reqwest::Method::GET, "/v1/tokens", Value::Null)
        .await;
    assert_eq!(status, 401, "a disabled user's tokens stop working");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_has_the_json_shape_even_the_frameworks_own() {
    let app = spawn().await;
    let get = |path: &str| app.http.get(format!("{}{path}", app.base)).send();
    for (response, status, code) in [
        (get("/nope").await.unwrap(), 404, "not_found"),
        (
            app.http
                .put(format!("{}/v1/devices", app.base))
                .send()
                .await
                .unwrap(),
            405,
            "method_not_allowed",
        ),
        (
            app.http
                .request(
                    reqwest::Method::from_bytes(b"BREW").unwrap(),
                    format!("{}/v1/tokens", app.base),
                )
                .send()
                .await
                .unwrap(),
            405,
            "method_not_allowed",
        ),
    ] {
        assert_eq!(response.status(), status);
        let v: Value = response.json().await.unwrap();
        assert_eq!(v["error"]["code"], code, "{v}");
    }
    let metrics = get("/metrics").await.unwrap().text().await.unwrap();
    assert!(!metrics.contains("BREW"), "invented methods make no series");
    let ready: Value = get("/readyz").await.unwrap().json().await.unwrap();
    assert_eq!(ready["status"], "ready");
}
