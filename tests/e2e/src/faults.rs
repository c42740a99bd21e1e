//! A stream server made for faults: the stations that misbehave the way
//! stations on the internet do, each on its own path, all playing one
//! programme encoded by ffmpeg (MP3 at 128 kbit/s, and AAC in HLS segments,
//! MPEG-TS and fMP4).
//!
//! Every path is live: a connection starts where the programme is now
//! (it loops) and is paced at `speed` times the rate it plays.
//!
//! | path | what it does |
//! | --- | --- |
//! | `/live.mp3` | a well-behaved station |
//! | `/drop.mp3` | breaks each connection mid-frame after [`DROP_AFTER_S`] of audio |
//! | `/eof.mp3` | ends each connection cleanly after [`DROP_AFTER_S`] |
//! | `/stall.mp3` | stops sending after [`STALL_AFTER_S`] and keeps the connection open |
//! | `/garbage.mp3` | overwrites 2 KB of every 32 KB with random bytes |
//! | `/mislabelled` | MP3 served as `text/html` |
//! | `/page.html` | an HTML page, not audio |
//! | `/missing.mp3` | 404 |
//! | `/broken.mp3` | 500 |
//! | `/hls/ts/live.m3u8` | a live HLS window of MPEG-TS segments (ADTS AAC) |
//! | `/hls/fmp4/live.m3u8` | the same in fMP4 segments |
//! | `/hls/stalled/live.m3u8` | a window that stops moving after [`STALLED_AFTER`] segments |

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path as UrlPath, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::radio::{encode_mp3, ffmpeg, station_input};

/// Audio before `/drop.mp3` and `/eof.mp3` end a connection.
pub const DROP_AFTER_S: f64 = 20.0;
/// Audio before `/stall.mp3` stops sending.
pub const STALL_AFTER_S: f64 = 20.0;
/// Segments the stalled HLS window moves before it stops.
pub const STALLED_AFTER: u64 = 8;
/// Segments in an HLS window.
const WINDOW: u64 = 5;
/// The MP3's bit rate.
const MP3_BYTES_PER_S: f64 = 16_000.0;

#[derive(Debug)]
struct Hls {
    dir: PathBuf,
    /// File name and duration of each segment.
    segments: Vec<(String, f64)>,
    init: Option<String>,
    target: u64,
}

#[derive(Debug)]
struct Programme {
    mp3: Bytes,
    ts: Hls,
    fmp4: Hls,
    speed: f64,
    t0: Instant,
}

/// The fault server, stopped when dropped.
#[derive(Debug)]
pub struct FaultServer {
    pub base: String,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Drop for FaultServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Segments of an HLS playlist ffmpeg wrote (a whole-file one).
fn read_hls(dir: &Path) -> Result<Hls> {
    let text = std::fs::read_to_string(dir.join("index.m3u8"))?;
    let mut segments = Vec::new();
    let mut init = None;
    let mut duration = None;
    for line in text.lines() {
        if let Some(d) = line.strip_prefix("#EXTINF:") {
            duration = d.split(',').next().and_then(|d| d.parse::<f64>().ok());
        } else if let Some(map) = line.strip_prefix("#EXT-X-MAP:URI=") {
            init = Some(map.trim_matches('"').to_owned());
        } else if !line.starts_with('#') && !line.is_empty() {
            segments.push((line.to_owned(), duration.take().unwrap_or(2.0)));
        }
    }
    if segments.is_empty() {
        bail!("ffmpeg wrote no HLS segment in {}", dir.display());
    }
    let target = segments.iter().map(|s| s.1).fold(0.0, f64::max).ceil() as u64;
    Ok(Hls {
        dir: dir.to_owned(),
        segments,
        init,
        target,
    })
}

impl FaultServer {
    /// Encodes `wav` and serves it on every path, `speed` times faster
    /// than it plays.
    pub async fn start(wav: &Path, speed: f64) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let wav = wav.to_str().context("a UTF-8 path")?;
        let mp3 = dir.path().join("programme.mp3");
        encode_mp3(
            Path::new(wav),
            &mp3,
            &["-id3v2_version", "0", "-write_xing", "0"],
        )?;
        let mut hls = Vec::new();
        for (kind, extra) in [
            ("ts", &["-hls_segment_type", "mpegts"][..]),
            (
                "fmp4",
                &[
                    "-hls_segment_type",
                    "fmp4",
                    "-hls_fmp4_init_filename",
                    "init.mp4",
                ][..],
            ),
        ] {
            let out = dir.path().join(kind);
            std::fs::create_dir_all(&out)?;
            let ext = if kind == "ts" { "ts" } else { "m4s" };
            let pattern = out.join(format!("s%03d.{ext}"));
            let index = out.join("index.m3u8");
            let mut args = station_input(wav).to_vec();
            args.extend_from_slice(&[
                "-c:a",
                "aac",
                "-b:a",
                "96k",
                "-f",
                "hls",
                "-hls_time",
                "2",
                "-hls_list_size",
                "0",
            ]);
            args.extend_from_slice(extra);
            args.extend_from_slice(&[
                "-hls_segment_filename",
                pattern.to_str().context("a UTF-8 path")?,
                index.to_str().context("a UTF-8 path")?,
            ]);
            ffmpeg(&args)?;
            hls.push(read_hls(&out)?);
        }
        let fmp4 = hls.pop().context("two encodings")?;
        let ts = hls.pop().context("two encodings")?;
        let programme = Arc::new(Programme {
            mp3: std::fs::read(&mp3)?.into(),
            ts,
            fmp4,
            speed,
            t0: Instant::now(),
        });
        let app = Router::new()
            .route("/live.mp3", get(|s| stream_mp3(s, Fault::None)))
            .route("/drop.mp3", get(|s| stream_mp3(s, Fault::Drop)))
            .route("/eof.mp3", get(|s| stream_mp3(s, Fault::End)))
            .route("/stall.mp3", get(|s| stream_mp3(s, Fault::Stall)))
            .route("/garbage.mp3", get(|s| stream_mp3(s, Fault::Garbage)))
            .route("/mislabelled", get(|s| stream_mp3(s, Fault::Mislabelled)))
            .route(
                "/page.html",
                get(|| async {
                    (
                        [(header::CONTENT_TYPE, "text/html")],
                        "<!doctype html><html><body><h1>Listen live</h1><p>Our player needs JavaScript.</p></body></html>\n"
                            .repeat(40),
                    )
                }),
            )
            .route(
                "/broken.mp3",
                get(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "the encoder crashed") }),
            )
            .route("/hls/{kind}/live.m3u8", get(playlist))
            .route("/hls/{kind}/{file}", get(segment))
            .with_state(programme);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            base,
            task,
            _dir: dir,
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    None,
    Drop,
    End,
    Stall,
    Garbage,
    Mislabelled,
}

/// A tiny deterministic generator for the garbage bytes.
fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

async fn stream_mp3(State(p): State<Arc<Programme>>, fault: Fault) -> Response {
    let rate = MP3_BYTES_PER_S * p.speed;
    let len = p.mp3.len();
    // Where the programme is now, and two seconds of burst before it.
    let now = (p.t0.elapsed().as_secs_f64() * rate) as usize;
    let start = now.saturating_sub((2.0 * MP3_BYTES_PER_S) as usize);
    let limit = match fault {
        Fault::Drop | Fault::End => Some((DROP_AFTER_S * MP3_BYTES_PER_S) as usize + 1),
        Fault::Stall => Some((STALL_AFTER_S * MP3_BYTES_PER_S) as usize),
        _ => None,
    };
    let opened = Instant::now();
    let state = (p, start, 0usize, 0x9e37_79b9_7f4a_7c15u64);
    let body = futures_util::stream::unfold(state, move |(p, start, sent, mut seed)| async move {
        if let Some(limit) = limit
            && sent >= limit
        {
            match fault {
                Fault::Drop => {
                    let broken = std::io::Error::other("the encoder's link dropped");
                    return Some((Err(broken), (p, start, sent, seed)));
                }
                Fault::Stall => std::future::pending::<()>().await,
                _ => return None,
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        // Up to where the clock says, after the burst.
        let due =
            (2.0 * MP3_BYTES_PER_S) as usize + (opened.elapsed().as_secs_f64() * rate) as usize;
        let mut upto = due.max(sent);
        if let Some(limit) = limit {
            upto = upto.min(limit);
        }
        let mut chunk = Vec::with_capacity(upto - sent);
        for i in sent..upto {
            chunk.push(p.mp3[(start + i) % len]);
        }
        if fault == Fault::Garbage {
            for (i, b) in chunk.iter_mut().enumerate() {
                if (sent + i) % 32_768 < 2_048 {
                    *b = xorshift(&mut seed) as u8;
                }
            }
        }
        Some((
            Ok::<_, std::io::Error>(Bytes::from(chunk)),
            (p, start, upto, seed),
        ))
    });
    let content_type = if fault == Fault::Mislabelled {
        "text/html"
    } else {
        "audio/mpeg"
    };
    (
        [(header::CONTENT_TYPE, content_type)],
        Body::from_stream(body),
    )
        .into_response()
}

fn hls_of<'a>(p: &'a Programme, kind: &str) -> Option<&'a Hls> {
    match kind {
        "ts" | "stalled" => Some(&p.ts),
        "fmp4" => Some(&p.fmp4),
        _ => None,
    }
}

async fn playlist(State(p): State<Arc<Programme>>, UrlPath(kind): UrlPath<String>) -> Response {
    let Some(hls) = hls_of(&p, &kind) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let count = hls.segments.len() as u64;
    let step = hls.segments[0].1 / p.speed;
    // Segments on air so far: a full window at once, then one per segment time.
    let mut aired = WINDOW + (p.t0.elapsed().as_secs_f64() / step) as u64;
    if kind == "stalled" {
        aired = aired.min(WINDOW + STALLED_AFTER);
    }
    let first = aired.saturating_sub(WINDOW);
    let mut text = format!(
        "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:{}\n#EXT-X-MEDIA-SEQUENCE:{first}\n",
        hls.target
    );
    if let Some(init) = &hls.init {
        text.push_str(&format!("#EXT-X-MAP:URI=\"{init}\"\n"));
    }
    let ext = if hls.init.is_some() { "m4s" } else { "ts" };
    for seq in first..aired {
        if seq > 0 && seq % count == 0 {
            text.push_str("#EXT-X-DISCONTINUITY\n");
        }
        let duration = hls.segments[(seq % count) as usize].1;
        text.push_str(&format!("#EXTINF:{duration:.3},\n{seq}.{ext}\n"));
    }
    (
        [(header::CONTENT_TYPE, "application/vnd.apple.mpegurl")],
        text,
    )
        .into_response()
}

async fn segment(
    State(p): State<Arc<Programme>>,
    UrlPath((kind, file)): UrlPath<(String, String)>,
) -> Response {
    let Some(hls) = hls_of(&p, &kind) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let name = if Some(&file) == hls.init.as_ref() {
        file.clone()
    } else {
        let Some(seq) = file.split('.').next().and_then(|s| s.parse::<u64>().ok()) else {
            return StatusCode::NOT_FOUND.into_response();
        };
        hls.segments[(seq % hls.segments.len() as u64) as usize]
            .0
            .clone()
    };
    match tokio::fs::read(hls.dir.join(&name)).await {
        Ok(bytes) => {
            let media = if name.ends_with(".ts") {
                "video/mp2t"
            } else {
                "video/mp4"
            };
            ([(header::CONTENT_TYPE, media)], bytes).into_response()
        }
        Err(_) => StatusCode::NOT_FOUND.into_response(),
    }
}
