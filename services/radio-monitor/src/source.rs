//! Opening a station: the HTTP request, redirects, playlist files that point
//! at the stream, and what the answer says about the audio.

use std::time::Duration;

use futures_util::StreamExt;
use reqwest::header::{CONTENT_TYPE, HeaderMap};
use url::Url;

use crate::hls;
use crate::http::{ByteStream, OpenError, describe, fetch, read_limited};
use crate::playlist::{self, Body, PlaylistError};

/// Most playlists followed to reach the stream (a playlist of playlists).
const MAX_PLAYLIST_DEPTH: usize = 3;

/// An open stream.
pub struct Opened {
    pub body: ByteStream,
    /// The stream's URL after playlists and redirects.
    pub url: Url,
    /// What the station's status shows as its codec: the media type, or
    /// what an HLS stream carries.
    pub codec: Option<String>,
    /// A file extension for the prober.
    pub hint: Option<&'static str>,
    /// Audio bytes between ICY metadata blocks, when the server sends them.
    pub metaint: Option<usize>,
    /// How long the stream may send nothing before it counts as stalled,
    /// when not the configured time (HLS sends a segment at a time).
    pub patience: Option<Duration>,
}

impl std::fmt::Debug for Opened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opened")
            .field("url", &self.url.as_str())
            .field("codec", &self.codec)
            .field("metaint", &self.metaint)
            .finish_non_exhaustive()
    }
}

/// A file extension for the prober, from a media type.
fn hint(content_type: Option<&str>) -> Option<&'static str> {
    let media = content_type?.split(';').next()?.trim();
    Some(match media.to_ascii_lowercase().as_str() {
        "audio/mpeg" | "audio/mp3" | "audio/mpeg3" => "mp3",
        "audio/aac" | "audio/aacp" | "audio/x-aac" => "aac",
        "audio/ogg" | "application/ogg" | "audio/vorbis" | "audio/opus" => "ogg",
        "audio/flac" | "audio/x-flac" => "flac",
        _ => return None,
    })
}

/// Opens `url`, following playlists, with ICY metadata asked for. The
/// answer's head must arrive within `timeout`. An HLS window goes on from
/// `resume` (see [`hls::Resume`]).
pub async fn open(
    client: &reqwest::Client,
    url: &Url,
    timeout: Duration,
    resume: &hls::Resume,
) -> Result<Opened, OpenError> {
    let mut url = url.clone();
    for _ in 0..=MAX_PLAYLIST_DEPTH {
        let response = fetch(client, &url, timeout).await?;
        let final_url = response.url().clone();
        let content_type = header(response.headers(), CONTENT_TYPE.as_str());
        match playlist::classify(content_type.as_deref(), &final_url) {
            Body::Audio => {
                let metaint = header(response.headers(), "icy-metaint")
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .filter(|&n| n > 0);
                let body = response
                    .bytes_stream()
                    .map(|chunk| chunk.map_err(|e| format!("the stream broke: {}", describe(&e))));
                return Ok(Opened {
                    body: Box::pin(body),
                    url: final_url,
                    hint: hint(content_type.as_deref()),
                    codec: content_type,
                    metaint,
                    patience: None,
                });
            }
            Body::Playlist => {
                let body = read_limited(response, playlist::MAX_PLAYLIST, timeout).await?;
                let body = String::from_utf8_lossy(&body).into_owned();
                url = match playlist::entries(&body, &final_url) {
                    Ok(entries) => entries[0].clone(),
                    Err(PlaylistError::Hls) => {
                        let hls =
                            hls::open(client, final_url.clone(), body, timeout, resume).await?;
                        return Ok(Opened {
                            body: hls.body,
                            url: final_url,
                            codec: Some(hls.codec),
                            hint: Some(hls.hint),
                            metaint: None,
                            patience: Some(hls.patience),
                        });
                    }
                    Err(PlaylistError::Empty) => {
                        return Err(OpenError::Failed(
                            "the playlist lists no http or https stream".into(),
                        ));
                    }
                };
            }
        }
    }
    Err(OpenError::Failed(format!(
        "more than {MAX_PLAYLIST_DEPTH} playlists before the stream"
    )))
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}
