//! HENDU's fingerprint engine.
//!
//! Recognises a few seconds of noisy, re-encoded, slightly sped-up audio among
//! a catalogue of tracks, and says so when the audio is not in the catalogue.
//! No I/O framework and no storage here: callers decide where fingerprints live.
//!
//! # Layout
//! - [`params`]: analysis rate, STFT geometry, band, hash layout, peak profiles.
//! - [`decode`]: any supported container/codec to mono samples (Symphonia).
//! - [`resample`]: band-limited streaming resampling to the engine's rate.
//! - [`spectrogram`]: streaming STFT to log-power frames.
//! - [`peaks`]: streaming spectral peak picking.
//! - [`hashes`]: peak pairs (landmarks) and speed warping.
//! - [`fingerprinter`]: the streaming pipeline, PCM in, peaks out.
//! - [`index`]: the inverted index and the offset-histogram matcher.
//! - [`verify`]: peak-by-peak verification of candidates against decoys.
//! - [`timeline`]: long recordings to a timeline of plays.
//! - [`synth`]: deterministic synthetic music and noise for tests.
//! - [`blocks`]: the catalogue's 30 s blocks with 15 s overlap.

pub mod blocks;
pub mod decode;
pub mod fingerprinter;
pub mod hashes;
pub mod index;
pub mod params;
pub mod peaks;
pub mod resample;
pub mod spectrogram;
pub mod synth;
pub mod timeline;
pub mod verify;

pub use decode::{AudioReader, Clip, DecodeError, read_clip};
pub use fingerprinter::{
    Fingerprint, Fingerprinter, fingerprint_clip, fingerprint_file, fingerprint_reader,
};
pub use index::{Candidate, Index, IndexBuilder, IndexError, SearchOptions, Searcher, TrackId};
pub use params::PeakProfile;
pub use peaks::Peak;
pub use timeline::{ScanOptions, Scanner, Segment};
