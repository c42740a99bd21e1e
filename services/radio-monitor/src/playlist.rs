//! Playlist files that point at a stream: `.pls` and `.m3u`. (HLS playlists,
//! `.m3u8` with `#EXT-X-` tags, describe segments rather than point at a
//! stream; they are told apart here and not followed.)

use url::Url;

/// Largest playlist read: real ones are a few hundred bytes.
pub const MAX_PLAYLIST: usize = 64 * 1024;

/// What a response's media type and URL say the body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// Audio to decode.
    Audio,
    /// A `.pls` or `.m3u` list of stream URLs (or an HLS playlist).
    Playlist,
}

/// Judges a response by its media type, and by the URL's extension when the
/// type says nothing useful (`text/plain`, `application/octet-stream`).
pub fn classify(content_type: Option<&str>, url: &Url) -> Body {
    let media = content_type
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match media.as_str() {
        "audio/x-scpls"
        | "audio/scpls"
        | "audio/x-mpegurl"
        | "audio/mpegurl"
        | "application/vnd.apple.mpegurl"
        | "application/x-mpegurl"
        | "application/pls+xml" => Body::Playlist,
        m if m.starts_with("audio/") || m == "application/ogg" => Body::Audio,
        _ => {
            let path = url.path().to_ascii_lowercase();
            if [".pls", ".m3u", ".m3u8"].iter().any(|e| path.ends_with(e)) {
                Body::Playlist
            } else {
                Body::Audio
            }
        }
    }
}

/// Why a playlist gave no stream.
#[derive(Debug, PartialEq, Eq)]
pub enum PlaylistError {
    /// An HLS playlist (segments, not a stream URL).
    Hls,
    /// No `http`/`https` entry.
    Empty,
}

/// The stream URLs a `.pls` or `.m3u` lists, in order, resolved against
/// `base` (relative entries exist).
///
/// # Errors
/// [`PlaylistError::Hls`] for an HLS playlist, [`PlaylistError::Empty`]
/// when no entry is an `http`/`https` URL.
pub fn entries(body: &str, base: &Url) -> Result<Vec<Url>, PlaylistError> {
    let body = body.trim_start_matches('\u{feff}');
    if body.lines().any(|l| {
        let l = l.trim();
        l.starts_with("#EXT-X-TARGETDURATION")
            || l.starts_with("#EXT-X-STREAM-INF")
            || l.starts_with("#EXT-X-MEDIA-SEQUENCE")
    }) {
        return Err(PlaylistError::Hls);
    }
    let is_pls = body
        .lines()
        .any(|l| l.trim().eq_ignore_ascii_case("[playlist]"));
    let mut found = Vec::new();
    for line in body.lines().map(str::trim) {
        let value = if is_pls {
            // FileN=url
            match line.split_once('=') {
                Some((key, value)) if key.trim().to_ascii_lowercase().starts_with("file") => {
                    value.trim()
                }
                _ => continue,
            }
        } else if line.is_empty() || line.starts_with('#') {
            continue;
        } else {
            line
        };
        if let Ok(url) = base.join(value)
            && matches!(url.scheme(), "http" | "https")
        {
            found.push(url);
        }
    }
    if found.is_empty() {
        Err(PlaylistError::Empty)
    } else {
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Url {
        Url::parse("http://radio.example/listen/station.pls").unwrap()
    }

    #[test]
    fn pls_and_m3u_entries_resolve_against_the_playlist() {
        let pls = "[playlist]\nNumberOfEntries=2\nFile1=http://a.example:8000/live\nTitle1=A\nFile2=/b.mp3\nLength1=-1\nVersion=2\n";
        let urls: Vec<String> = entries(pls, &base())
            .unwrap()
            .iter()
            .map(Url::to_string)
            .collect();
        assert_eq!(
            urls,
            ["http://a.example:8000/live", "http://radio.example/b.mp3"]
        );
        let m3u = "#EXTM3U\n#EXTINF:-1,Station\nhttps://c.example/stream\n\nrtsp://no.example/x\n";
        let urls: Vec<String> = entries(m3u, &base())
            .unwrap()
            .iter()
            .map(Url::to_string)
            .collect();
        assert_eq!(urls, ["https://c.example/stream"]);
    }

    #[test]
    fn hls_and_empty_playlists_are_told_apart() {
        let hls = "#EXTM3U\n#EXT-X-TARGETDURATION:6\n#EXTINF:6,\nseg1.ts\n";
        assert_eq!(entries(hls, &base()), Err(PlaylistError::Hls));
        assert_eq!(entries("#EXTM3U\n", &base()), Err(PlaylistError::Empty));
        assert_eq!(
            entries("[playlist]\nNumberOfEntries=0\n", &base()),
            Err(PlaylistError::Empty)
        );
    }

    #[test]
    fn media_type_first_then_extension() {
        let u = |s: &str| Url::parse(s).unwrap();
        assert_eq!(
            classify(Some("audio/mpeg"), &u("http://x/a.pls")),
            Body::Audio
        );
        assert_eq!(
            classify(Some("audio/x-scpls"), &u("http://x/a")),
            Body::Playlist
        );
        assert_eq!(
            classify(Some("text/plain"), &u("http://x/a.M3U")),
            Body::Playlist
        );
        assert_eq!(classify(None, &u("http://x/live")), Body::Audio);
        assert_eq!(
            classify(Some("application/ogg"), &u("http://x/a.m3u")),
            Body::Audio
        );
    }
}
