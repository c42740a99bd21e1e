//! The v2 frame: how every v2 message travels.
//!
//! | offset | size | field |
//! | --- | --- | --- |
//! | 0 | 4 | `len`: the bytes that follow, `10 + N`, unsigned little-endian |
//! | 4 | 1 | protocol version, `2` |
//! | 5 | 1 | frame type ([`crate::v2::kind`]) |
//! | 6 | 4 | sequence number, unsigned little-endian |
//! | 10 | N | payload |
//! | 10 + N | 4 | CRC-32 (IEEE 802.3, as zlib's `crc32`) of bytes `0 .. 10 + N`, little-endian |
//!
//! Little-endian like the device fingerprint format
//! (`hendu_fingerprint::wire`), so a sensor writes both the same way. The
//! length comes first so that a receiver knows at once how much to expect,
//! and refuses a frame over its maximum after 4 bytes, before buffering any
//! of it.
//!
//! ```
//! use hendu_sensor_protocol::frame::{self, Frame};
//!
//! let bytes = Frame::new(0x20, 7, b"hi".to_vec()).encode();
//! let (frame, used) = frame::decode(&bytes, 1024).unwrap().unwrap();
//! assert_eq!((frame.kind, frame.seq, &frame.payload[..]), (0x20, 7, &b"hi"[..]));
//! assert_eq!(used, bytes.len());
//! // Half a frame is not an error, only not yet a frame.
//! assert_eq!(frame::decode(&bytes[..9], 1024), Ok(None));
//! ```

/// The protocol version this crate speaks.
pub const VERSION: u8 = 2;
/// Bytes of a frame besides its payload: length, version, type, sequence
/// number, checksum.
pub const OVERHEAD: usize = 14;
/// The smallest `len` (an empty payload).
const MIN_LEN: u32 = 10;

/// One frame, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub kind: u8,
    pub seq: u32,
    pub payload: Vec<u8>,
}

/// Why bytes are not a frame. Each is fatal to the connection: after it,
/// the receiver cannot know where the next frame starts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("a frame of {len} bytes is longer than the maximum of {max}")]
    TooLarge { len: u64, max: u32 },
    #[error("a frame length of {0} is shorter than a frame can be")]
    TooShort(u32),
    #[error("protocol version {0} is not spoken here (this server speaks 2)")]
    UnsupportedVersion(u8),
    #[error("the frame's checksum does not match its bytes")]
    BadChecksum,
}

impl FrameError {
    pub fn code(&self) -> crate::Code {
        match self {
            Self::TooLarge { .. } => crate::Code::FrameTooLarge,
            Self::TooShort(_) => crate::Code::MalformedFrame,
            Self::UnsupportedVersion(_) => crate::Code::UnsupportedVersion,
            Self::BadChecksum => crate::Code::BadChecksum,
        }
    }
}

impl Frame {
    pub fn new(kind: u8, seq: u32, payload: Vec<u8>) -> Self {
        Self { kind, seq, payload }
    }

    /// The frame's bytes on the wire.
    ///
    /// # Panics
    /// For a payload over 4 GiB less 10 bytes, which no receiver accepts.
    pub fn encode(&self) -> Vec<u8> {
        let len = u32::try_from(self.payload.len() + MIN_LEN as usize)
            .expect("a frame payload under 4 GiB");
        let mut out = Vec::with_capacity(self.payload.len() + OVERHEAD);
        out.extend_from_slice(&len.to_le_bytes());
        out.push(VERSION);
        out.push(self.kind);
        out.extend_from_slice(&self.seq.to_le_bytes());
        out.extend_from_slice(&self.payload);
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Bytes on the wire for a payload of `n` bytes.
    pub fn wire_len(n: usize) -> usize {
        n + OVERHEAD
    }
}

/// The first frame in `buf` and the bytes it took; `Ok(None)` while `buf`
/// holds only part of one. A frame whose payload would exceed `max_frame`
/// bytes in all is refused as soon as its length is in (4 bytes), and its
/// version as soon as that is in (5 bytes), so a receiver never buffers
/// more than `max_frame` bytes for a frame.
///
/// # Errors
/// [`FrameError`]: the stream cannot be read further.
pub fn decode(buf: &[u8], max_frame: u32) -> Result<Option<(Frame, usize)>, FrameError> {
    let Some(head) = buf.get(..4) else {
        return Ok(None);
    };
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
    let total = u64::from(len) + 4;
    if total > u64::from(max_frame) {
        return Err(FrameError::TooLarge {
            len: total,
            max: max_frame,
        });
    }
    if len < MIN_LEN {
        return Err(FrameError::TooShort(len));
    }
    if let Some(&version) = buf.get(4)
        && version != VERSION
    {
        return Err(FrameError::UnsupportedVersion(version));
    }
    // `total` is at most `max_frame`, a u32: it fits a usize.
    let total = total as usize;
    let Some(bytes) = buf.get(..total) else {
        return Ok(None);
    };
    let (body, crc) = bytes.split_at(total - 4);
    if crc32fast::hash(body) != u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]) {
        return Err(FrameError::BadChecksum);
    }
    Ok(Some((
        Frame {
            kind: body[5],
            seq: u32::from_le_bytes([body[6], body[7], body[8], body[9]]),
            payload: body[10..].to_vec(),
        },
        total,
    )))
}

/// Frames from a byte stream that arrives in pieces: push what a read
/// gave, take the frames it completed. It holds at most one frame's worth
/// of bytes beyond what was taken.
#[derive(Debug)]
pub struct Decoder {
    buf: Vec<u8>,
    max_frame: u32,
}

impl Decoder {
    pub fn new(max_frame: u32) -> Self {
        Self {
            buf: Vec::new(),
            max_frame,
        }
    }

    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete frame, if one is in.
    ///
    /// # Errors
    /// [`FrameError`]: the stream cannot be read further.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        match decode(&self.buf, self.max_frame)? {
            Some((frame, used)) => {
                self.buf.drain(..used);
                Ok(Some(frame))
            }
            None => Ok(None),
        }
    }

    /// Bytes received and not yet taken as a frame (part of one).
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// How many more bytes the frame in progress needs, when its length is in.
    pub fn wanted(&self) -> Option<usize> {
        let head = self.buf.get(..4)?;
        let total = u64::from(u32::from_le_bytes([head[0], head[1], head[2], head[3]])) + 4;
        let wanted = total.saturating_sub(self.buf.len() as u64);
        Some(usize::try_from(wanted).unwrap_or(usize::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frames() -> impl Strategy<Value = Vec<Frame>> {
        prop::collection::vec(
            (
                any::<u8>(),
                any::<u32>(),
                prop::collection::vec(any::<u8>(), 0..300),
            )
                .prop_map(|(kind, seq, payload)| Frame::new(kind, seq, payload)),
            0..8,
        )
    }

    #[test]
    fn damage_is_named() {
        let mut bytes = Frame::new(0x10, 1, vec![1, 2, 3]).encode();
        assert_eq!(bytes.len(), Frame::wire_len(3));
        assert_eq!(
            decode(&bytes, 16),
            Err(FrameError::TooLarge { len: 17, max: 16 })
        );
        bytes[11] ^= 1;
        assert_eq!(decode(&bytes, 1024), Err(FrameError::BadChecksum));
        bytes[4] = 3;
        assert_eq!(
            decode(&bytes[..5], 1024),
            Err(FrameError::UnsupportedVersion(3))
        );
        assert_eq!(decode(&[9, 0, 0, 0], 1024), Err(FrameError::TooShort(9)));
        // A length of 4 GiB is refused from its 4 bytes.
        assert!(matches!(
            decode(&[0xff; 4], 1 << 20),
            Err(FrameError::TooLarge { .. })
        ));
    }

    proptest! {
        /// However a stream of valid frames is cut into reads, the same
        /// frames come out, in order.
        #[test]
        fn any_split_gives_the_same_frames(
            frames in frames(),
            cuts in prop::collection::vec(1usize..64, 0..64),
        ) {
            let stream: Vec<u8> = frames.iter().flat_map(Frame::encode).collect();
            let mut decoder = Decoder::new(1024);
            let mut out = Vec::new();
            let mut at = 0;
            let mut cuts = cuts.into_iter().cycle();
            while at < stream.len() {
                let n = cuts.next().unwrap_or(stream.len()).min(stream.len() - at);
                decoder.push(&stream[at..at + n]);
                at += n;
                while let Some(frame) = decoder.next_frame().unwrap() {
                    out.push(frame);
                }
            }
            prop_assert_eq!(out, frames);
            prop_assert_eq!(decoder.pending(), 0);
        }

        /// Any bytes give a frame, "not yet" or an error: never a panic, and
        /// never a frame over the maximum.
        #[test]
        fn any_bytes_are_judged(bytes in prop::collection::vec(any::<u8>(), 0..2048), max in 0u32..4096) {
            if let Ok(Some((frame, used))) = decode(&bytes, max) {
                prop_assert!(used <= max as usize);
                prop_assert_eq!(used, Frame::wire_len(frame.payload.len()));
            }
        }

        /// A frame with one bit flipped is never taken for the frame it was.
        #[test]
        fn a_flipped_bit_is_caught(frame in frames().prop_filter("one", |f| !f.is_empty()), bit in any::<usize>()) {
            let mut bytes = frame[0].encode();
            let bit = bit % (bytes.len() * 8);
            bytes[bit / 8] ^= 1 << (bit % 8);
            prop_assert_ne!(decode(&bytes, 1 << 20).ok().flatten().map(|(f, _)| f), Some(frame[0].clone()));
        }
    }
}
