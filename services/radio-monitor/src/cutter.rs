//! Cuts a station's decoded audio into contiguous samples on the audio's
//! own sample clock, fingerprints each, and measures the level for dead air.
//!
//! # Capture instants
//! A sample is stamped with the wall-clock instant its first frame was on
//! air. Servers send a burst of buffered audio on connect (seconds of it,
//! older than now), then audio at the rate it is played. So the instant of
//! stream position `p` is estimated as the least `arrival - p` seen, over
//! every decoded chunk: the burst's chunks arrive early for their position
//! and do not lower it, delays on the network only raise it. The estimate
//! settles once the burst has been decoded; it is frozen when the first
//! sample starts ([`CutterConfig::settle`] after the first audio), and every
//! later sample of the connection is exactly one sample length after the
//! one before. A sample never starts before `not_before` (the end of the
//! station's last stored sample): audio before it is skipped, so samples
//! never overlap, whoever cut the earlier ones.

use std::time::Duration;

use hendu_fingerprint::packed::{BinPrecision, pack};
use hendu_fingerprint::{Fingerprinter, Peak, PeakProfile};
use time::OffsetDateTime;

#[derive(Debug, Clone, Copy)]
pub struct CutterConfig {
    /// Length of a sample.
    pub sample: Duration,
    /// Below this level (dBFS, RMS over a second) a second counts as silent.
    pub silence_dbfs: f64,
    /// How long after the first audio the timing is trusted and cutting starts.
    pub settle: Duration,
}

/// A finished sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Cut {
    pub captured_at: OffsetDateTime,
    pub duration_ms: u32,
    /// Packed peaks, frames from the sample's start.
    pub peaks: Vec<u8>,
    /// The first sample of this connection (a gap may come before it).
    pub first: bool,
}

/// What the cutter has to say after a chunk.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    Sample(Cut),
    /// Once a second of audio: how long the audio has been silent (0 when
    /// the last second was not).
    Level { silent_s: f64 },
}

#[derive(Debug)]
struct Current {
    fingerprinter: Fingerprinter,
    peaks: Vec<Peak>,
    /// Frames still to take into this sample.
    left: u64,
    captured_at: OffsetDateTime,
}

/// One connection's cutter (a new connection is a new time line).
#[derive(Debug)]
pub struct Cutter {
    config: CutterConfig,
    not_before: Option<OffsetDateTime>,
    rate: u32,
    /// Frames seen since the connection opened.
    pos: u64,
    first_audio: Option<OffsetDateTime>,
    /// Least `arrival - position` seen, in nanoseconds since the epoch.
    anchor_ns: Option<i128>,
    /// Set when cutting starts: the frame where the next sample starts, and its instant.
    next: Option<(u64, OffsetDateTime)>,
    current: Option<Current>,
    cut_any: bool,
    level_sum: f64,
    level_frames: u64,
    silent_s: f64,
}

impl Cutter {
    pub fn new(config: CutterConfig, not_before: Option<OffsetDateTime>) -> Self {
        Self {
            config,
            not_before,
            rate: 0,
            pos: 0,
            first_audio: None,
            anchor_ns: None,
            next: None,
            current: None,
            cut_any: false,
            level_sum: 0.0,
            level_frames: 0,
            silent_s: 0.0,
        }
    }

    fn sample_frames(&self) -> u64 {
        (self.config.sample.as_secs_f64() * f64::from(self.rate)).round() as u64
    }

    fn instant_of(&self, anchor_ns: i128, frame: u64) -> OffsetDateTime {
        let ns = anchor_ns + i128::from(frame) * 1_000_000_000 / i128::from(self.rate);
        OffsetDateTime::from_unix_timestamp_nanos(ns).unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }

    /// Takes a chunk of mono audio at `rate` Hz that was decoded at `now`.
    ///
    /// # Panics
    /// If the rate is zero or changes (a new rate is a new connection).
    pub fn push(
        &mut self,
        samples: &[f32],
        rate: u32,
        now: OffsetDateTime,
        out: &mut Vec<Output>,
    ) {
        assert!(rate > 0 && (self.rate == 0 || self.rate == rate), "the rate is fixed");
        self.rate = rate;
        let end = self.pos + samples.len() as u64;
        if self.next.is_none() {
            let estimate = now.unix_timestamp_nanos()
                - i128::from(end) * 1_000_000_000 / i128::from(rate);
            self.anchor_ns = Some(self.anchor_ns.map_or(estimate, |a| a.min(estimate)));
            let first = *self.first_audio.get_or_insert(now);
            if now - first >= self.config.settle {
                self.start_cutting();
            }
        }
        self.level(samples, out);
        let mut at = self.pos;
        let mut rest = samples;
        while !rest.is_empty() {
            if self.current.is_none() {
                let Some((start, captured_at)) = self.next else {
                    break;
                };
                if start >= at + rest.len() as u64 {
                    break;
                }
                // Skip to the sample's first frame.
                let skip = start.saturating_sub(at) as usize;
                rest = &rest[skip..];
                at += skip as u64;
                self.current = Some(Current {
                    fingerprinter: Fingerprinter::new(rate, PeakProfile::QUERY),
                    peaks: Vec::new(),
                    left: self.sample_frames(),
                    captured_at,
                });
            }
            let Some(current) = self.current.as_mut() else {
                break;
            };
            let n = (current.left as usize).min(rest.len());
            current.fingerprinter.push(&rest[..n], &mut current.peaks);
            current.left -= n as u64;
            rest = &rest[n..];
            at += n as u64;
            if current.left == 0 {
                let done = self.current.take().expect("a sample is being cut");
                out.push(Output::Sample(self.finish(done)));
            }
        }
        self.pos = end;
    }

    /// Freezes the timing and places the first sample: here, or where the
    /// station's stored samples end if that is later.
    fn start_cutting(&mut self) {
        let Some(anchor) = self.anchor_ns else {
            return;
        };
        let mut start = self.pos;
        if let Some(not_before) = self.not_before {
            let wait_ns = not_before.unix_timestamp_nanos() - anchor;
            if wait_ns > 0 {
                // The first frame at or after `not_before`.
                let frames = ceil_div(wait_ns * i128::from(self.rate), 1_000_000_000);
                start = start.max(u64::try_from(frames).unwrap_or(u64::MAX));
            }
        }
        // Whole milliseconds (what the store keeps), rounded up so that
        // the sample still starts at or after `not_before`.
        let instant = self.instant_of(anchor, start);
        let ms = ceil_div(instant.unix_timestamp_nanos(), 1_000_000);
        let captured_at = OffsetDateTime::from_unix_timestamp_nanos(ms * 1_000_000)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH);
        self.next = Some((start, captured_at));
    }

    fn finish(&mut self, mut done: Current) -> Cut {
        done.fingerprinter.finish(&mut done.peaks);
        let duration_ms = self.config.sample.as_millis() as u32;
        let frames = self.sample_frames();
        if let Some((start, captured_at)) = self.next.as_mut() {
            *start += frames;
            *captured_at += time::Duration::milliseconds(i64::from(duration_ms));
        }
        let first = !self.cut_any;
        self.cut_any = true;
        Cut {
            captured_at: done.captured_at,
            duration_ms,
            peaks: pack(&done.peaks, BinPrecision::Fine),
            first,
        }
    }

    /// Sums the level per second of audio; reports each second.
    fn level(&mut self, samples: &[f32], out: &mut Vec<Output>) {
        let second = u64::from(self.rate);
        let mut rest = samples;
        while !rest.is_empty() {
            let n = ((second - self.level_frames) as usize).min(rest.len());
            self.level_sum += rest[..n].iter().map(|&s| f64::from(s) * f64::from(s)).sum::<f64>();
            self.level_frames += n as u64;
            rest = &rest[n..];
            if self.level_frames == second {
                let rms = (self.level_sum / second as f64).sqrt();
                let dbfs = 20.0 * rms.max(1e-10).log10();
                if dbfs < self.config.silence_dbfs {
                    self.silent_s += 1.0;
                } else {
                    self.silent_s = 0.0;
                }
                out.push(Output::Level {
                    silent_s: self.silent_s,
                });
                self.level_sum = 0.0;
                self.level_frames = 0;
            }
        }
    }
}

/// `a / b` rounded towards positive infinity (`b` positive).
fn ceil_div(a: i128, b: i128) -> i128 {
    a.div_euclid(b) + i128::from(a.rem_euclid(b) != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE: u32 = 8000;

    fn config() -> CutterConfig {
        CutterConfig {
            sample: Duration::from_secs(30),
            silence_dbfs: -50.0,
            settle: Duration::from_secs(2),
        }
    }

    fn at(s: f64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_780_000_000).unwrap()
            + time::Duration::seconds_f64(s)
    }

    fn tone(seconds: f64, amplitude: f32) -> Vec<f32> {
        (0..(seconds * f64::from(RATE)) as usize)
            .map(|i| amplitude * (i as f32 * 0.3).sin())
            .collect()
    }

    /// Feeds `audio` in 100 ms chunks, the first `burst_s` of it at once at
    /// `t0`, the rest at the rate it plays (each chunk decoded when its last
    /// frame arrives).
    fn stream(cutter: &mut Cutter, audio: &[f32], t0: f64, burst_s: f64) -> Vec<Output> {
        let mut out = Vec::new();
        let chunk = RATE as usize / 10;
        for (i, part) in audio.chunks(chunk).enumerate() {
            let end_s = ((i + 1) * chunk) as f64 / f64::from(RATE);
            let now = if end_s <= burst_s { t0 } else { t0 + end_s - burst_s };
            cutter.push(part, RATE, now, &mut out);
        }
        out
    }

    fn cuts(out: &[Output]) -> Vec<&Cut> {
        out.iter()
            .filter_map(|o| match o {
                Output::Sample(c) => Some(c),
                Output::Level { .. } => None,
            })
            .collect()
    }

    #[test]
    fn samples_are_contiguous_and_stamped_with_the_air_time_despite_the_burst() {
        let mut cutter = Cutter::new(config(), None);
        // 4 s of burst: the stream's first frame went on air at t0 - 4 s.
        let out = stream(&mut cutter, &tone(100.0, 0.3), 100.0, 4.0);
        let cuts = cuts(&out);
        assert_eq!(cuts.len(), 3);
        let first_on_air = at(96.0);
        // Cutting starts 2 s (settle) after the first audio arrived: about
        // 6 s into the stream. Within one chunk of the truth.
        let offset = (cuts[0].captured_at - first_on_air).as_seconds_f64();
        assert!((5.9..=6.2).contains(&offset), "{offset}");
        for w in cuts.windows(2) {
            assert_eq!(w[1].captured_at - w[0].captured_at, time::Duration::seconds(30));
        }
        assert!(cuts[0].first && !cuts[1].first);
        assert!(cuts.iter().all(|c| c.duration_ms == 30_000 && !c.peaks.is_empty()));
    }

    #[test]
    fn a_sample_never_starts_before_the_stored_ones_end() {
        // The last stored sample ends 1 s before the burst's newest audio.
        let not_before = at(99.0);
        let mut cutter = Cutter::new(config(), Some(not_before));
        let out = stream(&mut cutter, &tone(40.0, 0.3), 100.0, 4.0);
        let cuts = cuts(&out);
        assert_eq!(cuts.len(), 1);
        assert!(cuts[0].captured_at >= not_before);
        assert!(cuts[0].captured_at - not_before < time::Duration::milliseconds(10));
        // Well before: cutting starts once settled, leaving a gap.
        let mut cutter = Cutter::new(config(), Some(at(10.0)));
        let out = stream(&mut cutter, &tone(40.0, 0.3), 100.0, 4.0);
        assert!(cuts_start_after(&out, at(101.5)));
    }

    fn cuts_start_after(out: &[Output], t: OffsetDateTime) -> bool {
        cuts(out).first().is_some_and(|c| c.captured_at > t)
    }

    #[test]
    fn dead_air_is_counted_in_seconds_and_ends_with_sound() {
        let mut cutter = Cutter::new(config(), None);
        let mut audio = tone(3.0, 0.3);
        audio.extend(tone(5.0, 0.0001)); // -80 dBFS
        audio.extend(tone(2.0, 0.3));
        let out = stream(&mut cutter, &audio, 0.0, 0.0);
        let levels: Vec<f64> = out
            .iter()
            .filter_map(|o| match o {
                Output::Level { silent_s } => Some(*silent_s),
                Output::Sample(_) => None,
            })
            .collect();
        assert_eq!(levels, [0.0, 0.0, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 0.0, 0.0]);
    }
}
