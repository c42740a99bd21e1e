//! v1: the protocol of the HENDU paper (section 4.1.2), in text lines.
//!
//! Every line is ASCII words separated by one space, ended by `\n` (a `\r`
//! before it is ignored), at most [`MAX_LINE`] bytes.
//!
//! ```text
//!  device                       control port (HENDU_TCP_ADDR)
//!    | -- HELLO <imei> <secret> --> |  habilitation: the devices table
//!    | <----------------- OK ------ |  or ERR 100 refused ..., closed
//!    | -- PORT -------------------> |
//!    | <-- PORT <port> <ticket> --- |  or ERR 302 ports_exhausted retry=<s> ..., closed
//!    |                              |  closed
//!  device                       data port <port> (HENDU_TCP_DATA_PORTS), within the ticket's deadline
//!    | -- SAMPLE <ticket> AUDIO <captured_at_ms> <length>\n<length bytes> --> |
//!    | -- or SAMPLE <ticket> FINGERPRINT <length>\n<length bytes> ----------> |
//!    | <------------------------------ ACK <sample id> new|duplicate ------ |  or ERR ..., closed
//! ```
//!
//! The secret crosses the wire in HELLO as the paper's protocol has it:
//! use v1 only on a private network (a venue's LAN, a mobile operator's
//! private APN), and v2 everywhere else.
//!
//! A data port serves one upload of the device it was given to, from the
//! address that asked for it, with a [`Ticket`] the service signed: any
//! replica can check it, so the data ports may sit behind a load balancer.

use std::net::{IpAddr, Ipv6Addr};

use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::Code;

/// The longest line, `\n` included.
pub const MAX_LINE: usize = 512;

/// Why bytes are not a line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    #[error("a line longer than {MAX_LINE} bytes")]
    TooLong,
    #[error("a line that is not ASCII text")]
    NotText,
}

impl LineError {
    pub fn code(&self) -> Code {
        match self {
            Self::TooLong => Code::FrameTooLarge,
            Self::NotText => Code::MalformedFrame,
        }
    }
}

/// The first line in `buf` (without its end) and the bytes it took;
/// `Ok(None)` while no `\n` has arrived.
///
/// # Errors
/// [`LineError`]: more than [`MAX_LINE`] bytes without an end, or bytes
/// that are not printable ASCII.
pub fn take_line(buf: &[u8]) -> Result<Option<(&str, usize)>, LineError> {
    let window = &buf[..buf.len().min(MAX_LINE)];
    let Some(end) = window.iter().position(|&b| b == b'\n') else {
        return if buf.len() >= MAX_LINE {
            Err(LineError::TooLong)
        } else {
            Ok(None)
        };
    };
    let line = &window[..end];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if !line.iter().all(|b| (0x20..0x7f).contains(b)) {
        return Err(LineError::NotText);
    }
    // Printable ASCII is UTF-8.
    let text = std::str::from_utf8(line).map_err(|_| LineError::NotText)?;
    Ok(Some((text, end + 1)))
}

/// What a sample upload carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payload {
    Audio { captured_at_ms: i64 },
    Fingerprint,
}

/// A device's line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Hello {
        imei: String,
        secret: String,
    },
    Port,
    Sample {
        ticket: String,
        payload: Payload,
        length: u64,
    },
}

impl Request {
    /// # Errors
    /// `None` for a line that is not a request of this protocol.
    pub fn parse(line: &str) -> Option<Self> {
        let words: Vec<&str> = line.split(' ').collect();
        match words.as_slice() {
            ["HELLO", imei, secret] => Some(Self::Hello {
                imei: (*imei).to_owned(),
                secret: (*secret).to_owned(),
            }),
            ["PORT"] => Some(Self::Port),
            ["SAMPLE", ticket, "AUDIO", at, length] => Some(Self::Sample {
                ticket: (*ticket).to_owned(),
                payload: Payload::Audio {
                    captured_at_ms: at.parse().ok()?,
                },
                length: length.parse().ok()?,
            }),
            ["SAMPLE", ticket, "FINGERPRINT", length] => Some(Self::Sample {
                ticket: (*ticket).to_owned(),
                payload: Payload::Fingerprint,
                length: length.parse().ok()?,
            }),
            _ => None,
        }
    }

    /// The line, with its `\n`.
    pub fn line(&self) -> String {
        match self {
            Self::Hello { imei, secret } => format!("HELLO {imei} {secret}\n"),
            Self::Port => "PORT\n".to_owned(),
            Self::Sample {
                ticket,
                payload: Payload::Audio { captured_at_ms },
                length,
            } => format!("SAMPLE {ticket} AUDIO {captured_at_ms} {length}\n"),
            Self::Sample {
                ticket,
                payload: Payload::Fingerprint,
                length,
            } => format!("SAMPLE {ticket} FINGERPRINT {length}\n"),
        }
    }
}

/// The service's line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Ok,
    Port {
        port: u16,
        ticket: String,
    },
    Ack {
        sample_id: String,
        duplicate: bool,
    },
    Err {
        /// The number, for a code this build may not know.
        number: u16,
        name: String,
        retry_after_s: Option<u16>,
        message: String,
    },
}

impl Reply {
    pub fn error(code: Code, retry_after_s: Option<u16>, message: &str) -> Self {
        Self::Err {
            number: code.number(),
            name: code.name().to_owned(),
            retry_after_s,
            message: message.to_owned(),
        }
    }

    /// The line, with its `\n`; a message is cut to fit [`MAX_LINE`] and
    /// anything but printable ASCII in it becomes `?`.
    pub fn line(&self) -> String {
        match self {
            Self::Ok => "OK\n".to_owned(),
            Self::Port { port, ticket } => format!("PORT {port} {ticket}\n"),
            Self::Ack {
                sample_id,
                duplicate,
            } => format!(
                "ACK {sample_id} {}\n",
                if *duplicate { "duplicate" } else { "new" }
            ),
            Self::Err {
                number,
                name,
                retry_after_s,
                message,
            } => {
                let mut line = format!("ERR {number} {name}");
                if let Some(s) = retry_after_s {
                    line.push_str(&format!(" retry={s}"));
                }
                let clean: String = message
                    .chars()
                    .map(|c| if (' '..='~').contains(&c) { c } else { '?' })
                    .collect();
                if !clean.is_empty() {
                    line.push(' ');
                    line.push_str(&clean);
                }
                line.truncate(MAX_LINE - 1);
                line.push('\n');
                line
            }
        }
    }

    /// # Errors
    /// `None` for a line that is not a reply of this protocol.
    pub fn parse(line: &str) -> Option<Self> {
        let mut words = line.splitn(2, ' ');
        let verb = words.next()?;
        let rest = words.next().unwrap_or("");
        match verb {
            "OK" if rest.is_empty() => Some(Self::Ok),
            "PORT" => {
                let (port, ticket) = rest.split_once(' ')?;
                Some(Self::Port {
                    port: port.parse().ok()?,
                    ticket: ticket.to_owned(),
                })
            }
            "ACK" => {
                let (id, kind) = rest.split_once(' ')?;
                let duplicate = match kind {
                    "new" => false,
                    "duplicate" => true,
                    _ => return None,
                };
                Some(Self::Ack {
                    sample_id: id.to_owned(),
                    duplicate,
                })
            }
            "ERR" => {
                let mut parts = rest.splitn(3, ' ');
                let number = parts.next()?.parse().ok()?;
                let name = parts.next()?.to_owned();
                let mut message = parts.next().unwrap_or("");
                let mut retry_after_s = None;
                if let Some(after) = message.strip_prefix("retry=") {
                    let (n, m) = after.split_once(' ').unwrap_or((after, ""));
                    retry_after_s = Some(n.parse().ok()?);
                    message = m;
                }
                Some(Self::Err {
                    number,
                    name,
                    retry_after_s,
                    message: message.to_owned(),
                })
            }
            _ => None,
        }
    }
}

/// Authorises one upload on one data port: which device, which port, from
/// which address, until when. Signed with a key every replica has, so any
/// replica can check it; used once (the service records its nonce).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    /// The device's IMEI, its 15 digits as a number.
    pub imei: u64,
    pub port: u16,
    pub client: IpAddr,
    pub expires_ms: i64,
    pub nonce: [u8; 16],
}

const TICKET_VERSION: u8 = 1;
const TICKET_BODY: usize = 1 + 8 + 2 + 16 + 8 + 16;
const TAG_LEN: usize = 16;

/// Why a presented ticket is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TicketError {
    #[error("the ticket is not one this service signed")]
    Invalid,
    #[error("the ticket has expired; ask the control port for a new port")]
    Expired,
    #[error("the ticket was given to another address")]
    WrongAddress,
    #[error("the ticket is for another port")]
    WrongPort,
}

impl TicketError {
    pub fn code(self) -> Code {
        match self {
            Self::Invalid | Self::WrongPort => Code::TicketInvalid,
            Self::Expired => Code::TicketExpired,
            Self::WrongAddress => Code::TicketWrongAddress,
        }
    }
}

fn tag(key: &[u8; 32], body: &[u8]) -> [u8; TAG_LEN] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(b"hendu v1 ticket");
    mac.update(body);
    let full = mac.finalize().into_bytes();
    std::array::from_fn(|i| full[i])
}

fn v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

impl Ticket {
    /// The ticket as sent: base64url (no padding) of its fields and a
    /// 128-bit HMAC-SHA-256 tag under `key`; 90 characters.
    pub fn seal(&self, key: &[u8; 32]) -> String {
        let mut body = Vec::with_capacity(TICKET_BODY + TAG_LEN);
        body.push(TICKET_VERSION);
        body.extend_from_slice(&self.imei.to_le_bytes());
        body.extend_from_slice(&self.port.to_le_bytes());
        body.extend_from_slice(&v6(self.client).octets());
        body.extend_from_slice(&self.expires_ms.to_le_bytes());
        body.extend_from_slice(&self.nonce);
        let t = tag(key, &body);
        body.extend_from_slice(&t);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(body)
    }

    /// The ticket in `sealed`, if `key` signed it.
    ///
    /// # Errors
    /// [`TicketError::Invalid`].
    pub fn open(key: &[u8; 32], sealed: &str) -> Result<Self, TicketError> {
        if sealed.len() > 128 {
            return Err(TicketError::Invalid);
        }
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(sealed)
            .map_err(|_| TicketError::Invalid)?;
        if bytes.len() != TICKET_BODY + TAG_LEN || bytes[0] != TICKET_VERSION {
            return Err(TicketError::Invalid);
        }
        let (body, presented) = bytes.split_at(TICKET_BODY);
        if !bool::from(tag(key, body).ct_eq(presented)) {
            return Err(TicketError::Invalid);
        }
        let at = |i: usize, n: usize| &body[i..i + n];
        let mut ip = [0u8; 16];
        ip.copy_from_slice(at(11, 16));
        let ip = Ipv6Addr::from(ip);
        let mut nonce = [0u8; 16];
        nonce.copy_from_slice(at(35, 16));
        Ok(Self {
            imei: u64::from_le_bytes(at(1, 8).try_into().map_err(|_| TicketError::Invalid)?),
            port: u16::from_le_bytes([body[9], body[10]]),
            client: ip.to_ipv4_mapped().map_or(IpAddr::V6(ip), IpAddr::V4),
            expires_ms: i64::from_le_bytes(at(27, 8).try_into().map_err(|_| TicketError::Invalid)?),
            nonce,
        })
    }

    /// Whether this ticket may be used now, on `port`, from `client`.
    ///
    /// # Errors
    /// [`TicketError`] saying which condition fails.
    pub fn check(&self, now_ms: i64, port: u16, client: IpAddr) -> Result<(), TicketError> {
        if self.port != port {
            return Err(TicketError::WrongPort);
        }
        if v6(self.client) != v6(client) {
            return Err(TicketError::WrongAddress);
        }
        if now_ms > self.expires_ms {
            return Err(TicketError::Expired);
        }
        Ok(())
    }

    /// The nonce as text (the name of its one-use record).
    pub fn nonce_hex(&self) -> String {
        self.nonce.iter().map(|b| format!("{b:02x}")).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn lines_are_bounded_and_text() {
        assert_eq!(take_line(b"PORT\r\nHELLO"), Ok(Some(("PORT", 6))));
        assert_eq!(take_line(b"PORT"), Ok(None));
        assert_eq!(take_line(&[b'A'; MAX_LINE]), Err(LineError::TooLong));
        assert_eq!(take_line(b"PO\x00RT\n"), Err(LineError::NotText));
    }

    #[test]
    fn requests_and_replies_round_trip() {
        for r in [
            Request::Hello {
                imei: "490154203237518".into(),
                secret: "ab".repeat(32),
            },
            Request::Port,
            Request::Sample {
                ticket: "t".into(),
                payload: Payload::Audio {
                    captured_at_ms: 1_796_000_000_000,
                },
                length: 5,
            },
            Request::Sample {
                ticket: "t".into(),
                payload: Payload::Fingerprint,
                length: 5,
            },
        ] {
            let line = r.line();
            assert_eq!(Request::parse(line.trim_end()), Some(r));
        }
        assert_eq!(Request::parse("SAMPLE t AUDIO x 5"), None);
        for r in [
            Reply::Ok,
            Reply::Port {
                port: 7100,
                ticket: "abc".into(),
            },
            Reply::Ack {
                sample_id: "d1-5".into(),
                duplicate: true,
            },
            Reply::error(Code::PortsExhausted, Some(5), "every data port is in use"),
            Reply::error(
                Code::Refused,
                None,
                "unknown device, disabled device or wrong secret",
            ),
        ] {
            let line = r.line();
            assert_eq!(Reply::parse(line.trim_end()), Some(r));
        }
        let long = Reply::error(Code::Internal, None, &"é".repeat(600)).line();
        assert!(long.len() <= MAX_LINE && long.ends_with('\n'));
    }

    #[test]
    fn tickets_hold_only_for_their_port_address_and_time() {
        let key = [3u8; 32];
        let t = Ticket {
            imei: 490_154_203_237_518,
            port: 7100,
            client: "192.0.2.7".parse().unwrap(),
            expires_ms: 1000,
            nonce: [9; 16],
        };
        let sealed = t.seal(&key);
        assert_eq!(sealed.len(), 90);
        let opened = Ticket::open(&key, &sealed).unwrap();
        assert_eq!(opened, t);
        assert_eq!(Ticket::open(&[4; 32], &sealed), Err(TicketError::Invalid));
        let mut forged = sealed.clone().into_bytes();
        forged[20] = if forged[20] == b'A' { b'B' } else { b'A' };
        assert_eq!(
            Ticket::open(&key, std::str::from_utf8(&forged).unwrap()),
            Err(TicketError::Invalid)
        );
        let ip = t.client;
        assert_eq!(opened.check(999, 7100, ip), Ok(()));
        assert_eq!(opened.check(1001, 7100, ip), Err(TicketError::Expired));
        assert_eq!(opened.check(999, 7101, ip), Err(TicketError::WrongPort));
        assert_eq!(
            opened.check(999, 7100, "192.0.2.8".parse().unwrap()),
            Err(TicketError::WrongAddress)
        );
        assert_eq!(
            opened.check(999, 7100, "::ffff:192.0.2.7".parse().unwrap()),
            Ok(())
        );
    }

    proptest! {
        #[test]
        fn any_bytes_give_a_line_or_an_error(bytes in prop::collection::vec(any::<u8>(), 0..1200)) {
            if let Ok(Some((line, used))) = take_line(&bytes) {
                prop_assert!(used <= MAX_LINE);
                let _ = Request::parse(line);
                let _ = Reply::parse(line);
            }
        }

        #[test]
        fn any_text_opens_to_a_ticket_or_invalid(s in "[A-Za-z0-9_-]{0,130}") {
            prop_assert!(Ticket::open(&[1; 32], &s).is_err());
        }
    }
}
