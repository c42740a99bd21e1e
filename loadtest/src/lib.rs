//! HENDU as a benchmark target: an open-loop load generator.
//!
//! Requests go out at the instants a declared arrival process gives,
//! whatever the answers do, and each one's latency runs from its intended
//! send time into HDR histograms, so a stalled service is charged for the
//! queue it makes (no coordinated omission). A run writes a results
//! directory with its provenance, per-second figures and plots.
//!
//! # Layout
//! - [`arrival`]: when requests are due: rates (flat, ramp, steps) spent
//!   evenly or as a Poisson process, bursts, recorded traces.
//! - [`scenario`]: what a request is: device samples (REST, TCP v2; audio
//!   or fingerprints), catalogue uploads, a plain `GET`.
//! - [`load`]: a load as flags or a file's table, set up into a plan.
//! - [`local`]: the services as processes on this machine.
//! - [`setup`]: devices registered and the programme in the catalogue, via
//!   the services' APIs.
//! - [`drive`]: the open loop itself.
//! - [`recorder`]: per-second counts and latency histograms.
//! - [`e2e`]: sample-to-play latency from the stores' play events.
//! - [`report`], [`plot`]: the results directory, SVG and PNG plots.
//! - [`experiment`]: declared experiments (deployment, load, faults) run
//!   into data and plots, with invariants checked.
//! - [`null_server`]: the other end for the generator's own ceiling.
//! - [`scale`]: the engine at catalogue scale (`hendu-scale`): the
//!   recognition benchmark's tracks grown with synthetic ones.

pub mod arrival;
pub mod drive;
pub mod e2e;
pub mod experiment;
pub mod load;
pub mod local;
pub mod null_server;
pub mod plot;
pub mod recorder;
pub mod report;
pub mod scale;
pub mod scale_shards;
pub mod scenario;
pub mod setup;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};

use crate::arrival::Arrivals;
use crate::drive::Bounds;
use crate::recorder::Recorder;
use crate::scenario::Scenario;

/// A run: when, what, within which bounds, into which directory.
#[derive(Debug)]
pub struct Plan {
    pub arrivals: Arrivals,
    pub scenario: Arc<dyn Scenario>,
    pub bounds: Bounds,
    pub out: PathBuf,
    /// Device ids to the run's device numbers, when the end-to-end latency
    /// is to be read from the stores.
    pub e2e_devices: Option<HashMap<i64, usize>>,
    /// The services' stores, read for the end-to-end latency.
    pub stores: Option<hendu_storage::StorageConfig>,
    /// How long to wait for the last plays after the last answer.
    pub e2e_settle: Duration,
    /// Keeps every delivered sample (device, number, id) for checks after
    /// the run (the experiment runner's invariants).
    pub keep_deliveries: bool,
    /// What device samples were set up with (for device samples).
    pub samples: Option<load::SamplesSetup>,
    /// Everything that describes the run, for its provenance.
    pub settings: Value,
}

/// A delivered sample: its number in the device's programme, its id, and
/// when it was answered (from the start).
pub type Delivery = (u64, String, Duration);

/// What a run produced.
#[derive(Debug)]
pub struct Outcome {
    pub summary: Value,
    pub out: PathBuf,
    /// Per device, its delivered samples (with `keep_deliveries`).
    pub delivered: Vec<Vec<Delivery>>,
    pub samples: Option<load::SamplesSetup>,
}

/// Runs `plan` and writes its results directory.
///
/// # Errors
/// The stores not answering (with the end-to-end latency asked for), the
/// results not written.
pub async fn run(plan: Plan) -> Result<Outcome> {
    let seconds = plan.arrivals.seconds();
    let recorder = Arc::new(Recorder::new(seconds));
    let progress = ProgressBar::new(seconds.ceil() as u64).with_style(
        ProgressStyle::with_template("{spinner} {elapsed_precise} [{bar:40}] {pos}/{len} s {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    progress.set_message(format!("~{:.0} requests", plan.arrivals.expected()));
    let start = tokio::time::Instant::now() + Duration::from_millis(200);
    let watch = match plan.e2e_devices {
        Some(ref devices) => {
            let config = match &plan.stores {
                Some(c) => c.clone(),
                None => e2e::stores_from_env()?,
            };
            Some(e2e::watch(&config, devices.clone(), start).await?)
        }
        None => None,
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<drive::Answered>();
    let deliveries = tokio::spawn(async move {
        let mut per: Vec<Vec<Delivery>> = Vec::new();
        while let Some((delivered, at)) = rx.recv().await {
            if let Some((d, j, id)) = delivered.sample {
                if per.len() <= d {
                    per.resize_with(d + 1, Vec::new);
                }
                per[d].push((j, id, at));
            }
        }
        per
    });
    drive::run(
        &plan.arrivals,
        plan.scenario.clone(),
        recorder.clone(),
        plan.bounds,
        start,
        &progress,
        (watch.is_some() || plan.keep_deliveries).then_some(tx),
    )
    .await;
    progress.finish_and_clear();
    let delivered = deliveries.await.unwrap_or_default();
    let e2e = match watch {
        Some(w) => {
            tokio::time::sleep(plan.e2e_settle).await;
            let times = delivered
                .iter()
                .map(|d| d.iter().map(|(_, _, at)| *at).collect())
                .collect();
            Some(w.finish(times).await)
        }
        None => None,
    };
    let totals = recorder.totals();
    let mut summary = report::summary(&totals, seconds);
    summary["scenario"] = plan.scenario.describe();
    summary["arrivals"] = serde_json::to_value(&plan.arrivals)?;
    summary["arrivals"]["seconds"] = json!(seconds);
    summary["end_to_end"] = serde_json::to_value(&e2e)?;
    summary["provenance"] = report::provenance(plan.settings);
    report::write(&plan.out, &totals, &summary)?;
    if let Some(e) = &e2e {
        let mut csv = String::from("second,plays,p50_ms,p99_ms\n");
        for (s, n, p50, p99) in &e.seconds {
            csv.push_str(&format!("{s},{n},{p50:.3},{p99:.3}\n"));
        }
        std::fs::write(plan.out.join("e2e.csv"), csv)?;
    }
    Ok(Outcome {
        summary,
        out: plan.out,
        delivered,
        samples: plan.samples,
    })
}
