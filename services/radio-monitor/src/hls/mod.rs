//! HTTP Live Streaming: a playlist of short segments that a live station
//! keeps extending (a sliding window), instead of one endless response.
//!
//! Opening reads the playlist (a master playlist leads to an audio
//! rendition, or to the variant with the lowest bandwidth: the fingerprint
//! needs no more), starts two segments from the live edge, and fetches the
//! first segment to learn the codec. A task then follows the window: it
//! fetches each new segment in order, turns it into the elementary audio
//! stream (MPEG-TS demultiplexed, fMP4 samples framed as ADTS, packed audio
//! stripped of its ID3 tag) and hands the bytes on like any stream's. A
//! window that moved past the next segment (the monitor fell behind), a
//! playlist that stops growing, a discontinuity (the codec may change) or
//! a segment that cannot be fetched end the connection with the reason,
//! so the listener reconnects and records the gap.
//!
//! Memory per station: one segment at a time (at most [`MAX_SEGMENT`]).

pub mod bits;
pub mod fmp4;
pub mod ts;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc;
use url::Url;

use crate::http::{self, ByteStream, OpenError};

/// Largest segment read (six seconds of audio are about 100 KB; a video
/// variant's segment a few MB).
pub const MAX_SEGMENT: usize = 8 * 1024 * 1024;
/// Largest init segment read.
const MAX_INIT: usize = 1024 * 1024;
/// Most playlists followed from a master playlist to a media playlist.
const MAX_DEPTH: usize = 3;
/// Segments from the live edge where listening starts.
const START_BACK: usize = 2;
/// Segments fetched ahead of the decoder.
const AHEAD: usize = 2;

/// Where a station's last connection to an HLS window stopped: the media
/// playlist and the sequence number of the next segment it had not played.
/// A station keeps it across connections, so that a reconnection goes on
/// from there instead of playing the window's last segments again, and a
/// window that has not moved since is a failure, not audio.
#[derive(Debug, Clone, Default)]
pub struct Resume(Arc<Mutex<Option<(Url, u64)>>>);

impl Resume {
    fn get(&self) -> Option<(Url, u64)> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set(&self, playlist: &Url, next: u64) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some((playlist.clone(), next));
    }
}

/// One entry of a media playlist.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    pub url: Url,
    pub duration: f64,
    /// `#EXT-X-DISCONTINUITY` before this segment.
    pub discontinuity: bool,
}

/// A media playlist: the current window.
#[derive(Debug, Clone, PartialEq)]
pub struct Media {
    pub target: Duration,
    /// The first segment's sequence number.
    pub sequence: u64,
    pub segments: Vec<Segment>,
    /// The fMP4 init segment (`#EXT-X-MAP`).
    pub map: Option<Url>,
    /// `#EXT-X-ENDLIST`: no segment will be added.
    pub ended: bool,
    /// The encryption method, when not `NONE`.
    pub key: Option<String>,
}

/// An HLS playlist.
#[derive(Debug, Clone, PartialEq)]
pub enum Playlist {
    /// A master playlist: the playlists to try, best first.
    Master(Vec<Url>),
    Media(Media),
}

/// Whether a playlist's text is HLS rather than a list of stream URLs.
pub fn is_hls(body: &str) -> bool {
    body.lines().any(|l| {
        let l = l.trim();
        l.starts_with("#EXT-X-TARGETDURATION")
            || l.starts_with("#EXT-X-STREAM-INF")
            || l.starts_with("#EXT-X-MEDIA-SEQUENCE")
    })
}

/// The attributes of a tag (`KEY=value,KEY="quoted, value"`).
fn attributes(list: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = list.trim();
    while !rest.is_empty() {
        let Some((key, after)) = rest.split_once('=') else {
            break;
        };
        let (value, after) = if let Some(quoted) = after.strip_prefix('"') {
            match quoted.split_once('"') {
                Some((v, a)) => (v, a),
                None => (quoted, ""),
            }
        } else {
            after.split_once(',').map_or((after, ""), |(v, a)| (v, a))
        };
        out.push((key.trim().to_ascii_uppercase(), value.to_owned()));
        rest = after.trim_start_matches(',').trim_start();
    }
    out
}

fn attribute<'a>(attrs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    attrs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// Parses an HLS playlist, resolving its URLs against `base`.
///
/// # Errors
/// A playlist with neither segments nor variants, named.
pub fn parse(body: &str, base: &Url) -> Result<Playlist, String> {
    let body = body.trim_start_matches('\u{feff}');
    let mut variants: Vec<(u64, Url)> = Vec::new();
    let mut renditions: Vec<(bool, Url)> = Vec::new();
    let mut media = Media {
        target: Duration::from_secs(6),
        sequence: 0,
        segments: Vec::new(),
        map: None,
        ended: false,
        key: None,
    };
    let mut pending_variant: Option<u64> = None;
    let mut pending_duration: Option<f64> = None;
    let mut discontinuity = false;
    for line in body.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some(tag) = line.strip_prefix('#') {
            let (name, value) = tag.split_once(':').unwrap_or((tag, ""));
            match name {
                "EXT-X-STREAM-INF" => {
                    let attrs = attributes(value);
                    pending_variant = Some(
                        attribute(&attrs, "BANDWIDTH")
                            .and_then(|b| b.parse().ok())
                            .unwrap_or(u64::MAX),
                    );
                }
                "EXT-X-MEDIA" => {
                    let attrs = attributes(value);
                    if attribute(&attrs, "TYPE") == Some("AUDIO")
                        && let Some(uri) = attribute(&attrs, "URI")
                        && let Ok(url) = base.join(uri)
                    {
                        renditions.push((attribute(&attrs, "DEFAULT") == Some("YES"), url));
                    }
                }
                "EXT-X-TARGETDURATION" => {
                    if let Ok(s) = value.trim().parse::<f64>()
                        && s.is_finite()
                        && s > 0.0
                    {
                        media.target = Duration::from_secs_f64(s.min(600.0));
                    }
                }
                "EXT-X-MEDIA-SEQUENCE" => media.sequence = value.trim().parse().unwrap_or(0),
                "EXTINF" => {
                    let seconds = value.split(',').next().unwrap_or("").trim();
                    pending_duration = Some(seconds.parse().unwrap_or(0.0));
                }
                "EXT-X-DISCONTINUITY" => discontinuity = true,
                "EXT-X-ENDLIST" => media.ended = true,
                "EXT-X-MAP" => {
                    let attrs = attributes(value);
                    media.map = attribute(&attrs, "URI").and_then(|u| base.join(u).ok());
                }
                "EXT-X-KEY" => {
                    let attrs = attributes(value);
                    media.key = attribute(&attrs, "METHOD")
                        .filter(|m| *m != "NONE")
                        .map(str::to_owned);
                }
                _ => {}
            }
            continue;
        }
        let Ok(url) = base.join(line) else {
            continue;
        };
        if let Some(bandwidth) = pending_variant.take() {
            variants.push((bandwidth, url));
        } else if let Some(duration) = pending_duration.take() {
            media.segments.push(Segment {
                url,
                duration,
                discontinuity: std::mem::take(&mut discontinuity),
            });
        }
    }
    if !variants.is_empty() || !renditions.is_empty() {
        renditions.sort_by_key(|(default, _)| !default);
        variants.sort_by_key(|(bandwidth, _)| *bandwidth);
        let urls = renditions
            .into_iter()
            .map(|(_, u)| u)
            .chain(variants.into_iter().map(|(_, u)| u))
            .collect();
        return Ok(Playlist::Master(urls));
    }
    if media.segments.is_empty() && !media.ended {
        return Err("the HLS playlist lists no segment".into());
    }
    Ok(Playlist::Media(media))
}

/// How a segment's bytes become the audio stream.
#[derive(Debug)]
enum Unpack {
    Ts(ts::TsDemuxer),
    Fmp4(fmp4::Track),
    /// Packed audio (`.aac`, `.mp3` segments): an ID3 tag, then frames.
    Packed,
}

impl Unpack {
    fn unpack(&mut self, segment: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
        match self {
            Unpack::Ts(demux) => {
                demux.segment_boundary();
                demux.push(segment, out).map_err(|e| e.to_string())
            }
            Unpack::Fmp4(track) => fmp4::fragment(segment, track, out).map_err(|e| e.to_string()),
            Unpack::Packed => {
                out.extend_from_slice(&segment[id3_length(segment)..]);
                Ok(())
            }
        }
    }
}

/// The length of an ID3v2 tag at the start of `data` (0 without one).
fn id3_length(data: &[u8]) -> usize {
    if data.len() >= 10 && &data[..3] == b"ID3" {
        let size = data[6..10]
            .iter()
            .fold(0usize, |n, &b| (n << 7) | usize::from(b & 0x7f));
        let footer = if data[5] & 0x10 != 0 { 10 } else { 0 };
        (10 + size + footer).min(data.len())
    } else {
        0
    }
}

/// An opened HLS station.
pub struct Opened {
    pub body: ByteStream,
    /// A file extension for the prober.
    pub hint: &'static str,
    /// What the station's status shows as its codec.
    pub codec: String,
    /// How long the connection may go without bytes: segments come in
    /// bursts, one per target duration.
    pub patience: Duration,
}

impl std::fmt::Debug for Opened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opened")
            .field("codec", &self.codec)
            .field("patience", &self.patience)
            .finish_non_exhaustive()
    }
}

async fn fetch(
    client: &reqwest::Client,
    url: &Url,
    limit: usize,
    timeout: Duration,
) -> Result<Vec<u8>, OpenError> {
    let response = http::fetch(client, url, timeout).await?;
    http::read_limited(response, limit, timeout).await
}

/// Follows `body` (the text at `url`) to a media playlist and starts
/// listening at its live edge, or where `resume` says the last connection
/// stopped if that is still in the window and later.
///
/// # Errors
/// As opening any stream: refusals, failures (a window with no segment
/// after the last one played among them), and forms this build does not
/// decode (encrypted segments, codecs other than AAC and MP3).
pub async fn open(
    client: &reqwest::Client,
    mut url: Url,
    mut body: String,
    stall: Duration,
    resume: &Resume,
) -> Result<Opened, OpenError> {
    let timeout = stall;
    let mut media = None;
    for _ in 0..=MAX_DEPTH {
        match parse(&body, &url).map_err(OpenError::Failed)? {
            Playlist::Media(m) => {
                media = Some(m);
                break;
            }
            Playlist::Master(urls) => {
                url = urls[0].clone();
                let text = fetch(client, &url, crate::playlist::MAX_PLAYLIST, timeout).await?;
                body = String::from_utf8_lossy(&text).into_owned();
            }
        }
    }
    let media = media.ok_or_else(|| {
        OpenError::Failed(format!(
            "more than {MAX_DEPTH} HLS playlists before the segments"
        ))
    })?;
    if let Some(method) = &media.key {
        return Err(OpenError::Unsupported(format!("encrypted HLS ({method})")));
    }
    let Some(last) = media.segments.len().checked_sub(1) else {
        return Err(OpenError::Failed("the HLS playlist has ended".into()));
    };
    let first_index = match resume.get() {
        Some((played, next)) if played == url => resume_index(&media, next)?,
        _ => None,
    }
    .unwrap_or(last.saturating_sub(START_BACK - 1));
    let first = &media.segments[first_index];
    let bytes = fetch(client, &first.url, MAX_SEGMENT, timeout).await?;
    let (mut unpack, codec) = if let Some(map) = &media.map {
        let init = fetch(client, map, MAX_INIT, timeout).await?;
        let track = fmp4::init(&init).map_err(|e| match e {
            fmp4::Fmp4Error::Unsupported(what) => OpenError::Unsupported(what),
            malformed => OpenError::Failed(malformed.to_string()),
        })?;
        (Unpack::Fmp4(track), track.codec.hint())
    } else if bytes.first() == Some(&0x47) {
        (Unpack::Ts(ts::TsDemuxer::new()), "")
    } else {
        let audio = &bytes[id3_length(&bytes)..];
        // ADTS frames start FFF1/FFF9; MPEG audio FFE..FFFB otherwise.
        let hint = match audio {
            [0xff, b, ..] if b & 0xf6 == 0xf0 => "aac",
            [0xff, b, ..] if b & 0xe0 == 0xe0 => "mp3",
            _ => {
                return Err(OpenError::Unsupported(
                    "HLS segments that are neither MPEG-TS, fMP4 nor ADTS or MP3 frames".into(),
                ));
            }
        };
        (Unpack::Packed, hint)
    };
    let mut audio = Vec::new();
    unpack.unpack(&bytes, &mut audio).map_err(|e| {
        if e.contains("LATM") || e.contains("AC-3") || e.contains("without audio") {
            OpenError::Unsupported(e)
        } else {
            OpenError::Failed(e)
        }
    })?;
    let (hint, codec) = match &unpack {
        Unpack::Ts(demux) => {
            let audio = demux
                .audio()
                .ok_or_else(|| OpenError::Failed("no program map in the first segment".into()))?;
            (
                audio.hint(),
                format!("HLS, MPEG-TS with {}", describe_hint(audio.hint())),
            )
        }
        Unpack::Fmp4(_) => (codec, format!("HLS, fMP4 with {}", describe_hint(codec))),
        Unpack::Packed => (codec, format!("HLS, packed {}", describe_hint(codec))),
    };
    let patience = stall.max(media.target * 2) + timeout;
    let next = media.sequence + first_index as u64 + 1;
    resume.set(&url, next);
    let (tx, rx) = mpsc::channel(AHEAD);
    let _ = tx.try_send(Ok(Bytes::from(audio)));
    let follower = Follower {
        client: client.clone(),
        url,
        timeout,
        unpack,
        next,
        window: media,
        stall,
        resume: resume.clone(),
    };
    tokio::spawn(follower.run(tx));
    let body: ByteStream = Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }));
    Ok(Opened {
        body,
        hint,
        codec,
        patience,
    })
}

/// Where in `media` a connection that stopped before segment `next` goes
/// on: that segment, or the usual start if it is earlier (the window moved
/// past it: a gap) or `next` is not in this window's numbering (the
/// playlist started again); an error if the window ends just before it
/// (nothing new since the last connection).
fn resume_index(media: &Media, next: u64) -> Result<Option<usize>, OpenError> {
    let start = media.segments.len().saturating_sub(START_BACK);
    let end = media.sequence + media.segments.len() as u64;
    if next == end {
        return Err(OpenError::Failed(
            "the HLS playlist has not moved since the last connection".into(),
        ));
    }
    if next < media.sequence || next > end {
        return Ok(None);
    }
    let index = (next - media.sequence) as usize;
    Ok(Some(index.max(start)))
}

fn describe_hint(hint: &str) -> &'static str {
    match hint {
        "aac" => "AAC",
        _ => "MPEG audio",
    }
}

/// The task that follows a live window.
struct Follower {
    client: reqwest::Client,
    url: Url,
    timeout: Duration,
    unpack: Unpack,
    /// The sequence number of the next segment to fetch.
    next: u64,
    window: Media,
    /// A playlist that adds no segment this long (or two target
    /// durations, if longer) has stopped.
    stall: Duration,
    /// Moved on with `next` as segments are handed on.
    resume: Resume,
}

impl Follower {
    async fn run(mut self, tx: mpsc::Sender<Result<Bytes, String>>) {
        if let Err(why) = self.follow(&tx).await {
            let _ = tx.send(Err(why)).await;
        }
    }

    /// Fetches segments until the playlist ends or something breaks.
    async fn follow(&mut self, tx: &mpsc::Sender<Result<Bytes, String>>) -> Result<(), String> {
        let stall = self.stall.max(self.window.target * 2);
        let mut grown = Instant::now();
        loop {
            let first = self.window.sequence;
            if first > self.next {
                return Err(format!(
                    "fell behind the HLS window: {} segments were gone before they were fetched",
                    first - self.next
                ));
            }
            let end = first + self.window.segments.len() as u64;
            if end + 3 < self.next {
                return Err("the HLS playlist started again from an earlier segment".into());
            }
            let fresh: Vec<Segment> = self
                .window
                .segments
                .iter()
                .skip((self.next - first) as usize)
                .cloned()
                .collect();
            if !fresh.is_empty() {
                grown = Instant::now();
            }
            for segment in fresh {
                if segment.discontinuity {
                    return Err("a discontinuity in the HLS stream".into());
                }
                let bytes = fetch(&self.client, &segment.url, MAX_SEGMENT, self.timeout)
                    .await
                    .map_err(|e| format!("an HLS segment: {}", describe(&e)))?;
                let mut audio = Vec::new();
                self.unpack.unpack(&bytes, &mut audio)?;
                drop(bytes);
                if tx.send(Ok(Bytes::from(audio))).await.is_err() {
                    return Ok(());
                }
                self.next += 1;
                self.resume.set(&self.url, self.next);
            }
            if self.window.ended {
                return Ok(());
            }
            if grown.elapsed() >= stall {
                return Err(format!(
                    "the HLS playlist stopped updating ({} s without a new segment)",
                    grown.elapsed().as_secs()
                ));
            }
            let wait =
                (self.window.target / 2).clamp(Duration::from_millis(500), Duration::from_secs(10));
            tokio::select! {
                () = tx.closed() => return Ok(()),
                () = tokio::time::sleep(wait) => {}
            }
            let text = fetch(
                &self.client,
                &self.url,
                crate::playlist::MAX_PLAYLIST,
                self.timeout,
            )
            .await
            .map_err(|e| format!("the HLS playlist: {}", describe(&e)))?;
            match parse(&String::from_utf8_lossy(&text), &self.url)? {
                Playlist::Media(m) => self.window = m,
                Playlist::Master(_) => {
                    return Err("the HLS media playlist became a master playlist".into());
                }
            }
        }
    }
}

fn describe(e: &OpenError) -> String {
    match e {
        OpenError::Refused(code) => format!("the server answered {code}"),
        OpenError::Failed(why) | OpenError::Unsupported(why) => why.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Url {
        Url::parse("https://cdn.example/radio/live/index.m3u8").unwrap()
    }

    #[test]
    fn a_live_media_playlist() {
        let text = "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:4\n#EXT-X-MEDIA-SEQUENCE:1041\n#EXT-X-MAP:URI=\"init.mp4\"\n#EXTINF:4.000,\nseg1041.m4s\n#EXT-X-DISCONTINUITY\n#EXTINF:3.5,\n/abs/seg1042.m4s\n";
        let Playlist::Media(m) = parse(text, &base()).unwrap() else {
            panic!("a media playlist");
        };
        assert_eq!(m.target, Duration::from_secs(4));
        assert_eq!(m.sequence, 1041);
        assert_eq!(
            m.map.unwrap().as_str(),
            "https://cdn.example/radio/live/init.mp4"
        );
        assert_eq!(m.segments.len(), 2);
        assert!(!m.segments[0].discontinuity && m.segments[1].discontinuity);
        assert_eq!(
            m.segments[1].url.as_str(),
            "https://cdn.example/abs/seg1042.m4s"
        );
        assert_eq!(m.segments[1].duration, 3.5);
        assert!(!m.ended && m.key.is_none());
    }

    #[test]
    fn a_reconnection_goes_on_after_the_last_segment_played() {
        // Segments 100 to 104.
        let text = "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:100\n#EXTINF:2,\na.ts\n#EXTINF:2,\nb.ts\n#EXTINF:2,\nc.ts\n#EXTINF:2,\nd.ts\n#EXTINF:2,\ne.ts\n";
        let Playlist::Media(m) = parse(text, &base()).unwrap() else {
            panic!("a media playlist");
        };
        // Near the live edge: from the next segment; further back: from
        // the usual start, two from the edge (the rest is a gap).
        assert_eq!(resume_index(&m, 104).unwrap(), Some(4));
        assert_eq!(resume_index(&m, 103).unwrap(), Some(3));
        assert_eq!(resume_index(&m, 101).unwrap(), Some(3));
        // Moved past the last one played: the usual start.
        assert_eq!(resume_index(&m, 90).unwrap(), None);
        // Nothing after the last one played: a failed connection.
        let Err(OpenError::Failed(why)) = resume_index(&m, 105) else {
            panic!("a window that has not moved is a failure");
        };
        assert!(why.contains("not moved"), "{why}");
        // Numbered from afresh (the encoder restarted): the usual start.
        assert_eq!(resume_index(&m, 5000).unwrap(), None);
    }

    #[test]
    fn a_master_playlist_prefers_the_audio_rendition_then_the_lowest_bandwidth() {
        let text = "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=256000,CODECS=\"mp4a.40.2\"\nhi/index.m3u8\n#EXT-X-STREAM-INF:BANDWIDTH=64000,CODECS=\"mp4a.40.5\"\nlo/index.m3u8\n";
        let Playlist::Master(urls) = parse(text, &base()).unwrap() else {
            panic!("a master playlist");
        };
        assert!(urls[0].as_str().ends_with("/lo/index.m3u8"), "{urls:?}");
        let with_audio = format!(
            "{text}#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"a\",NAME=\"English, main\",DEFAULT=YES,URI=\"audio/en.m3u8\"\n"
        );
        let Playlist::Master(urls) = parse(&with_audio, &base()).unwrap() else {
            panic!("a master playlist");
        };
        assert!(urls[0].as_str().ends_with("/audio/en.m3u8"), "{urls:?}");
    }

    #[test]
    fn keys_endings_and_empty_playlists() {
        let text = "#EXTM3U\n#EXT-X-TARGETDURATION:6\n#EXT-X-KEY:METHOD=AES-128,URI=\"k\"\n#EXTINF:6,\na.ts\n#EXT-X-ENDLIST\n";
        let Playlist::Media(m) = parse(text, &base()).unwrap() else {
            panic!("a media playlist");
        };
        assert_eq!(m.key.as_deref(), Some("AES-128"));
        assert!(m.ended);
        assert!(parse("#EXTM3U\n#EXT-X-TARGETDURATION:6\n", &base()).is_err());
        assert!(is_hls("#EXTM3U\n#EXT-X-TARGETDURATION:6\n"));
        assert!(!is_hls("#EXTM3U\nhttp://a.example/live\n"));
    }

    #[test]
    fn id3_tags_are_skipped() {
        let mut seg = b"ID3\x04\x00\x00\x00\x00\x00\x05hello".to_vec();
        seg.extend_from_slice(&[0xff, 0xf1]);
        assert_eq!(id3_length(&seg), 15);
        assert_eq!(&seg[id3_length(&seg)..], &[0xff, 0xf1]);
        assert_eq!(id3_length(&[0xff, 0xf1]), 0);
    }
}
