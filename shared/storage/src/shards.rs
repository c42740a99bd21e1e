//! Recognition shards: a catalogue too large for one recogniser's memory is
//! split by music id over `N` shards, each held by its own recognisers.
//!
//! Shard `k/N` holds the musics whose id the jump consistent hash (Lamping
//! and Veach, 2014) of a mixed id puts in bucket `k - 1`. The assignment
//! depends only on the id and `N`: it is stable while `N` is, and spread
//! evenly whatever the ids. Going from `N` to `N + 1` shards moves a
//! `1 / (N + 1)` share of the tracks, all to the new shard (the hash's
//! property); any other change of `N` reloads every shard (see
//! `docs/deploy.md`, "Sharding recognition").
//!
//! Every sample reaches every shard: each shard reads the `samples` queue in
//! a consumer group of its own ([`Shard::group`]), shared by the replicas of
//! that shard, and an entry leaves the queue once all the shards have
//! acknowledged it. `1/1` is the whole catalogue, read in the group
//! `recognition`, as an unsharded deployment always has.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::model::{MusicId, RawMatch};

/// One shard of the catalogue: `index` of `count`, counted from 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Shard {
    index: u32,
    count: u32,
}

/// Why a shard could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a shard is written k/N with 1 <= k <= N <= {max}, as in 2/3; got {got:?}", max = Shard::MAX)]
pub struct ShardError {
    got: String,
}

impl Shard {
    /// The whole catalogue, unsharded.
    pub const WHOLE: Self = Self { index: 1, count: 1 };
    /// Most shards a catalogue is split into.
    pub const MAX: u32 = 1024;
    /// The consumer group of the whole catalogue's recognisers.
    pub const GROUP: &'static str = "recognition";

    /// Shard `index` of `count` (from 1).
    ///
    /// # Errors
    /// [`ShardError`] unless `1 <= index <= count <= MAX`.
    pub fn new(index: u32, count: u32) -> Result<Self, ShardError> {
        if index == 0 || index > count || count > Self::MAX {
            return Err(ShardError {
                got: format!("{index}/{count}"),
            });
        }
        Ok(Self { index, count })
    }

    /// From 1 to [`Shard::count`].
    pub fn index(self) -> u32 {
        self.index
    }

    /// How many shards the catalogue is split into.
    pub fn count(self) -> u32 {
        self.count
    }

    /// True for `1/1`.
    pub fn is_whole(self) -> bool {
        self.count == 1
    }

    /// Whether this shard holds `music`.
    pub fn owns(self, music: MusicId) -> bool {
        self.is_whole() || jump(mix(music as u64), self.count) + 1 == self.index
    }

    /// The shard that holds `music` among `count`.
    pub fn of(music: MusicId, count: u32) -> Self {
        let count = count.clamp(1, Self::MAX);
        Self {
            index: jump(mix(music as u64), count) + 1,
            count,
        }
    }

    /// Every shard of the same split, this one included, in order.
    pub fn siblings(self) -> impl Iterator<Item = Self> {
        let count = self.count;
        (1..=count).map(move |index| Self { index, count })
    }

    /// The `samples` consumer group of this shard's recognisers:
    /// `recognition` for the whole catalogue, `recognition-2-of-3` for a
    /// shard.
    pub fn group(self) -> String {
        if self.is_whole() {
            Self::GROUP.to_owned()
        } else {
            format!("{}-{}-of-{}", Self::GROUP, self.index, self.count)
        }
    }
}

impl Default for Shard {
    fn default() -> Self {
        Self::WHOLE
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl FromStr for Shard {
    type Err = ShardError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ShardError { got: s.to_owned() };
        let (k, n) = s.trim().split_once('/').ok_or_else(bad)?;
        let k = k.trim().parse().map_err(|_| bad())?;
        let n = n.trim().parse().map_err(|_| bad())?;
        Self::new(k, n).map_err(|_| bad())
    }
}

/// One shard's answer for one sample: its best candidate among its own
/// tracks, whatever the candidate's confidence (the sample's raw result is
/// decided from all the shards' answers), or that the shard did not answer
/// in time. The first answer of a shard for a sample stands: a late one is
/// not stored ([`crate::DocumentStore::put_shard_answer`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardAnswer {
    pub sample_id: String,
    /// The shard, `k` of ...
    pub shard: u32,
    /// ... `N`.
    pub shards: u32,
    pub reply: ShardReply,
    #[serde(with = "time::serde::rfc3339")]
    pub answered_at: OffsetDateTime,
}

/// What a shard said.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShardReply {
    /// Its best candidate, if any track of its shard had one.
    Best(Option<ShardCandidate>),
    /// Nothing came within the wait: recorded, by whoever decided the sample
    /// without it, so that the answer is known to be partial.
    TimedOut,
}

/// A shard's best candidate, with the evidence its strength is made of, so
/// that the decision can weigh it against the other shards' candidates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardCandidate {
    /// As the raw result would have it; `score` is the agreeing landmarks.
    pub matched: RawMatch,
    /// The best other track of this shard at the same warp.
    pub rival_votes: u32,
    /// The verification z-score.
    pub z: f64,
    /// Deducted from the strength for a warp found off the grid.
    pub penalty: f64,
}

impl ShardAnswer {
    /// This shard's place among `shards`.
    pub fn shard(&self) -> Option<Shard> {
        Shard::new(self.shard, self.shards).ok()
    }
}

/// Spreads consecutive ids over the whole key space (the `SplitMix64`
/// finaliser), so that the hash sees unrelated keys.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Jump consistent hash: the bucket in `0..buckets` of `key`.
fn jump(mut key: u64, buckets: u32) -> u32 {
    let (mut bucket, mut next) = (0_i64, 0_i64);
    while next < i64::from(buckets) {
        bucket = next;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        next = ((bucket + 1) as f64 * ((1_u64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
    }
    bucket as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_are_written_k_of_n() {
        let s: Shard = "2/3".parse().unwrap();
        assert_eq!((s.index(), s.count()), (2, 3));
        assert_eq!(s.to_string(), "2/3");
        assert_eq!(s.group(), "recognition-2-of-3");
        assert_eq!(Shard::WHOLE.group(), "recognition");
        assert_eq!(" 1 / 1 ".parse::<Shard>().unwrap(), Shard::WHOLE);
        for bad in ["0/3", "4/3", "3", "a/b", "1/0", "1/2000", ""] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
    }

    #[test]
    fn every_music_has_exactly_one_shard_and_they_are_even() {
        for count in [1, 2, 3, 7, 16] {
            let mut sizes = vec![0_u32; count as usize];
            for id in 1..=30_000 {
                let owners: Vec<Shard> = Shard::of(id, count)
                    .siblings()
                    .filter(|s| s.owns(id))
                    .collect();
                assert_eq!(owners, vec![Shard::of(id, count)]);
                sizes[owners[0].index() as usize - 1] += 1;
            }
            let even = 30_000 / count;
            for size in sizes {
                // Within 5% of an even split.
                assert!(
                    size.abs_diff(even) * 20 <= even,
                    "{count} shards: {size} vs {even}"
                );
            }
        }
    }

    #[test]
    fn one_more_shard_moves_only_what_it_takes() {
        let moved: Vec<i64> = (1..=20_000)
            .filter(|&id| Shard::of(id, 4) != Shard::of(id, 5).with_count(4))
            .collect();
        for &id in &moved {
            assert_eq!(
                Shard::of(id, 5).index(),
                5,
                "music {id} moved between old shards"
            );
        }
        let share = moved.len() as f64 / 20_000.0;
        assert!((share - 0.2).abs() < 0.02, "{share}");
    }

    impl Shard {
        fn with_count(self, count: u32) -> Self {
            Self {
                index: self.index,
                count,
            }
        }
    }
}
