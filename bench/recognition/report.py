"""Step 6: the markdown report (machine, date, commit, corpus, results tables)."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess

from common import REPO_ROOT, Config
from corpus import summary
from queries import CONDITIONS


def machine() -> str:
    """CPU model, usable cores and memory, from /proc."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 0
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem = f", {int(line.split()[1]) / 1024 ** 2:.1f} GiB RAM"
                    break
    except OSError:
        pass
    return f"{model}, {cores} cores (nproc){mem}"


def git_commit() -> str:
    """Short commit of the repository, flagged when the work tree has changes."""
    def git(*args: str) -> str | None:
        try:
            p = subprocess.run(["git", "-C", str(REPO_ROOT), *args], capture_output=True,
                               text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return p.stdout.strip() if p.returncode == 0 else None

    commit = git("rev-parse", "--short=12", "HEAD")
    if commit is None:
        return "no commit"
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return commit + (" (with uncommitted changes)" if dirty else "")


def pct(n: int, d: int) -> str:
    return f"{100 * n / d:.1f}% ({n}/{d})" if d else "n/a"


def share(x: float | None, digits: int = 1) -> str:
    """A fraction as a percentage, or n/a."""
    return "n/a" if x is None else f"{100 * x:.{digits}f}%"


def num(x, fmt: str = "{:.1f}") -> str:
    return "n/a" if x is None else fmt.format(x)


def duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.2f} h"
    if seconds >= 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.1f} s"


def mb(x: float | None) -> str:
    return "n/a" if x is None else f"{x / 1e6:.2f} MB"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def header_section(cfg: Config, corpus: dict | None, step_times: dict[str, float],
                   version: str | None) -> list[str]:
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = ["# HENDU recognition benchmark", "",
             f"- Date: {now}",
             f"- Machine: {machine()}",
             f"- Repository commit: {git_commit()}",
             f"- Binary: `{os.path.relpath(cfg.hendu, REPO_ROOT)}`"
             + (f" ({version})" if version else ""),
             f"- Seed: {cfg.seed}; clips per track and condition: {cfg.clips_per_track}"]
    if corpus:
        s = summary(corpus)
        lines.append(
            f"- Corpus: {s['tracks']} tracks longer than {corpus['min_duration_s']:.0f} s from "
            f"{len(corpus['packages'])} Debian packages; indexed {s['indexed']} tracks "
            f"({s['indexed_hours']:.2f} h); held out {s['heldout']} tracks "
            f"({s['heldout_hours']:.2f} h, never indexed); {s['dropped']} duplicates dropped")
        packages = sorted(s["per_package"].items())
        lines.append("- Packages (indexed+held out): " + ", ".join(
            f"{pkg} ({d['indexed']}+{d['heldout']})" for pkg, d in packages))
    if step_times:
        lines.append("- Step times: " + ", ".join(f"{k} {duration(v)}"
                                                  for k, v in step_times.items()))
    return lines


def run_section(res: dict) -> list[str]:
    ix, m = res["index"], res["match"]
    lines = ["", "## Indexing", ""]
    lines += table(
        ["tracks", "audio", "wall", "audio s / wall s / core", "peak RSS",
         "store size", "index bytes / hour of audio"],
        [[str(ix["tracks"]), duration(ix["audio_s"]), f"{ix['wall_s']:.1f} s",
          num(ix["audio_s_per_wall_s_per_core"], "{:.0f}"), f"{ix['peak_rss_mb']:.0f} MB",
          f"{ix['store_bytes'] / 1e6:.1f} MB",
          mb(ix["bytes_per_audio_hour"])]])
    lines += ["", "`hendu index --jobs 1` into a fresh store (one core).", "",
              "## Queries", "",
              f"One `hendu match --json` batch over all {m['queries']} queries at the default "
              "confidence threshold, with the binary's default worker threads. Recall is "
              "top-1 on in-catalogue queries (right track, any offset); \"offset ok\" is the "
              "share of them also within 1 s of the start the clip was cut from (many of "
              "these game tracks loop, so a clip from a repeated section has other right "
              "offsets that this column does not credit). \"Wrong\" counts in-catalogue "
              "queries answered with another track. "
              "FP rate is the share of held-out queries that got any answer. Latencies are "
              "reported by the engine per query: `elapsed` from path to answer (decode "
              "included), `match` for fingerprint + lookup alone.", ""]
    desc = {c.name: c.description for c in CONDITIONS}
    rows = []
    for r in res["conditions"]:
        wrong = str(r["wrong"]) + (f" ({r['wrong_related']} related)" if r["wrong_related"]
                                   else "")
        rows.append([
            f"`{r['condition']}`", desc.get(r["condition"], ""),
            pct(r["correct"], r["in_catalogue"]), pct(r["offset_ok"], r["in_catalogue"]),
            wrong, pct(r["false_positives"], r["held_out"]),
            f"{num(r['elapsed_ms_p50'])} / {num(r['elapsed_ms_p99'])}",
            f"{num(r['match_ms_p50'])} / {num(r['match_ms_p99'])}",
            num(r["wall_ms_per_query"]),
        ] + ([str(r["unanswered"])] if any(x["unanswered"] for x in res["conditions"]) else []))
    hdr = ["condition", "query", "top-1 recall", "offset ok", "wrong", "FP rate",
           "elapsed p50 / p99 ms", "match p50 / p99 ms", "batch wall / query ms"]
    if any(x["unanswered"] for x in res["conditions"]):
        hdr.append("no answer line")
    lines += table(hdr, rows)
    o = res["overall"]
    lines += [
        "",
        f"- Pooled: recall {share(o['recall'])} of {o['in_catalogue']} in-catalogue "
        f"queries, wrong track {share(o['wrong_rate'], 2)}, false positives "
        f"{share(o['fp_rate'], 2)} of {o['held_out']} held-out queries.",
        f"- Batch: {m['queries']} queries in {m['wall_s']:.1f} s wall "
        f"({m['wall_ms_per_query']:.1f} ms per query, CPU {m['cpu_s']:.1f} s); "
        f"peak RSS {m['peak_rss_mb']:.0f} MB.",
        f"- Peak RSS: index {res['index']['peak_rss_mb']:.0f} MB, match "
        f"{m['peak_rss_mb']:.0f} MB (second run, `--min-confidence 0`: "
        f"{res['match_min0']['peak_rss_mb']:.0f} MB).",
    ]
    if not m.get("streamed"):
        lines.append("- The per-condition batch wall column needs answers printed as they "
                     "are found; this binary's output arrived all at once.")
    else:
        lines.append("- Batch wall / query per condition charges each answer line the time "
                     "since the previous one (the first condition carries start-up).")
    if res.get("phone_codec") != "gsm":
        lines.append("- The phone condition used mu-law (this ffmpeg has no libgsm).")
    if m.get("unparsed_lines"):
        lines.append(f"- {m['unparsed_lines']} output lines were not valid answers.")
    if res.get("halves"):
        lines += ["", "### Tuning half and reserved half", "",
                  "The same batch split by track: the triplet stage's one fitted parameter "
                  "(the strength taken off proposed warps) was read off the tuning half; "
                  "no parameter was looked at on the reserved half.", ""]
        halves = {n: {r["condition"]: r for r in rows_} for n, rows_ in res["halves"].items()}
        hrows = []
        for r in res["conditions"]:
            c = r["condition"]
            cells = [f"`{c}`"]
            for n in ("tuning", "reserved"):
                h = halves.get(n, {}).get(c)
                cells += ([pct(h["correct"], h["in_catalogue"]), str(h["wrong"]),
                           pct(h["false_positives"], h["held_out"])] if h else ["-"] * 3)
            hrows.append(cells)
        lines += table(["condition", "tuning recall", "wrong", "FP rate",
                        "reserved recall", "wrong", "FP rate"], hrows)
    lines += ["", "## Recall vs false positives over the confidence threshold", "",
              "From a second batch with `--min-confidence 0` (best candidate for every "
              "query); all in-catalogue conditions pooled, held-out queries pooled."
              + (f" The binary's default threshold is {res['default_min_confidence']}."
                 if res.get("default_min_confidence") is not None else
                 " (The binary's default threshold could not be read from its --help.)"), ""]
    rows = []
    for c in res["curve"]:
        t = f"{c['threshold']:g}" + (" (default)" if c["is_default"] else "")
        rows.append([t, share(c["recall"]), share(c["wrong_rate"], 2),
                     share(c["fp_rate"], 2)])
    lines += table(["min confidence", "recall", "wrong track", "FP rate"], rows)
    return lines


def scan_section(res: dict) -> list[str]:
    lines = ["", "## Scan check", "",
             "A ~27-minute recording: 16 excerpts (45-120 s) of distinct indexed tracks, "
             "some joined by hard cuts, others separated by held-out music (20-60 s) or "
             "noise (10-30 s). The degraded copy is 1.5% fast, compressed, with pink noise "
             "at 10 dB SNR, as MP3 128 kbps. The DJ set is 8 excerpts (60-100 s) of "
             "distinct indexed tracks joined by 8 s crossfades, each under one warp: "
             "6% and 8% fast, 6% slow (pitch and tempo), tempo 7% slower and 8% faster "
             "with the key kept, a semitone up and down, and one as indexed; a play's "
             "truth starts and ends in the middle of its crossfades. dj_room is that set "
             "heard as the room condition hears a clip (reverberation, a crowd at 5 dB, "
             "automatic gain, 16 kHz mono). The radio hour is 21 plays (up to 150-240 s) "
             "of indexed tracks, one of them twice, joined by 4 s crossfades, a presenter "
             "talking over the end of one and the start of the next (3 dB above the "
             "music), jingles (held-out music under a station call) and ad breaks (a "
             "voice over a held-out music bed), all through broadcast compression, mono "
             "22 kHz. An excerpt is found when one reported row "
             "naming its track covers at least half of it. Boundary errors are over found "
             "excerpts; wrong time is reported time not over an excerpt of the same track.",
             ""]
    rows = []
    for f in res["files"]:
        rows.append([
            f["label"], duration(f["duration_s"]), f"{f['found']}/{f['excerpts']}",
            f"{num(f['start_err_median_s'])} / {num(f['start_err_max_s'])}",
            f"{num(f['end_err_median_s'])} / {num(f['end_err_max_s'])}",
            num(f["offset_err_median_s"], "{:.2f}"),
            num(f["rows_per_found_play"], "{:.2f}"),
            share(f["wrong_share"]),
            f"{f['wall_s']:.1f} s ({f['duration_s'] / f['wall_s']:.0f}x real time)",
            f"{f['peak_rss_mb']:.0f} MB",
        ])
    lines += table(["file", "length", "excerpts found", "start error median / max s",
                    "end error median / max s", "track offset error median s",
                    "rows per found play", "wrong time", "scan wall", "peak RSS"], rows)
    return lines


def render(cfg: Config, corpus: dict | None, run_result: dict | None,
           scan_result: dict | None, step_times: dict[str, float]) -> str:
    version = (run_result or scan_result or {}).get("hendu_version")
    lines = header_section(cfg, corpus, step_times, version)
    if run_result:
        lines += run_section(run_result)
    if scan_result:
        lines += scan_section(scan_result)
    return "\n".join(lines) + "\n"
