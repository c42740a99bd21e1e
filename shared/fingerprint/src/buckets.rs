//! Entries sorted into hash buckets, as the index's postings and triplets
//! are kept: one array of entries in bucket order behind a dense table of
//! where each bucket starts.
//!
//! A counting sort: count the entries of each bucket, turn the counts into
//! offsets, then put each entry at its bucket's cursor. The index's builder
//! counts as tracks arrive and makes the entries again to put them, so
//! that it never holds them unsorted beside the sorted array.

/// Entries counted per bucket.
#[derive(Debug, Clone, Default)]
pub(crate) struct BucketCounts {
    /// `counts[h + 1]`: entries of bucket `h` (empty until the first entry).
    counts: Vec<u32>,
    buckets: usize,
    total: u64,
}

impl BucketCounts {
    pub fn new(buckets: usize) -> Self {
        Self {
            counts: Vec::new(),
            buckets,
            total: 0,
        }
    }

    /// Entries counted so far.
    pub fn total(&self) -> u64 {
        self.total
    }

    pub fn add(&mut self, hash: u32) {
        if self.counts.is_empty() {
            self.counts = vec![0; self.buckets + 1];
        }
        self.counts[hash as usize + 1] += 1;
        self.total += 1;
    }

    /// The offsets table (`offsets[h]..offsets[h + 1]` is bucket `h`) and
    /// a cursor per bucket where its next entry goes.
    ///
    /// # Panics
    /// When more than `u32::MAX` entries were counted (the builder refuses
    /// a track before that).
    pub fn into_offsets(mut self) -> (Vec<u32>, Vec<u32>) {
        assert!(
            u32::try_from(self.total).is_ok(),
            "more entries than one part can address"
        );
        if self.counts.is_empty() {
            self.counts = vec![0; self.buckets + 1];
        }
        for i in 0..self.buckets {
            self.counts[i + 1] += self.counts[i];
        }
        let cursor = self.counts[..self.buckets].to_vec();
        (self.counts, cursor)
    }
}
