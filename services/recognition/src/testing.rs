//! What the recogniser's unit tests share: a private store and synthetic
//! catalogue music in it.

use hendu_fingerprint::synth::music;
use hendu_fingerprint::{Fingerprinter, PeakProfile};
use hendu_storage::model::{ContentHash, MusicId, NewMusic};
use hendu_storage::{QueueConfig, Storage};

/// A private directory, removed at the end.
pub(crate) struct Scratch(pub std::path::PathBuf);

impl Scratch {
    pub fn new() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir =
            std::env::temp_dir().join(format!("hendu-recognition-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    /// An embedded store in the directory.
    pub async fn storage(&self) -> Storage {
        Storage::embedded(&self.0.join("hendu.db"), QueueConfig::default())
            .await
            .unwrap()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `seconds` of synthetic music `seed` at `rate`, stored as a ready
/// catalogue music; its id and its audio.
pub(crate) async fn stored_music(
    storage: &Storage,
    seed: u64,
    seconds: u32,
    rate: u32,
) -> (MusicId, Vec<f32>) {
    let samples = music(seed, seconds as f32, rate);
    let mut fp = Fingerprinter::new(rate, PeakProfile::CATALOGUE);
    let mut peaks = Vec::new();
    fp.push(&samples, &mut peaks);
    fp.finish(&mut peaks);
    let new = NewMusic::new(
        &format!("track {seed}"),
        None,
        seconds * 1000,
        ContentHash::of(&seed.to_le_bytes()),
        &format!("track{seed}.wav"),
    )
    .unwrap();
    let stored = storage
        .add_music(&new, &peaks, fp.frames(), None)
        .await
        .unwrap();
    (stored.record.id, samples)
}
