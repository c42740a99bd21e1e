//! A sharded sample's raw result, decided from its shards' answers.
//!
//! Every shard searches its own tracks for every sample and stores its best
//! candidate, whatever its confidence ([`ShardAnswer`]; the first answer of a
//! shard stands). The replica whose answer completes the set decides the raw
//! result ([`decide`]) and forwards it to the filter; two replicas completing
//! it at once decide the same result, which is keyed by the sample. A shard
//! that stays silent (all its replicas down) is waited for
//! `HENDU_SHARD_WAIT_S` after the sample's first answer; then reconciliation
//! records it as timed out and decides without it ([`decide_overdue`]), and
//! the decision is logged and counted as partial. A late answer finds its
//! slot taken and changes nothing.
//!
//! The candidate that wins is the one that stands out most against the best
//! of every shard ([`hendu_fingerprint::strongest_across_shards`]): close to
//! the margin one index holding every track would ask for, not the same
//! (`docs/benchmarks.md`, "Split over shards").

use std::collections::BTreeMap;
use std::time::Duration;

use hendu_fingerprint::index::confidence;
use hendu_fingerprint::{Evidence, strongest_across_shards};
use hendu_storage::model::RawMatch;
use hendu_storage::shards::{ShardAnswer, ShardCandidate, ShardReply};
use hendu_storage::{Shard, Storage, StorageError};
use time::OffsetDateTime;

use crate::results::forward;

/// How many of the oldest undecided samples one pass looks at.
const CANDIDATES: u32 = 1000;

/// Answers older than this are long decided and pruned.
pub const KEEP_ANSWERS: Duration = Duration::from_secs(24 * 3600);

/// How a sample was decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Every shard answered.
    Complete,
    /// Some shard timed out; named in the log.
    Partial,
}

/// The raw match `answers` come to: the strongest candidate across the
/// shards, if its confidence reaches `min_confidence`.
pub fn decide(answers: &[ShardAnswer], min_confidence: f32) -> Option<RawMatch> {
    let candidates: Vec<&ShardCandidate> = answers
        .iter()
        .filter_map(|a| match &a.reply {
            ShardReply::Best(Some(c)) => Some(c),
            ShardReply::Best(None) | ShardReply::TimedOut => None,
        })
        .collect();
    let evidence: Vec<Option<Evidence>> = candidates
        .iter()
        .map(|c| {
            Some(Evidence {
                votes: c.matched.score as u32,
                rival_votes: c.rival_votes,
                z: c.z as f32,
                penalty: c.penalty as f32,
            })
        })
        .collect();
    let (winner, strength) = strongest_across_shards(&evidence)?;
    let confidence = confidence(strength);
    (confidence >= min_confidence).then(|| RawMatch {
        confidence: f64::from(confidence),
        ..candidates[winner].matched.clone()
    })
}

/// Whether `answers` hold one from every shard of `shards`.
pub fn complete(answers: &[ShardAnswer], shards: u32) -> bool {
    let mut seen: Vec<u32> = answers
        .iter()
        .filter(|a| a.shards == shards)
        .map(|a| a.shard)
        .collect();
    seen.sort_unstable();
    seen.dedup();
    seen.len() == shards as usize
}

/// Decides the samples some shard of `shard`'s split left unanswered for
/// `wait` after their first answer: the silent shards are recorded as timed
/// out, and the raw result decided from the answers in. Samples no shard
/// answered are left to [`hendu_storage::queue::requeue_lost_samples`].
/// Returns how many were decided.
///
/// # Errors
/// [`StorageError`] from the stores.
pub async fn decide_overdue(
    storage: &Storage,
    shard: Shard,
    wait: Duration,
    min_confidence: f32,
) -> Result<usize, StorageError> {
    let now = OffsetDateTime::now_utc();
    let docs = &storage.documents;
    let unsettled = docs.unsettled_samples(now - wait, CANDIDATES).await?;
    let ids: Vec<String> = unsettled.into_iter().map(|(id, _)| id).collect();
    let recognised = docs.samples_with_raw_results(&ids).await?;
    let ids: Vec<String> = ids
        .into_iter()
        .filter(|id| !recognised.contains(id))
        .collect();
    let mut by_sample: BTreeMap<String, Vec<ShardAnswer>> = BTreeMap::new();
    for a in docs.shard_answers(&ids, shard.count()).await? {
        by_sample.entry(a.sample_id.clone()).or_default().push(a);
    }
    let mut decided = 0;
    for (sample_id, answers) in by_sample {
        let first = answers.iter().map(|a| a.answered_at).min();
        if complete(&answers, shard.count()) || first.is_none_or(|t| now - t < wait) {
            continue;
        }
        let mut all = answers;
        for missing in shard.siblings() {
            if all.iter().any(|a| a.shard == missing.index()) {
                continue;
            }
            all = docs
                .put_shard_answer(&ShardAnswer {
                    sample_id: sample_id.clone(),
                    shard: missing.index(),
                    shards: shard.count(),
                    reply: ShardReply::TimedOut,
                    answered_at: now,
                })
                .await?;
        }
        if !complete(&all, shard.count()) {
            continue;
        }
        let Some(sample) = docs.sample(&sample_id).await? else {
            continue;
        };
        log_partial(&sample_id, &all);
        forward(storage, sample, decide(&all, min_confidence)).await?;
        decided += 1;
    }
    Ok(decided)
}

/// Whether a complete set of answers has a timed-out shard, logged with the
/// shards that were missing.
pub fn log_partial(sample_id: &str, answers: &[ShardAnswer]) -> Decision {
    let missing: Vec<String> = answers
        .iter()
        .filter(|a| a.reply == ShardReply::TimedOut)
        .filter_map(|a| a.shard().map(|s| s.to_string()))
        .collect();
    if missing.is_empty() {
        return Decision::Complete;
    }
    tracing::warn!(
        sample = sample_id,
        missing = missing.join(","),
        "a sample was decided without the shards that did not answer in time"
    );
    Decision::Partial
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(shard: u32, reply: ShardReply) -> ShardAnswer {
        ShardAnswer {
            sample_id: "s".into(),
            shard,
            shards: 3,
            reply,
            answered_at: OffsetDateTime::UNIX_EPOCH,
        }
    }

    fn best(music_id: i64, votes: u32, rival_votes: u32, z: f64) -> ShardReply {
        ShardReply::Best(Some(ShardCandidate {
            matched: RawMatch {
                music_id,
                block: 0,
                offset_s: 1.0,
                score: f64::from(votes),
                confidence: 0.0,
            },
            rival_votes,
            z,
            penalty: 0.0,
        }))
    }

    #[test]
    fn the_candidate_that_stands_out_across_all_shards_wins() {
        let answers = [
            answer(1, best(10, 9, 7, 1.0)),
            answer(2, best(20, 60, 8, 12.0)),
            answer(3, ShardReply::Best(None)),
        ];
        assert!(complete(&answers, 3));
        let m = decide(&answers, 0.5).unwrap();
        assert_eq!(m.music_id, 20);
        assert!(m.confidence > 0.99, "{m:?}");
        // Chance alignments in every shard stay below the threshold.
        let chance = [
            answer(1, best(10, 9, 7, 1.0)),
            answer(2, best(20, 10, 8, 1.5)),
            answer(3, best(30, 8, 8, 0.5)),
        ];
        assert_eq!(decide(&chance, 0.5), None);
        assert_eq!(decide(&chance[..0], 0.0), None);
    }

    #[test]
    fn a_set_is_complete_with_one_answer_of_each_shard_timed_out_or_not() {
        let two = [
            answer(1, ShardReply::Best(None)),
            answer(3, ShardReply::TimedOut),
        ];
        assert!(!complete(&two, 3));
        let three = [
            answer(1, ShardReply::Best(None)),
            answer(2, best(20, 60, 8, 12.0)),
            answer(3, ShardReply::TimedOut),
        ];
        assert!(complete(&three, 3));
        assert_eq!(log_partial("s", &three), Decision::Partial);
        assert_eq!(decide(&three, 0.5).unwrap().music_id, 20);
        assert_eq!(log_partial("s", &three[..2]), Decision::Complete);
    }
}
