//! One device's uploads: over TCP v2 (a session that stays open), TCP v1
//! (the paper's control port, then a data port) or REST. Each counts the
//! bytes it put on the wire and took off it, and its round trips (a request
//! and the answer it waits for).

use std::net::SocketAddr;
use std::time::Duration;

use hendu_sensor_protocol::frame::{self, Frame};
use hendu_sensor_protocol::login::{self, NONCE_LEN};
use hendu_sensor_protocol::v1::{self, Payload, Reply, Request};
use hendu_sensor_protocol::v2::{Client, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::programme::{Body, Sample};

/// The biggest answer read from a server (an ACK, an error, a REST body).
const MAX_ANSWER: usize = 64 << 10;

/// Which way samples travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    V1,
    V2,
    Rest,
}

/// A device's name and secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub imei: String,
    pub secret: String,
}

/// A sample the service took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    pub sample_id: String,
    pub duplicate: bool,
}

/// A refusal with its stable code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{number} {name}: {message}")]
pub struct Refusal {
    /// The protocol's code number (over REST: the HTTP status).
    pub number: u16,
    pub name: String,
    pub retry_after_s: u16,
    pub message: String,
    /// The server closed the connection after it (v2; v1 and REST always close).
    pub closing: bool,
}

/// What a device does after a refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Then {
    /// Stop: only an administrator can fix it (a refused login).
    Stop,
    /// Drop this sample: sending it again is refused again.
    Drop,
    /// Send it again later (a new port, a new connection, after a pause).
    Retry,
}

impl Refusal {
    /// What the specification tells a device to do, for `protocol`.
    pub fn then(&self, protocol: Protocol) -> Then {
        let n = self.number;
        match protocol {
            Protocol::Rest => match n {
                401 | 403 => Then::Stop,
                408 | 429 | 503 => Then::Retry,
                _ => Then::Drop,
            },
            Protocol::V1 | Protocol::V2 => match n {
                100 => Then::Stop,
                101..=103 | 111 | 300..=399 | 400..=499 => Then::Retry,
                _ => Then::Drop,
            },
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error("refused: {0}")]
    Refused(Refusal),
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("the server broke the protocol: {0}")]
    Protocol(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// Bytes and round trips of what was sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Wire {
    pub sent: u64,
    pub received: u64,
    pub round_trips: u64,
    pub connections: u64,
}

impl std::ops::AddAssign for Wire {
    fn add_assign(&mut self, o: Self) {
        self.sent += o.sent;
        self.received += o.received;
        self.round_trips += o.round_trips;
        self.connections += o.connections;
    }
}

/// How long to wait for any answer.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

async fn timed<T>(f: impl std::future::Future<Output = Result<T, Failure>>) -> Result<T, Failure> {
    tokio::time::timeout(ANSWER_TIMEOUT, f)
        .await
        .map_err(|_| Failure::Timeout(ANSWER_TIMEOUT))?
}

/// A v2 session: connected, logged in, numbering its frames.
#[derive(Debug)]
pub struct V2 {
    stream: TcpStream,
    buf: Vec<u8>,
    seq: u32,
    pub welcome: Welcome,
    pub wire: Wire,
}

/// What the server said on login.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Welcome {
    pub server_time_ms: i64,
    pub heartbeat_s: u16,
    pub idle_timeout_s: u16,
    pub max_frame: u32,
}

fn refusal_of(server: Server) -> Failure {
    match server {
        Server::Error {
            code,
            retry_after_s,
            message,
            closing,
        } => Failure::Refused(Refusal {
            closing,
            number: code.number(),
            name: match code {
                hendu_sensor_protocol::v2::ErrorCode::Known(c) => c.name().to_owned(),
                hendu_sensor_protocol::v2::ErrorCode::Other(n) => n.to_string(),
            },
            retry_after_s,
            message,
        }),
        other => Failure::Protocol(format!("unexpected {other:?}")),
    }
}

impl V2 {
    /// Connects to `addr` and logs in as `device`.
    ///
    /// # Errors
    /// [`Failure::Refused`] with the server's code (a wrong secret is `100
    /// refused`), or the connection failing.
    pub async fn connect(addr: SocketAddr, device: &Credentials) -> Result<Self, Failure> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let mut s = Self {
            stream,
            buf: Vec::new(),
            seq: 0,
            welcome: Welcome::default(),
            wire: Wire {
                connections: 1,
                ..Wire::default()
            },
        };
        let hello = Client::Hello {
            imei: device.imei.clone(),
            firmware: concat!("hendu-sensor ", env!("CARGO_PKG_VERSION")).to_owned(),
        };
        let Server::Challenge { server_nonce } = s.ask(&hello).await? else {
            return Err(Failure::Protocol("no CHALLENGE after HELLO".into()));
        };
        let client_nonce = nonce();
        let proof = login::proof(&device.secret, &device.imei, &server_nonce, &client_nonce);
        match s
            .ask(&Client::Login {
                client_nonce,
                proof,
            })
            .await?
        {
            Server::Welcome {
                server_time_ms,
                heartbeat_s,
                idle_timeout_s,
                max_frame,
            } => {
                s.welcome = Welcome {
                    server_time_ms,
                    heartbeat_s,
                    idle_timeout_s,
                    max_frame,
                };
                Ok(s)
            }
            other => Err(refusal_of(other)),
        }
    }

    /// Sends `message` as the next frame and waits for its answer.
    async fn ask(&mut self, message: &Client) -> Result<Server, Failure> {
        self.seq = self.seq.wrapping_add(1).max(1);
        let seq = self.seq;
        self.send_frame(&message.to_frame(seq)).await?;
        self.answer(seq).await
    }

    /// Writes a frame as it is (tests send damaged or repeated ones).
    ///
    /// # Errors
    /// The connection failing.
    pub async fn send_frame(&mut self, frame: &Frame) -> Result<(), Failure> {
        let bytes = frame.encode();
        self.stream.write_all(&bytes).await?;
        self.wire.sent += bytes.len() as u64;
        self.wire.round_trips += 1;
        Ok(())
    }

    /// The server's answer to frame `seq`; an error frame about the whole
    /// connection (numbered 0) is a refusal too.
    ///
    /// # Errors
    /// The server's refusal, the connection failing, no answer in time.
    pub async fn answer(&mut self, seq: u32) -> Result<Server, Failure> {
        timed(async {
            loop {
                match frame::decode(&self.buf, MAX_ANSWER as u32) {
                    Ok(Some((f, used))) => {
                        self.buf.drain(..used);
                        let m = Server::parse(&f).map_err(|e| Failure::Protocol(e.to_string()))?;
                        if matches!(m, Server::Error { closing: true, .. }) || f.seq == seq {
                            return match m {
                                Server::Error { .. } => Err(refusal_of(m)),
                                m => Ok(m),
                            };
                        }
                    }
                    Ok(None) => {}
                    Err(e) => return Err(Failure::Protocol(e.to_string())),
                }
                let mut chunk = [0u8; 4096];
                let n = self.stream.read(&mut chunk).await?;
                if n == 0 {
                    return Err(Failure::Io(std::io::ErrorKind::UnexpectedEof.into()));
                }
                self.wire.received += n as u64;
                self.buf.extend_from_slice(&chunk[..n]);
            }
        })
        .await
    }

    /// Uploads `sample`; its acknowledgement.
    ///
    /// # Errors
    /// The refusal (a 2xx code leaves the session open), or the connection failing.
    pub async fn send(&mut self, sample: &Sample) -> Result<Ack, Failure> {
        let message = match &sample.body {
            Body::Audio(audio) => Client::SampleAudio {
                captured_at_ms: sample.captured_at_ms,
                audio: audio.clone(),
            },
            Body::Fingerprint(bytes) => Client::SampleFingerprint(bytes.clone()),
        };
        match self.ask(&message).await? {
            Server::Ack {
                duplicate,
                sample_id,
            } => Ok(Ack {
                sample_id,
                duplicate,
            }),
            other => Err(refusal_of(other)),
        }
    }

    /// A heartbeat; its round-trip time.
    ///
    /// # Errors
    /// The connection failing.
    pub async fn ping(&mut self) -> Result<Duration, Failure> {
        let at = std::time::Instant::now();
        match self.ask(&Client::Ping(Vec::new())).await? {
            Server::Pong(_) => Ok(at.elapsed()),
            other => Err(refusal_of(other)),
        }
    }

    /// Says goodbye and closes.
    pub async fn bye(mut self) -> Wire {
        self.seq = self.seq.wrapping_add(1).max(1);
        if self
            .send_frame(&Client::Bye.to_frame(self.seq))
            .await
            .is_ok()
        {
            // BYE has no answer: not a round trip.
            self.wire.round_trips -= 1;
        }
        let _ = self.stream.shutdown().await;
        self.wire
    }

    /// The sequence number of the last frame sent.
    pub fn last_seq(&self) -> u32 {
        self.seq
    }
}

fn nonce() -> [u8; NONCE_LEN] {
    let mut n = [0u8; NONCE_LEN];
    // Without the system's random source a nonce would repeat: stop.
    getrandom::fill(&mut n).expect("the operating system's random source");
    n
}

async fn read_line(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    wire: &mut Wire,
) -> Result<String, Failure> {
    timed(async {
        loop {
            if let Some((line, used)) =
                v1::take_line(buf).map_err(|e| Failure::Protocol(e.to_string()))?
            {
                let line = line.to_owned();
                buf.drain(..used);
                return Ok(line);
            }
            let mut chunk = [0u8; 1024];
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(Failure::Io(std::io::ErrorKind::UnexpectedEof.into()));
            }
            wire.received += n as u64;
            buf.extend_from_slice(&chunk[..n]);
        }
    })
    .await
}

fn v1_reply(line: &str) -> Result<Reply, Failure> {
    match Reply::parse(line) {
        Some(Reply::Err {
            number,
            name,
            retry_after_s,
            message,
        }) => Err(Failure::Refused(Refusal {
            number,
            name,
            retry_after_s: retry_after_s.unwrap_or(0),
            message,
            closing: true,
        })),
        Some(r) => Ok(r),
        None => Err(Failure::Protocol(format!("not a v1 reply: {line:?}"))),
    }
}

async fn v1_ask(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    wire: &mut Wire,
    line: &[u8],
) -> Result<Reply, Failure> {
    stream.write_all(line).await?;
    wire.sent += line.len() as u64;
    wire.round_trips += 1;
    v1_reply(&read_line(stream, buf, wire).await?)
}

/// A v1 port and ticket from the control port at `control`.
///
/// # Errors
/// The refusal, or the connection failing.
pub async fn v1_port(
    control: SocketAddr,
    device: &Credentials,
    wire: &mut Wire,
) -> Result<(SocketAddr, String), Failure> {
    let mut stream = TcpStream::connect(control).await?;
    wire.connections += 1;
    let mut buf = Vec::new();
    let hello = Request::Hello {
        imei: device.imei.clone(),
        secret: device.secret.clone(),
    };
    match v1_ask(&mut stream, &mut buf, wire, hello.line().as_bytes()).await? {
        Reply::Ok => {}
        other => return Err(Failure::Protocol(format!("{other:?} after HELLO"))),
    }
    match v1_ask(&mut stream, &mut buf, wire, Request::Port.line().as_bytes()).await? {
        Reply::Port { port, ticket } => Ok((SocketAddr::new(control.ip(), port), ticket)),
        other => Err(Failure::Protocol(format!("{other:?} after PORT"))),
    }
}

/// Uploads one sample on a v1 data port with `ticket`.
///
/// # Errors
/// The refusal, or the connection failing.
pub async fn v1_send(
    data: SocketAddr,
    ticket: &str,
    sample: &Sample,
    wire: &mut Wire,
) -> Result<Ack, Failure> {
    let mut stream = TcpStream::connect(data).await?;
    wire.connections += 1;
    let (payload, bytes) = match &sample.body {
        Body::Audio(b) => (
            Payload::Audio {
                captured_at_ms: sample.captured_at_ms,
            },
            b,
        ),
        Body::Fingerprint(b) => (Payload::Fingerprint, b),
    };
    let head = Request::Sample {
        ticket: ticket.to_owned(),
        payload,
        length: bytes.len() as u64,
    }
    .line();
    let mut message = head.into_bytes();
    message.extend_from_slice(bytes);
    let mut buf = Vec::new();
    match v1_ask(&mut stream, &mut buf, wire, &message).await? {
        Reply::Ack {
            sample_id,
            duplicate,
        } => Ok(Ack {
            sample_id,
            duplicate,
        }),
        other => Err(Failure::Protocol(format!("{other:?} after SAMPLE"))),
    }
}

/// Uploads one sample over v1: HELLO and PORT on the control port, then
/// the sample on the data port given.
///
/// # Errors
/// The refusal, or a connection failing.
pub async fn v1_upload(
    control: SocketAddr,
    device: &Credentials,
    sample: &Sample,
    wire: &mut Wire,
) -> Result<Ack, Failure> {
    let (data, ticket) = v1_port(control, device, wire).await?;
    v1_send(data, &ticket, sample, wire).await
}

/// Uploads one sample over REST (`POST /v1/devices/{imei}/samples`, plain
/// HTTP/1.1 as a board would write it, one connection).
///
/// # Errors
/// The refusal (its code is the REST `error.code`, its number the HTTP
/// status), or the connection failing.
pub async fn rest_upload(
    api: SocketAddr,
    device: &Credentials,
    sample: &Sample,
    wire: &mut Wire,
) -> Result<Ack, Failure> {
    let mut stream = TcpStream::connect(api).await?;
    wire.connections += 1;
    let (media, extra, bytes) = match &sample.body {
        Body::Audio(b) => {
            let at = time::OffsetDateTime::from_unix_timestamp_nanos(
                i128::from(sample.captured_at_ms) * 1_000_000,
            )
            .map_err(|e| Failure::Protocol(e.to_string()))?
            .format(&time::format_description::well_known::Rfc3339)
            .map_err(|e| Failure::Protocol(e.to_string()))?;
            ("audio/wav", format!("X-Hendu-Captured-At: {at}\r\n"), b)
        }
        Body::Fingerprint(b) => (hendu_fingerprint::wire::MEDIA_TYPE, String::new(), b),
    };
    let head = format!(
        "POST /v1/devices/{}/samples HTTP/1.1\r\nHost: {api}\r\nX-Hendu-Device-Secret: {}\r\nContent-Type: {media}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n",
        device.imei,
        device.secret,
        bytes.len()
    );
    let mut message = head.into_bytes();
    message.extend_from_slice(bytes);
    stream.write_all(&message).await?;
    wire.sent += message.len() as u64;
    wire.round_trips += 1;
    let mut answer = Vec::new();
    timed(async {
        let mut chunk = [0u8; 4096];
        loop {
            let n = stream.read(&mut chunk).await?;
            if n == 0 || answer.len() > MAX_ANSWER {
                return Ok(());
            }
            answer.extend_from_slice(&chunk[..n]);
        }
    })
    .await?;
    wire.received += answer.len() as u64;
    let text = String::from_utf8_lossy(&answer);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Failure::Protocol("no HTTP status".into()))?;
    let json: serde_json::Value = serde_json::from_str(body.trim()).unwrap_or_default();
    if status == 202 {
        return Ok(Ack {
            sample_id: json["sample_id"].as_str().unwrap_or_default().to_owned(),
            duplicate: json["duplicate"].as_bool().unwrap_or(false),
        });
    }
    let retry = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("retry-after:")
                .map(|v| v.trim().parse().unwrap_or(1))
        })
        .unwrap_or(0);
    Err(Failure::Refused(Refusal {
        number: status,
        name: json["error"]["code"].as_str().unwrap_or("http").to_owned(),
        retry_after_s: retry,
        message: json["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        closing: true,
    }))
}
