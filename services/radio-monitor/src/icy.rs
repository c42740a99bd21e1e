//! ICY metadata (Shoutcast, Icecast): asked for with `Icy-MetaData: 1`, the
//! server then puts a metadata block after every `icy-metaint` bytes of
//! audio: one length byte (in units of 16 bytes), then that many bytes of
//! `StreamTitle='...';StreamUrl='...';` padded with NULs. The blocks must
//! come out of the audio before the decoder sees it.

/// Longest metadata block: the length byte's largest value, times 16.
pub const MAX_BLOCK: usize = 255 * 16;

/// Splits a stream into audio and metadata, across chunks of any size.
#[derive(Debug)]
pub struct IcyDemuxer {
    metaint: usize,
    /// Audio bytes left before the next length byte.
    audio_left: usize,
    /// Metadata bytes still to collect, once the length byte was read.
    meta_left: Option<usize>,
    meta: Vec<u8>,
}

/// What a chunk of the stream held.
#[derive(Debug, Default, PartialEq)]
pub struct Demuxed {
    pub audio: Vec<u8>,
    /// `StreamTitle` of each metadata block that ended in the chunk and had
    /// one, in order.
    pub titles: Vec<String>,
}

impl IcyDemuxer {
    /// # Panics
    /// If `metaint` is zero (a stream without metadata needs no demuxer).
    pub fn new(metaint: usize) -> Self {
        assert!(metaint > 0, "icy-metaint must be positive");
        Self {
            metaint,
            audio_left: metaint,
            meta_left: None,
            meta: Vec::with_capacity(MAX_BLOCK),
        }
    }

    /// The audio and titles in `chunk`, appended to `out`.
    pub fn push(&mut self, mut chunk: &[u8], out: &mut Demuxed) {
        while !chunk.is_empty() {
            match self.meta_left {
                None if self.audio_left > 0 => {
                    let n = self.audio_left.min(chunk.len());
                    out.audio.extend_from_slice(&chunk[..n]);
                    self.audio_left -= n;
                    chunk = &chunk[n..];
                }
                None => {
                    let len = usize::from(chunk[0]) * 16;
                    chunk = &chunk[1..];
                    if len == 0 {
                        self.audio_left = self.metaint;
                    } else {
                        self.meta.clear();
                        self.meta_left = Some(len);
                    }
                }
                Some(left) => {
                    let n = left.min(chunk.len());
                    self.meta.extend_from_slice(&chunk[..n]);
                    chunk = &chunk[n..];
                    if n == left {
                        self.meta_left = None;
                        self.audio_left = self.metaint;
                        if let Some(title) = stream_title(&self.meta) {
                            out.titles.push(title);
                        }
                    } else {
                        self.meta_left = Some(left - n);
                    }
                }
            }
        }
    }
}

/// The `StreamTitle` of a metadata block, if it has one. Servers send the
/// title in whatever encoding the source used: UTF-8 when it is, Latin-1
/// otherwise (the older servers' habit).
pub fn stream_title(block: &[u8]) -> Option<String> {
    let end = block.iter().position(|&b| b == 0).unwrap_or(block.len());
    let block = &block[..end];
    let key = b"StreamTitle='";
    let start = block.windows(key.len()).position(|w| w == key)? + key.len();
    let rest = &block[start..];
    // The value ends at the quote before the next `;` (titles may hold quotes).
    let stop = rest
        .windows(2)
        .position(|w| w == b"';")
        .or_else(|| rest.iter().rposition(|&b| b == b'\''))
        .unwrap_or(rest.len());
    let raw = &rest[..stop];
    let text = match std::str::from_utf8(raw) {
        Ok(s) => s.to_owned(),
        Err(_) => raw.iter().map(|&b| char::from(b)).collect(),
    };
    Some(text.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(meta: &str) -> Vec<u8> {
        let mut padded = meta.as_bytes().to_vec();
        padded.resize(meta.len().div_ceil(16) * 16, 0);
        let mut out = vec![(padded.len() / 16) as u8];
        out.extend(padded);
        out
    }

    /// A stream of `intervals` audio intervals with the given metadata
    /// after each; the audio bytes count up so that order is checked too.
    fn stream(metaint: usize, metas: &[&str]) -> (Vec<u8>, Vec<u8>) {
        let (mut wire, mut audio) = (Vec::new(), Vec::new());
        let mut n = 0u8;
        for meta in metas {
            for _ in 0..metaint {
                wire.push(n);
                audio.push(n);
                n = n.wrapping_add(1);
            }
            if meta.is_empty() {
                wire.push(0);
            } else {
                wire.extend(block(meta));
            }
        }
        (wire, audio)
    }

    #[test]
    fn metadata_blocks_leave_the_audio_whatever_the_chunk_size() {
        let metas = [
            "StreamTitle='Artist - Song';StreamUrl='';",
            "",
            "StreamTitle='It''s me';",
            "StreamUrl='x';",
        ];
        let (wire, audio) = stream(100, &metas);
        for chunk in [1, 2, 7, 16, 99, 100, 101, 1000, wire.len()] {
            let mut d = IcyDemuxer::new(100);
            let mut out = Demuxed::default();
            for part in wire.chunks(chunk) {
                d.push(part, &mut out);
            }
            assert_eq!(out.audio, audio, "chunks of {chunk}");
            assert_eq!(
                out.titles,
                ["Artist - Song", "It''s me"],
                "chunks of {chunk}"
            );
        }
    }

    #[test]
    fn titles_in_latin_1_and_utf_8_read_as_text() {
        assert_eq!(
            stream_title("StreamTitle='Café Tacvba';".as_bytes()).as_deref(),
            Some("Café Tacvba")
        );
        assert_eq!(
            stream_title(b"StreamTitle='Caf\xe9';\0\0").as_deref(),
            Some("Café")
        );
        assert_eq!(stream_title(b"StreamUrl='x';"), None);
        assert_eq!(
            stream_title(b"StreamTitle='unterminated").as_deref(),
            Some("unterminated")
        );
    }
}
