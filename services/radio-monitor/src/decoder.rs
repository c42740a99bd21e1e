//! The decoding side of a connection, on its own thread: bytes from the
//! network in, samples and levels out.
//!
//! Symphonia pulls bytes through `Read`; the network pushes them. A bounded
//! channel joins the two: the connection's task sends what it reads, this
//! thread blocks for the next chunk. When the task drops its sender (the
//! station stops, the stream ends) the decoder sees the end of the stream.

use std::io::Read;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use hendu_fingerprint::{AudioReader, DecodeError, DecodeLimits};
use symphonia::core::io::ReadOnlySource;
use time::OffsetDateTime;
use tokio::sync::mpsc;

use crate::cutter::{Cutter, Output};

/// What the connection sends the decoder, in stream order.
#[derive(Debug)]
pub enum Feed {
    Audio(Bytes),
    /// The stream's title changed (ICY `StreamTitle`) at this point.
    Title(String),
}

/// Counters the connection's task reads while the thread decodes.
#[derive(Debug, Default)]
pub struct Progress {
    /// Corrupt packets skipped.
    pub skipped: AtomicU64,
}

/// How decoding ended.
#[derive(Debug)]
pub enum Ended {
    /// The bytes stopped (the connection closed, or the station stopped).
    EndOfStream,
    /// The bytes are not audio this build decodes.
    Unsupported(String),
    /// The stream changed its rate or channels, or was damaged beyond skipping.
    Failed(String),
}

/// A sample with the title the stream had when it was cut.
#[derive(Debug)]
pub struct Heard {
    pub output: Output,
    pub title: Option<String>,
}

/// `Read` over the channel; titles are noted as they pass.
struct FeedReader {
    feed: mpsc::Receiver<Feed>,
    buffer: Bytes,
    title: Arc<Mutex<Option<String>>>,
}

impl Read for FeedReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.buffer.is_empty() {
            match self.feed.blocking_recv() {
                Some(Feed::Audio(bytes)) => self.buffer = bytes,
                Some(Feed::Title(t)) => {
                    *self.title.lock().unwrap_or_else(|e| e.into_inner()) = Some(t);
                }
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.buffer.len());
        buf[..n].copy_from_slice(&self.buffer.split_to(n));
        Ok(n)
    }
}

/// Decodes until the feed ends, cutting samples; runs on the calling
/// (dedicated) thread. `hint` is a file extension for the prober.
pub fn decode(
    feed: mpsc::Receiver<Feed>,
    hint: Option<&str>,
    mut cutter: Cutter,
    out: &mpsc::UnboundedSender<Heard>,
    progress: &Progress,
    cancel: Arc<AtomicBool>,
) -> Ended {
    let title = Arc::new(Mutex::new(None));
    let reader = FeedReader {
        feed,
        buffer: Bytes::new(),
        title: title.clone(),
    };
    let source = Box::new(ReadOnlySource::new(reader));
    // A live stream has no length: only the rate and channel limits apply.
    let mut audio =
        match AudioReader::from_source_with(source, hint, DecodeLimits::new(f64::INFINITY)) {
            Ok(a) => a,
            Err(DecodeError::Unsupported(what)) => return Ended::Unsupported(what),
            Err(DecodeError::Io(_)) => return Ended::EndOfStream,
            Err(e) => return Ended::Failed(e.to_string()),
        };
    audio.cancel_when(cancel);
    let mut outputs = Vec::new();
    loop {
        let chunk = match audio.next_chunk() {
            Ok(Some(c)) => c,
            Err(DecodeError::Cancelled) => return Ended::EndOfStream,
            Ok(None) | Err(DecodeError::Io(_)) => {
                // The bytes ended: what was heard since the last sample may
                // still be one.
                cutter.end(&mut outputs);
                send(&mut outputs, &title, out);
                return Ended::EndOfStream;
            }
            Err(DecodeError::Unsupported(what)) => return Ended::Unsupported(what),
            Err(e) => return Ended::Failed(e.to_string()),
        };
        cutter.push(
            chunk.samples,
            chunk.sample_rate,
            OffsetDateTime::now_utc(),
            &mut outputs,
        );
        progress
            .skipped
            .store(audio.skipped_packets(), Ordering::Relaxed);
        if !send(&mut outputs, &title, out) {
            // Nobody listens for samples any more.
            return Ended::EndOfStream;
        }
    }
}

/// Sends `outputs` with the current title; false if nobody listens.
fn send(
    outputs: &mut Vec<Output>,
    title: &Mutex<Option<String>>,
    out: &mpsc::UnboundedSender<Heard>,
) -> bool {
    for output in outputs.drain(..) {
        let title = title.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if out.send(Heard { output, title }).is_err() {
            return false;
        }
    }
    true
}
