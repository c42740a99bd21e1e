//! One station, listened to by this replica: connect, decode, cut, store;
//! reconnect through drops and stalls; report the station's state.
//!
//! ```text
//!            +-------------------- stall / end / error --------------------+
//!            v                                                             |
//!   connecting --audio--> streaming <--sound-- silent                      |
//!       |                     |    --dead air-->                           |
//!       |                     +------------------------------------------- +
//!       +-- error --> backoff --(failing for the down time)--> down
//!       +-- codec this build cannot decode --> unsupported_codec
//! ```
//! `disabled` is not a state of a listener: a disabled station has none.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use hendu_service::samples;
use hendu_storage::Event;
use hendu_storage::model::{NewSample, Radio, RadioGap, RadioStatus, Source, StationState};
use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use url::Url;

use crate::Context;
use crate::cutter::{Cut, Cutter, CutterConfig, Output};
use crate::decoder::{self, Ended, Feed, Heard, Progress};
use crate::http::OpenError;
use crate::icy::{Demuxed, IcyDemuxer};
use crate::meters::StationMeters;
use crate::source;

/// Stream chunks in flight between the network and the decoder (a chunk is
/// at most a few tens of KB): the per-station buffer.
const FEED_CHUNKS: usize = 8;
/// How often a streaming station's status is written between samples, at
/// most: more often with a short lease (a status older than the lease reads
/// as nobody listening).
const STATUS_EVERY: Duration = Duration::from_secs(15);
/// First reconnection delay; doubled per failure up to the configured cap.
const BACKOFF_BASE: Duration = Duration::from_secs(1);
/// The first refusal (4xx) after streaming is retried within this.
const REFUSED_FIRST: Duration = Duration::from_secs(5);
/// Later refusals are retried from this delay, up to ten times it.
const REFUSED_BASE: Duration = Duration::from_secs(30);
/// A codec this build cannot decode is tried again after this.
const UNSUPPORTED_RETRY: Duration = Duration::from_secs(600);

/// What the supervisor tells a running listener.
#[derive(Debug, Clone)]
pub struct Flags {
    /// Until when the station's lease is surely this replica's (moved on at
    /// each renewal). Past it the listener closes its connection and stores
    /// nothing more, whatever the supervisor is busy with: another replica
    /// may take the station once the lease runs out.
    pub lease: watch::Receiver<tokio::time::Instant>,
    /// Set to stop after the next stored sample (the station goes to
    /// another replica).
    pub handover: Arc<AtomicBool>,
}

/// How a connection ended.
#[derive(Debug)]
enum Outcome {
    Stopped,
    /// Stopped after a sample, for another replica to take over.
    HandedOver,
    /// Another replica holds the station now.
    LostLease,
    Dropped(String),
    Refused(u16),
    Unsupported(String),
}

struct Station {
    ctx: Arc<Context>,
    meters: StationMeters,
    radio: Radio,
    flags: Flags,
    status: RadioStatus,
    /// Where the station's stored samples end: no sample starts before it.
    resume_after: Option<OffsetDateTime>,
    /// Why audio was missed since `resume_after` (the gap's reason).
    gap_reason: String,
    /// Whether the current connection produced audio.
    streamed: bool,
    announced_down: bool,
    /// Where the last connection to an HLS window stopped.
    hls_resume: crate::hls::Resume,
}

/// Listens to `radio` until `stop` is cancelled, the lease runs out (its
/// deadline passes unrenewed) or a handover is asked for and a sample stored.
pub async fn listen(ctx: Arc<Context>, radio: Radio, flags: Flags, stop: CancellationToken) {
    let now = OffsetDateTime::now_utc();
    let status = RadioStatus {
        radio_id: radio.id,
        state: StationState::Connecting,
        detail: None,
        since: now,
        holder: Some(ctx.config.replica.clone()),
        codec: None,
        title: None,
        bytes_per_s: 0.0,
        reconnects: 0,
        samples: 0,
        silence_s: 0.0,
        last_sample_end: None,
        updated_at: now,
    };
    let mut station = Station {
        meters: ctx.meters.station(radio.id),
        ctx,
        radio,
        flags,
        status,
        resume_after: None,
        gap_reason: "not monitored".into(),
        streamed: false,
        announced_down: false,
        hls_resume: crate::hls::Resume::default(),
    };
    station
        .ctx
        .meters
        .set_state(station.radio.id, StationState::Connecting);
    // Where the samples stored by whoever listened before end.
    let mut wait = BACKOFF_BASE;
    loop {
        match station
            .ctx
            .storage
            .documents
            .last_sample(Source::Radio(station.radio.id))
            .await
        {
            Ok(last) => {
                station.resume_after = last.map(|s| s.end());
                station.status.last_sample_end = station.resume_after;
                break;
            }
            Err(e) => {
                tracing::warn!(radio = station.radio.id, error = %e, "cannot read where the station's samples end");
                if sleep_or_stop(wait, &stop).await {
                    return;
                }
                wait = (wait * 2).min(Duration::from_secs(30));
            }
        }
    }
    station.run(&stop).await;
}

/// Sleeps `d`; true if `stop` came first.
async fn sleep_or_stop(d: Duration, stop: &CancellationToken) -> bool {
    tokio::select! {
        () = stop.cancelled() => true,
        () = tokio::time::sleep(d) => false,
    }
}

/// Returns once the lease's deadline has passed without a renewal (or the
/// supervisor is gone).
async fn lease_runs_out(lease: &mut watch::Receiver<tokio::time::Instant>) {
    loop {
        let deadline = *lease.borrow_and_update();
        if deadline <= tokio::time::Instant::now() {
            return;
        }
        tokio::select! {
            () = tokio::time::sleep_until(deadline) => {}
            changed = lease.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
    }
}

/// A uniformly random delay in `[0, ceiling)` ("full jitter").
fn jitter(ceiling: Duration) -> Duration {
    let r = RandomState::new().hash_one(Instant::now());
    ceiling.mul_f64((r >> 11) as f64 / (1u64 << 53) as f64)
}

impl Station {
    async fn run(&mut self, stop: &CancellationToken) {
        let id = self.radio.id;
        let mut failures = 0u32;
        let mut failing_since: Option<Instant> = None;
        let mut connections = 0u64;
        loop {
            if connections > 0 {
                self.status.reconnects += 1;
                self.meters.reconnects.inc();
            }
            connections += 1;
            self.streamed = false;
            let mut lease = self.flags.lease.clone();
            let outcome = tokio::select! {
                outcome = self.session(stop) => outcome,
                () = lease_runs_out(&mut lease) => {
                    tracing::warn!(radio = id, "the station's lease ran out unrenewed; stopping");
                    Outcome::LostLease
                }
            };
            let (ceiling, reason) = match outcome {
                Outcome::Stopped | Outcome::LostLease | Outcome::HandedOver => return,
                Outcome::Dropped(why) => {
                    let cap = self.ctx.config.backoff_max;
                    (
                        BACKOFF_BASE.saturating_mul(1 << failures.min(16)).min(cap),
                        why,
                    )
                }
                // A mount missing for a moment is common (its source
                // reconnecting): the first refusal is retried soon.
                Outcome::Refused(code) => (
                    if failures == 0 {
                        REFUSED_FIRST
                    } else {
                        REFUSED_BASE
                            .saturating_mul(1 << (failures - 1).min(16))
                            .min(REFUSED_BASE * 10)
                    },
                    format!("the server refused the stream ({code})"),
                ),
                Outcome::Unsupported(what) => {
                    tracing::warn!(radio = id, codec = %what, "the station's codec is not supported");
                    self.enter(StationState::UnsupportedCodec, Some(what)).await;
                    if sleep_or_stop(UNSUPPORTED_RETRY, stop).await {
                        return;
                    }
                    continue;
                }
            };
            tracing::info!(radio = id, reason = %reason, "station disconnected");
            self.gap_reason = reason.clone();
            if self.streamed {
                failures = 0;
                failing_since = None;
            } else {
                failures = failures.saturating_add(1);
            }
            let since = *failing_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= self.ctx.config.down_after && !self.streamed {
                if !self.announced_down {
                    self.announced_down = true;
                    self.publish(Event::StationDown {
                        radio_id: id,
                        reason: reason.clone(),
                    })
                    .await;
                }
                self.enter(StationState::Down, Some(reason)).await;
            } else if !(self.status.state == StationState::Down) {
                self.enter(StationState::Backoff, Some(reason)).await;
            }
            // Not streaming: nothing to finish before handing over.
            if self.flags.handover.load(Ordering::Acquire)
                || sleep_or_stop(jitter(ceiling), stop).await
            {
                return;
            }
        }
    }

    /// One connection, from opening the stream to its end.
    async fn session(&mut self, stop: &CancellationToken) -> Outcome {
        let ctx = self.ctx.clone();
        let config = &ctx.config;
        if self.status.state != StationState::Down {
            self.enter(StationState::Connecting, None).await;
        }
        let url = match Url::parse(&self.radio.stream_url) {
            Ok(u) => u,
            Err(e) => return Outcome::Dropped(format!("bad stream URL: {e}")),
        };
        let opened = tokio::select! {
            () = stop.cancelled() => return Outcome::Stopped,
            opened = source::open(&self.ctx.client, &url, config.stall, &self.hls_resume) => opened,
        };
        let opened = match opened {
            Ok(o) => o,
            Err(OpenError::Refused(code)) => return Outcome::Refused(code),
            Err(OpenError::Failed(why)) => return Outcome::Dropped(why),
            Err(OpenError::Unsupported(what)) => return Outcome::Unsupported(what),
        };
        self.status.codec = opened.codec.clone();
        let (feed_tx, feed_rx) = mpsc::channel(FEED_CHUNKS);
        let (out_tx, mut out_rx) = mpsc::unbounded_channel();
        let (done_tx, mut done_rx) = oneshot::channel();
        let progress = Arc::new(Progress::default());
        let cancel = Arc::new(AtomicBool::new(false));
        let cutter = Cutter::new(
            CutterConfig {
                sample: crate::SAMPLE,
                silence_dbfs: config.silence_dbfs,
            },
            self.resume_after,
        );
        let hint = opened.hint;
        {
            let (progress, cancel) = (progress.clone(), cancel.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("radio-{}", self.radio.id))
                .spawn(move || {
                    let ended = decoder::decode(feed_rx, hint, cutter, &out_tx, &progress, cancel);
                    let _ = done_tx.send(ended);
                });
            if let Err(e) = spawned {
                return Outcome::Dropped(format!("cannot start a decoder thread: {e}"));
            }
        }
        // The decoder stops at the end of its feed, or at once on this flag.
        let _stop_decoder = scopeguard(cancel);
        let mut body = opened.body;
        let mut demux = opened.metaint.map(IcyDemuxer::new);
        let mut feed = Some(feed_tx);
        let mut network_end: Option<String> = None;
        let mut closed_cleanly = false;
        let mut ticker = tokio::time::interval(STATUS_EVERY.min(config.lease / 2));
        ticker.tick().await;
        let mut window = (Instant::now(), 0u64);
        let mut skipped_seen = 0u64;
        let stall = opened.patience.unwrap_or(config.stall);
        // Bytes must come by this instant (whatever else wakes the loop).
        let mut bytes_by = tokio::time::Instant::now() + stall;
        // Once the decoder has dropped its sender, only `done_rx` is left to hear.
        let mut decoder_open = true;
        loop {
            tokio::select! {
                biased;
                () = stop.cancelled() => return Outcome::Stopped,
                heard = out_rx.recv(), if decoder_open => {
                    match heard {
                        Some(heard) => {
                            if let Err(outcome) = self.heard(heard, stop).await {
                                return outcome;
                            }
                        }
                        None => decoder_open = false,
                    }
                }
                ended = &mut done_rx => {
                    // What the decoder said before it ended.
                    while let Ok(heard) = out_rx.try_recv() {
                        if let Err(outcome) = self.heard(heard, stop).await {
                            return outcome;
                        }
                    }
                    // A stream that broke or stalled explains what the
                    // decoder made of its end; one that was whole and
                    // closed cleanly was not audio if the decoder says so.
                    let whole = closed_cleanly && network_end.is_some();
                    if let Some(why) = network_end.take()
                        && !(whole && matches!(ended, Ok(Ended::Unsupported(_))))
                    {
                        return Outcome::Dropped(why);
                    }
                    return match ended {
                        Ok(Ended::EndOfStream) => Outcome::Dropped("end of stream".into()),
                        Ok(Ended::Unsupported(what)) => Outcome::Unsupported(
                            self.status.codec.as_deref().map_or(what.clone(), |t| format!("{t}: {what}")),
                        ),
                        Ok(Ended::Failed(why)) => Outcome::Dropped(why),
                        Err(_) => Outcome::Dropped("the decoder failed".into()),
                    };
                }
                chunk = tokio::time::timeout_at(bytes_by, body.next()), if feed.is_some() => {
                    let bytes = match chunk {
                        Err(_) => {
                            network_end = Some(format!("stalled: no data for {} s", stall.as_secs()));
                            feed = None;
                            continue;
                        }
                        Ok(None) => {
                            network_end = Some("the server closed the stream".into());
                            closed_cleanly = true;
                            feed = None;
                            continue;
                        }
                        Ok(Some(Err(why))) => {
                            network_end = Some(why);
                            feed = None;
                            continue;
                        }
                        Ok(Some(Ok(bytes))) => bytes,
                    };
                    bytes_by = tokio::time::Instant::now() + stall;
                    self.meters.bytes.inc_by(bytes.len() as u64);
                    window.1 += bytes.len() as u64;
                    let sender = feed.as_ref().expect("the feed is open in this branch");
                    let sent = match demux.as_mut() {
                        None => sender.send(Feed::Audio(bytes)).await.is_ok(),
                        Some(demux) => {
                            let mut split = Demuxed::default();
                            demux.push(&bytes, &mut split);
                            let mut ok = true;
                            for title in split.titles {
                                self.status.title = Some(hendu_storage::model::clean_hint(&title));
                                ok &= sender.send(Feed::Title(title)).await.is_ok();
                            }
                            if !split.audio.is_empty() {
                                ok &= sender.send(Feed::Audio(split.audio.into())).await.is_ok();
                            }
                            ok
                        }
                    };
                    if !sent {
                        // The decoder ended; its reason comes on `done_rx`.
                        feed = None;
                    }
                }
                _ = ticker.tick() => {
                    let elapsed = window.0.elapsed().as_secs_f64();
                    if elapsed > 0.0 {
                        self.status.bytes_per_s = window.1 as f64 / elapsed;
                    }
                    window = (Instant::now(), 0);
                    let skipped = progress.skipped.load(Ordering::Relaxed);
                    if skipped > skipped_seen {
                        self.meters.skipped.inc_by(skipped - skipped_seen);
                        tracing::debug!(radio = self.radio.id, skipped = skipped - skipped_seen, "corrupt packets skipped");
                        skipped_seen = skipped;
                    }
                    self.report().await;
                }
            }
        }
    }

    /// Acts on what the decoder heard.
    async fn heard(&mut self, heard: Heard, stop: &CancellationToken) -> Result<(), Outcome> {
        let id = self.radio.id;
        match heard.output {
            Output::Level { silent_s } => {
                self.status.silence_s = silent_s;
                self.meters.silence.set(silent_s);
                if !self.streamed {
                    self.streamed = true;
                    let was = self.status.state;
                    self.enter(StationState::Streaming, None).await;
                    if self.announced_down || was == StationState::Silent {
                        self.announced_down = false;
                        self.publish(Event::StationBack { radio_id: id }).await;
                    }
                }
                let silence = self.ctx.config.silence.as_secs_f64();
                if silent_s >= silence && self.status.state == StationState::Streaming {
                    self.enter(
                        StationState::Silent,
                        Some(format!(
                            "below {} dBFS for {silent_s} s",
                            self.ctx.config.silence_dbfs
                        )),
                    )
                    .await;
                    self.publish(Event::StationSilent {
                        radio_id: id,
                        silent_s,
                    })
                    .await;
                } else if silent_s == 0.0 && self.status.state == StationState::Silent {
                    self.enter(StationState::Streaming, None).await;
                    self.publish(Event::StationBack { radio_id: id }).await;
                }
                Ok(())
            }
            Output::Sample(cut) => self.store(cut, heard.title, stop).await,
        }
    }

    async fn store(
        &mut self,
        cut: Cut,
        title: Option<String>,
        stop: &CancellationToken,
    ) -> Result<(), Outcome> {
        let id = self.radio.id;
        if !self.holds_lease() {
            return Err(Outcome::LostLease);
        }
        let sample = match NewSample::new(
            Source::Radio(id),
            self.radio.location.as_deref(),
            cut.captured_at,
            cut.duration_ms,
            cut.peaks,
        ) {
            Ok(s) => s.with_title(title.as_deref()),
            Err(e) => {
                tracing::error!(radio = id, error = %e, "a cut sample is invalid");
                return Ok(());
            }
        };
        let end = cut.captured_at + time::Duration::milliseconds(i64::from(cut.duration_ms));
        let mut wait = BACKOFF_BASE;
        loop {
            match samples::submit(&self.ctx.storage, &sample).await {
                Ok(_) => break,
                Err(e) if e.status.is_client_error() => {
                    tracing::error!(radio = id, sample = %sample.id, error = %e.message, "a sample was refused");
                    return Ok(());
                }
                Err(e) => {
                    tracing::warn!(radio = id, sample = %sample.id, error = %e.message, "cannot store a sample; retrying");
                    if sleep_or_stop(wait, stop).await {
                        return Err(Outcome::Stopped);
                    }
                    wait = (wait * 2).min(Duration::from_secs(10));
                }
            }
            if !self.holds_lease() {
                return Err(Outcome::LostLease);
            }
        }
        // A start within a fingerprint frame of the last end is the front
        // trimmed to whole frames, not a gap.
        let frame = time::Duration::seconds_f64(hendu_fingerprint::params::FRAME_SECONDS);
        if cut.first
            && let Some(from) = self.resume_after
            && cut.captured_at - from > frame
        {
            let gap = RadioGap {
                radio_id: id,
                started_at: from,
                ended_at: cut.captured_at,
                reason: self.gap_reason.clone(),
            };
            if let Err(e) = self.ctx.storage.relational.add_radio_gap(&gap).await {
                tracing::warn!(radio = id, error = %e, "cannot record a gap");
            }
        }
        self.resume_after = Some(end);
        self.status.last_sample_end = Some(end);
        self.status.samples += 1;
        self.meters.samples.inc();
        self.meters
            .last_sample
            .set(cut.captured_at.unix_timestamp() as f64);
        self.report().await;
        if self.flags.handover.load(Ordering::Acquire) {
            return Err(Outcome::HandedOver);
        }
        Ok(())
    }

    fn holds_lease(&self) -> bool {
        *self.flags.lease.borrow() > tokio::time::Instant::now()
    }

    /// Moves to `state` (writing the status when it changes).
    async fn enter(&mut self, state: StationState, detail: Option<String>) {
        if self.status.state == state && self.status.detail == detail {
            return;
        }
        if self.status.state != state {
            self.status.since = OffsetDateTime::now_utc();
            tracing::info!(radio = self.radio.id, from = %self.status.state, to = %state, detail = detail.as_deref().unwrap_or(""), "station state");
        }
        self.status.state = state;
        self.status.detail = detail;
        self.ctx.meters.set_state(self.radio.id, state);
        self.report().await;
    }

    async fn report(&mut self) {
        self.status.updated_at = OffsetDateTime::now_utc();
        if let Err(e) = self
            .ctx
            .storage
            .relational
            .put_radio_status(&self.status)
            .await
        {
            tracing::warn!(radio = self.radio.id, error = %e, "cannot write the station's status");
        }
    }

    async fn publish(&self, event: Event) {
        if let Err(e) = self.ctx.storage.events.publish(&event).await {
            tracing::warn!(radio = self.radio.id, error = %e, "cannot publish a station event");
        }
    }
}

/// Sets the flag when dropped (the decoder thread stops within a packet).
fn scopeguard(flag: Arc<AtomicBool>) -> impl Drop {
    struct Guard(Arc<AtomicBool>);
    impl Drop for Guard {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    Guard(flag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_lease_runs_out_at_its_deadline_unless_renewed_first() {
        let start = tokio::time::Instant::now();
        let (lease, mut rx) = watch::channel(start + Duration::from_secs(2));
        let renew = tokio::spawn(async move {
            // Renewed twice, then left to run out.
            for at in [1, 2] {
                tokio::time::sleep_until(start + Duration::from_secs(at)).await;
                lease.send_replace(start + Duration::from_secs(at + 2));
            }
            tokio::time::sleep(Duration::from_secs(60)).await;
            drop(lease);
        });
        lease_runs_out(&mut rx).await;
        assert_eq!(start.elapsed(), Duration::from_secs(4));
        renew.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_lease_ends_with_its_supervisor_or_when_already_past() {
        let start = tokio::time::Instant::now();
        let (lease, mut rx) = watch::channel(start + Duration::from_secs(30));
        drop(lease);
        lease_runs_out(&mut rx).await;
        assert!(start.elapsed() < Duration::from_secs(1));
        let (_lease, mut rx) = watch::channel(start);
        lease_runs_out(&mut rx).await;
        assert!(start.elapsed() < Duration::from_secs(1));
    }
}
