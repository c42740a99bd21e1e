//! MPEG transport stream (ISO/IEC 13818-1) to the elementary audio stream it
//! carries: the program association table names the program map, the
//! program map names the first audio stream, and that stream's PES payloads
//! are passed on as they come (ADTS frames and MPEG audio frames delimit
//! themselves, so the PES boundaries do not matter). Bytes may arrive in
//! any pieces; at most one partial 188-byte packet is kept.

/// A transport stream packet's length.
pub const PACKET: usize = 188;
const SYNC: u8 = 0x47;

/// The audio a transport stream carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audio {
    /// AAC in ADTS frames (stream type 0x0F).
    Adts,
    /// MPEG-1/2 audio: MP3 and MP2 (stream types 0x03, 0x04).
    Mpeg,
}

impl Audio {
    /// A file extension for the prober.
    pub fn hint(self) -> &'static str {
        match self {
            Audio::Adts => "aac",
            Audio::Mpeg => "mp3",
        }
    }
}

/// Why a transport stream cannot be listened to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TsError {
    /// Bytes that are not a transport stream (lost sync).
    NotTransportStream,
    /// The program has audio in a form this build does not decode.
    Unsupported(String),
}

impl std::fmt::Display for TsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TsError::NotTransportStream => write!(f, "the segment is not an MPEG transport stream"),
            TsError::Unsupported(what) => write!(f, "{what}"),
        }
    }
}

/// The demultiplexer's state across segments (tables repeat in every
/// segment; the streams keep their identifiers).
#[derive(Debug, Default)]
pub struct TsDemuxer {
    pmt_pid: Option<u16>,
    audio: Option<(u16, Audio)>,
    partial: Vec<u8>,
    /// Whether the current PES packet's header has been passed.
    in_pes: bool,
}

impl TsDemuxer {
    pub fn new() -> Self {
        Self::default()
    }

    /// The audio stream found so far.
    pub fn audio(&self) -> Option<Audio> {
        self.audio.map(|(_, a)| a)
    }

    /// Demultiplexes `bytes`, appending the audio stream's bytes to `out`.
    ///
    /// # Errors
    /// Lost sync, or a program map with no audio this build decodes.
    pub fn push(&mut self, mut bytes: &[u8], out: &mut Vec<u8>) -> Result<(), TsError> {
        if !self.partial.is_empty() {
            let need = PACKET - self.partial.len();
            let take = need.min(bytes.len());
            self.partial.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.partial.len() < PACKET {
                return Ok(());
            }
            let packet = std::mem::take(&mut self.partial);
            self.packet(&packet, out)?;
        }
        let mut packets = bytes.chunks_exact(PACKET);
        for packet in &mut packets {
            self.packet(packet, out)?;
        }
        self.partial.extend_from_slice(packets.remainder());
        Ok(())
    }

    /// Forgets a partial packet (a new segment starts on a packet boundary).
    pub fn segment_boundary(&mut self) {
        self.partial.clear();
    }

    fn packet(&mut self, p: &[u8], out: &mut Vec<u8>) -> Result<(), TsError> {
        if p[0] != SYNC {
            return Err(TsError::NotTransportStream);
        }
        let start = p[1] & 0x40 != 0;
        let pid = (u16::from(p[1] & 0x1f) << 8) | u16::from(p[2]);
        let control = (p[3] >> 4) & 0x3;
        let mut at = 4;
        if control & 0x2 != 0 {
            at += 1 + usize::from(p[4]);
        }
        if control & 0x1 == 0 || at >= PACKET {
            return Ok(());
        }
        let payload = &p[at..];
        if pid == 0 {
            if start {
                self.pat(payload);
            }
        } else if Some(pid) == self.pmt_pid {
            if start {
                self.pmt(payload)?;
            }
        } else if let Some((audio_pid, _)) = self.audio
            && pid == audio_pid
        {
            if start {
                self.in_pes = false;
                // 00 00 01, stream id, length (2), flags (2), header length.
                if payload.len() >= 9 && payload[..3] == [0, 0, 1] {
                    let header = 9 + usize::from(payload[8]);
                    if header <= payload.len() {
                        out.extend_from_slice(&payload[header..]);
                        self.in_pes = true;
                    }
                }
            } else if self.in_pes {
                out.extend_from_slice(payload);
            }
        }
        Ok(())
    }

    /// The section a table's first packet starts (after the pointer field),
    /// without its CRC; `None` when cut short (tables fit one packet in
    /// practice).
    fn section(payload: &[u8]) -> Option<&[u8]> {
        let pointer = usize::from(*payload.first()?);
        let section = payload.get(1 + pointer..)?;
        let length = (usize::from(*section.get(1)? & 0x0f) << 8) | usize::from(*section.get(2)?);
        // The section's length counts from after the length field, CRC included.
        section.get(..(3 + length).checked_sub(4)?)
    }

    fn pat(&mut self, payload: &[u8]) {
        let Some(section) = Self::section(payload) else {
            return;
        };
        if section.first() != Some(&0x00) || section.len() < 8 {
            return;
        }
        for entry in section[8..].chunks_exact(4) {
            let program = u16::from_be_bytes([entry[0], entry[1]]);
            if program != 0 {
                self.pmt_pid = Some((u16::from(entry[2] & 0x1f) << 8) | u16::from(entry[3]));
                return;
            }
        }
    }

    fn pmt(&mut self, payload: &[u8]) -> Result<(), TsError> {
        let Some(section) = Self::section(payload) else {
            return Ok(());
        };
        if section.first() != Some(&0x02) || section.len() < 12 {
            return Ok(());
        }
        let info = (usize::from(section[10] & 0x0f) << 8) | usize::from(section[11]);
        let mut at = 12 + info;
        let mut other = None;
        while at + 5 <= section.len() {
            let kind = section[at];
            let pid = (u16::from(section[at + 1] & 0x1f) << 8) | u16::from(section[at + 2]);
            let es_info = (usize::from(section[at + 3] & 0x0f) << 8) | usize::from(section[at + 4]);
            match kind {
                0x0f => {
                    self.audio = Some((pid, Audio::Adts));
                    return Ok(());
                }
                0x03 | 0x04 => {
                    self.audio = Some((pid, Audio::Mpeg));
                    return Ok(());
                }
                0x11 => other = other.or(Some("AAC in LATM (MPEG-TS stream type 0x11)")),
                0x81 | 0x87 => other = other.or(Some("AC-3 (MPEG-TS stream type 0x81)")),
                _ => {}
            }
            at += 5 + es_info;
        }
        if self.audio.is_none() {
            let what = other.unwrap_or("an MPEG-TS program without audio");
            return Err(TsError::Unsupported(what.to_owned()));
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A packet of `pid` carrying `payload` (padded with an adaptation field).
    fn packet(pid: u16, start: bool, payload: &[u8]) -> Vec<u8> {
        assert!(payload.len() <= PACKET - 4);
        let mut p = vec![
            SYNC,
            ((pid >> 8) as u8) | if start { 0x40 } else { 0 },
            pid as u8,
        ];
        let pad = PACKET - 4 - payload.len();
        if pad == 0 {
            p.push(0x10);
        } else {
            p.push(0x30);
            p.push((pad - 1) as u8);
            p.extend(std::iter::repeat_n(0xff, pad - 1));
        }
        p.extend_from_slice(payload);
        assert_eq!(p.len(), PACKET);
        p
    }

    fn table(id: u8, body: &[u8]) -> Vec<u8> {
        let length = body.len() + 5 + 4;
        let mut s = vec![
            0,
            id,
            0xb0 | (length >> 8) as u8,
            length as u8,
            0,
            1,
            0xc1,
            0,
            0,
        ];
        s.extend_from_slice(body);
        s.extend_from_slice(&[0; 4]); // CRC, not checked
        s
    }

    /// A transport stream with one program whose stream `kind` on PID 0x101
    /// carries `es` in PES packets of at most 150 bytes.
    pub(crate) fn transport_stream(kind: u8, es: &[u8]) -> Vec<u8> {
        let mut ts = packet(0, true, &table(0x00, &[0, 1, 0xe1, 0x00]));
        ts.extend(packet(
            0x100,
            true,
            &table(
                0x02,
                &[0xe1, 0x01, 0xf0, 0x00, kind, 0xe1, 0x01, 0xf0, 0x00],
            ),
        ));
        for chunk in es.chunks(300) {
            let mut pes = vec![0, 0, 1, 0xc0, 0, 0, 0x80, 0x80, 5, 0x21, 0, 1, 0, 1];
            let first = chunk.len().min(PACKET - 4 - pes.len());
            pes.extend_from_slice(&chunk[..first]);
            ts.extend(packet(0x101, true, &pes));
            for rest in chunk[first..].chunks(150) {
                ts.extend(packet(0x101, false, rest));
            }
        }
        ts
    }

    #[test]
    fn the_audio_streams_bytes_come_out_whatever_the_pieces() {
        let es: Vec<u8> = (0..5000u32).map(|i| (i * 7 % 251) as u8).collect();
        let ts = transport_stream(0x0f, &es);
        for piece in [1, 100, 188, 1000, ts.len()] {
            let mut demux = TsDemuxer::new();
            let mut out = Vec::new();
            for part in ts.chunks(piece) {
                demux.push(part, &mut out).unwrap();
            }
            assert_eq!(out, es, "in pieces of {piece}");
            assert_eq!(demux.audio(), Some(Audio::Adts));
        }
    }

    #[test]
    fn lost_sync_and_undecodable_audio_are_errors() {
        let mut out = Vec::new();
        assert_eq!(
            TsDemuxer::new().push(&[0u8; 400], &mut out),
            Err(TsError::NotTransportStream)
        );
        let latm = transport_stream(0x11, &[1, 2, 3]);
        assert!(matches!(
            TsDemuxer::new().push(&latm, &mut out),
            Err(TsError::Unsupported(what)) if what.contains("LATM")
        ));
        let mpeg = transport_stream(0x03, &[9; 10]);
        let mut demux = TsDemuxer::new();
        demux.push(&mpeg, &mut out).unwrap();
        assert_eq!(demux.audio(), Some(Audio::Mpeg));
    }
}
