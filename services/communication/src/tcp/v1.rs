//! Protocol v1: the control port and the data ports (`docs/sensor-protocol.md`).
//!
//! Every replica listens on the whole range of data ports. A port is given
//! to one device at a time across the cluster by a lease (`v1-port:<port>`,
//! held by the ticket's nonce for the ticket's lifetime), and a data
//! connection is served only with a ticket for that port, from the address
//! the ticket was given to, before it expires, once (`v1-ticket:<nonce>`).
//! A device holds one ticket at a time (`v1-device:<imei>`): asking for a
//! port again gives the earlier ticket's port back, so one device cannot
//! hold the whole range.

use std::net::IpAddr;

use bytes::Bytes;
use hendu_sensor_protocol::Code;
use hendu_sensor_protocol::v1::{self as proto, Payload, Reply, Request, Ticket};
use hendu_service::ApiError;
use hendu_service::health::Heartbeat;
use hendu_storage::credentials::random_bytes;
use hendu_storage::model::{Device, Imei};
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Tcp;
use super::conn::{Conn, Stop, accept_loop};
use super::v2::{code_for, retry_s};
use crate::ingest::{SampleBody, ingest, instant_ms};

const PROTOCOL: &str = "v1";

pub async fn serve(
    tcp: Tcp,
    control: TcpListener,
    data: Vec<TcpListener>,
    beat: Heartbeat,
    stop: CancellationToken,
) {
    let mut loops = tokio::task::JoinSet::new();
    for listener in data {
        let port = listener.local_addr().map_or(0, |a| a.port());
        // The data ports' loops beat the control loop's heartbeat too.
        let (tcp, stop, beat) = (tcp.clone(), stop.clone(), beat.clone());
        loops.spawn(accept_loop(
            tcp,
            listener,
            PROTOCOL,
            beat,
            stop,
            refusal,
            move |tcp, conn| upload(tcp, conn, port),
        ));
    }
    accept_loop(
        tcp.clone(),
        control,
        PROTOCOL,
        beat,
        stop,
        refusal,
        control_session,
    )
    .await;
    while loops.join_next().await.is_some() {}
    tcp.tasks.close();
    tcp.tasks.wait().await;
}

fn refusal(code: Code, message: &str) -> Vec<u8> {
    Reply::error(code, Some(1), message).line().into_bytes()
}

/// Sends an `ERR` line and lets the client read it; the caller closes.
async fn fail(tcp: &Tcp, conn: &mut Conn, code: Code, retry_after_s: Option<u16>, message: &str) {
    tcp.meters.refused(PROTOCOL, code);
    if conn
        .send(Reply::error(code, retry_after_s, message).line().as_bytes())
        .await
        .is_ok()
    {
        conn.linger().await;
    }
    tracing::debug!(peer = %conn.peer, code = code.name(), message, "v1 connection refused");
}

async fn fail_api(tcp: &Tcp, conn: &mut Conn, e: &ApiError) {
    let code = code_for(e);
    let message = if code == Code::Refused {
        "unknown device, disabled device or wrong secret"
    } else {
        &e.message
    };
    let retry = (retry_s(e) > 0).then(|| retry_s(e));
    fail(tcp, conn, code, retry, message).await;
}

/// Sends what a read that stopped deserves (nothing when the peer left).
async fn stopped(tcp: &Tcp, conn: &mut Conn, why: Stop, late: Code, message: &str) {
    match why {
        Stop::Timeout => fail(tcp, conn, late, None, message).await,
        Stop::ShuttingDown => {
            fail(
                tcp,
                conn,
                Code::ShuttingDown,
                Some(1),
                "the service is stopping; retry",
            )
            .await;
        }
        Stop::Closed => {}
    }
}

/// The next line, within `deadline`; on failure the error is sent.
async fn line(tcp: &Tcp, conn: &mut Conn, deadline: Instant, late: Code) -> Option<Request> {
    loop {
        match proto::take_line(&conn.buf) {
            Ok(Some((text, used))) => {
                let request = Request::parse(text);
                conn.consume(used);
                if request.is_none() {
                    fail(
                        tcp,
                        conn,
                        Code::MalformedFrame,
                        None,
                        "not a request of protocol v1",
                    )
                    .await;
                }
                return request;
            }
            Ok(None) => {}
            Err(e) => {
                fail(tcp, conn, e.code(), None, &e.to_string()).await;
                return None;
            }
        }
        let want = proto::MAX_LINE - conn.buf.len();
        if let Err(why) = conn.fill(want, deadline, &tcp.state.stopping).await {
            stopped(tcp, conn, why, late, "the request did not arrive in time").await;
            return None;
        }
    }
}

/// HELLO, then PORT; then the connection closes.
async fn control_session(tcp: Tcp, mut conn: Conn) {
    let deadline = Instant::now() + tcp.limits.login_timeout;
    let Some(request) = line(&tcp, &mut conn, deadline, Code::LoginTimeout).await else {
        return;
    };
    let Request::Hello { imei, secret } = request else {
        fail(
            &tcp,
            &mut conn,
            Code::UnexpectedFrame,
            None,
            "send HELLO <imei> <secret> first",
        )
        .await;
        return;
    };
    let client = conn.peer.ip();
    let device = match Imei::parse(&imei) {
        Ok(imei) => tcp.state.auth.device(&imei, &secret, client).await,
        Err(_) => match tcp.state.auth.device_address_failed(client) {
            Ok(()) => Err(hendu_service::auth::unauthorized(
                "unauthorized",
                "unknown device",
            )),
            Err(e) => Err(e),
        },
    };
    let device = match device {
        Ok(d) => d,
        Err(e) => {
            fail_api(&tcp, &mut conn, &e).await;
            return;
        }
    };
    if conn.send(Reply::Ok.line().as_bytes()).await.is_err() {
        return;
    }
    let Some(request) = line(&tcp, &mut conn, deadline, Code::LoginTimeout).await else {
        return;
    };
    if request != Request::Port {
        fail(
            &tcp,
            &mut conn,
            Code::UnexpectedFrame,
            None,
            "after OK, send PORT",
        )
        .await;
        return;
    }
    match reserve(&tcp, &device, client).await {
        Ok((port, ticket)) => {
            tracing::debug!(imei = %device.imei.as_str(), port, "v1 data port given");
            let _ = conn
                .send(Reply::Port { port, ticket }.line().as_bytes())
                .await;
        }
        Err(e) => fail_api(&tcp, &mut conn, &e).await,
    }
}

fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

fn port_lease(port: u16) -> String {
    format!("v1-port:{port}")
}

fn device_lease(imei: &str) -> String {
    format!("v1-device:{imei}")
}

/// A data port free across the cluster, leased to a new ticket (the
/// device's earlier ticket, if any, is given up).
async fn reserve(tcp: &Tcp, device: &Device, client: IpAddr) -> Result<(u16, String), ApiError> {
    let leases = &tcp.state.storage.leases;
    let mine = device_lease(device.imei.as_str());
    let earlier: Vec<String> = leases
        .held(&mine)
        .await?
        .into_iter()
        .filter(|(name, _)| *name == mine)
        .map(|(_, holder)| holder)
        .collect();
    let mut held = std::collections::HashSet::new();
    for (name, holder) in leases.held("v1-port:").await? {
        if earlier.contains(&holder) {
            leases.release(&name, &holder).await?;
        } else {
            held.insert(name);
        }
    }
    for holder in &earlier {
        leases.release(&mine, holder).await?;
    }
    let nonce = random_bytes::<16>();
    let ports = &tcp.data_ports;
    let start = usize::from(u16::from_le_bytes(random_bytes::<2>()));
    for i in 0..ports.len() {
        let port = ports[(start + i) % ports.len()];
        let name = port_lease(port);
        if held.contains(&name) {
            continue;
        }
        let ticket = Ticket {
            imei: device.imei.as_str().parse().unwrap_or(0),
            port,
            client,
            expires_ms: now_ms() + tcp.limits.ticket_ttl.as_millis() as i64,
            nonce,
        };
        let holder = ticket.nonce_hex();
        if leases
            .acquire(&name, &holder, tcp.limits.ticket_ttl)
            .await?
        {
            leases
                .acquire(&mine, &holder, tcp.limits.ticket_ttl)
                .await?;
            return Ok((port, ticket.seal(&tcp.ticket_key)));
        }
    }
    let wait = tcp.limits.ticket_ttl.as_secs().clamp(1, 3600) as u16;
    Err(ApiError::new(
        axum::http::StatusCode::SERVICE_UNAVAILABLE,
        "ports_exhausted",
        format!("every data port is given to a device; retry in {wait} s"),
    )
    .retry_after(tcp.limits.ticket_ttl))
}

/// `SAMPLE <ticket> ...`, its bytes, the ACK; then the connection closes.
async fn upload(tcp: Tcp, mut conn: Conn, port: u16) {
    let deadline = Instant::now() + tcp.allowance(proto::MAX_LINE);
    let Some(request) = line(&tcp, &mut conn, deadline, Code::ReadTimeout).await else {
        return;
    };
    let Request::Sample {
        ticket,
        payload,
        length,
    } = request
    else {
        fail(
            &tcp,
            &mut conn,
            Code::UnexpectedFrame,
            None,
            "a data port takes SAMPLE only",
        )
        .await;
        return;
    };
    let ticket = match Ticket::open(&tcp.ticket_key, &ticket)
        .and_then(|t| t.check(now_ms(), port, conn.peer.ip()).map(|()| t))
    {
        Ok(t) => t,
        Err(e) => {
            fail(&tcp, &mut conn, e.code(), None, &e.to_string()).await;
            return;
        }
    };
    let limit = tcp.state.max_sample_bytes;
    let length = match usize::try_from(length) {
        Ok(n) if n <= limit => n,
        _ => {
            let message = format!(
                "the sample is larger than this service accepts ({limit} bytes, {})",
                crate::vars::MAX_SAMPLE_BYTES
            );
            fail(&tcp, &mut conn, Code::PayloadTooLarge, None, &message).await;
            return;
        }
    };
    let holder = ticket.nonce_hex();
    let leases = [
        port_lease(port),
        device_lease(&format!("{:015}", ticket.imei)),
    ];
    match claim(&tcp, &ticket, length).await {
        Ok(device) => upload_body(&tcp, &mut conn, &device, payload, length).await,
        Err(e) => fail_api(&tcp, &mut conn, &e).await,
    }
    // The port is free for another device, whatever happened.
    for name in &leases {
        let _ = tcp.state.storage.leases.release(name, &holder).await;
    }
}

/// The ticket's device, marking the ticket used and holding its port (and
/// the device's one ticket) for the upload of `length` bytes.
async fn claim(tcp: &Tcp, ticket: &Ticket, length: usize) -> Result<Device, ApiError> {
    let imei = Imei::parse(&format!("{:015}", ticket.imei))
        .map_err(|_| ApiError::bad_request("ticket_invalid", "the ticket names no device"))?;
    let device = match tcp.state.storage.relational.device_by_imei(&imei).await? {
        Some(d) if d.enabled => d,
        _ => {
            return Err(hendu_service::auth::unauthorized(
                "unauthorized",
                "the device is disabled",
            ));
        }
    };
    let leases = &tcp.state.storage.leases;
    let holder = ticket.nonce_hex();
    let once = format!("v1-ticket:{holder}");
    let mine = hex(&random_bytes::<8>());
    if !leases
        .acquire(&once, &mine, tcp.limits.ticket_ttl * 2)
        .await?
    {
        return Err(ApiError::bad_request(
            "ticket_used",
            "this ticket was used; ask the control port for a new port",
        ));
    }
    let ttl = tcp.allowance(length) + tcp.limits.write_timeout;
    let port = leases
        .acquire(&port_lease(ticket.port), &holder, ttl)
        .await?;
    let current = leases
        .acquire(&device_lease(imei.as_str()), &holder, ttl)
        .await?;
    if !(port && current) {
        return Err(ApiError::bad_request(
            "ticket_expired",
            "the port was given to another device, or the device asked for another port; ask again",
        ));
    }
    Ok(device)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn upload_body(tcp: &Tcp, conn: &mut Conn, device: &Device, payload: Payload, length: usize) {
    if length == 0 {
        fail(
            tcp,
            conn,
            Code::EmptySample,
            None,
            "the sample holds no bytes",
        )
        .await;
        return;
    }
    let deadline = Instant::now() + tcp.allowance(length);
    let wanted = u32::try_from(length).unwrap_or(u32::MAX);
    let budget = tcp.budget.clone();
    let waited = tokio::select! {
        () = tcp.state.stopping.cancelled() => Err(Stop::ShuttingDown),
        waited = tokio::time::timeout_at(deadline, budget.acquire_many_owned(wanted)) => match waited {
            Ok(Ok(p)) => Ok(p),
            _ => Err(Stop::Timeout),
        },
    };
    let _permit = match waited {
        Ok(p) => p,
        Err(Stop::ShuttingDown) => {
            stopped(tcp, conn, Stop::ShuttingDown, Code::Busy, "").await;
            return;
        }
        Err(_) => {
            fail(
                tcp,
                conn,
                Code::Busy,
                Some(1),
                "the service is receiving too much at once; retry later",
            )
            .await;
            return;
        }
    };
    while conn.buf.len() < length {
        let want = length - conn.buf.len();
        // The whole upload within its allowance, and some of it every read timeout.
        let next = deadline.min(Instant::now() + tcp.limits.read_timeout);
        if let Err(why) = conn.fill(want, next, &tcp.state.stopping).await {
            stopped(
                tcp,
                conn,
                why,
                Code::ReadTimeout,
                "the sample stopped arriving",
            )
            .await;
            return;
        }
    }
    let bytes = Bytes::copy_from_slice(&conn.buf[..length]);
    conn.consume(length);
    let body = match payload {
        Payload::Fingerprint => Ok(SampleBody::Fingerprint(bytes)),
        Payload::Audio { captured_at_ms } => {
            instant_ms(captured_at_ms).map(|captured_at| SampleBody::Audio {
                captured_at,
                audio: bytes,
            })
        }
    };
    match async { ingest(&tcp.state, device, body?).await }.await {
        Ok(accepted) => {
            tcp.meters
                .samples
                .get_or_create(&super::ProtocolLabels { protocol: PROTOCOL })
                .inc();
            let reply = Reply::Ack {
                sample_id: accepted.sample_id,
                duplicate: accepted.duplicate,
            };
            let _ = conn.send(reply.line().as_bytes()).await;
        }
        Err(e) => fail_api(tcp, conn, &e).await,
    }
}
