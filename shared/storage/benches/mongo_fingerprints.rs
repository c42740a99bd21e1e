//! Writes one track's fingerprint blocks to MongoDB and reads them back,
//! printing times and sizes. Not a timed test: a measurement to keep in
//! `docs/benchmarks.md`.
//!
//! ```sh
//! HENDU_MONGO_URL=mongodb://127.0.0.1:27017/hendu_bench \
//!   cargo bench -p hendu-storage --bench mongo_fingerprints -- [AUDIO_FILE]
//! ```
//! Without a file, 4 minutes of the engine's synthetic music are used. The
//! database named by the URL is dropped at the end.

#![allow(clippy::unwrap_used, clippy::expect_used)] // A benchmark: fail loudly.

use std::time::{Duration, Instant};

use futures_util::TryStreamExt;
use hendu_fingerprint::synth::music;
use hendu_fingerprint::{Clip, PeakProfile, fingerprint_clip, fingerprint_file};
use hendu_storage::DocumentStore;
use hendu_storage::catalogue::{join_blocks, split_blocks};
use hendu_storage::model::{ContentHash, Music, MusicState};
use hendu_storage::mongo::MongoStore;
use mongodb::bson::{RawDocumentBuf, doc};
use time::OffsetDateTime;

const ROUNDS: usize = 30;

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let url = std::env::var("HENDU_MONGO_URL")
        .unwrap_or_else(|_| "mongodb://127.0.0.1:27017/hendu_bench".into());
    let file = std::env::args().skip(1).find(|a| !a.starts_with("--"));
    let (name, peaks, frames, duration_s) = match &file {
        Some(path) => {
            let fp = fingerprint_file(path.as_ref(), PeakProfile::CATALOGUE).expect("decodes");
            (path.clone(), fp.peaks, fp.frames, fp.duration_s)
        }
        None => {
            let clip = Clip {
                sample_rate: 22_050,
                samples: music(7, 240.0, 22_050),
            };
            let peaks = fingerprint_clip(&clip, PeakProfile::CATALOGUE);
            let frames = (240.0 / hendu_fingerprint::params::FRAME_SECONDS) as u32;
            ("synthetic music".into(), peaks, frames, 240.0)
        }
    };
    let now = OffsetDateTime::now_utc();
    let track = Music {
        id: 1,
        title: name.clone(),
        artist: None,
        duration_ms: (duration_s * 1000.0) as u32,
        blocks: hendu_fingerprint::blocks::block_count(duration_s),
        content_hash: ContentHash::of(name.as_bytes()),
        source: name.clone(),
        owner: None,
        isrc: None,
        state: MusicState::Ready,
        created_at: now,
        updated_at: now,
    };
    let blocks = split_blocks(&track, &peaks, frames);
    let store = MongoStore::connect(&url, 4).await.expect("MongoDB answers");

    let mut writes = Vec::with_capacity(ROUNDS);
    let mut reads = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let t = Instant::now();
        store.put_blocks(&blocks).await.unwrap();
        writes.push(t.elapsed());
        let t = Instant::now();
        let back = store.blocks(track.id).await.unwrap();
        reads.push(t.elapsed());
        assert_eq!(join_blocks(&back).unwrap().0.len(), peaks.len());
    }
    writes.sort();
    reads.sort();

    let raw: Vec<RawDocumentBuf> = store
        .database()
        .collection::<RawDocumentBuf>("music_fingerprints")
        .find(doc! { "music_id": track.id })
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let bson_bytes: usize = raw.iter().map(|d| d.as_bytes().len()).sum();
    let packed: usize = blocks.iter().map(|b| b.peaks.len()).sum();
    store.database().drop().await.unwrap();

    println!("track: {name} ({duration_s:.1} s, {} peaks)", peaks.len());
    println!("server: {}", url.split('@').next_back().unwrap_or(&url));
    println!(
        "documents: {} blocks, {bson_bytes} bytes of BSON ({packed} bytes of packed peaks, {:.2} bytes/peak)",
        blocks.len(),
        packed as f64 / peaks.len() as f64
    );
    println!(
        "write all blocks: median {:.2} ms, p90 {:.2} ms ({ROUNDS} rounds)",
        percentile(&writes, 0.5),
        percentile(&writes, 0.9)
    );
    println!(
        "read all blocks:  median {:.2} ms, p90 {:.2} ms",
        percentile(&reads, 0.5),
        percentile(&reads, 0.9)
    );
}
