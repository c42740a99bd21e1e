//! What must hold after any experiment, faults or not, checked against
//! what was sent and what the stores say:
//!
//! - every sample the service accepted is stored;
//! - every one was recognised and decided by the filter (settled), and
//!   none went to the dead letters;
//! - every expected play is there: each stretch of a programme track that a
//!   device delivered as three or more consecutive samples has a play of
//!   that track, on that device, overlapping it;
//! - no play is there twice: no two plays of one track on one device overlap.

use std::collections::HashMap;

use anyhow::Result;
use hendu_storage::model::{MusicId, Play, Source};
use hendu_storage::{Queue, Storage};
use time::OffsetDateTime;

use crate::Outcome;
use crate::load::SamplesSetup;

/// Consecutive samples of one track that must make a play.
pub const MIN_SAMPLES_FOR_A_PLAY: usize = 3;

/// The checks' results.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Checked {
    pub accepted: usize,
    /// Accepted samples not in the store (the first few).
    pub not_stored: Vec<String>,
    pub not_stored_count: usize,
    /// Samples not settled at the end (at most 1,000 looked at).
    pub unsettled: usize,
    pub dead_letters: u64,
    pub expected_plays: usize,
    /// Expected plays not found (device, track, from, to; the first few).
    pub missing_plays: Vec<String>,
    pub missing_plays_count: usize,
    pub plays: usize,
    /// Overlapping plays of one track on one device (the first few).
    pub duplicate_plays: Vec<String>,
    pub duplicate_plays_count: usize,
    pub holds: bool,
}

const SHOWN: usize = 10;

fn at(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// One device's plays against the samples it delivered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Compared {
    pub plays: usize,
    pub expected: usize,
    pub missing: Vec<String>,
    pub duplicates: Vec<String>,
}

/// Compares `plays` (of `device`) with the sample numbers it delivered.
pub fn compare(
    setup: &SamplesSetup,
    device: i64,
    delivered: &[u64],
    mut plays: Vec<Play>,
) -> Compared {
    let mut c = Compared {
        plays: plays.len(),
        ..Compared::default()
    };
    let n = setup.track_of_stretch.len() as u64;
    if n == 0 {
        return c;
    }
    let mut offsets = Vec::with_capacity(setup.stretch_ms.len());
    let mut pass_ms = 0i64;
    for d in &setup.stretch_ms {
        offsets.push(pass_ms);
        pass_ms += i64::from(*d);
    }
    let captured = |j: u64| setup.start_ms + (j / n) as i64 * pass_ms + offsets[(j % n) as usize];
    let end_of = |j: u64| captured(j) + i64::from(setup.stretch_ms[(j % n) as usize]);
    // Two plays of one track overlapping.
    plays.sort_by_key(|p| (p.music_id, p.started_at));
    for w in plays.windows(2) {
        if w[0].music_id == w[1].music_id && w[1].started_at < w[0].ended_at {
            c.duplicates.push(format!(
                "device {device}: plays {} and {} of music {} overlap",
                w[0].id, w[1].id, w[0].music_id
            ));
        }
    }
    let mut by_music: HashMap<MusicId, Vec<(OffsetDateTime, OffsetDateTime)>> = HashMap::new();
    for p in &plays {
        by_music
            .entry(p.music_id)
            .or_default()
            .push((p.started_at, p.ended_at));
    }
    // Runs of consecutive samples of one track in one pass.
    let mut js = delivered.to_vec();
    js.sort_unstable();
    js.dedup();
    let mut k = 0;
    while k < js.len() {
        let first = js[k];
        let track = setup.track_of_stretch[(first % n) as usize];
        let mut last = first;
        while k + 1 < js.len()
            && js[k + 1] == last + 1
            && js[k + 1] / n == first / n
            && setup.track_of_stretch[(js[k + 1] % n) as usize] == track
        {
            k += 1;
            last = js[k];
        }
        k += 1;
        let count = (last - first + 1) as usize;
        let Some(Some(music)) = setup.music_ids.get(track) else {
            continue;
        };
        if count < MIN_SAMPLES_FOR_A_PLAY {
            continue;
        }
        c.expected += 1;
        let (from, to) = (at(captured(first)), at(end_of(last)));
        let found = by_music
            .get(music)
            .is_some_and(|spans| spans.iter().any(|(s, e)| *s < to && *e > from));
        if !found {
            c.missing.push(format!(
                "device {device}: music {music} from {from} to {to} ({count} samples)"
            ));
        }
    }
    c
}

/// Checks `outcome` (whose deliveries were kept) against `storage`.
///
/// # Errors
/// A store that does not answer.
pub async fn check(storage: &Storage, outcome: &Outcome, accepted: &[String]) -> Result<Checked> {
    let mut c = Checked {
        accepted: accepted.len(),
        ..Checked::default()
    };
    for id in accepted {
        if storage.documents.sample(id).await?.is_none() {
            c.not_stored_count += 1;
            if c.not_stored.len() < SHOWN {
                c.not_stored.push(id.clone());
            }
        }
    }
    c.unsettled = storage
        .documents
        .unsettled_samples(OffsetDateTime::now_utc(), 1000)
        .await?
        .len();
    for q in [Queue::Samples, Queue::RawResults] {
        c.dead_letters += storage.queue.backlog(q).await?.dead;
    }
    if let Some(setup) = &outcome.samples {
        for (d, delivered) in outcome.delivered.iter().enumerate() {
            let Some(&device) = setup.device_ids.get(d) else {
                continue;
            };
            let plays = storage
                .relational
                .plays_of_source(
                    Source::Device(device),
                    at(setup.start_ms - 3_600_000),
                    OffsetDateTime::now_utc() + time::Duration::hours(1),
                )
                .await?;
            let numbers: Vec<u64> = delivered.iter().map(|(j, _, _)| *j).collect();
            let found = compare(setup, device, &numbers, plays);
            c.plays += found.plays;
            c.expected_plays += found.expected;
            c.missing_plays_count += found.missing.len();
            c.duplicate_plays_count += found.duplicates.len();
            c.missing_plays.extend(found.missing);
            c.duplicate_plays.extend(found.duplicates);
        }
        c.missing_plays.truncate(SHOWN);
        c.duplicate_plays.truncate(SHOWN);
    }
    c.holds = c.not_stored_count == 0
        && c.unsettled == 0
        && c.dead_letters == 0
        && c.missing_plays_count == 0
        && c.duplicate_plays_count == 0;
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two tracks of 3 and 4 samples of 10 s, from t = 1,000 s.
    fn setup() -> SamplesSetup {
        SamplesSetup {
            device_ids: vec![7],
            music_ids: vec![Some(101), Some(102)],
            track_of_stretch: vec![0, 0, 0, 1, 1, 1, 1],
            stretch_ms: vec![10_000; 7],
            start_ms: 1_000_000,
        }
    }

    fn play(id: i64, music: i64, from_s: i64, to_s: i64) -> Play {
        Play {
            id,
            music_id: music,
            source: Source::Device(7),
            location: None,
            started_at: at(from_s * 1000),
            ended_at: at(to_s * 1000),
            score: 1.0,
            idempotency_key: format!("k{id}"),
        }
    }

    #[test]
    fn the_expected_plays_are_found() {
        let c = compare(
            &setup(),
            7,
            &[0, 1, 2, 3, 4, 5, 6],
            vec![play(1, 101, 1000, 1030), play(2, 102, 1030, 1070)],
        );
        assert_eq!(
            (c.expected, c.missing.len(), c.duplicates.len()),
            (2, 0, 0),
            "{c:?}"
        );
    }

    #[test]
    fn a_missing_play_and_a_play_twice_are_named() {
        // Track 102 delivered in full but never played; 101 played twice.
        let c = compare(
            &setup(),
            7,
            &[0, 1, 2, 3, 4, 5, 6],
            vec![play(1, 101, 1000, 1030), play(2, 101, 1020, 1030)],
        );
        assert_eq!(c.expected, 2);
        assert_eq!(c.missing.len(), 1, "{c:?}");
        assert!(c.missing[0].contains("music 102"));
        assert_eq!(c.duplicates.len(), 1, "{c:?}");
    }

    #[test]
    fn too_few_samples_or_a_gap_expect_nothing() {
        // Samples 3, 4 and 6 of track 102: runs of 2 and 1.
        let c = compare(&setup(), 7, &[3, 4, 6, 10], vec![]);
        assert_eq!(c.expected, 0, "{c:?}");
        // The second pass: samples 7..9 are track 101 again, at 1,070 s.
        let c = compare(&setup(), 7, &[7, 8, 9], vec![play(3, 101, 1070, 1100)]);
        assert_eq!((c.expected, c.missing.len()), (1, 0), "{c:?}");
    }
}
