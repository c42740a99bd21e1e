"""The deployment policy, asserted on rendered manifests (kubectl kustomize).

    python3 k8s/policy.py RENDERED.yaml [--keda-out DIR]

Every Deployment: startup, liveness and readiness probes on every container,
CPU and memory requests and limits, non-root, read-only root file system, no
privilege escalation, every capability dropped, seccomp RuntimeDefault, a
PodDisruptionBudget, an autoscaler (HPA or KEDA ScaledObject) and a
writable /tmp. Every ScaledObject reads a HENDU stream under the prefix the
services are given. Exits 1 naming each breach. With --keda-out, writes each
KEDA object as its own JSON file there, for check-jsonschema.
"""

import json
import pathlib
import sys

import yaml

# The queues as shared/storage names them: stream "<prefix>queue:<queue>",
# consumer group per queue.
STREAMS = {"samples": "recognition", "raw-results": "filter"}


def containers(deployment):
    return deployment["spec"]["template"]["spec"].get("containers", [])


def deployment_breaches(d, docs):
    name = d["metadata"]["name"]
    pod = d["spec"]["template"]["spec"]
    pod_sc = pod.get("securityContext") or {}
    out = []
    if pod_sc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
        out.append("pod seccompProfile is not RuntimeDefault")
    if pod.get("automountServiceAccountToken") is not False:
        out.append("the service account token is mounted")
    for c in containers(d):
        where = f"container {c['name']}"
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            if probe not in c:
                out.append(f"{where} has no {probe}")
        resources = c.get("resources") or {}
        for kind in ("requests", "limits"):
            for r in ("cpu", "memory"):
                if r not in (resources.get(kind) or {}):
                    out.append(f"{where} has no {r} {kind[:-1]}")
        sc = c.get("securityContext") or {}
        if not (sc.get("runAsNonRoot") or pod_sc.get("runAsNonRoot")):
            out.append(f"{where} may run as root")
        if (sc.get("runAsUser", pod_sc.get("runAsUser")) or 0) == 0:
            out.append(f"{where} has no numeric non-root user")
        if sc.get("readOnlyRootFilesystem") is not True:
            out.append(f"{where} root file system is writable")
        if sc.get("allowPrivilegeEscalation") is not False:
            out.append(f"{where} allows privilege escalation")
        if "ALL" not in (sc.get("capabilities") or {}).get("drop", []):
            out.append(f"{where} does not drop ALL capabilities")
        if not any(m.get("mountPath") == "/tmp" for m in c.get("volumeMounts", [])):
            out.append(f"{where} has no /tmp to write to")
    labels = d["spec"]["template"]["metadata"].get("labels", {})
    pdbs = [
        p for p in docs
        if p["kind"] == "PodDisruptionBudget"
        and p["spec"]["selector"].get("matchLabels", {}).items() <= labels.items()
    ]
    if not pdbs:
        out.append("no PodDisruptionBudget")
    scalers = [
        s for s in docs
        if s["kind"] in ("HorizontalPodAutoscaler", "ScaledObject")
        and s["spec"]["scaleTargetRef"]["name"] == name
    ]
    if len(scalers) != 1:
        out.append(f"{len(scalers)} autoscalers instead of one")
    return [f"Deployment {name}: {b}" for b in out]


def scaled_object_breaches(s, prefix):
    name = s["metadata"]["name"]
    out = []
    for t in s["spec"]["triggers"]:
        if t["type"] != "redis-streams":
            continue
        meta = t["metadata"]
        stream = meta.get("stream", "")
        queue = stream[len(prefix + "queue:"):] if stream.startswith(prefix + "queue:") else None
        if queue not in STREAMS:
            out.append(f"stream {stream!r} is no HENDU queue under prefix {prefix!r}")
        elif meta.get("consumerGroup") != STREAMS[queue]:
            out.append(f"stream {stream} is read by group {STREAMS[queue]}, not {meta.get('consumerGroup')}")
        if "lagCount" not in meta:
            out.append("does not scale on the consumer group's lag (lagCount)")
        if "authenticationRef" not in t:
            out.append("has no authenticationRef for Redis")
    return [f"ScaledObject {name}: {b}" for b in out]


def main(argv):
    rendered = pathlib.Path(argv[1])
    docs = [d for d in yaml.safe_load_all(rendered.read_text()) if d]
    config = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "hendu-config")
    prefix = config["data"].get("HENDU_REDIS_PREFIX", "hendu:")
    breaches, checked = [], 0
    for d in docs:
        if d["kind"] == "Deployment":
            breaches += deployment_breaches(d, docs)
            checked += 1
        elif d["kind"] == "ScaledObject":
            breaches += scaled_object_breaches(d, prefix)
            checked += 1
    if checked == 0:
        breaches.append("no Deployment at all")
    if "--keda-out" in argv:
        out = pathlib.Path(argv[argv.index("--keda-out") + 1])
        out.mkdir(parents=True, exist_ok=True)
        for d in docs:
            if d["apiVersion"].startswith("keda.sh/"):
                path = out / f"{d['kind']}-{d['metadata']['name']}.json"
                path.write_text(json.dumps(d))
    for b in breaches:
        print(f"policy: {rendered}: {b}", file=sys.stderr)
    failed = len({b.split(":")[0] for b in breaches})
    print(f"policy: {rendered}: {checked - failed} passed, {failed} failed")
    return 1 if breaches else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
