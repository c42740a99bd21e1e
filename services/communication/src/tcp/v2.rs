//! Protocol v2: one framed session per connection (`docs/sensor-protocol.md`).

use std::collections::VecDeque;

use bytes::Bytes;
use hendu_sensor_protocol::Code;
use hendu_sensor_protocol::frame::{self, Frame};
use hendu_sensor_protocol::login::{self, NONCE_LEN};
use hendu_sensor_protocol::v2::{Client, Server};
use hendu_service::ApiError;
use hendu_service::health::Heartbeat;
use hendu_storage::credentials::random_bytes;
use hendu_storage::model::{Device, Imei};
use tokio::net::TcpListener;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Tcp;
use super::conn::{Conn, Stop, accept_loop};
use crate::ingest::{SampleBody, ingest, instant_ms};

const PROTOCOL: &str = "v2";
/// Answers to samples kept per session, for resends on the same connection.
const ANSWERS_KEPT: usize = 64;
/// Frames longer than this take their bytes from the payload budget.
const BUDGETED: usize = 64 << 10;
/// The largest frame before the login (HELLO is at most 112 bytes).
const PRE_LOGIN_FRAME: u32 = 256;

pub async fn serve(tcp: Tcp, listener: TcpListener, beat: Heartbeat, stop: CancellationToken) {
    let stopping = stop.clone();
    accept_loop(
        tcp.clone(),
        listener,
        PROTOCOL,
        beat,
        stop,
        refusal,
        move |tcp, conn| session(tcp, conn, stopping.clone()),
    )
    .await;
    tcp.tasks.close();
    tcp.tasks.wait().await;
}

/// The error frame of a connection refused at the door (it is closed).
fn refusal(code: Code, message: &str) -> Vec<u8> {
    Server::Error {
        code: hendu_sensor_protocol::v2::ErrorCode::Known(code),
        retry_after_s: 1,
        closing: true,
        message: message.to_owned(),
    }
    .to_frame(0)
    .encode()
}

/// The code a refusal of the sample path travels with.
pub fn code_for(e: &ApiError) -> Code {
    match e.code {
        "unauthorized" | "device_disabled" | "missing_credentials" => Code::Refused,
        "cancelled" => Code::ShuttingDown,
        "storage_unavailable" => Code::Unavailable,
        "invalid_input" | "invalid_capture_time" | "missing_capture_time" => Code::InvalidSample,
        name => Code::from_name(name).unwrap_or(if e.status.is_server_error() {
            Code::Internal
        } else {
            Code::InvalidSample
        }),
    }
}

/// Whole seconds to wait, for a refusal that says so.
pub fn retry_s(e: &ApiError) -> u16 {
    e.retry_after
        .map_or(0, |d| d.as_secs_f64().ceil().clamp(1.0, 3600.0) as u16)
}

enum Stage {
    Hello,
    Login {
        imei: String,
        server_nonce: [u8; NONCE_LEN],
    },
    Ready {
        device: Device,
    },
}

/// A sample's answer, kept for a resend of the same frame.
struct Answer {
    seq: u32,
    /// Of the frame's type and payload.
    digest: [u8; 32],
    reply: Server,
}

fn digest(kind: u8, payload: &[u8]) -> [u8; 32] {
    digest_parts(kind, &[payload])
}

fn digest_parts(kind: u8, parts: &[&[u8]]) -> [u8; 32] {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update([kind]);
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

struct Session {
    tcp: Tcp,
    conn: Conn,
    stage: Stage,
    next_seq: u32,
    answers: VecDeque<Answer>,
}

/// What to do after a frame.
enum Next {
    Continue,
    Close,
}

async fn session(tcp: Tcp, conn: Conn, stop: CancellationToken) {
    let login_deadline = Instant::now() + tcp.limits.login_timeout;
    let mut s = Session {
        tcp,
        conn,
        stage: Stage::Hello,
        next_seq: 1,
        answers: VecDeque::new(),
    };
    let mut last_heard = Instant::now();
    // When the frame being received began, and when its last bytes came.
    let mut started: Option<Instant> = None;
    let mut progress = Instant::now();
    let mut permit: Option<OwnedSemaphorePermit> = None;
    loop {
        let logged_in = matches!(s.stage, Stage::Ready { .. });
        // Before the login only HELLO and LOGIN can come: small frames.
        let max_frame = if logged_in {
            s.tcp.max_frame
        } else {
            s.tcp.max_frame.min(PRE_LOGIN_FRAME)
        };
        match frame::decode(&s.conn.buf, max_frame) {
            Err(e) => {
                s.fail(e.code(), 0, &e.to_string()).await;
                return;
            }
            Ok(Some((frame, used))) => {
                s.conn.consume(used);
                last_heard = Instant::now();
                started = (!s.conn.buf.is_empty()).then(Instant::now);
                // Boxed: the idle session's future stays small (the sample
                // path's futures are large, and live only while a frame is handled).
                let next = Box::pin(s.frame(frame)).await;
                permit = None;
                if matches!(next, Next::Close) {
                    return;
                }
                continue;
            }
            Ok(None) => {}
        }
        let total = frame_len(&s.conn.buf);
        let (deadline, timeout) = match (logged_in, started) {
            (false, _) => (login_deadline, Code::LoginTimeout),
            (true, None) => (last_heard + s.tcp.limits.idle_timeout, Code::IdleTimeout),
            // The whole frame within its allowance, and some of it every
            // read timeout: a sender that stops is closed in that time.
            (true, Some(at)) => (
                (at + s.tcp.allowance(total.unwrap_or(0)))
                    .min(progress + s.tcp.limits.read_timeout),
                Code::ReadTimeout,
            ),
        };
        // A large frame waits for room in the payload budget before its
        // bytes are read: the sender is slowed, memory stays bounded.
        if let Some(total) = total
            && total > BUDGETED
            && permit.is_none()
        {
            let wanted = u32::try_from(total).unwrap_or(u32::MAX);
            let budget = s.tcp.budget.clone();
            let waited = tokio::select! {
                () = stop.cancelled() => {
                    s.fail(Code::ShuttingDown, 1, "the service is stopping; reconnect").await;
                    return;
                }
                waited = tokio::time::timeout_at(deadline, budget.acquire_many_owned(wanted)) => waited,
            };
            match waited {
                Ok(Ok(p)) => permit = Some(p),
                _ => {
                    s.fail(
                        Code::Busy,
                        1,
                        "the service is receiving too much at once; reconnect and resend later",
                    )
                    .await;
                    return;
                }
            }
        }
        let want = total.map_or(4096, |t| t.saturating_sub(s.conn.buf.len()));
        match s.conn.fill(want, deadline, &stop).await {
            Ok(_) => {
                progress = Instant::now();
                if started.is_none() {
                    started = Some(progress);
                }
            }
            Err(Stop::Timeout) => {
                let message = match timeout {
                    Code::LoginTimeout => "the login did not complete in time",
                    Code::IdleTimeout => "nothing arrived within the idle timeout; send PING",
                    _ => "the frame stopped arriving",
                };
                s.fail(timeout, 0, message).await;
                return;
            }
            Err(Stop::ShuttingDown) => {
                s.fail(Code::ShuttingDown, 1, "the service is stopping; reconnect")
                    .await;
                return;
            }
            Err(Stop::Closed) => return,
        }
    }
}

/// The frame's whole length, once its length field is in.
fn frame_len(buf: &[u8]) -> Option<usize> {
    let head = buf.get(..4)?;
    Some(u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize + 4)
}

impl Session {
    async fn send(&mut self, reply: &Server, seq: u32) -> Result<(), Stop> {
        self.conn.send(&reply.to_frame(seq).encode()).await
    }

    /// Sends an error that closes the session.
    async fn fail(&mut self, code: Code, retry_after_s: u16, message: &str) {
        self.tcp.meters.refused(PROTOCOL, code);
        let reply = Server::Error {
            code: hendu_sensor_protocol::v2::ErrorCode::Known(code),
            retry_after_s,
            closing: true,
            message: message.to_owned(),
        };
        if self.send(&reply, 0).await.is_ok() {
            self.conn.linger().await;
        }
        tracing::debug!(peer = %self.conn.peer, code = code.name(), message, "v2 session closed");
    }

    async fn frame(&mut self, frame: Frame) -> Next {
        let seq = frame.seq;
        if seq != self.next_seq {
            let digest = digest(frame.kind, &frame.payload);
            let earlier = self
                .answers
                .iter()
                .find(|a| a.seq == seq && a.digest == digest)
                .map(|a| a.reply.clone());
            if let Some(reply) = earlier {
                return self.reply(&reply, seq).await;
            }
            let (code, message) = if seq < self.next_seq {
                (
                    Code::DuplicateSequence,
                    format!("sequence number {seq} was used; expected {}", self.next_seq),
                )
            } else {
                (
                    Code::OutOfOrder,
                    format!(
                        "sequence number {seq} skips ahead; expected {}",
                        self.next_seq
                    ),
                )
            };
            self.fail(code, 0, &message).await;
            return Next::Close;
        }
        self.next_seq = self.next_seq.wrapping_add(1).max(1);
        let message = match Client::parse(frame) {
            Ok(m) => m,
            Err(e) => {
                self.fail(e.code(), 0, &e.to_string()).await;
                return Next::Close;
            }
        };
        match (&self.stage, message) {
            (_, Client::Bye) => Next::Close,
            (Stage::Hello, Client::Hello { imei, firmware }) => {
                tracing::debug!(peer = %self.conn.peer, imei, firmware, "v2 hello");
                let server_nonce = random_bytes::<NONCE_LEN>();
                self.stage = Stage::Login { imei, server_nonce };
                self.reply(&Server::Challenge { server_nonce }, seq).await
            }
            (
                Stage::Login { imei, server_nonce },
                Client::Login {
                    client_nonce,
                    proof,
                },
            ) => {
                let (imei, server_nonce) = (imei.clone(), *server_nonce);
                match self
                    .login(&imei, &server_nonce, &client_nonce, &proof)
                    .await
                {
                    Ok(device) => {
                        tracing::info!(peer = %self.conn.peer, imei = %device.imei.as_str(), "v2 session open");
                        self.stage = Stage::Ready { device };
                        let welcome = Server::Welcome {
                            server_time_ms: (time::OffsetDateTime::now_utc().unix_timestamp_nanos()
                                / 1_000_000) as i64,
                            heartbeat_s: (self.tcp.limits.idle_timeout.as_secs() / 3).max(1) as u16,
                            idle_timeout_s: self
                                .tcp
                                .limits
                                .idle_timeout
                                .as_secs()
                                .min(u64::from(u16::MAX))
                                as u16,
                            max_frame: self.tcp.max_frame,
                        };
                        self.reply(&welcome, seq).await
                    }
                    Err(e) => {
                        let code = code_for(&e);
                        let message = if code == Code::Refused {
                            "unknown device, disabled device or wrong secret".to_owned()
                        } else {
                            e.message.clone()
                        };
                        self.fail(code, retry_s(&e), &message).await;
                        Next::Close
                    }
                }
            }
            (Stage::Ready { .. }, Client::Ping(data)) => self.reply(&Server::Pong(data), seq).await,
            (
                Stage::Ready { device },
                sample @ (Client::SampleAudio { .. } | Client::SampleFingerprint(_)),
            ) => {
                let device = device.clone();
                self.sample(device, sample, seq).await
            }
            (_, other) => {
                let what = match other {
                    Client::Hello { .. } => "HELLO",
                    Client::Login { .. } => "LOGIN",
                    Client::Ping(_) => "PING",
                    _ => "a sample",
                };
                let when = match self.stage {
                    Stage::Hello => "before HELLO",
                    Stage::Login { .. } => "before LOGIN",
                    Stage::Ready { .. } => "after login",
                };
                self.fail(
                    Code::UnexpectedFrame,
                    0,
                    &format!("{what} is not expected {when}"),
                )
                .await;
                Next::Close
            }
        }
    }

    async fn reply(&mut self, reply: &Server, seq: u32) -> Next {
        match self.send(reply, seq).await {
            Ok(()) => Next::Continue,
            Err(_) => Next::Close,
        }
    }

    async fn login(
        &self,
        imei: &str,
        server_nonce: &[u8; NONCE_LEN],
        client_nonce: &[u8; NONCE_LEN],
        proof: &[u8; 32],
    ) -> Result<Device, ApiError> {
        let client = self.conn.peer.ip();
        let Ok(parsed) = Imei::parse(imei) else {
            // The same work as for a device that exists.
            let _ = login::verify(None, imei, server_nonce, client_nonce, proof);
            self.tcp.state.auth.device_address_failed(client)?;
            return Err(hendu_service::auth::unauthorized(
                "unauthorized",
                "unknown device",
            ));
        };
        self.tcp
            .state
            .auth
            .device_proven(&parsed, client, |device| {
                let stored = device.and_then(|d| d.login_verifier.as_ref()).map(|v| &v.0);
                login::verify(stored, imei, server_nonce, client_nonce, proof)
            })
            .await
    }

    async fn sample(&mut self, device: Device, sample: Client, seq: u32) -> Next {
        // The device as it is now: disabled or given a new secret since the
        // login, it is signed out.
        let current = match self
            .tcp
            .state
            .storage
            .relational
            .device_by_imei(&device.imei)
            .await
        {
            Ok(d) => d,
            Err(e) => {
                let e = ApiError::from(e);
                let reply = Server::error(code_for(&e), retry_s(&e), e.message.clone());
                return self.reply(&reply, seq).await;
            }
        };
        let Some(current) =
            current.filter(|d| d.enabled && d.login_verifier == device.login_verifier)
        else {
            self.fail(
                Code::Refused,
                0,
                "the device was disabled or given a new secret",
            )
            .await;
            return Next::Close;
        };
        let (body, digest) = match sample {
            Client::SampleAudio {
                captured_at_ms,
                audio,
            } => {
                // The frame's payload as it came: the instant, then the audio.
                let d = digest_parts(
                    hendu_sensor_protocol::v2::kind::SAMPLE_AUDIO,
                    &[&captured_at_ms.to_le_bytes(), &audio],
                );
                match instant_ms(captured_at_ms) {
                    Ok(captured_at) => (
                        Ok(SampleBody::Audio {
                            captured_at,
                            audio: Bytes::from(audio),
                        }),
                        d,
                    ),
                    Err(e) => (Err(e), d),
                }
            }
            Client::SampleFingerprint(bytes) => {
                let d = digest(hendu_sensor_protocol::v2::kind::SAMPLE_FINGERPRINT, &bytes);
                (Ok(SampleBody::Fingerprint(Bytes::from(bytes))), d)
            }
            _ => return Next::Continue,
        };
        let result = match body {
            Ok(body) => ingest(&self.tcp.state, &current, body).await,
            Err(e) => Err(e),
        };
        let reply = match result {
            Ok(accepted) => {
                self.tcp
                    .meters
                    .samples
                    .get_or_create(&super::ProtocolLabels { protocol: PROTOCOL })
                    .inc();
                Server::Ack {
                    duplicate: accepted.duplicate,
                    sample_id: accepted.sample_id,
                }
            }
            Err(e) => {
                let code = code_for(&e);
                self.tcp.meters.refused(PROTOCOL, code);
                let mut reply = Server::error(code, retry_s(&e), e.message.clone());
                if let Server::Error { closing, .. } = &mut reply {
                    // A refused sample never ends the session, unless the
                    // service is stopping.
                    *closing = code == Code::ShuttingDown;
                }
                reply
            }
        };
        let closing = matches!(reply, Server::Error { closing: true, .. });
        // Kept only when final: a busy or unavailable answer is not, and
        // the resend should be tried again.
        let retryable = matches!(&reply, Server::Error { code, .. } if code.number() >= 300);
        if !retryable {
            if self.answers.len() == ANSWERS_KEPT {
                self.answers.pop_front();
            }
            self.answers.push_back(Answer {
                seq,
                digest,
                reply: reply.clone(),
            });
        }
        match (self.reply(&reply, seq).await, closing) {
            (Next::Continue, false) => Next::Continue,
            _ => Next::Close,
        }
    }
}
