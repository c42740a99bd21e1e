//! From a long recording to a timeline of what played.
//!
//! The [`Scanner`] slides a query window over the recording's peaks as they
//! arrive, matches each window, and joins consecutive detections of the same
//! track into one [`Segment`] per play. Segment boundaries come from the
//! matching landmarks themselves (the first and last landmark that agree with
//! the track's alignment), not from the window grid, so they are as precise
//! as the landmarks are dense (a fraction of a second).
//!
//! Memory is bounded by one window of peaks and one open segment.

use std::collections::VecDeque;

use crate::index::{Index, SearchOptions, Searcher, TrackId};
use crate::params::{FRAME_SECONDS, PAIR_MAX_DT};
use crate::peaks::Peak;

/// How a recording is scanned.
#[derive(Debug, Clone)]
pub struct ScanOptions {
    /// Length of each query window, seconds.
    pub window_s: f64,
    /// Distance between window starts, seconds.
    pub hop_s: f64,
    /// Windows whose best candidate is less confident are "nothing known".
    pub min_confidence: f32,
    /// Detections of one track this close together (seconds) are one play.
    pub max_gap_s: f64,
    /// Search parameters for each window.
    pub search: SearchOptions,
}

impl Default for ScanOptions {
    fn default() -> Self {
        Self {
            window_s: 10.0,
            hop_s: 5.0,
            min_confidence: 0.5,
            max_gap_s: 12.0,
            search: SearchOptions::default(),
        }
    }
}

/// A stretch of the recording recognised as one track.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    /// The track.
    pub track: TrackId,
    /// Start in the recording, seconds.
    pub start_s: f64,
    /// End in the recording, seconds.
    pub end_s: f64,
    /// Position in the track at `start_s`, seconds.
    pub offset_s: f64,
    /// Speed of the recording relative to the track.
    pub speed: f32,
    /// Highest confidence among the segment's windows.
    pub confidence: f32,
    /// Sum of the windows' scores.
    pub score: u32,
}

/// Streams a recording's peaks into a timeline of [`Segment`]s.
#[derive(Debug)]
pub struct Scanner<'a> {
    index: &'a Index,
    options: ScanOptions,
    window: u32,
    hop: u32,
    peaks: VecDeque<Peak>,
    sparse: VecDeque<Peak>,
    next_start: u32,
    open: Option<Segment>,
    searcher: Searcher,
    rebased: Vec<Peak>,
    rebased_sparse: Vec<Peak>,
}

impl<'a> Scanner<'a> {
    /// A scanner over `index`.
    pub fn new(index: &'a Index, options: ScanOptions) -> Self {
        let window = (options.window_s / FRAME_SECONDS).round().max(1.0) as u32;
        let hop = (options.hop_s / FRAME_SECONDS).round().max(1.0) as u32;
        Self {
            index,
            options,
            window,
            hop,
            peaks: VecDeque::new(),
            sparse: VecDeque::new(),
            next_start: 0,
            open: None,
            searcher: Searcher::default(),
            rebased: Vec::new(),
            rebased_sparse: Vec::new(),
        }
    }

    /// Feeds the recording's next sparse peaks
    /// ([`crate::Fingerprinter::take_sparse`]), before the [`Scanner::push`]
    /// that makes their windows ready: windows are then searched wide
    /// ([`Index::search_wide`]), for DJ sets and key shifts.
    pub fn push_sparse(&mut self, sparse: &[Peak]) {
        self.sparse.extend(sparse.iter().copied());
    }

    /// Feeds the next peaks of the recording (in time order) and the frame
    /// before which every peak has been fed ([`crate::Fingerprinter::final_before`]);
    /// appends the segments that are complete to `out`.
    pub fn push(&mut self, peaks: &[Peak], final_before: u32, out: &mut Vec<Segment>) {
        self.peaks.extend(peaks.iter().copied());
        // A window is ready once its peaks, and the targets its last anchors
        // pair with, have all been picked.
        while self.next_start + self.window + PAIR_MAX_DT <= final_before {
            self.scan_window(self.window, out);
        }
    }

    /// Ends the recording; appends the last segments to `out`.
    pub fn finish(&mut self, frames: u32, out: &mut Vec<Segment>) {
        let min_window = (3.0 / FRAME_SECONDS) as u32;
        while self.next_start + min_window <= frames {
            let len = (frames - self.next_start).min(self.window);
            self.scan_window(len, out);
        }
        out.extend(self.open.take());
    }

    fn scan_window(&mut self, len: u32, out: &mut Vec<Segment>) {
        let start = self.next_start;
        for (peaks, rebased) in [
            (&mut self.peaks, &mut self.rebased),
            (&mut self.sparse, &mut self.rebased_sparse),
        ] {
            while peaks.front().is_some_and(|p| p.frame < start) {
                peaks.pop_front();
            }
            rebased.clear();
            rebased.extend(
                peaks
                    .iter()
                    .take_while(|p| p.frame < start + len)
                    .map(|p| Peak {
                        frame: p.frame - start,
                        bin: p.bin,
                    }),
            );
        }
        let window_start_s = f64::from(start) * FRAME_SECONDS;
        let found = self
            .index
            .search_wide(
                &self.rebased,
                &self.rebased_sparse,
                &self.options.search,
                &mut self.searcher,
            )
            .filter(|c| c.confidence >= self.options.min_confidence);
        if let Some(c) = found {
            let speed = f64::from(c.speed);
            let detection = Segment {
                track: c.track,
                start_s: window_start_s + c.query_span_s.0,
                end_s: window_start_s
                    + c.query_span_s.1
                    + f64::from(PAIR_MAX_DT) * FRAME_SECONDS / 2.0,
                offset_s: c.offset_s + c.query_span_s.0 * speed,
                speed: c.speed,
                confidence: c.confidence,
                score: c.score,
            };
            self.merge(detection, out);
        }
        if self
            .open
            .as_ref()
            .is_some_and(|open| window_start_s > open.end_s + self.options.max_gap_s)
        {
            out.extend(self.open.take());
        }
        self.next_start += self.hop;
    }

    fn merge(&mut self, detection: Segment, out: &mut Vec<Segment>) {
        match &mut self.open {
            Some(open)
                if open.track == detection.track
                    && detection.start_s <= open.end_s + self.options.max_gap_s =>
            {
                open.end_s = open.end_s.max(detection.end_s);
                if detection.start_s < open.start_s {
                    open.start_s = detection.start_s;
                    open.offset_s = detection.offset_s;
                }
                open.confidence = open.confidence.max(detection.confidence);
                open.score += detection.score;
            }
            _ => {
                if let Some(mut previous) = self.open.take() {
                    // A hard cut: the previous play ends where the next one starts.
                    previous.end_s = previous.end_s.min(detection.start_s.max(previous.start_s));
                    out.push(previous);
                }
                self.open = Some(detection);
            }
        }
    }
}
