//! The embedded store: one directory holding the catalogue's fingerprints.
//!
//! Layout of `DIR`:
//! - `hendu-store.json`: marks the directory as a store and names its format.
//! - `tracks/<content-hash>.fp`: one file per catalogue track, named by the
//!   BLAKE3 hash of the audio file's bytes (indexing the same audio again
//!   finds it there and stores nothing).
//!
//! A track file is: the magic `HENDUFP1`, a little-endian `u32` length and a
//! JSON [`TrackMeta`], a `u32` peak count and the peaks (frame delta as a
//! LEB128 varint, then the FFT bin as one byte: about 2 bytes per peak), and
//! a CRC-32 of everything before it. Files are written under a temporary name,
//! synced, then renamed: a crash leaves either the whole track or nothing.
//!
//! Peaks rather than hashes are stored: they are 5x smaller (each peak anchors
//! several hashes), and the hashes are rebuilt from them at load time in a
//! fraction of a second.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use hendu_fingerprint::Peak;
use hendu_fingerprint::params::BAND_HI;
use serde::{Deserialize, Serialize};

const MAGIC: &[u8; 8] = b"HENDUFP1";
const MARKER: &str = "hendu-store.json";
const TRACKS: &str = "tracks";
const FORMAT: u32 = 1;
/// Refuse track files above this size: a corrupt header must not make us allocate gigabytes.
const MAX_TRACK_FILE: u64 = 256 << 20;

/// Store errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{0} is not a HENDU store (no {MARKER}); create one with `hendu index --store {0} ...`"
    )]
    NotAStore(PathBuf),
    #[error("{path}: store format {found} is not supported by this build (expects {FORMAT})")]
    Format { path: PathBuf, found: u32 },
    #[error("{0}: damaged track file")]
    Corrupt(PathBuf),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_owned(),
        source,
    }
}

/// What the store knows of a track besides its peaks.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TrackMeta {
    /// The audio file's path as it was given to `hendu index`.
    pub source: String,
    /// Title (the file name without extension).
    pub title: String,
    /// Decoded duration, seconds.
    pub duration_s: f64,
    /// Length in STFT frames.
    pub frames: u32,
    /// BLAKE3 of the audio file's bytes, hex.
    pub content_hash: String,
}

/// A track as loaded from the store.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredTrack {
    pub meta: TrackMeta,
    pub peaks: Vec<Peak>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Marker {
    format: u32,
}

/// A store directory.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// Opens a store, creating it if the directory is new or empty.
    ///
    /// # Errors
    /// [`StoreError`] if the directory cannot be created or is another format.
    pub fn create(root: &Path) -> Result<Self, StoreError> {
        fs::create_dir_all(root.join(TRACKS)).map_err(io(root))?;
        let marker = root.join(MARKER);
        if !marker.exists() {
            let body =
                serde_json::to_vec(&Marker { format: FORMAT }).map_err(|e| StoreError::Io {
                    path: marker.clone(),
                    source: e.into(),
                })?;
            write_atomically(&marker, &body)?;
        }
        Self::open(root)
    }

    /// Opens an existing store.
    ///
    /// # Errors
    /// [`StoreError::NotAStore`] when `root` holds no store.
    pub fn open(root: &Path) -> Result<Self, StoreError> {
        let marker = root.join(MARKER);
        let body = match fs::read(&marker) {
            Ok(body) => body,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::NotAStore(root.to_owned()));
            }
            Err(e) => return Err(io(&marker)(e)),
        };
        let m: Marker =
            serde_json::from_slice(&body).map_err(|_| StoreError::NotAStore(root.to_owned()))?;
        if m.format != FORMAT {
            return Err(StoreError::Format {
                path: root.to_owned(),
                found: m.format,
            });
        }
        Ok(Self {
            root: root.to_owned(),
        })
    }

    fn track_path(&self, content_hash: &str) -> PathBuf {
        self.root.join(TRACKS).join(format!("{content_hash}.fp"))
    }

    /// The stored track with this content hash, if any.
    ///
    /// # Errors
    /// [`StoreError`] if the file exists but cannot be read or is damaged.
    pub fn get(&self, content_hash: &str) -> Result<Option<StoredTrack>, StoreError> {
        let path = self.track_path(content_hash);
        if !path.exists() {
            return Ok(None);
        }
        read_track(&path).map(Some)
    }

    /// Stores a track; a track with the same content hash is replaced.
    ///
    /// # Errors
    /// [`StoreError`] if the file cannot be written.
    pub fn put(&self, track: &StoredTrack) -> Result<(), StoreError> {
        let path = self.track_path(&track.meta.content_hash);
        write_atomically(&path, &encode_track(track))
    }

    /// Paths of every track file, sorted (the load order is deterministic).
    ///
    /// # Errors
    /// [`StoreError`] if the directory cannot be listed.
    pub fn track_files(&self) -> Result<Vec<PathBuf>, StoreError> {
        let dir = self.root.join(TRACKS);
        let mut files = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io(&dir))? {
            let path = entry.map_err(io(&dir))?.path();
            if path.extension().is_some_and(|e| e == "fp") {
                files.push(path);
            }
        }
        files.sort();
        Ok(files)
    }

    /// Total bytes of the store's files.
    ///
    /// # Errors
    /// [`StoreError`] if the directory cannot be listed.
    pub fn size_bytes(&self) -> Result<u64, StoreError> {
        let mut total = fs::metadata(self.root.join(MARKER)).map_or(0, |m| m.len());
        for path in self.track_files()? {
            total += fs::metadata(&path).map_err(io(&path))?.len();
        }
        Ok(total)
    }
}

/// Reads and verifies one track file.
///
/// # Errors
/// [`StoreError::Corrupt`] on a bad checksum or layout.
pub fn read_track(path: &Path) -> Result<StoredTrack, StoreError> {
    let mut file = File::open(path).map_err(io(path))?;
    let len = file.metadata().map_err(io(path))?.len();
    if len > MAX_TRACK_FILE {
        return Err(StoreError::Corrupt(path.to_owned()));
    }
    let mut bytes = Vec::with_capacity(len as usize);
    file.read_to_end(&mut bytes).map_err(io(path))?;
    decode_track(&bytes).ok_or_else(|| StoreError::Corrupt(path.to_owned()))
}

fn encode_track(track: &StoredTrack) -> Vec<u8> {
    // Serialising plain strings and numbers to JSON cannot fail.
    #[allow(clippy::unwrap_used)]
    let meta = serde_json::to_vec(&track.meta).unwrap();
    let mut out = Vec::with_capacity(meta.len() + track.peaks.len() * 2 + 32);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(meta.len() as u32).to_le_bytes());
    out.extend_from_slice(&meta);
    out.extend_from_slice(&(track.peaks.len() as u32).to_le_bytes());
    let mut previous = 0u32;
    for p in &track.peaks {
        let mut delta = p.frame - previous;
        previous = p.frame;
        loop {
            let byte = (delta & 0x7f) as u8;
            delta >>= 7;
            if delta == 0 {
                out.push(byte);
                break;
            }
            out.push(byte | 0x80);
        }
        out.push(p.bin.round().clamp(0.0, 255.0) as u8);
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

fn decode_track(bytes: &[u8]) -> Option<StoredTrack> {
    let (body, crc) = bytes.split_at_checked(bytes.len().checked_sub(4)?)?;
    if crc32fast::hash(body) != u32::from_le_bytes(crc.try_into().ok()?) {
        return None;
    }
    let rest = body.strip_prefix(MAGIC)?;
    let (len, rest) = rest.split_at_checked(4)?;
    let len = u32::from_le_bytes(len.try_into().ok()?) as usize;
    let (meta, rest) = rest.split_at_checked(len)?;
    let meta: TrackMeta = serde_json::from_slice(meta).ok()?;
    let (count, mut rest) = rest.split_at_checked(4)?;
    let count = u32::from_le_bytes(count.try_into().ok()?) as usize;
    // Each peak takes at least two bytes: a count beyond that is a lie.
    if count > rest.len() / 2 {
        return None;
    }
    let mut peaks = Vec::with_capacity(count);
    let mut frame = 0u32;
    for _ in 0..count {
        let mut delta = 0u32;
        let mut shift = 0;
        loop {
            let (&byte, tail) = rest.split_first()?;
            rest = tail;
            delta |= u32::from(byte & 0x7f).checked_shl(shift)?;
            if byte & 0x80 == 0 {
                break;
            }
            shift += 7;
            if shift > 28 {
                return None;
            }
        }
        let (&bin, tail) = rest.split_first()?;
        rest = tail;
        frame = frame.checked_add(delta)?;
        if usize::from(bin) > BAND_HI {
            return None;
        }
        peaks.push(Peak {
            frame,
            bin: f32::from(bin),
        });
    }
    rest.is_empty().then_some(StoredTrack { meta, peaks })
}

/// Writes `bytes` to `path` so that a crash leaves the old file or the new
/// one, never a mix: temporary file in the same directory, fsync, rename.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let tmp = path.with_extension(format!("{}.hendu-tmp", std::process::id()));
    let result = (|| {
        let mut file = File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(io(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn track() -> StoredTrack {
        StoredTrack {
            meta: TrackMeta {
                source: "music/a.ogg".into(),
                title: "a".into(),
                duration_s: 12.5,
                frames: 780,
                content_hash: "ab".repeat(32),
            },
            peaks: vec![
                Peak {
                    frame: 3,
                    bin: 20.0,
                },
                Peak {
                    frame: 3,
                    bin: 40.0,
                },
                Peak {
                    frame: 700,
                    bin: 217.0,
                },
            ],
        }
    }

    #[test]
    fn a_track_round_trips_through_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::create(dir.path()).unwrap();
        store.put(&track()).unwrap();
        assert_eq!(store.get(&"ab".repeat(32)).unwrap(), Some(track()));
        assert_eq!(store.track_files().unwrap().len(), 1);
    }

    #[test]
    fn any_flipped_byte_is_detected() {
        let bytes = encode_track(&track());
        for i in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[i] ^= 0x10;
            assert!(decode_track(&damaged).is_none(), "byte {i}");
        }
        assert!(decode_track(&bytes[..bytes.len() - 1]).is_none());
    }

    #[test]
    fn opening_a_directory_that_is_not_a_store_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let err = Store::open(dir.path()).unwrap_err();
        assert!(err.to_string().contains("not a HENDU store"), "{err}");
    }
}
