//! The sensor protocol's decoders on arbitrary bytes, as a server meets
//! them: a v2 stream cut into reads at the places the input says, every
//! frame parsed as a device's message; and the same bytes as v1 lines,
//! requests and tickets. Nothing panics, no frame is taken over the
//! maximum, and every frame accepted re-encodes to the bytes it came from.

#![no_main]

use hendu_sensor_protocol::frame::{self, Decoder, Frame};
use hendu_sensor_protocol::v1::{self, Reply, Request, Ticket};
use hendu_sensor_protocol::v2::{Client, Server};
use libfuzzer_sys::fuzz_target;

const MAX_FRAME: u32 = 4096;

fuzz_target!(|data: &[u8]| {
    // The first byte chooses the read size: any split must give the same frames.
    let Some((&cut, stream)) = data.split_first() else {
        return;
    };
    let cut = usize::from(cut).max(1);
    let mut whole = Vec::new();
    let mut at = 0;
    while let Ok(Some((f, used))) = frame::decode(&stream[at..], MAX_FRAME) {
        assert!(used <= MAX_FRAME as usize);
        assert_eq!(f.encode(), stream[at..at + used]);
        at += used;
        whole.push(f);
    }
    let mut decoder = Decoder::new(MAX_FRAME);
    let mut split: Vec<Frame> = Vec::new();
    'reads: for piece in stream.chunks(cut) {
        decoder.push(piece);
        loop {
            match decoder.next_frame() {
                Ok(Some(f)) => split.push(f),
                Ok(None) => break,
                Err(_) => break 'reads,
            }
        }
    }
    assert_eq!(split, whole);
    for f in whole {
        let _ = Server::parse(&f);
        if let Ok(message) = Client::parse(f.clone()) {
            assert_eq!(message.to_frame(f.seq), f);
        }
    }
    // The same bytes as v1.
    let mut rest = stream;
    while let Ok(Some((line, used))) = v1::take_line(rest) {
        assert!(used <= v1::MAX_LINE);
        if let Some(request) = Request::parse(line) {
            if let Request::Sample { ticket, .. } = &request {
                let _ = Ticket::open(&[7; 32], ticket);
            }
        }
        let _ = Reply::parse(line);
        rest = &rest[used..];
    }
});
