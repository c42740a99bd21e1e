//! Opening a station: the HTTP request, redirects, playlist files that point
//! at the stream, and what the answer says about the audio.

use std::time::Duration;

use futures_util::StreamExt;
use reqwest::header::{CONTENT_TYPE, HeaderMap};
use url::Url;

use crate::playlist::{self, Body, PlaylistError};

/// Most playlists followed to reach the stream (a playlist of playlists).
const MAX_PLAYLIST_DEPTH: usize = 3;
/// Most redirects followed per request.
pub const MAX_REDIRECTS: usize = 5;

/// Why a station could not be opened.
#[derive(Debug)]
pub enum OpenError {
    /// The server answered 4xx: retried slowly.
    Refused(u16),
    /// Connecting failed, or the server answered 5xx: retried with backoff.
    Failed(String),
    /// The station is in a form this build cannot listen to.
    Unsupported(String),
}

/// An open stream.
#[derive(Debug)]
pub struct Opened {
    pub response: reqwest::Response,
    /// The stream's URL after playlists and redirects.
    pub url: Url,
    pub content_type: Option<String>,
    /// Audio bytes between ICY metadata blocks, when the server sends them.
    pub metaint: Option<usize>,
}

impl Opened {
    /// A file extension for the prober, from the media type.
    pub fn hint(&self) -> Option<&'static str> {
        let media = self.content_type.as_deref()?.split(';').next()?.trim();
        Some(match media.to_ascii_lowercase().as_str() {
            "audio/mpeg" | "audio/mp3" | "audio/mpeg3" => "mp3",
            "audio/aac" | "audio/aacp" | "audio/x-aac" => "aac",
            "audio/ogg" | "application/ogg" | "audio/vorbis" | "audio/opus" => "ogg",
            "audio/flac" | "audio/x-flac" => "flac",
            _ => return None,
        })
    }
}

/// The HTTP client every station shares.
///
/// # Errors
/// If the TLS backend cannot start.
pub fn client(connect_timeout: Duration) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .user_agent(concat!("hendu-radio-monitor/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(connect_timeout)
        .redirect(reqwest::redirect::Policy::limited(MAX_REDIRECTS))
        .build()
}

/// Opens `url`, following playlists, with ICY metadata asked for. The
/// answer's head must arrive within `timeout`.
pub async fn open(
    client: &reqwest::Client,
    url: &Url,
    timeout: Duration,
) -> Result<Opened, OpenError> {
    let mut url = url.clone();
    for _ in 0..=MAX_PLAYLIST_DEPTH {
        let response = tokio::time::timeout(
            timeout,
            client.get(url.clone()).header("Icy-MetaData", "1").send(),
        )
        .await
        .map_err(|_| OpenError::Failed(format!("no answer within {} s", timeout.as_secs())))?
        .map_err(|e| OpenError::Failed(describe(&e)))?;
        let status = response.status();
        if status.is_client_error() {
            return Err(OpenError::Refused(status.as_u16()));
        }
        if !status.is_success() {
            return Err(OpenError::Failed(format!("the server answered {status}")));
        }
        let final_url = response.url().clone();
        let content_type = header(response.headers(), CONTENT_TYPE.as_str());
        match playlist::classify(content_type.as_deref(), &final_url) {
            Body::Audio => {
                let metaint = header(response.headers(), "icy-metaint")
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .filter(|&n| n > 0);
                return Ok(Opened {
                    response,
                    url: final_url,
                    content_type,
                    metaint,
                });
            }
            Body::Playlist => {
                let body = read_playlist(response, timeout).await?;
                url = match playlist::entries(&body, &final_url) {
                    Ok(entries) => entries[0].clone(),
                    Err(PlaylistError::Hls) => {
                        return Err(OpenError::Unsupported("HLS (m3u8)".into()));
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

/// A playlist's text, at most [`playlist::MAX_PLAYLIST`] bytes.
async fn read_playlist(
    response: reqwest::Response,
    timeout: Duration,
) -> Result<String, OpenError> {
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    let read = tokio::time::timeout(timeout, async {
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| OpenError::Failed(describe(&e)))?;
            body.extend_from_slice(&chunk);
            if body.len() > playlist::MAX_PLAYLIST {
                return Err(OpenError::Failed(format!(
                    "the playlist is larger than {} bytes",
                    playlist::MAX_PLAYLIST
                )));
            }
        }
        Ok(())
    })
    .await;
    match read {
        Ok(Ok(())) => Ok(String::from_utf8_lossy(&body).into_owned()),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(OpenError::Failed(
            "the playlist did not arrive in time".into(),
        )),
    }
}

/// A reqwest error with its causes (the top level alone says little).
pub fn describe(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
