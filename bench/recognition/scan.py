"""Step 5: the scan check. Build a ~27-minute "broadcast" from excerpts of indexed
tracks, held-out music and noise (plus a degraded copy), run `hendu scan` on both and
score the reported stretches against the ground-truth timeline."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from common import (BROADCAST_COMPAND, BenchError, Config, log, median, noise_gain,
                    publish_recording, read_json, render_parallel, require_tools, rng_for, run,
                    run_timed, sox_rms, wav_frames, write_json)
from long_sets import build_dj_room, build_radio_hour
from queries import extract, noise_bank
from runner import binary_version, check_binary, index, same_file, store_is_fresh

RATE = 44100
CHANNELS = 2
EXCERPTS = 16
EXCERPT_S = (45.0, 120.0)
HELDOUT_S = (20.0, 60.0)
NOISE_S = (10.0, 30.0)
# What separates consecutive excerpts (15 gaps): hard cuts, held-out music, noise.
GAPS = ["cut"] * 5 + ["heldout"] * 5 + ["noise"] * 5
SPEED = 1.015
SNR_DB = 10.0
FOUND_OVERLAP = 0.5
# A DJ set: excerpts of distinct indexed tracks, each under one of these warps
# (sox effect, track seconds per set second), joined by crossfades.
DJ_EXCERPTS = 8
DJ_EXCERPT_S = (60.0, 100.0)
DJ_FADE_S = 8.0
DJ_WARPS = [
    ("speed", 1.06), ("speed", 0.94), ("speed", 1.08), ("tempo", 0.93),
    ("tempo", 1.08), ("pitch", 100), ("pitch", -100), ("none", 1.0),
]


def plan(cfg: Config, corpus: dict) -> list[dict]:
    """Segments of the broadcast, in order (deterministic in the seed)."""
    rng = rng_for(cfg.seed, "scan")
    indexed = sorted((t for t in corpus["tracks"] if t["split"] == "indexed"),
                     key=lambda t: t["rel"])
    held = sorted((t for t in corpus["tracks"] if t["split"] == "heldout"),
                  key=lambda t: t["rel"])
    n_held = GAPS.count("heldout")
    if len(indexed) < EXCERPTS or len(held) < n_held:
        raise BenchError("corpus too small for the scan check")
    picks = rng.sample(indexed, EXCERPTS)
    fillers = rng.sample(held, n_held)
    gaps = GAPS[:EXCERPTS - 1]
    rng.shuffle(gaps)
    segments = []

    def music(kind: str, track: dict, bounds: tuple[float, float]) -> dict:
        length = rng.uniform(bounds[0], min(bounds[1], track["duration"] - 1.0))
        offset = rng.uniform(0.0, track["duration"] - length - 0.5)
        return {"kind": kind, "track": track["path"], "offset_s": round(offset, 3),
                "length_s": round(length, 3)}

    for k, track in enumerate(picks):
        segments.append(music("indexed", track, EXCERPT_S))
        if k == len(picks) - 1:
            break
        gap = gaps[k]
        if gap == "heldout":
            segments.append(music("heldout", fillers.pop(), HELDOUT_S))
        elif gap == "noise":
            segments.append({"kind": "noise",
                             "color": rng.choice(["pink", "white"]),
                             "offset_s": round(rng.uniform(0, 250.0), 3),
                             "length_s": round(rng.uniform(*NOISE_S), 3)})
    return segments


def white_bank(cfg: Config) -> Path:
    """A long white-noise file (made once, repeatable)."""
    path = cfg.data / "noise" / f"white_{RATE}_{CHANNELS}.wav"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp.wav")
        run(["sox", "-R", "-n", "-r", RATE, "-c", CHANNELS, "-b", "16", tmp,
             "synth", 300, "whitenoise", "gain", "-n", "-3"])
        os.replace(tmp, path)
    return path


def render_segment(seg: dict, out: str, banks: dict[str, str], tmp_root: str) -> str:
    """Render one segment as 44.1 kHz stereo 16-bit WAV (worker function)."""
    if seg["kind"] == "noise":
        # Noise at roughly -20 dBFS RMS.
        run(["sox", "-R", banks[seg["color"]], "-b", "16", out, "trim",
             f"{seg['offset_s']:.3f}", f"{seg['length_s']:.3f}", "gain", "-n", "-10"])
        return out
    with tempfile.TemporaryDirectory(dir=tmp_root) as td:
        raw = Path(td) / "raw.wav"
        extract(seg["track"], seg["offset_s"], seg["length_s"], raw)
        run(["sox", "-R", raw, "-r", RATE, "-c", CHANNELS, "-b", "16", out,
             "rate", "-v", RATE])
    return out


def build_broadcast(cfg: Config, corpus: dict) -> tuple[Path, Path]:
    """broadcast.wav and its ground truth (cached)."""
    wav = cfg.scan_dir / "broadcast.wav"
    truth_path = cfg.scan_dir / "broadcast.truth.json"
    if wav.exists() and truth_path.exists():
        return wav, truth_path
    segments = plan(cfg, corpus)
    work = cfg.scan_dir / "segments"
    banks = {"pink": str(noise_bank(cfg, RATE, CHANNELS)), "white": str(white_bank(cfg))}
    outs = render_parallel(cfg, "scan: rendering broadcast segments", work, render_segment,
                           segments, banks, str(cfg.tmp_dir))
    # The timeline comes from the rendered frame counts, so it is sample-exact.
    t = 0
    timeline = []
    for seg, out in zip(segments, outs):
        frames, rate = wav_frames(Path(out))
        assert rate == RATE
        timeline.append({
            "kind": seg["kind"],
            "start_s": t / RATE,
            "end_s": (t + frames) / RATE,
            "track": seg.get("track"),
            "offset_s": seg["offset_s"] if seg["kind"] != "noise" else None,
            "noise": seg.get("color"),
        })
        t += frames
    tmp = wav.with_name("broadcast.tmp.wav")
    run(["sox", *outs, tmp])
    os.replace(tmp, wav)
    shutil.rmtree(work)
    write_json(truth_path, {"file": str(wav), "speed": 1.0, "duration_s": t / RATE,
                            "segments": timeline})
    log(f"scan: wrote {wav} ({t / RATE / 60:.1f} min)")
    return wav, truth_path


def build_degraded(cfg: Config, wav: Path, truth_path: Path) -> tuple[Path, Path]:
    """degraded.mp3: 1.5% fast, compressed, pink noise at 10 dB SNR, MP3 128 kbps (cached)."""
    mp3 = cfg.scan_dir / "degraded.mp3"
    dtruth_path = cfg.scan_dir / "degraded.truth.json"
    if mp3.exists() and dtruth_path.exists():
        return mp3, dtruth_path
    log("scan: building the degraded broadcast")
    cfg.tmp_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cfg.tmp_dir) as td:
        tmp = Path(td)
        fast = tmp / "fast.wav"
        run(["sox", "-R", wav, "-b", "16", fast, "speed", str(SPEED), "rate", "-v", RATE,
             *BROADCAST_COMPAND])
        frames, _ = wav_frames(fast)
        noise = tmp / "noise.wav"
        run(["sox", "-R", "-n", "-r", RATE, "-c", CHANNELS, "-b", "16", noise,
             "synth", f"{frames / RATE:.6f}", "pinknoise", "gain", "-n", "-3"])
        g = noise_gain(sox_rms(fast), sox_rms(noise), SNR_DB)
        mixed = tmp / "mixed.wav"
        run(["sox", "-R", "-m", "-v", "0.5", fast, "-v", f"{0.5 * g:.6f}", noise,
             "-b", "16", mixed, "gain", "-n", "-1"])
        part = tmp / "degraded.mp3"
        run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", mixed, "-c:a", "libmp3lame",
             "-b:a", "128k", "-f", "mp3", part])
        shutil.move(str(part), mp3)
    truth = read_json(truth_path)
    segs = [dict(s, start_s=s["start_s"] / SPEED, end_s=s["end_s"] / SPEED)
            for s in truth["segments"]]
    write_json(dtruth_path, {"file": str(mp3), "speed": SPEED,
                             "duration_s": truth["duration_s"] / SPEED, "segments": segs})
    log(f"scan: wrote {mp3}")
    return mp3, dtruth_path


def render_dj_excerpt(job: dict, out: str, tmp_root: str) -> str:
    """One excerpt of the DJ set, warped and faded (worker function)."""
    kind, value = job["warp"]
    with tempfile.TemporaryDirectory(dir=tmp_root) as td:
        raw = Path(td) / "raw.wav"
        extract(job["track"], job["offset_s"], job["source_s"], raw)
        effect = {"speed": ["speed", str(value), "rate", "-v", str(RATE)],
                  "tempo": ["tempo", "-m", str(value)],
                  "pitch": ["pitch", str(value), "rate", "-v", str(RATE)],
                  "none": []}[kind]
        fades = ["fade", "t", f"{DJ_FADE_S if job['fade_in'] else 0}", "0",
                 f"{DJ_FADE_S if job['fade_out'] else 0}"]
        run(["sox", "-R", raw, "-r", RATE, "-c", CHANNELS, "-b", "16", out, *effect,
             "rate", "-v", str(RATE), *fades, "pad", f"{job['at_s']:.3f}"])
    return out


def build_dj(cfg: Config, corpus: dict) -> tuple[Path, Path]:
    """dj.wav: a DJ set of warped excerpts joined by crossfades, and its truth (cached).
    A play's truth starts and ends in the middle of its crossfades."""
    wav = cfg.scan_dir / "dj.wav"
    truth_path = cfg.scan_dir / "dj.truth.json"
    if wav.exists() and truth_path.exists():
        return wav, truth_path
    rng = rng_for(cfg.seed, "dj")
    indexed = sorted((t for t in corpus["tracks"] if t["split"] == "indexed"
                      and t["duration"] > DJ_EXCERPT_S[1] * 1.1 + 2), key=lambda t: t["rel"])
    picks = rng.sample(indexed, DJ_EXCERPTS)
    warps = list(DJ_WARPS)
    rng.shuffle(warps)
    jobs, at = [], 0.0
    for i, (track, warp) in enumerate(zip(picks, warps)):
        length = rng.uniform(*DJ_EXCERPT_S)
        time = warp[1] if warp[0] in ("speed", "tempo") else 1.0
        source = length * time
        offset = rng.uniform(0.0, track["duration"] - source - 1.0)
        jobs.append({"track": track["path"], "warp": warp, "offset_s": round(offset, 3),
                     "source_s": round(source, 3), "time": time, "at_s": at,
                     "fade_in": i > 0, "fade_out": i < DJ_EXCERPTS - 1})
        at += length - DJ_FADE_S
    work = cfg.scan_dir / "dj_segments"
    outs = render_parallel(cfg, "scan: rendering the DJ set", work, render_dj_excerpt, jobs,
                           str(cfg.tmp_dir))
    timeline = []
    for i, (job, out) in enumerate(zip(jobs, outs)):
        frames, _ = wav_frames(Path(out))
        begin, end = job["at_s"], frames / RATE
        start = begin + (DJ_FADE_S / 2 if job["fade_in"] else 0.0)
        stop = end - (DJ_FADE_S / 2 if job["fade_out"] else 0.0)
        timeline.append({"kind": "indexed", "start_s": start, "end_s": stop,
                         "track": job["track"], "speed": job["time"],
                         "warp": f"{job['warp'][0]} {job['warp'][1]}",
                         "offset_s": job["offset_s"] + (start - begin) * job["time"]})
    tmp = wav.with_name("dj.tmp.wav")
    # Each excerpt at its own level (sox -m would scale each input down by
    # the count), then the set normalised: at most two overlap, in a fade.
    inputs = [arg for out in outs for arg in ("-v", "1", out)]
    run(["sox", "-R", "-m", *inputs, tmp, "gain", "-n", "-1"])
    publish_recording(tmp, wav, work, truth_path, timeline)
    return wav, truth_path


def build(cfg: Config, corpus: dict) -> list[tuple[str, Path, Path]]:
    """The scan files with their ground truth: [(label, audio, truth)]."""
    require_tools("ffmpeg", "sox", "espeak-ng")
    wav, truth = build_broadcast(cfg, corpus)
    mp3, dtruth = build_degraded(cfg, wav, truth)
    dj, djtruth = build_dj(cfg, corpus)
    dj_room, dj_room_truth = build_dj_room(cfg, dj, djtruth)
    radio, radio_truth = build_radio_hour(cfg, corpus)
    return [("clean", wav, truth), ("degraded", mp3, dtruth), ("dj", dj, djtruth),
            ("dj_room", dj_room, dj_room_truth), ("radio", radio, radio_truth)]


def overlap(a0: float, a1: float, b0: float, b1: float) -> float:
    return max(0.0, min(a1, b1) - max(a0, b0))


def parse_scan_lines(lines: list[str]) -> tuple[list[dict], int]:
    """Rows of `hendu scan --json` output (JSON Lines); returns (rows, unparsed count)."""
    rows, bad = [], 0
    for line in lines:
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            float(obj["start_s"]), float(obj["end_s"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            bad += 1
            continue
        rows.append(obj)
    return rows, bad


def score(truth: dict, rows: list[dict]) -> dict:
    """Score reported stretches against the ground-truth timeline.

    An excerpt is found when one row naming its track overlaps it by at least half its
    length. Boundary errors use the earliest start and latest end of the rows naming
    the track that overlap the excerpt; those rows are the excerpt's "rows per play".
    Wrong time is reported time not overlapping an excerpt of the same track."""
    speed = truth.get("speed", 1.0)
    excerpts = [s for s in truth["segments"] if s["kind"] == "indexed"]
    reported = wrong = 0.0
    for r in rows:
        r0, r1 = float(r["start_s"]), float(r["end_s"])
        length = max(0.0, r1 - r0)
        right = sum(overlap(r0, r1, e["start_s"], e["end_s"]) for e in excerpts
                    if same_file(r.get("source"), e["track"]))
        reported += length
        wrong += max(0.0, length - right)
    found = 0
    start_err, end_err, offset_err, rows_per_play = [], [], [], []
    for e in excerpts:
        e0, e1 = e["start_s"], e["end_s"]
        mine = [r for r in rows if same_file(r.get("source"), e["track"])
                and overlap(float(r["start_s"]), float(r["end_s"]), e0, e1) > 0]
        if not any(overlap(float(r["start_s"]), float(r["end_s"]), e0, e1)
                   >= FOUND_OVERLAP * (e1 - e0) for r in mine):
            continue
        found += 1
        rows_per_play.append(len(mine))
        start_err.append(abs(min(float(r["start_s"]) for r in mine) - e0))
        end_err.append(abs(max(float(r["end_s"]) for r in mine) - e1))
        for r in mine:
            off = r.get("offset_s")
            if isinstance(off, (int, float)):
                expected = e["offset_s"] + (float(r["start_s"]) - e0) * e.get("speed", speed)
                offset_err.append(abs(off - expected))
    return {
        "excerpts": len(excerpts),
        "found": found,
        "rows": len(rows),
        "start_err_median_s": median(start_err),
        "start_err_max_s": max(start_err) if start_err else None,
        "end_err_median_s": median(end_err),
        "end_err_max_s": max(end_err) if end_err else None,
        "offset_err_median_s": median(offset_err),
        "rows_per_found_play": (sum(rows_per_play) / len(rows_per_play)
                                if rows_per_play else None),
        "reported_s": reported,
        "wrong_s": wrong,
        "wrong_share": wrong / reported if reported else None,
    }


def run_all(cfg: Config, corpus: dict) -> dict:
    """Build the scan files if needed, run `hendu scan` on each and score them. The store
    of the run step is reused if the current binary made it; otherwise it is rebuilt."""
    files = build(cfg, corpus)
    check_binary(cfg)
    index_result = None
    if not store_is_fresh(cfg):
        index_result = index(cfg, corpus)
    results = {"hendu": str(cfg.hendu), "hendu_version": binary_version(cfg),
               "index": index_result, "files": []}
    for label, audio, truth_path in files:
        truth = read_json(truth_path)
        log(f"scan: hendu scan {audio.name}")
        child = run_timed([str(cfg.hendu), "scan", "--store", str(cfg.store), "--json",
                           str(audio)], cfg.run_dir / f"scan_{label}.stderr")
        if child.returncode != 0:
            tail = child.stderr_path.read_text(errors="replace").strip()[-3000:]
            raise BenchError(f"hendu scan exited with {child.returncode}:\n{tail}")
        (cfg.run_dir / f"scan_{label}.jsonl").write_text("\n".join(child.lines) + "\n")
        rows, bad = parse_scan_lines(child.lines)
        s = score(truth, rows)
        s.update({
            "label": label,
            "file": str(audio),
            "duration_s": truth["duration_s"],
            "wall_s": child.wall_s,
            "cpu_s": child.user_s + child.sys_s,
            "peak_rss_mb": child.max_rss_kb / 1024,
            "unparsed_lines": bad,
        })
        log(f"scan: {label}: {s['found']}/{s['excerpts']} excerpts found, "
            f"{child.wall_s:.1f} s")
        results["files"].append(s)
    write_json(cfg.results_dir / "scan.json", results)
    return results
