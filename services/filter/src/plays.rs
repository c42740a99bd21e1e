//! The block algorithm of the HENDU paper (section 4.1.1), on one source's
//! raw results in capture order. No I/O: [`decide`] is a pure function.
//!
//! The paper: take the first result `d1`; its music `m` has `q` blocks; if
//! enough of the next `q - 1` results are `m` too, `m` was played, and those
//! results are consumed; otherwise only `d1` is dropped, and the cycle starts
//! again at the next result.
//!
//! What we add, and why:
//! - **Alignment.** A result counts for `d1`'s play only if it places the
//!   track's start at the same instant (capture time minus offset in the
//!   track) within [`Thresholds::alignment_s`]. A track played twice in a row
//!   is two plays, not one; a chance match of `m` elsewhere does not stretch it.
//! - **Consumption.** The paper removes all `q` results of the window. We
//!   remove `d1` up to the play's last aligned result: the rest of the window
//!   may already be the next track, which must still be found.
//! - **Deciding early.** A window is decided when it holds `q` results, or as
//!   soon as a result was captured after the track must have ended (nothing
//!   later can belong to it), or when the source has been quiet long enough
//!   (the caller says `complete`). Until then the results wait.
//! - **Missing samples.** Replicas recognise a source's samples in parallel,
//!   and a sample whose recogniser died comes back only after the queue's
//!   claim timeout, so results do not arrive in capture order. A decision is
//!   made only once the result after the last one it consumes is there, and
//!   every result from `d1` to it follows on from the previous one (a sample
//!   starts where the last ended). A hole waits for the missing sample, until
//!   the result after the hole has been stored for [`Thresholds::gap_wait_s`]
//!   (then the hole is taken to be real: the device was off). Without this
//!   rule a late sample would be judged alone: a short play lost, or a long
//!   one recorded twice.
//! - **Times.** The play starts at the track's aligned start, but not before
//!   `d1` was captured (a track cut in mid-way started at most then); it ends
//!   at the aligned end, but not after the last aligned result's audio ends,
//!   or, when the next result is another track that starts inside it, where
//!   that track starts.

use hendu_storage::model::{MusicId, RawMatch, RawResult};
use time::{Duration, OffsetDateTime};

/// When raw results make a play. See `docs/services.md`.
#[derive(Debug, Clone, PartialEq)]
pub struct Thresholds {
    /// A raw match below this confidence counts as no match.
    pub min_confidence: f64,
    /// Aligned results (including `d1`) needed for a play: 1 makes every
    /// recognised sample a play; 2 asks for about a minute of a track with
    /// 30 s samples, which a chance match never gives.
    pub min_samples: usize,
    /// How far two results may disagree on when the track started and
    /// still be one play (seconds): absorbs offsets measured on a radio
    /// running a few percent fast.
    pub alignment_s: f64,
    /// How long a hole in a source's samples is waited for (seconds): longer
    /// than the queue's claim timeout plus one recognition.
    pub gap_wait_s: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            min_confidence: 0.5,
            min_samples: 2,
            alignment_s: 15.0,
            gap_wait_s: 60.0,
        }
    }
}

/// What the filter knows of a music.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Track {
    pub blocks: u32,
    pub duration_s: f64,
}

/// A play found in a source's results.
#[derive(Debug, Clone, PartialEq)]
pub struct FoundPlay {
    pub music_id: MusicId,
    pub started_at: OffsetDateTime,
    pub ended_at: OffsetDateTime,
    /// Mean confidence of the aligned results.
    pub score: f64,
    /// The aligned results, by sample id.
    pub samples: Vec<String>,
    /// The same results always give the same key (the first result's music
    /// and capture instant), so processing them twice records one play.
    pub key: String,
}

/// What [`decide`] concluded.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Decision {
    pub plays: Vec<FoundPlay>,
    /// How many results from the front are decided (may be deleted).
    pub consumed: usize,
}

fn seconds(s: f64) -> Duration {
    Duration::seconds_f64(s)
}

/// The instant the match places the track's start at.
fn aligned_start(r: &RawResult, m: &RawMatch) -> OffsetDateTime {
    r.captured_at - seconds(m.offset_s)
}

fn end_of(r: &RawResult) -> OffsetDateTime {
    r.captured_at + Duration::milliseconds(i64::from(r.duration_ms))
}

/// A sample that starts within this of the previous one's end follows on.
const CONTIGUOUS: Duration = Duration::seconds(CONTIGUOUS_S as i64);
/// Samples (and plays) at most this many seconds apart count as touching.
pub const CONTIGUOUS_S: f64 = 5.0;

/// Whether `results[from..=to]` can be trusted to have no sample missing:
/// each follows on from the one before, or the hole has been waited for.
fn settled(
    results: &[RawResult],
    from: usize,
    to: usize,
    now: OffsetDateTime,
    gap_wait: Duration,
) -> bool {
    (from + 1..=to).all(|j| {
        let follows = results[j].captured_at <= end_of(&results[j - 1]) + CONTIGUOUS;
        follows || results[j].stored_at.is_none_or(|at| now - at >= gap_wait)
    })
}

/// Runs the block algorithm over `results` (one source, in capture order).
/// `track` says what a music is (`None`: unknown, its results are dropped);
/// `complete` says the source is quiet, so windows need not wait for later
/// results (holes between results are still waited for);
/// `now` dates the holes being waited for.
pub fn decide(
    results: &[RawResult],
    track: impl Fn(MusicId) -> Option<Track>,
    thresholds: &Thresholds,
    complete: bool,
    now: OffsetDateTime,
) -> Decision {
    let gap_wait = seconds(thresholds.gap_wait_s);
    // Are results `i..=through` all there, with no sample missing between?
    // A quiet source has no result after its last; a hole inside is still a hole.
    let settled_through = |i: usize, through: usize| {
        (through < results.len() || complete)
            && settled(results, i, through.min(results.len() - 1), now, gap_wait)
    };
    let matched = |r: &RawResult| {
        r.matched
            .clone()
            .filter(|m| m.confidence >= thresholds.min_confidence)
    };
    let mut decision = Decision::default();
    let mut i = 0;
    while i < results.len() {
        let d1 = &results[i];
        let Some((m, t)) = matched(d1).and_then(|m| Some((m.clone(), track(m.music_id)?))) else {
            if !settled_through(i, i + 1) {
                break;
            }
            i += 1;
            continue;
        };
        let start = aligned_start(d1, &m);
        let window_end = (i + t.blocks.max(1) as usize).min(results.len());
        let members: Vec<usize> = (i..window_end)
            .filter(|&j| {
                matched(&results[j]).is_some_and(|mj| {
                    mj.music_id == m.music_id
                        && (aligned_start(&results[j], &mj) - start).abs()
                            <= seconds(thresholds.alignment_s)
                })
            })
            .collect();
        let track_over = start + seconds(t.duration_s + thresholds.alignment_s);
        let decidable = window_end - i == t.blocks.max(1) as usize
            || results.last().is_some_and(|r| r.captured_at >= track_over)
            || complete;
        if !decidable {
            break;
        }
        let is_play = members.len() >= thresholds.min_samples.max(1);
        let last = if is_play {
            *members.last().unwrap_or(&i)
        } else {
            i
        };
        // A play needs the result after it; dropping `d1` needs its window
        // whole, since a missing member would have made it a play.
        let through = if is_play {
            last + 1
        } else {
            (i + 1).max(window_end - 1)
        };
        if !settled_through(i, through) {
            break;
        }
        if is_play {
            let score = members
                .iter()
                .filter_map(|&j| matched(&results[j]))
                .map(|mj| mj.confidence)
                .sum::<f64>()
                / members.len() as f64;
            let started_at = start.max(d1.captured_at);
            // The next track may begin inside the sample after the last one
            // (it matched that track better): then this one ended there.
            let mut cap = end_of(&results[last]);
            if let Some(next) = results.get(last + 1)
                && let Some(mn) = matched(next)
            {
                let next_start = aligned_start(next, &mn);
                if next_start > cap && next_start < end_of(next) {
                    cap = next_start;
                }
            }
            let ended_at = (start + seconds(t.duration_s)).min(cap);
            decision.plays.push(FoundPlay {
                music_id: m.music_id,
                started_at,
                ended_at: ended_at.max(started_at),
                score,
                samples: members
                    .iter()
                    .map(|&j| results[j].sample_id.clone())
                    .collect(),
                key: format!(
                    "{}:{}:{}",
                    d1.source,
                    m.music_id,
                    (d1.captured_at.unix_timestamp_nanos() / 1_000_000)
                ),
            });
            i = last + 1;
        } else {
            i += 1;
        }
    }
    decision.consumed = i;
    decision
}

#[cfg(test)]
mod tests {
    use hendu_storage::model::Source;

    use super::*;

    const T0: i64 = 1_790_000_000;

    /// A 30 s sample `k` of the broadcast, matched to `music` at `offset` s.
    fn result(k: i64, matched: Option<(MusicId, f64)>) -> RawResult {
        RawResult {
            sample_id: format!("device-1-{k}"),
            source: Source::Device(1),
            captured_at: OffsetDateTime::from_unix_timestamp(T0 + 30 * k).unwrap(),
            duration_ms: 30_000,
            location: None,
            stored_at: None,
            matched: matched.map(|(music_id, offset_s)| RawMatch {
                music_id,
                block: 0,
                offset_s,
                score: 50.0,
                confidence: 0.99,
            }),
        }
    }

    /// Music 1 is 150 s (9 blocks), music 2 is 100 s (6 blocks).
    fn tracks(id: MusicId) -> Option<Track> {
        match id {
            1 => Some(Track {
                blocks: 9,
                duration_s: 150.0,
            }),
            2 => Some(Track {
                blocks: 6,
                duration_s: 100.0,
            }),
            _ => None,
        }
    }

    fn now() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(T0 + 3600).unwrap()
    }

    fn at(k: i64, plus_s: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(T0 + 30 * k + plus_s).unwrap()
    }

    #[test]
    fn back_to_back_tracks_are_two_plays_with_their_own_times() {
        // Music 1 starts 10 s into sample 0 and runs 150 s (to 160 s, inside
        // sample 5); music 2 follows at 160 s and runs 100 s (to 260 s).
        let results = vec![
            result(0, Some((1, -10.0))),
            result(1, Some((1, 20.0))),
            result(2, Some((1, 50.0))),
            result(3, Some((1, 80.0))),
            result(4, Some((1, 110.0))),
            result(5, Some((2, -10.0))),
            result(6, Some((2, 20.0))),
            result(7, Some((2, 50.0))),
            result(8, Some((2, 80.0))),
            result(9, None),
            result(10, None),
            result(11, None),
            result(12, None),
        ];
        let d = decide(&results, tracks, &Thresholds::default(), false, now());
        assert_eq!(d.plays.len(), 2, "{d:#?}");
        assert_eq!(d.plays[0].music_id, 1);
        assert_eq!(d.plays[0].started_at, at(0, 10));
        assert_eq!(d.plays[0].ended_at, at(0, 160));
        assert_eq!(d.plays[0].samples.len(), 5);
        assert_eq!(d.plays[1].music_id, 2);
        assert_eq!(d.plays[1].started_at, at(5, 10));
        assert_eq!(d.plays[1].ended_at, at(5, 110));
        assert_eq!(
            d.consumed,
            results.len() - 1,
            "all decided but the last, which waits for its successor"
        );
    }

    #[test]
    fn a_window_still_open_waits_for_more_results() {
        let results = vec![result(0, Some((1, 0.0))), result(1, Some((1, 30.0)))];
        let d = decide(&results, tracks, &Thresholds::default(), false, now());
        assert_eq!(d, Decision::default(), "the track may go on");
        let d = decide(&results, tracks, &Thresholds::default(), true, now());
        assert_eq!(d.plays.len(), 1, "a quiet source is decided");
        assert_eq!(d.plays[0].ended_at, at(1, 30), "ends with its last sample");
        assert_eq!(d.consumed, 2);
    }

    #[test]
    fn a_lone_match_is_dropped_and_unknown_music_ignored() {
        let results = vec![
            result(0, None),
            result(1, Some((1, 70.0))),
            result(2, Some((9, 0.0))),
            result(3, None),
            result(4, None),
            result(5, None),
            result(6, None),
            result(7, None),
        ];
        let d = decide(&results, tracks, &Thresholds::default(), false, now());
        assert!(d.plays.is_empty(), "{d:#?}");
        assert_eq!(d.consumed, results.len() - 1);
        let one = Thresholds {
            min_samples: 1,
            ..Thresholds::default()
        };
        let d = decide(&results, tracks, &one, false, now());
        assert_eq!(d.plays.len(), 1, "a lower bar takes single samples");
    }

    #[test]
    fn the_same_track_twice_in_a_row_is_two_plays() {
        let mut results: Vec<RawResult> = (0..5)
            .map(|k| result(k, Some((2, 30.0 * k as f64))))
            .collect();
        // It starts again from the top at sample 4 (120 s after the first start).
        results[4] = result(4, Some((2, 0.0)));
        results.extend((5..8).map(|k| result(k, Some((2, 30.0 * (k - 4) as f64)))));
        results.extend((8..12).map(|k| result(k, None)));
        let d = decide(&results, tracks, &Thresholds::default(), false, now());
        assert_eq!(d.plays.len(), 2, "{d:#?}");
        assert_eq!(d.plays[0].ended_at, at(0, 100));
        assert_eq!(d.plays[1].started_at, at(4, 0));
        assert_ne!(d.plays[0].key, d.plays[1].key);
    }

    #[test]
    fn a_noisy_sample_inside_a_play_does_not_split_it_and_keys_are_stable() {
        let results = vec![
            result(0, Some((1, 0.0))),
            result(1, None),
            result(2, Some((1, 60.0))),
            result(3, Some((1, 90.0))),
            result(4, None),
            result(5, None),
            result(6, None),
        ];
        let a = decide(&results, tracks, &Thresholds::default(), false, now());
        assert_eq!(a.plays.len(), 1);
        assert_eq!(a.plays[0].started_at, at(0, 0));
        assert_eq!(a.plays[0].ended_at, at(3, 30));
        let b = decide(&results, tracks, &Thresholds::default(), false, now());
        assert_eq!(a, b, "deterministic, so a retry records the same key");
        assert_eq!(a.plays[0].key, format!("device-1:1:{}", T0 * 1000));
    }

    #[test]
    fn a_missing_sample_holds_the_decision_until_it_arrives_or_the_hole_is_old() {
        // Music 2 (100 s) in samples 0-3, then 60 s of music 1 from its start
        // in samples 4-5, then noise.
        let mut all: Vec<RawResult> = vec![
            result(0, Some((2, 0.0))),
            result(1, Some((2, 30.0))),
            result(2, Some((2, 60.0))),
            result(3, Some((2, 90.0))),
            result(4, Some((1, -0.0))),
            result(5, Some((1, 30.0))),
        ];
        all.extend((6..12).map(|k| result(k, None)));
        let whole = decide(&all, tracks, &Thresholds::default(), false, now());
        assert_eq!(whole.plays.len(), 2, "{whole:#?}");

        // Sample 4 is late (its recogniser died); sample 5 was just stored.
        let mut late: Vec<RawResult> = all.clone();
        late.remove(4);
        late[4].stored_at = Some(now());
        let d = decide(&late, tracks, &Thresholds::default(), false, now());
        assert_eq!(d, Decision::default(), "waits for the missing sample");
        let d = decide(&late, tracks, &Thresholds::default(), true, now());
        assert_eq!(d, Decision::default(), "even when the source is quiet");

        // Had it judged sample 5 alone, music 1 would be lost for good.
        let after_wait = now() + Duration::seconds(61);
        let d = decide(&late, tracks, &Thresholds::default(), false, after_wait);
        assert_eq!(d.plays.len(), 1, "a hole waited for is taken as real");
        assert_eq!(d.plays[0].music_id, 2);
    }
}
