//! A compact byte form of a peak list, for stores and the wire.
//!
//! Layout: one byte naming the bin precision, a LEB128 varint peak count, then
//! per peak a LEB128 varint of `frame delta * 2 + band` (the frame delta from
//! the previous peak; `band` is 1 for the low band, 0 for the main band) and
//! the bin counted from its band's base ([`crate::params::LOW_BIN_BASE`] for
//! the low band, 0 for the main band), so that every bin fits a byte:
//! - [`BinPrecision::Whole`]: rounded to a whole bin, one byte, about 2 bytes
//!   a peak (catalogue tracks, whose bins are never warped);
//! - [`BinPrecision::Fine`]: in 1/256ths of a bin, two little-endian bytes,
//!   about 3 bytes a peak (queries and samples, which the matcher warps to
//!   undo speed changes and so need the fraction).
//!
//! A query's blob ([`pack_query`], tag 5) carries a second list after the
//! first, in the fine form: the query's sparse peaks, which its triplets are
//! made of (see [`crate::triplets`]).
//!
//! Peaks rather than hashes are kept because each peak anchors several
//! hashes: the hashes are rebuilt from peaks at load time in a fraction of the
//! time it takes to read them. Precision bytes 1 and 2 were the layouts of
//! analyses 1 and 2 (one band, the bin itself); their peaks are refused by
//! name, since they must be computed again.
//!
//! ```
//! use hendu_fingerprint::Peak;
//! use hendu_fingerprint::packed::{BinPrecision, pack, unpack};
//!
//! let peaks = vec![Peak { frame: 3, bin: 40.25 }, Peak { frame: 900, bin: 260.5 }];
//! let bytes = pack(&peaks, BinPrecision::Fine);
//! assert_eq!(unpack(&bytes).unwrap(), peaks);
//! ```

use crate::params::{BAND_HI, LOW_BAND_HI, LOW_BAND_LO, LOW_BIN_BASE, is_low_bin};
use crate::peaks::Peak;

/// How precisely bins are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinPrecision {
    /// Rounded to a whole bin, one byte.
    Whole = 3,
    /// To 1/256 bin, two bytes.
    Fine = 4,
}

/// Why bytes are not a packed peak list.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum UnpackError {
    #[error("unknown peak packing {0}")]
    UnknownPrecision(u8),
    #[error(
        "peaks packed by an earlier analysis (packing {0}): fingerprint the audio again \
         with this version (a catalogue: index it into an empty store)"
    )]
    EarlierAnalysis(u8),
    #[error("packed peaks are truncated or malformed")]
    Malformed,
    #[error("packed peak bin {0} is outside the analysis band")]
    BinOutOfBand(f32),
    #[error("a query's peaks with its sparse peaks (packing 5), where one list belongs")]
    QueryBlob,
}

/// Where a peak's band starts in the bin numbering, and the band's flag.
fn band_of(bin: f32) -> (f32, u64) {
    if is_low_bin(bin) {
        (LOW_BIN_BASE as f32, 1)
    } else {
        (0.0, 0)
    }
}

/// Packs peaks (in frame order) into bytes.
///
/// # Panics
/// If the peaks are not in non-decreasing frame order (the fingerprinter
/// always emits them so).
pub fn pack(peaks: &[Peak], precision: BinPrecision) -> Vec<u8> {
    let per_peak = if precision == BinPrecision::Whole {
        2
    } else {
        3
    };
    let mut out = Vec::with_capacity(6 + peaks.len() * per_peak);
    out.push(precision as u8);
    put_varint(&mut out, peaks.len() as u64);
    let mut previous = 0u32;
    for p in peaks {
        let delta = p
            .frame
            .checked_sub(previous)
            .expect("peaks are packed in frame order");
        previous = p.frame;
        let (base, band) = band_of(p.bin);
        put_varint(&mut out, u64::from(delta) << 1 | band);
        let bin = p.bin - base;
        match precision {
            BinPrecision::Whole => out.push(bin.round().clamp(0.0, 255.0) as u8),
            BinPrecision::Fine => {
                let fixed = (bin * 256.0).round().clamp(0.0, f32::from(u16::MAX)) as u16;
                out.extend_from_slice(&fixed.to_le_bytes());
            }
        }
    }
    out
}

/// Unpacks what [`pack`] wrote: one list of peaks. A query's blob
/// ([`pack_query`]) is refused: a catalogue block or a sensor's sample holds
/// one list, and [`unpack_query`] reads both.
///
/// # Errors
/// [`UnpackError`] for anything [`pack`] cannot have written; never panics and
/// never allocates more than the input can describe.
pub fn unpack(bytes: &[u8]) -> Result<Vec<Peak>, UnpackError> {
    if bytes.first() == Some(&QUERY_TAG) {
        return Err(UnpackError::QueryBlob);
    }
    unpack_query(bytes).map(|(peaks, _)| peaks)
}

/// A query's peaks and its sparse peaks, packed together (both fine).
///
/// # Panics
/// If either list is not in non-decreasing frame order.
pub fn pack_query(peaks: &[Peak], sparse: &[Peak]) -> Vec<u8> {
    let mut out = pack(peaks, BinPrecision::Fine);
    out[0] = QUERY_TAG;
    let second = pack(sparse, BinPrecision::Fine);
    out.extend_from_slice(&second[1..]);
    out
}

/// Unpacks what [`pack_query`] or [`pack`] wrote: the peaks, and the sparse
/// peaks (none from [`pack`]).
///
/// # Errors
/// As [`unpack`].
pub fn unpack_query(bytes: &[u8]) -> Result<(Vec<Peak>, Vec<Peak>), UnpackError> {
    let (precision, count, mut rest) = header(bytes)?;
    let peaks = take_list(precision, count, &mut rest)?;
    let mut sparse = Vec::new();
    if bytes[0] == QUERY_TAG {
        let count = take_varint(&mut rest)?;
        sparse = take_list(precision, count, &mut rest)?;
    }
    if rest.is_empty() {
        Ok((peaks, sparse))
    } else {
        Err(UnpackError::Malformed)
    }
}

/// The tag of [`pack_query`]'s blobs.
const QUERY_TAG: u8 = 5;

/// Reads `count` peaks off the front of `rest`.
fn take_list(
    precision: BinPrecision,
    count: u64,
    rest: &mut &[u8],
) -> Result<Vec<Peak>, UnpackError> {
    let count = usize::try_from(count).map_err(|_| UnpackError::Malformed)?;
    // Each peak takes at least two bytes: a count beyond that is a lie.
    if count > rest.len() / 2 {
        return Err(UnpackError::Malformed);
    }
    let mut peaks = Vec::with_capacity(count);
    let mut frame = 0u32;
    for _ in 0..count {
        let word = take_varint(rest)?;
        let delta = u32::try_from(word >> 1).map_err(|_| UnpackError::Malformed)?;
        frame = frame.checked_add(delta).ok_or(UnpackError::Malformed)?;
        let bin = match precision {
            BinPrecision::Whole => {
                let (&b, tail) = rest.split_first().ok_or(UnpackError::Malformed)?;
                *rest = tail;
                f32::from(b)
            }
            BinPrecision::Fine => {
                let (b, tail) = rest.split_at_checked(2).ok_or(UnpackError::Malformed)?;
                *rest = tail;
                f32::from(u16::from_le_bytes([b[0], b[1]])) / 256.0
            }
        };
        let (base, bottom, top) = if word & 1 == 1 {
            (LOW_BIN_BASE, LOW_BAND_LO, LOW_BAND_HI)
        } else {
            (0, 0, BAND_HI)
        };
        // A peak may sit half a bin outside its band, never more: a low-band
        // peak further down would read as a main-band one.
        if bin < bottom as f32 - 0.5 || bin > top as f32 + 1.0 {
            return Err(UnpackError::BinOutOfBand(bin + base as f32));
        }
        peaks.push(Peak {
            frame,
            bin: bin + base as f32,
        });
    }
    Ok(peaks)
}

/// The number of peaks packed bytes declare, read without unpacking them, so
/// that a caller with a bound of its own (a sample's duration) can refuse a
/// long list before paying for it.
///
/// # Errors
/// [`UnpackError`] if the bytes do not start like a packed peak list.
pub fn peak_count(bytes: &[u8]) -> Result<u64, UnpackError> {
    header(bytes).map(|(_, count, _)| count)
}

/// The precision, the declared count and the bytes after them.
fn header(bytes: &[u8]) -> Result<(BinPrecision, u64, &[u8]), UnpackError> {
    let (&tag, mut rest) = bytes.split_first().ok_or(UnpackError::Malformed)?;
    let precision = match tag {
        3 => BinPrecision::Whole,
        4 | QUERY_TAG => BinPrecision::Fine,
        1 | 2 => return Err(UnpackError::EarlierAnalysis(tag)),
        other => return Err(UnpackError::UnknownPrecision(other)),
    };
    let count = take_varint(&mut rest)?;
    Ok((precision, count, rest))
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn take_varint(rest: &mut &[u8]) -> Result<u64, UnpackError> {
    let mut value = 0u64;
    let mut shift = 0;
    loop {
        let (&byte, tail) = rest.split_first().ok_or(UnpackError::Malformed)?;
        *rest = tail;
        value |= u64::from(byte & 0x7f)
            .checked_shl(shift)
            .ok_or(UnpackError::Malformed)?;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
        shift += 7;
        if shift > 63 {
            return Err(UnpackError::Malformed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::{BAND_LO, LOW_BAND_LO};
    use proptest::prelude::*;

    fn peaks_strategy() -> impl Strategy<Value = Vec<Peak>> {
        prop::collection::vec(
            (
                0u32..5_000,
                prop_oneof![
                    BAND_LO as u32..BAND_HI as u32,
                    (LOW_BIN_BASE + LOW_BAND_LO) as u32..(LOW_BIN_BASE + LOW_BAND_HI) as u32,
                ],
                0u32..256,
            ),
            0..300,
        )
        .prop_map(|raw| {
            let mut frame = 0;
            raw.into_iter()
                .map(|(delta, bin, frac)| {
                    frame += delta;
                    Peak {
                        frame,
                        bin: bin as f32 + frac as f32 / 256.0,
                    }
                })
                .collect()
        })
    }

    proptest! {
        #[test]
        fn fine_packing_keeps_peaks_to_a_256th_of_a_bin(peaks in peaks_strategy()) {
            prop_assert_eq!(unpack(&pack(&peaks, BinPrecision::Fine)).unwrap(), peaks);
        }

        #[test]
        fn whole_packing_rounds_bins(peaks in peaks_strategy()) {
            let back = unpack(&pack(&peaks, BinPrecision::Whole)).unwrap();
            prop_assert_eq!(back.len(), peaks.len());
            for (a, b) in back.iter().zip(&peaks) {
                prop_assert_eq!(a.frame, b.frame);
                prop_assert!((a.bin - b.bin).abs() <= 0.5);
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            let _ = unpack(&bytes);
            let _ = unpack_query(&bytes);
        }

        #[test]
        fn a_query_blob_keeps_both_lists(peaks in peaks_strategy(), sparse in peaks_strategy()) {
            let bytes = pack_query(&peaks, &sparse);
            prop_assert_eq!(unpack_query(&bytes).unwrap(), (peaks.clone(), sparse));
            prop_assert_eq!(unpack(&bytes), Err(UnpackError::QueryBlob));
            prop_assert_eq!(peak_count(&bytes).unwrap(), peaks.len() as u64);
            // A plain blob has no sparse list.
            let plain = pack(&peaks, BinPrecision::Fine);
            prop_assert_eq!(unpack_query(&plain).unwrap(), (peaks, Vec::new()));
        }

        #[test]
        fn arbitrary_peak_bytes_never_panic_and_stay_in_their_band(
            tag in 3u8..=5,
            count in 0u8..40,
            body in prop::collection::vec(any::<u8>(), 0..120),
        ) {
            let mut bytes = vec![tag, count];
            bytes.extend(body);
            if let Ok(peaks) = unpack(&bytes) {
                for p in peaks {
                    let main = p.bin <= BAND_HI as f32 + 1.0;
                    let low = is_low_bin(p.bin)
                        && p.bin <= (LOW_BIN_BASE + LOW_BAND_HI) as f32 + 1.0;
                    prop_assert!(main || low, "{p:?}");
                    // Packing again keeps the band.
                    let again = unpack(&pack(&[p], BinPrecision::Fine)).unwrap();
                    prop_assert_eq!(is_low_bin(again[0].bin), is_low_bin(p.bin));
                }
            }
        }
    }

    proptest! {
        #[test]
        fn any_bytes_unpack_without_panic_to_at_most_half_their_length_in_peaks(
            bytes in prop::collection::vec(any::<u8>(), 0..600),
        ) {
            let declared = peak_count(&bytes);
            if let Ok(peaks) = unpack(&bytes) {
                prop_assert!(peaks.len() <= bytes.len() / 2);
                prop_assert_eq!(declared, Ok(peaks.len() as u64));
                prop_assert!(peaks.windows(2).all(|w| w[0].frame <= w[1].frame));
            }
        }
    }

    #[test]
    fn damage_is_reported() {
        let bytes = pack(
            &[Peak {
                frame: 5,
                bin: 30.0,
            }],
            BinPrecision::Whole,
        );
        assert_eq!(
            unpack(&bytes[..bytes.len() - 1]),
            Err(UnpackError::Malformed)
        );
        assert_eq!(unpack(&[9, 0]), Err(UnpackError::UnknownPrecision(9)));
        assert_eq!(unpack(&[3, 200, 1]), Err(UnpackError::Malformed));
        // A low-band bin past the low band's top, and one below its bottom
        // (which would read as a main-band bin).
        assert_eq!(
            unpack(&[3, 1, 1, 200]),
            Err(UnpackError::BinOutOfBand((LOW_BIN_BASE + 200) as f32))
        );
        assert_eq!(
            unpack(&[3, 1, 1, 2]),
            Err(UnpackError::BinOutOfBand((LOW_BIN_BASE + 2) as f32))
        );
    }

    #[test]
    fn peaks_of_an_earlier_analysis_are_refused_by_name() {
        for tag in [1, 2] {
            let err = unpack(&[tag, 1, 0, 30]).unwrap_err();
            assert_eq!(err, UnpackError::EarlierAnalysis(tag));
            assert!(err.to_string().contains("empty store"));
        }
    }

    #[test]
    fn a_whole_peak_takes_two_bytes_in_either_band() {
        let peaks = [
            Peak {
                frame: 10,
                bin: 217.0,
            },
            Peak {
                frame: 11,
                bin: (LOW_BIN_BASE + LOW_BAND_HI - 1) as f32,
            },
        ];
        let bytes = pack(&peaks, BinPrecision::Whole);
        assert_eq!(bytes.len(), 2 + 2 * 2);
        assert_eq!(unpack(&bytes).unwrap(), peaks);
    }
}
