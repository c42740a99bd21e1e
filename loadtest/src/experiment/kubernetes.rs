//! The Kubernetes target, as a dry run: the `kubectl` commands that would
//! deploy the experiment from `k8s/` (its overlay, its replicas), run the
//! load against the cluster's entry points, and apply the faults on their
//! schedule. This machine has no cluster, so the commands are printed (and
//! written to `kubectl.sh`), never run.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;

use super::{Action, SERVICES, Spec};

/// The commands, in order, with the offset at which each would run.
pub fn plan(spec: &Spec) -> Vec<(f64, String)> {
    let overlay = spec
        .deployment
        .overlay
        .clone()
        .unwrap_or_else(|| "k8s/overlays/dev".into());
    let ns = if overlay.ends_with("prod") {
        "hendu"
    } else {
        "hendu-dev"
    };
    let mut out = vec![(0.0, format!("kubectl apply -k {overlay}"))];
    for service in SERVICES {
        let n = spec.deployment.replicas_of(service);
        // The autoscalers would move the replicas: pin them for the run.
        out.push((0.0, format!("kubectl -n {ns} patch scaledobject {service} --type merge -p '{{\"spec\":{{\"minReplicaCount\":{n},\"maxReplicaCount\":{n}}}}}' 2>/dev/null || kubectl -n {ns} patch hpa {service} --type merge -p '{{\"spec\":{{\"minReplicas\":{n},\"maxReplicas\":{n}}}}}'")));
        out.push((
            0.0,
            format!("kubectl -n {ns} scale deployment/{service} --replicas={n}"),
        ));
        out.push((
            0.0,
            format!("kubectl -n {ns} rollout status deployment/{service} --timeout=5m"),
        ));
    }
    for (k, v) in &spec.deployment.env {
        out.push((
            0.0,
            format!("kubectl -n {ns} set env deployment --all {k}={v}"),
        ));
    }
    let seconds = spec.load.duration_s();
    out.push((0.0, format!(
        "hendu-load run --api http://communication.{ns}.svc:8080 --hash-generator http://hash-generator.{ns}.svc:8081 {}",
        spec.load.flags()
    )));
    for f in &spec.faults {
        let Ok(schedule) = f.schedule() else { continue };
        for at in schedule.instants(seconds) {
            let command = match f.action {
                Action::Stop => format!(
                    "kubectl -n {ns} scale statefulset/redis --replicas=0 && sleep {} && kubectl -n {ns} scale statefulset/redis --replicas=1",
                    f.lasting().map_or(30, |d| d.as_secs())
                ),
                Action::Kill => format!(
                    "kubectl -n {ns} delete pod --grace-period=0 --force $(kubectl -n {ns} get pods -l app.kubernetes.io/name={} -o name | shuf -n 1)",
                    f.service
                ),
                // The images have no shell or curl: the fault API through a port-forward.
                Action::Inject => format!(
                    "for pod in $(kubectl -n {ns} get pods -l app.kubernetes.io/name={service} -o name); do kubectl -n {ns} port-forward $pod 19000:{port} & pf=$!; sleep 1; curl -sS -H \"authorization: Bearer $HENDU_TOKEN\" -H 'content-type: application/json' -d '{json}' http://127.0.0.1:19000/v1/faults; kill $pf; done",
                    service = f.service,
                    port = port_of(&f.service),
                    json = f.fault_json().map(|v| v.to_string()).unwrap_or_default()
                ),
            };
            out.push((at.as_secs_f64(), command));
        }
    }
    out
}

/// The HTTP port of a service's container (`k8s/base`).
fn port_of(service: &str) -> u16 {
    match service {
        "communication" => 8080,
        "hash-generator" => 8081,
        "recognition" => 8082,
        _ => 8083,
    }
}

/// Prints the plan and writes it as `kubectl.sh` in `out`.
///
/// # Errors
/// The file cannot be written.
pub fn dry_run(spec: &Spec, out: &Path) -> Result<()> {
    std::fs::create_dir_all(out)?;
    let mut script = String::from(
        "#!/bin/sh\n# A dry run of the experiment: what would run, at which second of the load.\nset -e\n",
    );
    for (at, command) in plan(spec) {
        println!("[{at:>7.1} s] {command}");
        let _ = writeln!(script, "# at {at:.1} s\n{command}");
    }
    std::fs::write(out.join("kubectl.sh"), script)?;
    Ok(())
}
