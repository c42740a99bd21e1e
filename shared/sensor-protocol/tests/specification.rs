//! The examples of `docs/sensor-protocol.md` are what this crate sends and
//! accepts: every hex dump and every v1 exchange in the document is made
//! here from the inputs the document states, and compared byte for byte.
//!
//! To print the examples (when a message changes, to update the document):
//! `HENDU_PRINT_EXAMPLES=1 cargo test -p hendu-sensor-protocol --test specification -- --nocapture`

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use hendu_fingerprint::Peak;
use hendu_fingerprint::wire::SampleFingerprint;
use hendu_sensor_protocol::Code;
use hendu_sensor_protocol::login;
use hendu_sensor_protocol::v1::{Payload, Reply, Request, Ticket};
use hendu_sensor_protocol::v2::{Client, Server};

const IMEI: &str = "490154203237518";
const SECRET: &str = "8c1f0e3a9b2d4c5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6";
const SERVER_NONCE: [u8; 16] = [
    0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff,
];
const CLIENT_NONCE: [u8; 16] = [
    0x0f, 0x1e, 0x2d, 0x3c, 0x4b, 0x5a, 0x69, 0x78, 0x87, 0x96, 0xa5, 0xb4, 0xc3, 0xd2, 0xe1, 0xf0,
];
const CAPTURED_AT_MS: i64 = 1_796_000_000_000;

fn fingerprint() -> Vec<u8> {
    SampleFingerprint {
        captured_at_ms: CAPTURED_AT_MS,
        duration_ms: 30_000,
        peaks: vec![
            Peak {
                frame: 4,
                bin: 51.5,
            },
            Peak {
                frame: 9,
                bin: 120.25,
            },
        ],
        sparse: Vec::new(),
    }
    .encode()
}

/// Every binary example, by its name in the document.
fn binary() -> BTreeMap<&'static str, Vec<u8>> {
    let proof = login::proof(SECRET, IMEI, &SERVER_NONCE, &CLIENT_NONCE);
    let ticket = ticket();
    BTreeMap::from([
        ("client-key", login::client_key(SECRET).to_vec()),
        ("stored-key", login::stored_key(SECRET).to_vec()),
        ("proof", proof.to_vec()),
        (
            "hello",
            Client::Hello {
                imei: IMEI.into(),
                firmware: "fw 1.0".into(),
            }
            .to_frame(1)
            .encode(),
        ),
        (
            "challenge",
            Server::Challenge {
                server_nonce: SERVER_NONCE,
            }
            .to_frame(1)
            .encode(),
        ),
        (
            "login",
            Client::Login {
                client_nonce: CLIENT_NONCE,
                proof,
            }
            .to_frame(2)
            .encode(),
        ),
        (
            "welcome",
            Server::Welcome {
                server_time_ms: CAPTURED_AT_MS + 30_000,
                heartbeat_s: 30,
                idle_timeout_s: 90,
                max_frame: 16_000_064,
            }
            .to_frame(2)
            .encode(),
        ),
        ("fingerprint", fingerprint()),
        (
            "sample-fingerprint",
            Client::SampleFingerprint(fingerprint())
                .to_frame(3)
                .encode(),
        ),
        (
            "ack",
            Server::Ack {
                duplicate: false,
                sample_id: format!("device-17-{CAPTURED_AT_MS}"),
            }
            .to_frame(3)
            .encode(),
        ),
        (
            "sample-audio-head",
            Client::SampleAudio {
                captured_at_ms: CAPTURED_AT_MS,
                audio: b"RIFF".to_vec(),
            }
            .to_frame(4)
            .encode(),
        ),
        (
            "ack-duplicate",
            Server::Ack {
                duplicate: true,
                sample_id: format!("device-17-{CAPTURED_AT_MS}"),
            }
            .to_frame(4)
            .encode(),
        ),
        ("ping", Client::Ping(Vec::new()).to_frame(5).encode()),
        ("pong", Server::Pong(Vec::new()).to_frame(5).encode()),
        (
            "error-sample",
            Server::error(Code::CaptureTimeInFuture, 0, "check the device's clock")
                .to_frame(6)
                .encode(),
        ),
        (
            "error-idle",
            Server::error(Code::IdleTimeout, 0, "send PING")
                .to_frame(0)
                .encode(),
        ),
        ("bye", Client::Bye.to_frame(7).encode()),
        ("ticket", ticket_bytes(&ticket)),
    ])
}

fn ticket() -> Ticket {
    Ticket {
        imei: IMEI.parse().unwrap(),
        port: 7142,
        client: "198.51.100.23".parse().unwrap(),
        expires_ms: CAPTURED_AT_MS + 30_000,
        nonce: CLIENT_NONCE,
    }
}

fn ticket_bytes(t: &Ticket) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(t.seal(&[0x42; 32]))
        .unwrap()
}

/// Every v1 exchange, by its name in the document.
fn text() -> BTreeMap<&'static str, String> {
    let sealed = ticket().seal(&[0x42; 32]);
    let v1 = [
        Request::Hello {
            imei: IMEI.into(),
            secret: SECRET.into(),
        }
        .line(),
        Reply::Ok.line(),
        Request::Port.line(),
        Reply::Port {
            port: 7142,
            ticket: sealed.clone(),
        }
        .line(),
    ]
    .concat();
    let upload = [
        Request::Sample {
            ticket: sealed,
            payload: Payload::Audio {
                captured_at_ms: CAPTURED_AT_MS,
            },
            length: 960_044,
        }
        .line(),
        "<960044 bytes of WAV>\n".to_owned(),
        Reply::Ack {
            sample_id: format!("device-17-{CAPTURED_AT_MS}"),
            duplicate: false,
        }
        .line(),
    ]
    .concat();
    BTreeMap::from([
        ("v1-control", v1),
        ("v1-upload", upload),
        (
            "v1-refused",
            Reply::error(
                Code::Refused,
                None,
                "unknown device, disabled device or wrong secret",
            )
            .line(),
        ),
        (
            "v1-exhausted",
            Reply::error(
                Code::PortsExhausted,
                Some(30),
                "every data port is given to a device; retry in 30 s",
            )
            .line(),
        ),
    ])
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .chunks(16)
        .map(|row| {
            row.iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The document's fenced blocks whose info string is `<kind> <name>`.
fn blocks(doc: &str, kind: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut lines = doc.lines();
    while let Some(line) = lines.next() {
        let Some(info) = line.trim().strip_prefix("```") else {
            continue;
        };
        let mut words = info.split_whitespace();
        let (Some(k), Some(name)) = (words.next(), words.next()) else {
            // Skip to the end of an unnamed block.
            for l in lines.by_ref() {
                if l.trim().starts_with("```") {
                    break;
                }
            }
            continue;
        };
        let mut body = String::new();
        for l in lines.by_ref() {
            if l.trim().starts_with("```") {
                break;
            }
            body.push_str(l);
            body.push('\n');
        }
        if k == kind {
            out.insert(name.to_owned(), body);
        }
    }
    out
}

fn parse_hex(block: &str) -> Vec<u8> {
    block
        .lines()
        // A row may end with a comment after `|`.
        .map(|l| l.split('|').next().unwrap_or(""))
        .flat_map(str::split_whitespace)
        .map(|b| u8::from_str_radix(b, 16).unwrap_or_else(|_| panic!("{b:?} is not a hex byte")))
        .collect()
}

#[test]
fn the_documents_examples_are_what_the_code_sends() {
    let binary = binary();
    let text = text();
    if std::env::var_os("HENDU_PRINT_EXAMPLES").is_some() {
        for (name, bytes) in &binary {
            println!("```hex {name}\n{}\n```\n", hex(bytes));
        }
        for (name, lines) in &text {
            println!("```v1 {name}\n{lines}```\n");
        }
    }
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/sensor-protocol.md"
    ))
    .unwrap();
    let dumps = blocks(&doc, "hex");
    let exchanges = blocks(&doc, "v1");
    for (name, bytes) in &binary {
        let dump = dumps
            .get(*name)
            .unwrap_or_else(|| panic!("the document has no hex example {name:?}"));
        assert_eq!(hex(&parse_hex(dump)), hex(bytes), "example {name:?}");
    }
    for (name, lines) in &text {
        let shown = exchanges
            .get(*name)
            .unwrap_or_else(|| panic!("the document has no v1 example {name:?}"));
        assert_eq!(shown, lines, "example {name:?}");
    }
    for name in dumps.keys() {
        assert!(
            binary.contains_key(name.as_str()),
            "hex example {name:?} is checked by nothing"
        );
    }
    for name in exchanges.keys() {
        assert!(
            text.contains_key(name.as_str()),
            "v1 example {name:?} is checked by nothing"
        );
    }
    // Every code is in the document's table.
    for code in Code::all() {
        let row = format!("| {} | `{}` |", code.number(), code.name());
        assert!(doc.contains(&row), "the table of codes lacks {row}");
    }
}
