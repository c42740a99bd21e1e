//! Fragmented MP4 (CMAF) audio to a stream the decoder reads: the init
//! segment's sound track says the codec (its `esds` carries AAC's
//! AudioSpecificConfig), each media segment's `moof` says where its samples
//! lie in `mdat`, and each AAC sample is given an ADTS header, so HLS in
//! fMP4 reaches the same decoder as AAC in ADTS. MP3 samples pass as they
//! are (MP3 frames delimit themselves).
//!
//! HE-AAC (SBR, and parametric stereo) carries an AAC-LC core at half the
//! output rate: the core is what is passed on (the decoder has no SBR).
//! It holds the band up to the SBR crossover, 5 kHz and more at usual
//! rates, which covers what the fingerprint uses (below 4 kHz).

use super::bits::BitReader;

/// What a sound track's samples are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// AAC, framed as ADTS with this header's fixed part.
    Aac {
        /// ADTS profile (object type - 1), sampling index and channels.
        profile: u8,
        rate_index: u8,
        channels: u8,
    },
    Mp3,
}

impl Codec {
    /// A file extension for the prober.
    pub fn hint(self) -> &'static str {
        match self {
            Codec::Aac { .. } => "aac",
            Codec::Mp3 => "mp3",
        }
    }
}

/// The sound track of an init segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Track {
    pub id: u32,
    pub codec: Codec,
    default_size: u32,
}

/// Why fMP4 audio cannot be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fmp4Error {
    Malformed(&'static str),
    Unsupported(String),
}

impl std::fmt::Display for Fmp4Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fmp4Error::Malformed(what) => write!(f, "malformed fMP4 segment: {what}"),
            Fmp4Error::Unsupported(what) => write!(f, "{what}"),
        }
    }
}

/// The boxes in `data`: (type, offset of the box, body).
fn boxes(data: &[u8]) -> impl Iterator<Item = Result<([u8; 4], usize, &[u8]), Fmp4Error>> {
    let mut at = 0usize;
    std::iter::from_fn(move || {
        if at + 8 > data.len() {
            return None;
        }
        let start = at;
        let size32 = u32::from_be_bytes(data[at..at + 4].try_into().ok()?);
        let kind: [u8; 4] = data[at + 4..at + 8].try_into().ok()?;
        let (header, size) = match size32 {
            0 => (8, data.len() - at),
            1 => {
                let Some(large) = data.get(at + 8..at + 16) else {
                    at = data.len();
                    return Some(Err(Fmp4Error::Malformed("a box is cut short")));
                };
                let large = u64::from_be_bytes(large.try_into().ok()?);
                (16, usize::try_from(large).unwrap_or(usize::MAX))
            }
            n => (8, n as usize),
        };
        if size < header || start + size > data.len() {
            at = data.len();
            return Some(Err(Fmp4Error::Malformed(
                "a box is larger than its segment",
            )));
        }
        at = start + size;
        Some(Ok((kind, start, &data[start + header..start + size])))
    })
}

/// The first child box of `data` of type `kind`.
fn child<'a>(data: &'a [u8], kind: &[u8; 4]) -> Result<Option<&'a [u8]>, Fmp4Error> {
    for b in boxes(data) {
        let (k, _, body) = b?;
        if &k == kind {
            return Ok(Some(body));
        }
    }
    Ok(None)
}

fn path<'a>(data: &'a [u8], kinds: &[&[u8; 4]]) -> Result<Option<&'a [u8]>, Fmp4Error> {
    let mut here = data;
    for kind in kinds {
        match child(here, kind)? {
            Some(body) => here = body,
            None => return Ok(None),
        }
    }
    Ok(Some(here))
}

fn be32(data: &[u8], at: usize) -> Result<u32, Fmp4Error> {
    data.get(at..at + 4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or(Fmp4Error::Malformed("a field is cut short"))
}

/// The sound track an init segment (`ftyp`, `moov`) describes.
///
/// # Errors
/// No sound track, or one in a codec this build does not decode.
pub fn init(segment: &[u8]) -> Result<Track, Fmp4Error> {
    let moov = child(segment, b"moov")?.ok_or(Fmp4Error::Malformed("no moov box"))?;
    let mut defaults = Vec::new();
    if let Some(mvex) = child(moov, b"mvex")? {
        for b in boxes(mvex) {
            let (kind, _, body) = b?;
            if &kind == b"trex" {
                // version/flags, track, description index, duration, size
                defaults.push((be32(body, 4)?, be32(body, 16)?));
            }
        }
    }
    for b in boxes(moov) {
        let (kind, _, trak) = b?;
        if &kind != b"trak" {
            continue;
        }
        let Some(hdlr) = path(trak, &[b"mdia", b"hdlr"])? else {
            continue;
        };
        if hdlr.get(8..12) != Some(b"soun") {
            continue;
        }
        let tkhd = child(trak, b"tkhd")?.ok_or(Fmp4Error::Malformed("no tkhd box"))?;
        let id = if tkhd.first() == Some(&1) {
            be32(tkhd, 20)?
        } else {
            be32(tkhd, 12)?
        };
        let stsd = path(trak, &[b"mdia", b"minf", b"stbl", b"stsd"])?
            .ok_or(Fmp4Error::Malformed("no stsd box"))?;
        let entries = stsd
            .get(8..)
            .ok_or(Fmp4Error::Malformed("stsd is cut short"))?;
        let (entry, _, body) = boxes(entries)
            .next()
            .ok_or(Fmp4Error::Malformed("stsd has no entry"))??;
        let codec = match &entry {
            b"mp4a" => mp4a(body)?,
            b"enca" => return Err(Fmp4Error::Unsupported("encrypted audio (CENC)".into())),
            other => {
                return Err(Fmp4Error::Unsupported(format!(
                    "{} in fMP4",
                    String::from_utf8_lossy(other).trim()
                )));
            }
        };
        let default_size = defaults
            .iter()
            .find(|(track, _)| *track == id)
            .map_or(0, |d| d.1);
        return Ok(Track {
            id,
            codec,
            default_size,
        });
    }
    Err(Fmp4Error::Unsupported(
        "an fMP4 stream without a sound track".into(),
    ))
}

/// An `mp4a` sample entry: the codec from its `esds`.
fn mp4a(entry: &[u8]) -> Result<Codec, Fmp4Error> {
    // 6 reserved, data reference (2), 8 reserved, channels, sample size,
    // 4 reserved, rate (16.16): 28 bytes before the child boxes.
    let children = entry
        .get(28..)
        .ok_or(Fmp4Error::Malformed("mp4a is cut short"))?;
    let esds = child(children, b"esds")?.ok_or(Fmp4Error::Malformed("mp4a has no esds"))?;
    let descriptors = esds
        .get(4..)
        .ok_or(Fmp4Error::Malformed("esds is cut short"))?;
    let mut r = Descriptors { data: descriptors };
    let es = r.expect(0x03)?;
    let mut es = Descriptors { data: es };
    let flags = *es
        .data
        .get(2)
        .ok_or(Fmp4Error::Malformed("ES descriptor is cut short"))?;
    let mut skip = 3;
    if flags & 0x80 != 0 {
        skip += 2;
    }
    if flags & 0x40 != 0 {
        skip += 1 + usize::from(*es.data.get(skip).unwrap_or(&0));
    }
    if flags & 0x20 != 0 {
        skip += 2;
    }
    es.data = es
        .data
        .get(skip..)
        .ok_or(Fmp4Error::Malformed("ES descriptor is cut short"))?;
    let config = es.expect(0x04)?;
    let object = *config
        .first()
        .ok_or(Fmp4Error::Malformed("decoder config is cut short"))?;
    match object {
        0x40 | 0x66 | 0x67 | 0x68 => {
            let mut inner = Descriptors {
                data: config
                    .get(13..)
                    .ok_or(Fmp4Error::Malformed("decoder config is cut short"))?,
            };
            audio_specific_config(inner.expect(0x05)?)
        }
        0x69 | 0x6b => Ok(Codec::Mp3),
        other => Err(Fmp4Error::Unsupported(format!(
            "MP4 audio of object type 0x{other:02x}"
        ))),
    }
}

/// MPEG-4 descriptors: a tag, a length in 7-bit groups, a body.
struct Descriptors<'a> {
    data: &'a [u8],
}

impl<'a> Descriptors<'a> {
    fn expect(&mut self, tag: u8) -> Result<&'a [u8], Fmp4Error> {
        let bad = Fmp4Error::Malformed("a descriptor is cut short");
        if self.data.first() != Some(&tag) {
            return Err(Fmp4Error::Malformed("an unexpected descriptor"));
        }
        let mut length = 0usize;
        let mut at = 1;
        loop {
            let b = *self.data.get(at).ok_or(bad.clone())?;
            length = (length << 7) | usize::from(b & 0x7f);
            at += 1;
            if b & 0x80 == 0 || at > 4 {
                break;
            }
        }
        let body = self.data.get(at..at + length).ok_or(bad)?;
        self.data = &self.data[at + length..];
        Ok(body)
    }
}

/// AAC's AudioSpecificConfig (ISO/IEC 14496-3): the ADTS header's fields.
pub fn audio_specific_config(asc: &[u8]) -> Result<Codec, Fmp4Error> {
    let mut r = BitReader::new(asc);
    let bad = || Fmp4Error::Malformed("AudioSpecificConfig is cut short");
    let object = |r: &mut BitReader| -> Option<u32> {
        let o = r.read(5)?;
        if o == 31 {
            Some(32 + r.read(6)?)
        } else {
            Some(o)
        }
    };
    let mut kind = object(&mut r).ok_or_else(bad)?;
    let rate_index = r.read(4).ok_or_else(bad)?;
    if rate_index == 15 {
        return Err(Fmp4Error::Unsupported(
            "AAC at a sampling rate ADTS cannot name".into(),
        ));
    }
    let channels = r.read(4).ok_or_else(bad)?;
    if kind == 5 || kind == 29 {
        // HE-AAC: the extension's rate, then the core's object type. The
        // core runs at the first rate.
        let extension = r.read(4).ok_or_else(bad)?;
        if extension == 15 {
            r.read(24).ok_or_else(bad)?;
        }
        kind = object(&mut r).ok_or_else(bad)?;
    }
    if !(1..=4).contains(&kind) {
        return Err(Fmp4Error::Unsupported(format!(
            "AAC of audio object type {kind}"
        )));
    }
    if channels == 0 || channels > 7 {
        return Err(Fmp4Error::Unsupported(format!(
            "AAC with channel configuration {channels}"
        )));
    }
    Ok(Codec::Aac {
        profile: (kind - 1) as u8,
        rate_index: rate_index as u8,
        channels: channels as u8,
    })
}

/// An ADTS header (no CRC) for a raw AAC frame of `payload` bytes.
pub fn adts_header(codec: Codec, payload: usize) -> Option<[u8; 7]> {
    let Codec::Aac {
        profile,
        rate_index,
        channels,
    } = codec
    else {
        return None;
    };
    let length = payload + 7;
    if length >= 1 << 13 {
        return None;
    }
    Some([
        0xff,
        0xf1,
        (profile << 6) | (rate_index << 2) | (channels >> 2),
        ((channels & 3) << 6) | (length >> 11) as u8,
        (length >> 3) as u8,
        (((length & 7) as u8) << 5) | 0x1f,
        0xfc,
    ])
}

/// The samples of `track` in a media segment (`moof` and `mdat` pairs),
/// appended to `out` in a form the decoder reads.
///
/// # Errors
/// A segment whose boxes or sample tables do not add up.
pub fn fragment(segment: &[u8], track: &Track, out: &mut Vec<u8>) -> Result<(), Fmp4Error> {
    for b in boxes(segment) {
        let (kind, moof_at, moof) = b?;
        if &kind != b"moof" {
            continue;
        }
        for t in boxes(moof) {
            let (kind, _, traf) = t?;
            if &kind != b"traf" {
                continue;
            }
            let tfhd = child(traf, b"tfhd")?.ok_or(Fmp4Error::Malformed("traf has no tfhd"))?;
            let flags = be32(tfhd, 0)? & 0x00ff_ffff;
            if be32(tfhd, 4)? != track.id {
                continue;
            }
            let mut at = 8;
            let mut base = moof_at;
            if flags & 0x01 != 0 {
                let hi = be32(tfhd, at)?;
                let lo = be32(tfhd, at + 4)?;
                base = usize::try_from((u64::from(hi) << 32) | u64::from(lo))
                    .map_err(|_| Fmp4Error::Malformed("a data offset is out of range"))?;
                at += 8;
            }
            for (flag, size) in [(0x02, 4), (0x08, 4)] {
                if flags & flag != 0 {
                    at += size;
                }
            }
            let default_size = if flags & 0x10 != 0 {
                be32(tfhd, at)?
            } else {
                track.default_size
            };
            let mut next = base;
            for r in boxes(traf) {
                let (kind, _, trun) = r?;
                if &kind != b"trun" {
                    continue;
                }
                let flags = be32(trun, 0)? & 0x00ff_ffff;
                let count = be32(trun, 4)? as usize;
                let mut at = 8;
                if flags & 0x01 != 0 {
                    let offset = be32(trun, at)? as i32;
                    next = base
                        .checked_add_signed(offset as isize)
                        .ok_or(Fmp4Error::Malformed("a data offset is out of range"))?;
                    at += 4;
                }
                if flags & 0x04 != 0 {
                    at += 4;
                }
                let per_sample = [0x100, 0x200, 0x400, 0x800]
                    .iter()
                    .filter(|&&f| flags & f != 0)
                    .count()
                    * 4;
                if count > segment.len() {
                    return Err(Fmp4Error::Malformed("more samples than bytes"));
                }
                for i in 0..count {
                    let size = if flags & 0x200 != 0 {
                        let skip = if flags & 0x100 != 0 { 4 } else { 0 };
                        be32(trun, at + i * per_sample + skip)?
                    } else {
                        default_size
                    } as usize;
                    let data = segment
                        .get(next..next + size)
                        .ok_or(Fmp4Error::Malformed("a sample lies outside its segment"))?;
                    if let Some(header) = adts_header(track.codec, size) {
                        out.extend_from_slice(&header);
                    }
                    out.extend_from_slice(data);
                    next += size;
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aac_configs_become_adts_headers_and_he_aac_gives_its_core() {
        // AAC-LC, 44.1 kHz (index 4), stereo: 00010 0100 0010 000
        let lc = audio_specific_config(&[0x12, 0x10]).unwrap();
        assert_eq!(
            lc,
            Codec::Aac {
                profile: 1,
                rate_index: 4,
                channels: 2
            }
        );
        // HE-AAC: object 5, core at 24 kHz (index 6), stereo, extension at
        // 48 kHz (index 3), core object 2.
        // 00101 0110 0010 0011 00010 ...
        let he = audio_specific_config(&[0x2b, 0x11, 0x88, 0x00]).unwrap();
        assert_eq!(
            he,
            Codec::Aac {
                profile: 1,
                rate_index: 6,
                channels: 2
            }
        );
        // AAC-ELD (object 39) is not decoded.
        assert!(matches!(
            audio_specific_config(&[0xf8, 0xe6, 0x20]),
            Err(Fmp4Error::Unsupported(_))
        ));
        let h = adts_header(lc, 100).unwrap();
        assert_eq!(h[..2], [0xff, 0xf1]);
        let length =
            (usize::from(h[3] & 3) << 11) | (usize::from(h[4]) << 3) | usize::from(h[5] >> 5);
        assert_eq!(length, 107);
        assert_eq!(adts_header(Codec::Mp3, 100), None);
    }
}
