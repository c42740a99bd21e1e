"""Step 4: index the indexed tracks with `hendu index`, run every query through
`hendu match`, and score recall, false positives, latency and resources."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess

from common import (BenchError, ChildRun, Config, arg_batches, dir_size, log, percentile,
                    read_json, run_timed, write_json)
from queries import CONDITION_NAMES

OFFSET_TOLERANCE_S = 1.0
CURVE_THRESHOLDS = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99]


def check_binary(cfg: Config) -> None:
    if not (cfg.hendu.is_file() and os.access(cfg.hendu, os.X_OK)):
        raise BenchError(f"hendu binary not found at {cfg.hendu}\n"
                         "  build it with `cargo build --release`, or pass --hendu PATH")


def binary_version(cfg: Config) -> str | None:
    """`hendu --version`, if the binary answers it."""
    try:
        proc = subprocess.run([str(cfg.hendu), "--version"], capture_output=True, text=True,
                              timeout=20, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = proc.stdout.strip().splitlines()
    return text[0] if proc.returncode == 0 and text else None


def default_min_confidence(cfg: Config) -> float | None:
    """The default of `hendu match --min-confidence`, read from its --help text."""
    try:
        proc = subprocess.run([str(cfg.hendu), "match", "--help"], capture_output=True,
                              text=True, timeout=20, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = proc.stdout + proc.stderr
    # The option's own entry: from its flag line to the next option line.
    for block in re.findall(r"^\s*(?:-\w, )?--min-confidence\b.*?(?=^\s*-|\Z)", text,
                            re.MULTILINE | re.DOTALL):
        m = re.search(r"\[default:\s*([0-9]*\.?[0-9]+)\]", block)
        if m:
            return float(m.group(1))
    return None


def run_batches(cfg: Config, prefix: list[str], paths: list[str], log_name: str) -> ChildRun:
    """Run `prefix + paths`, in one invocation unless the argument list is too long.
    Batches are combined: times add up, peak RSS is the largest, line arrival times
    are made continuous."""
    batches = arg_batches(paths, fixed_len=sum(len(p) + 1 for p in prefix))
    if len(batches) > 1:
        log(f"  argument list too long for one call: {len(batches)} invocations")
    total: ChildRun | None = None
    for i, batch in enumerate(batches):
        stderr = cfg.run_dir / (f"{log_name}.stderr" if len(batches) == 1
                                else f"{log_name}.{i}.stderr")
        child = run_timed(prefix + batch, stderr)
        if child.returncode != 0:
            tail = stderr.read_text(errors="replace").strip()[-3000:]
            raise BenchError(f"{' '.join(prefix[:2])} exited with {child.returncode} "
                             f"(stderr in {stderr}):\n{tail}")
        if total is None:
            total = child
        else:
            offset = total.wall_s
            total.lines += child.lines
            total.times += [t + offset for t in child.times]
            total.wall_s += child.wall_s
            total.user_s += child.user_s
            total.sys_s += child.sys_s
            total.max_rss_kb = max(total.max_rss_kb, child.max_rss_kb)
    assert total is not None
    return total


def index(cfg: Config, corpus: dict) -> dict:
    """Index all indexed tracks into a fresh store, one job (one core)."""
    check_binary(cfg)
    tracks = [t for t in corpus["tracks"] if t["split"] == "indexed"]
    files = [t["path"] for t in tracks]
    audio_s = sum(t["duration"] for t in tracks)
    marker = cfg.run_dir / "index.json"
    marker.unlink(missing_ok=True)
    shutil.rmtree(cfg.store, ignore_errors=True)
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    log(f"run: indexing {len(files)} tracks ({audio_s / 3600:.2f} h) into {cfg.store}")
    child = run_batches(cfg, [str(cfg.hendu), "index", "--store", str(cfg.store),
                              "--jobs", "1"], files, "index")
    store_bytes = dir_size(cfg.store)
    result = {
        "tracks": len(files),
        "audio_s": audio_s,
        "wall_s": child.wall_s,
        "cpu_s": child.user_s + child.sys_s,
        "cores": 1,
        "audio_s_per_wall_s_per_core": audio_s / child.wall_s if child.wall_s else None,
        "peak_rss_mb": child.max_rss_kb / 1024,
        "store_bytes": store_bytes,
        "bytes_per_audio_hour": store_bytes / (audio_s / 3600) if audio_s else None,
    }
    # Lets a later step reuse the store while the binary is unchanged.
    write_json(marker, dict(result, hendu=str(cfg.hendu), hendu_mtime=cfg.hendu.stat().st_mtime))
    log(f"run: indexed in {child.wall_s:.1f} s, peak RSS {result['peak_rss_mb']:.0f} MB, "
        f"store {store_bytes / 1e6:.1f} MB")
    return result


def store_is_fresh(cfg: Config) -> bool:
    """True if the store was completed by `index` with the current binary."""
    marker = cfg.run_dir / "index.json"
    if not (cfg.store.exists() and marker.exists()):
        return False
    info = read_json(marker)
    return (info.get("hendu") == str(cfg.hendu)
            and info.get("hendu_mtime") == cfg.hendu.stat().st_mtime)


def parse_match_lines(lines: list[str]) -> tuple[dict[str, dict], list[str]]:
    """Map query path -> answer object from `hendu match --json` output.
    Returns (answers, unparsed lines)."""
    answers, bad = {}, []
    for line in lines:
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            bad.append(line)
            continue
        if not isinstance(obj, dict) or "query" not in obj:
            bad.append(line)
            continue
        answers.setdefault(obj["query"], obj)
    return answers, bad


def match(cfg: Config, paths: list[str], extra: list[str], log_name: str) -> dict:
    """Run `hendu match --json` over `paths`; return answers, arrival times and resources."""
    check_binary(cfg)
    prefix = [str(cfg.hendu), "match", "--store", str(cfg.store), "--json", *extra]
    log(f"run: {' '.join(prefix[1:])} <{len(paths)} queries>")
    child = run_batches(cfg, prefix, paths, log_name)
    (cfg.run_dir / f"{log_name}.jsonl").write_text("\n".join(child.lines) + "\n")
    answers, bad = parse_match_lines(child.lines)
    arrival = {}
    for line, t in zip(child.lines, child.times):
        try:
            arrival.setdefault(json.loads(line)["query"], t)
        except (json.JSONDecodeError, KeyError, TypeError):
            pass
    if bad:
        log(f"run: {len(bad)} output lines were not JSON answers, e.g. {bad[0][:200]!r}")
    log(f"run: {len(answers)} answers in {child.wall_s:.1f} s, "
        f"peak RSS {child.max_rss_kb / 1024:.0f} MB")
    return {"answers": answers, "arrival": arrival, "unparsed": len(bad),
            "wall_s": child.wall_s, "cpu_s": child.user_s + child.sys_s,
            "peak_rss_mb": child.max_rss_kb / 1024}


def same_file(a: str | None, b: str | None) -> bool:
    """Path equality: as given, or after resolving (the engine may normalise paths)."""
    if a is None or b is None:
        return False
    return a == b or os.path.realpath(a) == os.path.realpath(b)


def judge(query: dict, answer: dict | None, related: set[frozenset]) -> dict:
    """Classify one answer against its query's ground truth."""
    m = answer.get("match") if answer else None
    verdict = {"answered": answer is not None, "matched": m is not None}
    if query["track"] is None:
        verdict["false_positive"] = m is not None
        return verdict
    correct = m is not None and same_file(m.get("source"), query["track"])
    verdict["correct"] = correct
    verdict["wrong"] = m is not None and not correct
    verdict["related"] = (verdict["wrong"] and
                          frozenset((m.get("source"), query["track"])) in related)
    off = m.get("offset_s") if m else None
    verdict["offset_ok"] = (correct and isinstance(off, (int, float))
                            and abs(off - query["start_s"]) <= OFFSET_TOLERANCE_S)
    return verdict


def per_query_wall(queries: list[dict], arrival: dict[str, float], wall_s: float
                   ) -> dict[str, float] | None:
    """Attribute the batch's wall time to conditions: each output line is charged the
    time since the previous line (the first one also carries start-up). None when the
    output did not stream (all lines arrived at the very end)."""
    times = sorted((t, q["condition"]) for q in queries
                   if (t := arrival.get(q["path"])) is not None)
    if len(times) < 2 or times[-1][0] - times[0][0] < 0.1 * wall_s:
        return None
    spent: dict[str, float] = {}
    prev = 0.0
    for t, cond in times:
        spent[cond] = spent.get(cond, 0.0) + (t - prev)
        prev = t
    counts: dict[str, int] = {}
    for q in queries:
        counts[q["condition"]] = counts.get(q["condition"], 0) + 1
    return {c: spent.get(c, 0.0) / counts[c] for c in counts}


def _num(answer: dict | None, key: str) -> float | None:
    v = answer.get(key) if answer else None
    return float(v) if isinstance(v, (int, float)) else None


def score_conditions(queries: list[dict], answers: dict[str, dict], related: set[frozenset],
                     wall_per_query: dict[str, float] | None) -> list[dict]:
    """Per-condition table rows from the default-threshold run."""
    rows = []
    conds = [c for c in CONDITION_NAMES if any(q["condition"] == c for q in queries)]
    for cond in conds:
        qs = [q for q in queries if q["condition"] == cond]
        verdicts = [(q, judge(q, answers.get(q["path"]), related)) for q in qs]
        inq = [v for q, v in verdicts if q["track"] is not None]
        held = [v for q, v in verdicts if q["track"] is None]
        elapsed = [x for q in qs if (x := _num(answers.get(q["path"]), "elapsed_ms")) is not None]
        match_ms = [x for q in qs if (x := _num(answers.get(q["path"]), "match_ms")) is not None]
        rows.append({
            "condition": cond,
            "in_catalogue": len(inq),
            "correct": sum(v["correct"] for v in inq),
            "offset_ok": sum(v["offset_ok"] for v in inq),
            "wrong": sum(v["wrong"] for v in inq),
            "wrong_related": sum(v["related"] for v in inq),
            "held_out": len(held),
            "false_positives": sum(v["false_positive"] for v in held),
            "unanswered": sum(not v["answered"] for _, v in verdicts),
            "elapsed_ms_p50": percentile(elapsed, 50),
            "elapsed_ms_p99": percentile(elapsed, 99),
            "match_ms_p50": percentile(match_ms, 50),
            "match_ms_p99": percentile(match_ms, 99),
            "wall_ms_per_query": (wall_per_query[cond] * 1000 if wall_per_query else None),
        })
    return rows


def confidence_curve(queries: list[dict], answers: dict[str, dict], related: set[frozenset],
                     default: float | None) -> list[dict]:
    """Pooled recall and false-positive rate for a range of confidence thresholds, from a
    run that reports the best candidate for every query (--min-confidence 0)."""
    inq = [q for q in queries if q["track"] is not None]
    held = [q for q in queries if q["track"] is None]
    def answer(q: dict) -> tuple[dict | None, dict | None, float | None]:
        a = answers.get(q["path"])
        m = a.get("match") if a else None
        return a, m, _num(m, "confidence")

    scored_inq, scored_held = [], []
    for q in inq:
        a, _, c = answer(q)
        scored_inq.append((judge(q, a, related)["correct"], c))
    for q in held:
        _, m, c = answer(q)
        scored_held.append((m is not None, c))
    confs = [c for _, c in scored_inq + scored_held if c is not None]
    thresholds = set(CURVE_THRESHOLDS)
    if confs and (min(confs) < 0 or max(confs) > 1):
        # Not a 0..1 scale: use deciles of the observed confidences instead.
        s = sorted(confs)
        thresholds = {s[min(len(s) - 1, len(s) * k // 10)] for k in range(10)}
    if default is not None:
        thresholds.add(default)
    rows = []
    for t in sorted(thresholds):
        correct = sum(ok and c is not None and c >= t for ok, c in scored_inq)
        wrong = sum(not ok and c is not None and c >= t for ok, c in scored_inq)
        fp = sum(m and c is not None and c >= t for m, c in scored_held)
        rows.append({
            "threshold": t,
            "is_default": default is not None and t == default,
            "recall": correct / len(inq) if inq else None,
            "wrong_rate": wrong / len(inq) if inq else None,
            "fp_rate": fp / len(held) if held else None,
        })
    return rows


# The live-event conditions were designed on one half of the tracks and the other
# half was left alone: a track is in the tuning half when the SHA-1 of its path, as
# it was on the development machine, is even. (Only the never-indexed clips' strengths
# under proposed warps were read to set a parameter, on the tuning half.)
SPLIT_ROOT = "/work/main/.bench-data"


def tuning_half(rel: str) -> bool:
    """True for tracks of the half the engine's parameters were chosen on."""
    return int(hashlib.sha1(f"{SPLIT_ROOT}/unpacked/{rel}".encode()).hexdigest(), 16) % 2 == 0


def pooled(rows: list[dict]) -> dict:
    """Overall recall / FP rate from per-condition rows."""
    inq = sum(r["in_catalogue"] for r in rows)
    held = sum(r["held_out"] for r in rows)
    return {
        "in_catalogue": inq,
        "held_out": held,
        "recall": sum(r["correct"] for r in rows) / inq if inq else None,
        "wrong_rate": sum(r["wrong"] for r in rows) / inq if inq else None,
        "fp_rate": sum(r["false_positives"] for r in rows) / held if held else None,
    }


def run_all(cfg: Config, corpus: dict, qmanifest: dict) -> dict:
    """The whole run step; results are saved to <data>/results/run.json."""
    check_binary(cfg)
    related = {frozenset(p) for p in corpus.get("related", [])}
    index_result = index(cfg, corpus)
    order = {c: i for i, c in enumerate(CONDITION_NAMES)}
    queries = sorted(qmanifest["queries"], key=lambda q: (order[q["condition"]], q["path"]))
    missing = [q["path"] for q in queries if not os.path.exists(q["path"])]
    if missing:
        raise BenchError(f"{len(missing)} query files are missing (e.g. {missing[0]}): "
                         "run `bench.py queries`")
    paths = [q["path"] for q in queries]
    first = match(cfg, paths, [], "match")
    wall_pq = per_query_wall(queries, first["arrival"], first["wall_s"])
    rows = score_conditions(queries, first["answers"], related, wall_pq)
    default = default_min_confidence(cfg)
    second = match(cfg, paths, ["--min-confidence", "0"], "match_min0")
    curve = confidence_curve(queries, second["answers"], related, default)
    rel = {t["path"]: t["rel"] for t in corpus["tracks"]}
    halves = {
        name: score_conditions([q for q in queries if tuning_half(rel[q["from_track"]]) == want],
                               first["answers"], related, None)
        for name, want in (("tuning", True), ("reserved", False))
    }
    result = {
        "hendu": str(cfg.hendu),
        "hendu_version": binary_version(cfg),
        "index": index_result,
        "match": {
            "queries": len(queries),
            "wall_s": first["wall_s"],
            "cpu_s": first["cpu_s"],
            "wall_ms_per_query": first["wall_s"] * 1000 / len(queries),
            "peak_rss_mb": first["peak_rss_mb"],
            "unparsed_lines": first["unparsed"],
            "streamed": wall_pq is not None,
        },
        "match_min0": {"wall_s": second["wall_s"], "peak_rss_mb": second["peak_rss_mb"],
                       "unparsed_lines": second["unparsed"]},
        "conditions": rows,
        "halves": halves,
        "overall": pooled(rows),
        "default_min_confidence": default,
        "curve": curve,
        "phone_codec": qmanifest.get("phone_codec"),
        "clips_per_track": qmanifest.get("clips_per_track"),
    }
    write_json(cfg.results_dir / "run.json", result)
    return result
