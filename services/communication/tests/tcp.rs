//! The sensors' TCP protocols in process, on the embedded store: uploads
//! over v1 and v2 end in the same samples as REST, and every refusal the
//! specification lists gets its code (or a timely close), stores nothing,
//! and leaves the service serving others.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use common::{IMEI, TestApp, spawn_tcp};
use hendu_communication::tcp::TcpLimits;
use hendu_sensor::client::{self, Credentials, Failure, V2, Wire};
use hendu_sensor::programme::{self, Kind, Sample};
use hendu_sensor_protocol::frame::{self, Frame};
use hendu_sensor_protocol::v2::{Client, Server, kind};
use hendu_sensor_protocol::{Code, v1};
use hendu_storage::model::{Imei, Source};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

fn limits() -> TcpLimits {
    TcpLimits {
        login_timeout: Duration::from_secs(2),
        idle_timeout: Duration::from_secs(3),
        read_timeout: Duration::from_secs(1),
        ticket_ttl: Duration::from_secs(2),
        ..TcpLimits::default()
    }
}

fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// 30 s of something with peaks: a few tones that change every second.
fn audio() -> Vec<f32> {
    let rate = programme::RATE as f32;
    (0..programme::RATE as usize * 30)
        .map(|i| {
            let t = i as f32 / rate;
            let step = (t as u32 % 7) as f32;
            0.3 * (2.0 * std::f32::consts::PI * (440.0 + 110.0 * step) * t).sin()
                + 0.2 * (2.0 * std::f32::consts::PI * (1250.0 - 70.0 * step) * t).sin()
        })
        .collect()
}

fn fingerprint_sample(at_ms: i64) -> Sample {
    programme::sample(&audio(), at_ms, Kind::Fingerprint)
}

async fn device(app: &TestApp) -> Credentials {
    Credentials {
        imei: IMEI.to_owned(),
        secret: app.register().await,
    }
}

/// Another device, registered by the administrator.
async fn another(app: &TestApp, imei: &str) -> Credentials {
    let (status, v) = app
        .admin(
            reqwest::Method::POST,
            "/v1/devices",
            serde_json::json!({ "imei": imei, "name": "Stage right" }),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    Credentials {
        imei: imei.to_owned(),
        secret: v["secret"].as_str().unwrap().to_owned(),
    }
}

async fn stored(app: &TestApp) -> bool {
    let imei = Imei::parse(IMEI).unwrap();
    let Some(d) = app.storage.relational.device_by_imei(&imei).await.unwrap() else {
        return false;
    };
    app.storage
        .documents
        .last_sample(Source::Device(d.id))
        .await
        .unwrap()
        .is_some()
}

fn refusal(r: Result<impl std::fmt::Debug, Failure>) -> u16 {
    match r {
        Err(Failure::Refused(r)) => r.number,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// Reads until the server's next frame or its close; the frame if any.
async fn next_frame(s: &mut TcpStream, within: Duration) -> Option<Server> {
    let mut buf = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Ok(Some((f, _))) = frame::decode(&buf, 1 << 16) {
            return Some(Server::parse(&f).unwrap());
        }
        let mut chunk = [0u8; 1024];
        match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return None,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => panic!("the server neither answered nor closed within {within:?}"),
        }
    }
}

fn code_of(m: Option<Server>) -> u16 {
    match m {
        Some(Server::Error { code, closing, .. }) => {
            assert!(closing, "a session error closes");
            code.number()
        }
        other => panic!("expected an error frame, got {other:?}"),
    }
}

/// A raw connection logged in as `device` (frames 1 and 2 used).
async fn logged_in(addr: SocketAddr, device: &Credentials) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let hello = Client::Hello {
        imei: device.imei.clone(),
        firmware: "test".into(),
    };
    s.write_all(&hello.to_frame(1).encode()).await.unwrap();
    let Some(Server::Challenge { server_nonce }) = next_frame(&mut s, Duration::from_secs(5)).await
    else {
        panic!("no challenge")
    };
    let client_nonce = [7u8; 16];
    let proof = hendu_sensor_protocol::login::proof(
        &device.secret,
        &device.imei,
        &server_nonce,
        &client_nonce,
    );
    let login = Client::Login {
        client_nonce,
        proof,
    };
    s.write_all(&login.to_frame(2).encode()).await.unwrap();
    assert!(matches!(
        next_frame(&mut s, Duration::from_secs(5)).await,
        Some(Server::Welcome { .. })
    ));
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_acknowledges_each_sample_with_its_id_and_a_resend_with_the_same_id() {
    let app = spawn_tcp(2, limits()).await;
    let device = device(&app).await;
    let addr = app.v2.unwrap();
    let mut s = V2::connect(addr, &device).await.unwrap();
    assert_eq!(s.welcome.idle_timeout_s, 3);
    assert!(s.welcome.max_frame >= 1_000_000);
    assert!((s.welcome.server_time_ms - now_ms()).abs() < 5_000);
    let at = now_ms() - 120_000;
    let sample = fingerprint_sample(at);
    let ack = s.send(&sample).await.unwrap();
    assert!(!ack.duplicate);
    assert!(
        ack.sample_id.ends_with(&format!("-{at}")),
        "{}",
        ack.sample_id
    );
    assert!(stored(&app).await);
    // The same frame again (the device never saw its ACK): the same answer.
    let seq = s.last_seq();
    let Client::SampleFingerprint(body) = Client::parse(Frame::new(
        kind::SAMPLE_FINGERPRINT,
        seq,
        match &sample.body {
            programme::Body::Fingerprint(b) => b.clone(),
            programme::Body::Audio(_) => unreachable!(),
        },
    ))
    .unwrap() else {
        unreachable!()
    };
    s.send_frame(&Client::SampleFingerprint(body).to_frame(seq))
        .await
        .unwrap();
    let Server::Ack { sample_id, .. } = s.answer(seq).await.unwrap() else {
        panic!("an ack")
    };
    assert_eq!(sample_id, ack.sample_id);
    // Audio, captured at its own instant; and a heartbeat.
    let wav = programme::sample(&audio(), at + 30_000, Kind::Audio);
    let audio_ack = s.send(&wav).await.unwrap();
    assert!(audio_ack.sample_id.ends_with(&format!("-{}", at + 30_000)));
    assert!(s.ping().await.unwrap() < Duration::from_secs(1));
    // A refused sample leaves the session open.
    let mut broken = sample.clone();
    broken.body = programme::Body::Fingerprint(b"HNDU\x09".to_vec());
    assert_eq!(
        refusal(s.send(&broken).await),
        Code::InvalidFingerprint.number()
    );
    let future = fingerprint_sample(now_ms() + 3_600_000);
    assert_eq!(
        refusal(s.send(&future).await),
        Code::CaptureTimeInFuture.number()
    );
    s.ping().await.unwrap();
    s.bye().await;
    // On a new connection (after a lost one): the same id, a duplicate.
    let mut again = V2::connect(addr, &device).await.unwrap();
    let dup = again.send(&sample).await.unwrap();
    assert_eq!(
        (dup.sample_id.as_str(), dup.duplicate),
        (ack.sample_id.as_str(), true)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_refuses_every_bad_login_with_one_code_and_stores_nothing() {
    let app = spawn_tcp(2, limits()).await;
    let good = device(&app).await;
    let addr = app.v2.unwrap();
    let unknown = Credentials {
        imei: "490154203237518".into(),
        secret: good.secret.clone(),
    };
    let wrong = Credentials {
        imei: good.imei.clone(),
        secret: "0".repeat(64),
    };
    let malformed = Credentials {
        imei: "12345".into(),
        secret: good.secret.clone(),
    };
    for who in [&unknown, &wrong, &malformed] {
        assert_eq!(
            refusal(V2::connect(addr, who).await),
            Code::Refused.number()
        );
    }
    let (status, _) = app
        .admin(
            reqwest::Method::PATCH,
            &format!("/v1/devices/{IMEI}"),
            serde_json::json!({ "enabled": false }),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        refusal(V2::connect(addr, &good).await),
        Code::Refused.number()
    );
    assert!(!stored(&app).await);
    // Enabled again, the device signs in (the service kept serving).
    app.admin(
        reqwest::Method::PATCH,
        &format!("/v1/devices/{IMEI}"),
        serde_json::json!({ "enabled": true }),
    )
    .await;
    let mut s = V2::connect(addr, &good).await.unwrap();
    s.ping().await.unwrap();
    // A rotated secret signs the open session out at its next sample.
    app.admin(
        reqwest::Method::PATCH,
        &format!("/v1/devices/{IMEI}"),
        serde_json::json!({ "rotate_secret": true }),
    )
    .await;
    assert_eq!(
        refusal(s.send(&fingerprint_sample(now_ms() - 60_000)).await),
        Code::Refused.number()
    );
    assert!(!stored(&app).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_refuses_broken_frames_each_with_its_code() {
    let app = spawn_tcp(2, limits()).await;
    let device = device(&app).await;
    let addr = app.v2.unwrap();
    let wait = Duration::from_secs(5);

    // A length over the maximum: refused from its 4 bytes.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&u32::MAX.to_le_bytes()).await.unwrap();
    assert_eq!(
        code_of(next_frame(&mut s, wait).await),
        Code::FrameTooLarge.number()
    );
    // A bad checksum.
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut bytes = Client::Ping(vec![]).to_frame(1).encode();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    s.write_all(&bytes).await.unwrap();
    assert_eq!(
        code_of(next_frame(&mut s, wait).await),
        Code::BadChecksum.number()
    );
    // Another version.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&[20, 0, 0, 0, 3]).await.unwrap();
    assert_eq!(
        code_of(next_frame(&mut s, wait).await),
        Code::UnsupportedVersion.number()
    );
    // A sample before the login.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&Client::SampleFingerprint(vec![1]).to_frame(1).encode())
        .await
        .unwrap();
    assert_eq!(
        code_of(next_frame(&mut s, wait).await),
        Code::UnexpectedFrame.number()
    );
    // Out of order, then a duplicate sequence number with other bytes.
    let mut s = logged_in(addr, &device).await;
    s.write_all(&Client::Ping(vec![]).to_frame(5).encode())
        .await
        .unwrap();
    assert_eq!(
        code_of(next_frame(&mut s, wait).await),
        Code::OutOfOrder.number()
    );
    let mut s = logged_in(addr, &device).await;
    s.write_all(&Client::Ping(b"a".to_vec()).to_frame(3).encode())
        .await
        .unwrap();
    assert!(matches!(
        next_frame(&mut s, wait).await,
        Some(Server::Pong(_))
    ));
    s.write_all(&Client::Ping(b"b".to_vec()).to_frame(3).encode())
        .await
        .unwrap();
    assert_eq!(
        code_of(next_frame(&mut s, wait).await),
        Code::DuplicateSequence.number()
    );
    // A payload that does not fit its type.
    let mut s = logged_in(addr, &device).await;
    s.write_all(&Frame::new(kind::SAMPLE_AUDIO, 3, vec![1, 2]).encode())
        .await
        .unwrap();
    assert_eq!(
        code_of(next_frame(&mut s, wait).await),
        Code::MalformedFrame.number()
    );
    assert!(!stored(&app).await);

    // Silence before the login: closed at the login deadline (2 s).
    let at = Instant::now();
    let mut s = TcpStream::connect(addr).await.unwrap();
    assert_eq!(
        code_of(next_frame(&mut s, wait).await),
        Code::LoginTimeout.number()
    );
    let took = at.elapsed();
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(4),
        "{took:?}"
    );
    // Half a frame, then silence: closed within the read allowance (1 s).
    let mut s = logged_in(addr, &device).await;
    let half = Client::Ping(vec![0; 30]).to_frame(3).encode();
    s.write_all(&half[..20]).await.unwrap();
    let at = Instant::now();
    assert_eq!(
        code_of(next_frame(&mut s, wait).await),
        Code::ReadTimeout.number()
    );
    assert!(at.elapsed() < Duration::from_secs(3), "{:?}", at.elapsed());
    // Logged in and silent: closed at the idle timeout (3 s).
    let mut s = logged_in(addr, &device).await;
    let at = Instant::now();
    assert_eq!(
        code_of(next_frame(&mut s, wait).await),
        Code::IdleTimeout.number()
    );
    assert!(
        at.elapsed() >= Duration::from_millis(2900),
        "{:?}",
        at.elapsed()
    );

    // After all that, a device is served.
    let mut ok = V2::connect(addr, &device).await.unwrap();
    ok.send(&fingerprint_sample(now_ms() - 60_000))
        .await
        .unwrap();
}

/// A connection to `to` from the loopback address `from`.
async fn connect_from(from: IpAddr, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(from, 0)).unwrap();
    socket.connect(to).await.unwrap()
}

async fn v1_line(s: &mut TcpStream, line: &[u8]) -> v1::Reply {
    s.write_all(line).await.unwrap();
    let mut buf = Vec::new();
    loop {
        if let Ok(Some((l, _))) = v1::take_line(&buf) {
            return v1::Reply::parse(l).unwrap();
        }
        let mut chunk = [0u8; 512];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk))
            .await
            .expect("an answer in time")
            .unwrap();
        assert!(n > 0, "closed without an answer");
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn err_number(r: &v1::Reply) -> u16 {
    match r {
        v1::Reply::Err { number, .. } => *number,
        other => panic!("expected ERR, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_uploads_once_per_ticket_from_its_address_before_it_expires() {
    let app = spawn_tcp(2, limits()).await;
    let device = device(&app).await;
    let control = app.control.unwrap();
    let at = now_ms() - 120_000;
    let sample = fingerprint_sample(at);
    let mut wire = Wire::default();
    let ack = client::v1_upload(control, &device, &sample, &mut wire)
        .await
        .unwrap();
    assert!(ack.sample_id.ends_with(&format!("-{at}")) && !ack.duplicate);
    assert_eq!(wire.round_trips, 3, "HELLO, PORT, SAMPLE");
    assert!(stored(&app).await);

    // A ticket is used once.
    let (data, ticket) = client::v1_port(control, &device, &mut wire).await.unwrap();
    let again = fingerprint_sample(at + 30_000);
    client::v1_send(data, &ticket, &again, &mut wire)
        .await
        .unwrap();
    assert_eq!(
        refusal(client::v1_send(data, &ticket, &again, &mut wire).await),
        Code::TicketUsed.number()
    );
    // Not from another address, and not on another port.
    let (data, ticket) = client::v1_port(control, &device, &mut wire).await.unwrap();
    let mut other = connect_from("127.0.0.2".parse().unwrap(), data).await;
    let head = format!("SAMPLE {ticket} FINGERPRINT 5\n12345");
    assert_eq!(
        err_number(&v1_line(&mut other, head.as_bytes()).await),
        Code::TicketWrongAddress.number()
    );
    // Nor after it expired (2 s).
    let (data, ticket) = client::v1_port(control, &device, &mut wire).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2200)).await;
    assert_eq!(
        refusal(client::v1_send(data, &ticket, &again, &mut wire).await),
        Code::TicketExpired.number()
    );
    // A forged ticket.
    let mut s = TcpStream::connect(data).await.unwrap();
    assert_eq!(
        err_number(&v1_line(&mut s, b"SAMPLE AAAA FINGERPRINT 5\n12345").await),
        Code::TicketInvalid.number()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_refuses_bad_logins_alike_and_says_when_the_ports_run_out() {
    let app = spawn_tcp(2, limits()).await;
    let device = device(&app).await;
    let control = app.control.unwrap();
    let mut wire = Wire::default();
    for who in [
        Credentials {
            imei: "490154203237518".into(),
            secret: device.secret.clone(),
        },
        Credentials {
            imei: device.imei.clone(),
            secret: "0".repeat(64),
        },
    ] {
        assert_eq!(
            refusal(client::v1_port(control, &who, &mut wire).await),
            Code::Refused.number()
        );
    }
    // One ticket per device: asking again gives the earlier one's port back
    // (and the earlier ticket no longer holds).
    let (data, first) = client::v1_port(control, &device, &mut wire).await.unwrap();
    client::v1_port(control, &device, &mut wire).await.unwrap();
    let sample = fingerprint_sample(now_ms() - 90_000);
    assert_eq!(
        refusal(client::v1_send(data, &first, &sample, &mut wire).await),
        Code::TicketExpired.number()
    );
    // Two ports, two devices holding them: a third is told to wait.
    let second = another(&app, "490154203237518").await;
    let third = another(&app, "352099001761481").await;
    client::v1_port(control, &device, &mut wire).await.unwrap();
    client::v1_port(control, &second, &mut wire).await.unwrap();
    match client::v1_port(control, &third, &mut wire).await {
        Err(Failure::Refused(r)) => {
            assert_eq!(r.number, Code::PortsExhausted.number());
            assert!(r.retry_after_s >= 1);
        }
        other => panic!("{other:?}"),
    }
    // A line that never ends, and one that is not a request.
    let mut s = TcpStream::connect(control).await.unwrap();
    assert_eq!(
        err_number(&v1_line(&mut s, &[b'A'; 600]).await),
        Code::FrameTooLarge.number()
    );
    let mut s = TcpStream::connect(control).await.unwrap();
    assert_eq!(
        err_number(&v1_line(&mut s, b"GET / HTTP/1.1\r\n").await),
        Code::MalformedFrame.number()
    );
    assert!(!stored(&app).await);
    // When the tickets expire, the ports are free again.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let sample = fingerprint_sample(now_ms() - 60_000);
    client::v1_upload(control, &device, &sample, &mut wire)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_idle_connections_from_one_address_do_not_keep_a_device_out() {
    let limits = TcpLimits {
        max_per_address: 300,
        login_timeout: Duration::from_secs(60),
        ..limits()
    };
    let app = spawn_tcp(2, limits).await;
    let device = device(&app).await;
    let addr = app.v2.unwrap();
    let mut idle = Vec::new();
    for _ in 0..300 {
        idle.push(TcpStream::connect(addr).await.unwrap());
    }
    // The 301st from the same address is told the service is busy...
    let mut over = TcpStream::connect(addr).await.unwrap();
    assert_eq!(
        code_of(next_frame(&mut over, Duration::from_secs(5)).await),
        Code::Busy.number()
    );
    // ...while a device at another address is served.
    let mut s = connect_from("127.0.0.3".parse().unwrap(), addr).await;
    s.write_all(
        &Client::Hello {
            imei: device.imei.clone(),
            firmware: "t".into(),
        }
        .to_frame(1)
        .encode(),
    )
    .await
    .unwrap();
    assert!(matches!(
        next_frame(&mut s, Duration::from_secs(5)).await,
        Some(Server::Challenge { .. })
    ));
    drop(idle);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut ok = V2::connect(addr, &device).await.unwrap();
    ok.send(&fingerprint_sample(now_ms() - 60_000))
        .await
        .unwrap();
}
