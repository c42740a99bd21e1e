//! An index changed a track at a time (parts added, tracks removed, parts
//! merged while changes go on) answers every query as an index built afresh
//! from the same tracks does.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly by design.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use hendu_fingerprint::params::FRAME_SECONDS;
use hendu_fingerprint::synth::music;
use hendu_fingerprint::{
    Candidate, Clip, Index, IndexBuilder, Merged, Peak, PeakProfile, SearchOptions, Searcher,
    TrackId, fingerprint_clip, fingerprint_clip_sparse,
};
use proptest::prelude::*;

const RATE: u32 = 8000;
const SECONDS: f32 = 24.0;
/// Tracks the operations choose from; the last is never added.
const POOL: usize = 7;

struct Track {
    peaks: Vec<Peak>,
    frames: u32,
    /// 6 s of the track from 9 s on, as a query: peaks and sparse peaks.
    query: (Vec<Peak>, Vec<Peak>),
}

fn pool() -> &'static [Track] {
    static POOL_TRACKS: OnceLock<Vec<Track>> = OnceLock::new();
    POOL_TRACKS.get_or_init(|| {
        (0..POOL as u64)
            .map(|seed| {
                let samples = music(seed + 40, SECONDS, RATE);
                let clip = |from: usize, to: usize| Clip {
                    sample_rate: RATE,
                    samples: samples[from..to].to_vec(),
                };
                let whole = clip(0, samples.len());
                let excerpt = clip(9 * RATE as usize, 15 * RATE as usize);
                Track {
                    peaks: fingerprint_clip(&whole, PeakProfile::CATALOGUE),
                    frames: (f64::from(SECONDS) / FRAME_SECONDS) as u32,
                    query: fingerprint_clip_sparse(&excerpt),
                }
            })
            .collect()
    })
}

#[derive(Debug, Clone)]
enum Op {
    /// Adds these pool tracks (those not in the index) as one part.
    Add(Vec<usize>),
    /// Removes a pool track, if it is in the index.
    Remove(usize),
    /// Takes a merge of the parts from this one on (kept aside) ...
    StartMerge(usize),
    /// ... and puts the merge kept aside in place.
    FinishMerge,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => prop::collection::vec(0..POOL - 1, 1..3).prop_map(Op::Add),
        2 => (0..POOL - 1).prop_map(Op::Remove),
        1 => (0usize..3).prop_map(Op::StartMerge),
        1 => Just(Op::FinishMerge),
    ]
}

/// What a search found, with the track named by its pool number.
fn answer(found: Option<Candidate>, names: &BTreeMap<TrackId, usize>) -> Option<String> {
    found.map(|c| {
        format!(
            "track {} at {:.3} s, speed {} pitch {}, score {} rival {} verified {} strength {:.4}",
            names[&c.track],
            c.offset_s,
            c.speed,
            c.pitch,
            c.score,
            c.rival_score,
            c.verified,
            c.strength
        )
    })
}

fn answers(index: &Index, names: &BTreeMap<TrackId, usize>) -> Vec<Option<String>> {
    let options = SearchOptions::default();
    let mut searcher = Searcher::default();
    pool()
        .iter()
        .flat_map(|t| {
            [
                answer(index.search(&t.query.0, &options, &mut searcher), names),
                answer(
                    index.search_wide(&t.query.0, &t.query.1, &options, &mut searcher),
                    names,
                ),
            ]
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn a_changed_index_answers_as_a_fresh_one(ops in prop::collection::vec(op(), 1..10)) {
        let tracks = pool();
        let mut index = IndexBuilder::new().build();
        // Which pool track each id is, while it is in the index.
        let mut names: BTreeMap<TrackId, usize> = BTreeMap::new();
        let mut aside: Option<Merged> = None;
        for op in ops {
            match op {
                Op::Add(which) => {
                    let mut added = index.builder();
                    for k in which {
                        if !names.values().any(|&n| n == k) {
                            let id = added.add(&tracks[k].peaks, tracks[k].frames).unwrap();
                            names.insert(id, k);
                        }
                    }
                    index = index.with_added(added);
                }
                Op::Remove(k) => {
                    if let Some((&id, _)) = names.iter().find(|(_, n)| **n == k) {
                        index = index.without(&[id]);
                        names.remove(&id);
                    }
                }
                Op::StartMerge(from) => {
                    if aside.is_none() {
                        aside = Some(index.merge(from).unwrap());
                    }
                }
                Op::FinishMerge => {
                    if let Some(merged) = aside.take() {
                        index = index.with_merged(merged);
                    }
                }
            }
            prop_assert_eq!(index.len(), names.len());
            prop_assert!(index.tracks().eq(names.keys().copied()));
        }

        let mut fresh = IndexBuilder::new();
        let mut fresh_names = BTreeMap::new();
        for &k in names.values() {
            let id = fresh.add(&tracks[k].peaks, tracks[k].frames).unwrap();
            fresh_names.insert(id, k);
        }
        let fresh = fresh.build();
        prop_assert_eq!(answers(&index, &names), answers(&fresh, &fresh_names));
        // The index holds what it was given: every present track is found.
        let found = answers(&index, &names);
        for &k in names.values() {
            let expected = format!("track {k} at ");
            prop_assert!(
                found[2 * k].as_deref().is_some_and(|a| a.starts_with(&expected)),
                "track {} not found: {:?}", k, found[2 * k]
            );
        }
    }
}

#[test]
fn a_merge_drops_removed_tracks_and_keeps_later_changes() {
    let tracks = pool();
    let mut builder = IndexBuilder::new();
    for t in &tracks[..3] {
        builder.add(&t.peaks, t.frames).unwrap();
    }
    let index = builder.build().without(&[1]);
    let bytes = index.bytes();
    let merged = index.merge(0).unwrap();
    // Meanwhile: a track added, another removed.
    let mut added = index.builder();
    let late = added.add(&tracks[3].peaks, tracks[3].frames).unwrap();
    let index = index.with_added(added).without(&[0]);
    let index = index.with_merged(merged);
    assert_eq!(index.parts(), 2);
    // Track 1 is gone for good; track 0, removed after the merge began, is
    // still a tombstone until the next merge.
    assert_eq!(index.removed(), 1);
    assert_eq!(index.tracks().collect::<Vec<_>>(), vec![2, late]);
    let index = index.with_merged(index.merge(0).unwrap());
    assert_eq!((index.parts(), index.removed(), index.len()), (1, 0, 2));
    assert!(index.bytes() < bytes, "{} >= {bytes}", index.bytes());
}

#[test]
#[should_panic(expected = "must follow")]
fn tracks_added_to_an_earlier_state_are_refused() {
    let index = IndexBuilder::new().build();
    let (mut first, mut second) = (index.builder(), index.builder());
    first.add(&pool()[0].peaks, pool()[0].frames).unwrap();
    second.add(&pool()[1].peaks, pool()[1].frames).unwrap();
    let _ = index.with_added(first).with_added(second);
}

#[test]
#[should_panic(expected = "in place of the parts it was made from")]
fn a_merge_of_another_index_is_refused_even_where_the_parts_line_up() {
    let build = || {
        let mut builder = IndexBuilder::new();
        builder.add(&pool()[0].peaks, pool()[0].frames).unwrap();
        builder.build()
    };
    let (one, other) = (build(), build());
    let merged = one.without(&[0]).merge(0).unwrap();
    let _ = other.with_merged(merged);
}

#[test]
fn no_merge_is_due_that_would_change_nothing() {
    let mut builder = IndexBuilder::new();
    builder.add(&pool()[0].peaks, pool()[0].frames).unwrap();
    let mut index = builder.build();
    // One part and no removed track: nothing to do.
    assert_eq!(index.merge_due(), None);
    // More parts than MAX_PARTS: the new ones are due.
    for t in &pool()[1..6] {
        let mut added = index.builder();
        added.add(&t.peaks, t.frames).unwrap();
        index = index.with_added(added);
    }
    let from = index.merge_due().expect("six parts");
    index = index.with_merged(index.merge(from).unwrap());
    assert!(index.parts() <= 2, "{} parts", index.parts());
    assert_eq!(index.len(), 6);
}
