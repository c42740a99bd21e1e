//! The v2 messages, each carried by one [`Frame`].
//!
//! ```text
//!  device                                  server
//!    | -- HELLO (imei, firmware) ----------> |
//!    | <--------- CHALLENGE (server nonce) - |
//!    | -- LOGIN (client nonce, proof) -----> |   login deadline from connect
//!    | <---- WELCOME (time, heartbeat, max) - |   or ERROR refused, closed
//!    | -- SAMPLE_AUDIO / _FINGERPRINT (n) -> |
//!    | <-------------- ACK (n, sample id) -- |   or ERROR (n, 2xx), stays open
//!    | -- PING (n) -----------------------> |   when idle for `heartbeat_s`
//!    | <-------------------- PONG (n) ----- |
//!    | -- BYE -----------------------------> |   closed
//! ```
//!
//! The device numbers its frames 1, 2, 3, ... on each connection. The
//! server answers a frame with the same sequence number (0 for what
//! concerns the connection). A device that lost a connection before it
//! saw an ACK resends the sample on the next one: its id is made of the
//! device and the capture instant, so the ACK names the same id and says
//! `duplicate`. On one connection, a SAMPLE resent with a sequence number
//! already acknowledged and the same payload gets the same ACK again.

use crate::Code;
use crate::frame::Frame;
use crate::login::{KEY_LEN, NONCE_LEN};

/// Frame types. Device to server are below 0x80 and odd for the login
/// steps, server to device answer with the next number.
pub mod kind {
    pub const HELLO: u8 = 0x01;
    pub const CHALLENGE: u8 = 0x02;
    pub const LOGIN: u8 = 0x03;
    pub const WELCOME: u8 = 0x04;
    pub const SAMPLE_AUDIO: u8 = 0x10;
    pub const SAMPLE_FINGERPRINT: u8 = 0x11;
    pub const ACK: u8 = 0x12;
    pub const PING: u8 = 0x20;
    pub const PONG: u8 = 0x21;
    pub const BYE: u8 = 0x30;
    pub const ERROR: u8 = 0x7f;
}

/// The most bytes a PING may carry (echoed in the PONG).
pub const MAX_PING: usize = 64;
/// The longest firmware description in HELLO.
pub const MAX_FIRMWARE: usize = 64;

/// What a device sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Client {
    Hello {
        imei: String,
        firmware: String,
    },
    Login {
        client_nonce: [u8; NONCE_LEN],
        proof: [u8; KEY_LEN],
    },
    /// Audio in any format the engine decodes, captured at `captured_at_ms`
    /// (Unix milliseconds).
    SampleAudio {
        captured_at_ms: i64,
        audio: Vec<u8>,
    },
    /// The device fingerprint format (`hendu_fingerprint::wire`), which
    /// carries its own capture instant.
    SampleFingerprint(Vec<u8>),
    Ping(Vec<u8>),
    Bye,
}

/// What the server sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Server {
    Challenge {
        server_nonce: [u8; NONCE_LEN],
    },
    Welcome {
        /// The server's clock, Unix milliseconds (a device without a clock
        /// of its own sets it from this).
        server_time_ms: i64,
        /// Send a PING when nothing was sent for this long.
        heartbeat_s: u16,
        /// The server closes a connection silent for this long.
        idle_timeout_s: u16,
        /// The largest frame accepted, in bytes, overhead included.
        max_frame: u32,
    },
    Ack {
        duplicate: bool,
        sample_id: String,
    },
    Pong(Vec<u8>),
    Error {
        code: ErrorCode,
        retry_after_s: u16,
        closing: bool,
        message: String,
    },
}

/// A code as received: known to this build, or a number from a newer server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    Known(Code),
    Other(u16),
}

impl ErrorCode {
    pub fn number(self) -> u16 {
        match self {
            Self::Known(c) => c.number(),
            Self::Other(n) => n,
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Known(c) => c.fmt(f),
            Self::Other(n) => write!(f, "{n}"),
        }
    }
}

/// A frame whose payload does not fit its type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("frame type 0x{kind:02x}: {why}")]
pub struct MessageError {
    pub kind: u8,
    pub why: &'static str,
}

impl MessageError {
    pub fn code(&self) -> Code {
        if self.why == UNKNOWN {
            Code::UnexpectedFrame
        } else {
            Code::MalformedFrame
        }
    }
}

const UNKNOWN: &str = "not a frame type of this direction";

struct Reader<'a> {
    kind: u8,
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn bad(&self, why: &'static str) -> MessageError {
        MessageError {
            kind: self.kind,
            why,
        }
    }

    fn take(&mut self, n: usize, why: &'static str) -> Result<&'a [u8], MessageError> {
        if self.rest.len() < n {
            return Err(self.bad(why));
        }
        let (head, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, why: &'static str) -> Result<[u8; N], MessageError> {
        let bytes = self.take(N, why)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    fn short_text(&mut self, max: usize, why: &'static str) -> Result<String, MessageError> {
        let [n] = self.array::<1>(why)?;
        let n = usize::from(n);
        if n > max {
            return Err(self.bad(why));
        }
        let bytes = self.take(n, why)?;
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|_| self.bad(why))
    }

    fn end(&self) -> Result<(), MessageError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(self.bad("bytes after the last field"))
        }
    }
}

fn short_text(out: &mut Vec<u8>, s: &str, max: usize) {
    let mut n = s.len().min(max);
    while !s.is_char_boundary(n) {
        n -= 1;
    }
    out.push(n as u8);
    out.extend_from_slice(&s.as_bytes()[..n]);
}

impl Client {
    /// # Errors
    /// A type a device does not send, or fields that do not parse.
    pub fn parse(frame: Frame) -> Result<Self, MessageError> {
        let mut r = Reader {
            kind: frame.kind,
            rest: &frame.payload,
        };
        let message = match frame.kind {
            kind::HELLO => {
                let imei = r.short_text(32, "HELLO: u8 length and the IMEI's digits")?;
                let firmware = r.short_text(
                    MAX_FIRMWARE,
                    "HELLO: u8 length and the firmware, UTF-8, at most 64 bytes",
                )?;
                Self::Hello { imei, firmware }
            }
            kind::LOGIN => Self::Login {
                client_nonce: r.array("LOGIN: 16 bytes of client nonce")?,
                proof: r.array("LOGIN: 32 bytes of proof")?,
            },
            kind::SAMPLE_AUDIO => {
                let at = r.array::<8>("SAMPLE_AUDIO: 8 bytes of capture instant")?;
                let mut payload = frame.payload;
                payload.drain(..8);
                return Ok(Self::SampleAudio {
                    captured_at_ms: i64::from_le_bytes(at),
                    audio: payload,
                });
            }
            kind::SAMPLE_FINGERPRINT => return Ok(Self::SampleFingerprint(frame.payload)),
            kind::PING => {
                if frame.payload.len() > MAX_PING {
                    return Err(r.bad("PING: at most 64 bytes"));
                }
                return Ok(Self::Ping(frame.payload));
            }
            kind::BYE => Self::Bye,
            _ => return Err(r.bad(UNKNOWN)),
        };
        r.end()?;
        Ok(message)
    }

    /// The frame that carries this message, numbered `seq`.
    pub fn to_frame(&self, seq: u32) -> Frame {
        let (kind, payload) = match self {
            Self::Hello { imei, firmware } => {
                let mut p = Vec::with_capacity(2 + imei.len() + firmware.len());
                short_text(&mut p, imei, 32);
                short_text(&mut p, firmware, MAX_FIRMWARE);
                (kind::HELLO, p)
            }
            Self::Login {
                client_nonce,
                proof,
            } => (kind::LOGIN, [&client_nonce[..], &proof[..]].concat()),
            Self::SampleAudio {
                captured_at_ms,
                audio,
            } => {
                let mut p = Vec::with_capacity(8 + audio.len());
                p.extend_from_slice(&captured_at_ms.to_le_bytes());
                p.extend_from_slice(audio);
                (kind::SAMPLE_AUDIO, p)
            }
            Self::SampleFingerprint(bytes) => (kind::SAMPLE_FINGERPRINT, bytes.clone()),
            Self::Ping(data) => (kind::PING, data[..data.len().min(MAX_PING)].to_vec()),
            Self::Bye => (kind::BYE, Vec::new()),
        };
        Frame::new(kind, seq, payload)
    }

    pub fn is_sample(&self) -> bool {
        matches!(self, Self::SampleAudio { .. } | Self::SampleFingerprint(_))
    }
}

impl Server {
    /// # Errors
    /// A type a server does not send, or fields that do not parse.
    pub fn parse(frame: &Frame) -> Result<Self, MessageError> {
        let mut r = Reader {
            kind: frame.kind,
            rest: &frame.payload,
        };
        let message = match frame.kind {
            kind::CHALLENGE => Self::Challenge {
                server_nonce: r.array("CHALLENGE: 16 bytes of server nonce")?,
            },
            kind::WELCOME => Self::Welcome {
                server_time_ms: i64::from_le_bytes(r.array("WELCOME: i64 server time")?),
                heartbeat_s: u16::from_le_bytes(r.array("WELCOME: u16 heartbeat")?),
                idle_timeout_s: u16::from_le_bytes(r.array("WELCOME: u16 idle timeout")?),
                max_frame: u32::from_le_bytes(r.array("WELCOME: u32 maximum frame")?),
            },
            kind::ACK => {
                let [flags] = r.array::<1>("ACK: u8 flags")?;
                let sample_id = r.short_text(255, "ACK: u8 length and the sample id")?;
                Self::Ack {
                    duplicate: flags & 1 == 1,
                    sample_id,
                }
            }
            kind::PONG => return Ok(Self::Pong(frame.payload.clone())),
            kind::ERROR => {
                let number = u16::from_le_bytes(r.array("ERROR: u16 code")?);
                let retry_after_s = u16::from_le_bytes(r.array("ERROR: u16 retry after")?);
                let [flags] = r.array::<1>("ERROR: u8 flags")?;
                let message = String::from_utf8_lossy(r.rest).into_owned();
                r.rest = &[];
                Self::Error {
                    code: Code::from_number(number)
                        .map_or(ErrorCode::Other(number), ErrorCode::Known),
                    retry_after_s,
                    closing: flags & 1 == 1,
                    message,
                }
            }
            _ => return Err(r.bad(UNKNOWN)),
        };
        r.end()?;
        Ok(message)
    }

    pub fn to_frame(&self, seq: u32) -> Frame {
        let (kind, payload) = match self {
            Self::Challenge { server_nonce } => (kind::CHALLENGE, server_nonce.to_vec()),
            Self::Welcome {
                server_time_ms,
                heartbeat_s,
                idle_timeout_s,
                max_frame,
            } => {
                let mut p = Vec::with_capacity(16);
                p.extend_from_slice(&server_time_ms.to_le_bytes());
                p.extend_from_slice(&heartbeat_s.to_le_bytes());
                p.extend_from_slice(&idle_timeout_s.to_le_bytes());
                p.extend_from_slice(&max_frame.to_le_bytes());
                (kind::WELCOME, p)
            }
            Self::Ack {
                duplicate,
                sample_id,
            } => {
                let mut p = vec![u8::from(*duplicate)];
                short_text(&mut p, sample_id, 255);
                (kind::ACK, p)
            }
            Self::Pong(data) => (kind::PONG, data.clone()),
            Self::Error {
                code,
                retry_after_s,
                closing,
                message,
            } => {
                let mut p = Vec::with_capacity(5 + message.len());
                p.extend_from_slice(&code.number().to_le_bytes());
                p.extend_from_slice(&retry_after_s.to_le_bytes());
                p.push(u8::from(*closing));
                let mut n = message.len().min(1024);
                while !message.is_char_boundary(n) {
                    n -= 1;
                }
                p.extend_from_slice(&message.as_bytes()[..n]);
                (kind::ERROR, p)
            }
        };
        Frame::new(kind, seq, payload)
    }

    /// An ERROR frame's message for `code`, closing when the code does.
    pub fn error(code: Code, retry_after_s: u16, message: impl Into<String>) -> Self {
        Self::Error {
            code: ErrorCode::Known(code),
            retry_after_s,
            closing: code.closes(),
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame;

    #[test]
    fn every_message_round_trips_through_its_frame() {
        let clients = [
            Client::Hello {
                imei: "490154203237518".into(),
                firmware: "hendu-sensor 0.1".into(),
            },
            Client::Login {
                client_nonce: [7; 16],
                proof: [9; 32],
            },
            Client::SampleAudio {
                captured_at_ms: 1_796_000_000_000,
                audio: b"RIFF".to_vec(),
            },
            Client::SampleFingerprint(b"HNDU\x01\x03".to_vec()),
            Client::Ping(b"t=1".to_vec()),
            Client::Bye,
        ];
        for (i, m) in clients.into_iter().enumerate() {
            let bytes = m.to_frame(i as u32 + 1).encode();
            let (f, _) = frame::decode(&bytes, 1024).unwrap().unwrap();
            assert_eq!(f.seq, i as u32 + 1);
            assert_eq!(Client::parse(f).unwrap(), m);
        }
        let servers = [
            Server::Challenge {
                server_nonce: [1; 16],
            },
            Server::Welcome {
                server_time_ms: -5,
                heartbeat_s: 30,
                idle_timeout_s: 90,
                max_frame: 1 << 20,
            },
            Server::Ack {
                duplicate: true,
                sample_id: "d17-1796000000000".into(),
            },
            Server::Pong(vec![1, 2]),
            Server::error(Code::OutOfOrder, 0, "expected 3"),
        ];
        for m in servers {
            let bytes = m.to_frame(4).encode();
            let (f, _) = frame::decode(&bytes, 1024).unwrap().unwrap();
            assert_eq!(Server::parse(&f).unwrap(), m);
        }
    }

    #[test]
    fn bad_payloads_are_named() {
        let f = |kind, payload: &[u8]| Frame::new(kind, 1, payload.to_vec());
        assert_eq!(
            Client::parse(f(kind::LOGIN, &[0; 47])).unwrap_err().code(),
            Code::MalformedFrame
        );
        assert_eq!(
            Client::parse(f(kind::LOGIN, &[0; 49])).unwrap_err().code(),
            Code::MalformedFrame
        );
        assert_eq!(
            Client::parse(f(kind::HELLO, &[200])).unwrap_err().code(),
            Code::MalformedFrame
        );
        assert_eq!(
            Client::parse(f(kind::SAMPLE_AUDIO, &[0; 7]))
                .unwrap_err()
                .code(),
            Code::MalformedFrame
        );
        assert_eq!(
            Client::parse(f(kind::ACK, &[])).unwrap_err().code(),
            Code::UnexpectedFrame
        );
        assert_eq!(
            Client::parse(f(kind::PING, &[0; 65])).unwrap_err().code(),
            Code::MalformedFrame
        );
        let unknown = Server::parse(&f(kind::ERROR, &[0xe7, 0x03, 0, 0, 1])).unwrap();
        assert!(matches!(
            unknown,
            Server::Error {
                code: ErrorCode::Other(999),
                closing: true,
                ..
            }
        ));
    }
}
