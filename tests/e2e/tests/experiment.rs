//! The experiment runner, end to end: `hendu-experiment run` of the smoke
//! experiment (every service as a process on MariaDB, Redis and the
//! MongoDB-protocol server; a steady load; a recogniser killed; a delay
//! injected through the fault API) holds its invariants and writes its
//! results; the Kubernetes target prints what it would run.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly by design.

use std::path::{Path, PathBuf};

use hendu_e2e::bin_dir;
use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn experiment(args: &[&str]) -> std::process::Output {
    std::process::Command::new(bin_dir().join("hendu-experiment"))
        .args(args)
        .current_dir(repo())
        .env("HENDU_BIN_DIR", bin_dir())
        .output()
        .expect("hendu-experiment runs (build the binaries first)")
}

/// Runs `loadtest/experiments/NAME.toml`, which must succeed; its results
/// directory and `experiment.json`.
fn run_to_the_end(name: &str) -> (tempfile::TempDir, Value) {
    let out = tempfile::tempdir().unwrap();
    let file = format!("loadtest/experiments/{name}.toml");
    let run = experiment(&["run", &file, "--out", out.path().to_str().unwrap()]);
    let said =
        String::from_utf8_lossy(&run.stdout).to_string() + &String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{said}");
    let doc: Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("experiment.json")).unwrap())
            .unwrap();
    (out, doc)
}

#[test]
fn the_smoke_experiment_runs_its_faults_and_holds_its_invariants() {
    let (out, doc) = run_to_the_end("smoke");
    let inv = &doc["invariants"];
    assert_eq!(inv["holds"], true, "{inv}");
    let accepted = inv["accepted"].as_u64().unwrap();
    // 4 a second for 40 s, every one accepted despite the kill.
    assert_eq!(accepted, 160, "{inv}");
    assert!(inv["expected_plays"].as_u64().unwrap() >= 8, "{inv}");
    assert_eq!(doc["load"]["requests"]["ok"], 160);
    let events = std::fs::read_to_string(out.path().join("events.csv")).unwrap();
    assert!(
        events.contains(",kill,recognition,recognition-0,"),
        "{events}"
    );
    assert!(
        events.contains(",restarted,recognition,recognition-0,"),
        "{events}"
    );
    assert!(
        events.contains(",inject,communication,communication-0,\"201 "),
        "{events}"
    );
    // The injected delay shows in the latency of the requests due then.
    let p99 = doc["load"]["latency_ms"]["p99"].as_f64().unwrap();
    assert!(
        p99 >= 100.0,
        "p99 {p99} ms with a 100 ms delay on half the uploads for 10 s"
    );
    let metrics = std::fs::read_to_string(out.path().join("metrics.csv")).unwrap();
    assert!(
        metrics.contains("recognition,recognition-0,\"hendu_catalogue_tracks"),
        "no recogniser metrics"
    );
    for f in [
        "load/summary.json",
        "load/seconds.csv",
        "load/latency.png",
        "load/throughput.svg",
        "replicas.csv",
        "logs",
    ] {
        assert!(out.path().join(f).exists(), "{f} missing");
    }
}

#[test]
fn the_kubernetes_target_prints_what_it_would_run() {
    let out = tempfile::tempdir().unwrap();
    let refused = experiment(&[
        "run",
        "loadtest/experiments/chaos-kubernetes.toml",
        "--out",
        out.path().to_str().unwrap(),
    ]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--dry-run"));
    let run = experiment(&[
        "run",
        "loadtest/experiments/chaos-kubernetes.toml",
        "--dry-run",
        "--out",
        out.path().to_str().unwrap(),
    ]);
    let printed = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{printed}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(
        printed.contains("kubectl apply -k k8s/overlays/dev"),
        "{printed}"
    );
    assert!(
        printed.contains("kubectl -n hendu-dev scale deployment/recognition --replicas=2"),
        "{printed}"
    );
    // A kill every 20 s from 20 s until the 10 minutes are over.
    let kills = printed
        .lines()
        .filter(|l| l.contains("delete pod") && l.contains("name=recognition"))
        .count();
    assert_eq!(kills, 29, "{printed}");
    let script = std::fs::read_to_string(out.path().join("kubectl.sh")).unwrap();
    assert!(script.starts_with("#!/bin/sh"));
}

#[test]
fn every_experiment_in_the_repository_reads() {
    for entry in std::fs::read_dir(repo().join("loadtest/experiments")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let check = experiment(&["check", path.to_str().unwrap()]);
            assert!(
                check.status.success(),
                "{}: {}",
                path.display(),
                String::from_utf8_lossy(&check.stderr)
            );
        }
    }
}

#[test]
fn the_outage_smoke_experiment_stops_redis_scales_and_holds_its_invariants() {
    let (out, doc) = run_to_the_end("smoke-outage");
    assert_eq!(doc["invariants"]["holds"], true, "{}", doc["invariants"]);
    // Devices resend what the outage refused: every sample gets in.
    assert_eq!(doc["load"]["requests"]["ok"], 120, "{}", doc["load"]);
    let events = std::fs::read_to_string(out.path().join("events.csv")).unwrap();
    assert!(events.contains(",stop,redis,redis,"), "{events}");
    assert!(events.contains(",started,redis,redis,"), "{events}");
    // The policy read the backlog every second of the load.
    let readings = std::fs::read_to_string(out.path().join("scaling.csv")).unwrap();
    assert!(readings.lines().count() > 20, "{readings}");
}
