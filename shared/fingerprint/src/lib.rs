//! HENDU's fingerprint engine.
//!
//! Recognises a few seconds of noisy, re-encoded, slightly sped-up audio among
//! a catalogue of tracks, and says so when the audio is not in the catalogue.
//! No I/O framework and no storage here: callers decide where fingerprints live.
//!
//! ```
//! use hendu_fingerprint::synth::music;
//! use hendu_fingerprint::{Clip, IndexBuilder, PeakProfile, SearchOptions, Searcher, fingerprint_clip};
//!
//! // Index two tracks (any sample rate: the engine resamples to 8 kHz).
//! let mut builder = IndexBuilder::new();
//! for seed in [1, 2] {
//!     let track = Clip { sample_rate: 22_050, samples: music(seed, 40.0, 22_050) };
//!     let peaks = fingerprint_clip(&track, PeakProfile::CATALOGUE);
//!     builder.add(&peaks, (40.0 / hendu_fingerprint::params::FRAME_SECONDS) as u32).unwrap();
//! }
//! let index = builder.build();
//!
//! // Identify 6 s of the second track, from 12 s on.
//! let samples = music(2, 40.0, 22_050)[12 * 22_050..18 * 22_050].to_vec();
//! let query = fingerprint_clip(&Clip { sample_rate: 22_050, samples }, PeakProfile::QUERY);
//! let found = index.search(&query, &SearchOptions::default(), &mut Searcher::default()).unwrap();
//! assert_eq!(found.track, 1);
//! assert!((found.offset_s - 12.0).abs() < 0.05);
//! assert!(found.confidence > 0.5);
//! ```
//!
//! # Parameters, and the measurements that chose them
//! (Development corpus of `bench/recognition`, 114 indexed real tracks; the
//! full argument is in `docs/recognition.md`, the numbers in `docs/benchmarks.md`.)
//! - **8 kHz, peaks only in 78-3400 Hz** ([`params`]): nothing above the
//!   telephone band, so a GSM channel keeps most peaks (100% top-1 recall on
//!   telephone clips); the bass is kept because in much music it is what
//!   stands above broadband noise (pink noise at 0 dB SNR, same threshold:
//!   92.5% recall with the band from 78 Hz, 88.1% from 312 Hz).
//! - **A low band, 20-301 Hz at 1 kHz with 3.9 Hz bins, for noisy queries**
//!   ([`params::LOW_BAND_LO`], [`gate`]): bass notes that the main band's
//!   15.6 Hz bins cannot tell apart. Queries use it only where the main band
//!   is as flat as noise, because clean clips of two tracks that share a bass
//!   figure would otherwise match. Pink noise at 5 / 0 dB SNR: 98.7% / 98.2%
//!   with it, 96.5% / 91.2% without, no never-indexed query answered either way.
//! - **512-sample STFT, 16 ms hop**: 625 frames per 10 s query; offsets and
//!   timeline boundaries to 16 ms (median boundary error 0.1-0.3 s).
//! - **24 catalogue peaks/s, 60 query peaks/s, the loudest per half second**
//!   (main band; the low band adds 16 and 40): catalogue density sets the
//!   index size (0.33 MB of store per hour, both bands); query
//!   density above 60/s or a denser catalogue changed recall under noise by
//!   under 2 points; keeping the loudest rather than the most prominent peaks
//!   gained 2 points under pink noise.
//! - **Speeds ±3%, a 0.5% grid refined in 0.25% steps**: on a 2% fast clip,
//!   warping at the right speed makes 216 peaks coincide with the original,
//!   1% off only 6-8; 2% fast clips are found 100% of the time.
//! - **Confidence one half at strength 6.5** ([`index::strength`]): the
//!   strongest never-indexed query reached 5.81.
//!
//! # Layout
//! - [`params`]: analysis rates, STFT geometries, bands, hash layout, peak profiles.
//! - [`decode`]: any supported container/codec to mono samples (Symphonia).
//! - [`resample`]: band-limited streaming resampling to the engine's rate.
//! - [`spectrogram`]: streaming STFT to log-power frames.
//! - [`peaks`]: streaming spectral peak picking, per band.
//! - [`gate`]: where a query keeps its low-band peaks (where the main band is noise).
//! - [`hashes`]: peak pairs (landmarks) and speed warping.
//! - [`fingerprinter`]: the streaming pipeline, PCM in, peaks out.
//! - [`index`]: the inverted index and the offset-histogram matcher.
//! - [`parts`]: the immutable parts an index is made of: tracks added and
//!   removed without a rebuild, parts merged off to one side.
//! - [`triplets`]: peak triplets whose shape survives speed, tempo and key
//!   changes; they propose the warps the pair hashes are matched under.
//! - [`verify`]: peak-by-peak verification of candidates against decoys.
//! - [`timeline`]: long recordings to a timeline of plays.
//! - [`synth`]: deterministic synthetic music and noise for tests.
//! - [`hostile`]: hostile inputs (decompression bombs, lying headers, dense
//!   fingerprints) for tests and benchmarks of the limits.
//! - [`blocks`]: the catalogue's 30 s blocks with 15 s overlap.
//! - [`packed`]: a compact byte form of peak lists for stores and the wire.
//! - [`wire`]: the versioned sample fingerprint a sensor sends instead of audio.

pub mod blocks;
pub(crate) mod buckets;
pub mod decode;
pub mod fingerprinter;
pub mod gate;
pub mod hashes;
pub mod hostile;
pub mod index;
pub mod packed;
pub mod params;
pub mod parts;
pub mod peaks;
pub mod resample;
pub mod spectrogram;
pub mod synth;
pub mod timeline;
pub mod triplets;
pub mod verify;
pub mod wire;

pub use decode::{AudioReader, Clip, DecodeError, DecodeLimits, read_clip};
pub use fingerprinter::{
    Fingerprint, Fingerprinter, fingerprint_clip, fingerprint_clip_sparse, fingerprint_file,
    fingerprint_file_with, fingerprint_reader,
};
pub use hashes::Warp;
pub use index::{
    Candidate, Evidence, Index, IndexError, SearchOptions, Searcher, TrackId,
    strongest_across_shards,
};
pub use params::PeakProfile;
pub use parts::{IndexBuilder, Merged};
pub use peaks::Peak;
pub use timeline::{ScanOptions, Scanner, Segment};
