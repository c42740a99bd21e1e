#!/usr/bin/env python3
"""HENDU recognition benchmark: real music from Debian packages, degraded queries.

Steps (each one caches its output in the data directory and skips what exists;
a step runs the cached earlier steps it needs):

  corpus   download the packages with apt-get, unpack them, find the music (Ogg
           Vorbis longer than 60 s), drop duplicates, hold out ~15% of the tracks
  queries  cut clips from every track under nineteen conditions (clean 3/5/10 s, MP3,
           pink noise at 5, 0 and -5 dB SNR and 3 s at 5 dB, 2% fast, telephone, Opus, 5% and 8%
           fast, 8% slow, tempo +-8% key kept, a semitone up and down, a room)
  run      index the indexed tracks with `hendu index`, query everything with
           `hendu match`, score recall / false positives / latency / resources
  scan     build a ~27-minute broadcast (a degraded copy), a DJ set (and the same
           set through a room) and a radio hour with talk-over, run `hendu scan`
           and score the reported stretches
  report   print the report again from the saved results
  all      corpus, queries, run (and scan with --scan)  [default]

The markdown report goes to stdout and to --out; progress goes to stderr.
Needs Python 3.11, ffmpeg, sox and espeak-ng (Debian: apt-get install ffmpeg sox
espeak-ng).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.dont_write_bytecode = True  # keep the source folder free of __pycache__
sys.path.insert(0, str(Path(__file__).resolve().parent))

import corpus as corpus_mod  # noqa: E402
import queries as queries_mod  # noqa: E402
import report as report_mod  # noqa: E402
import runner  # noqa: E402
import scan as scan_mod  # noqa: E402
from common import (DEFAULT_SEED, REPO_ROOT, BenchError, Config, log, read_json,  # noqa: E402
                    require_tools)

STEPS = ["all", "corpus", "queries", "run", "scan", "report"]


def parse_args(argv: list[str]) -> tuple[str, bool, Config]:
    p = argparse.ArgumentParser(
        prog="bench.py", description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("step", nargs="?", default="all", choices=STEPS,
                   help="which step to run (default: all)")
    p.add_argument("--data", metavar="DIR", type=Path,
                   help="cache directory for packages, audio, queries and results "
                        "(default: $HENDU_BENCH_DIR or <repo>/.bench-data)")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED,
                   help=f"random seed for the split, clip starts and scan file "
                        f"(default: {DEFAULT_SEED})")
    p.add_argument("--clips-per-track", type=int, default=2, metavar="N",
                   help="clips per track and condition (default: 2)")
    p.add_argument("--jobs", type=int, default=2, metavar="N",
                   help="worker processes for generating audio (default: 2)")
    p.add_argument("--hendu", type=Path, default=REPO_ROOT / "target" / "release" / "hendu",
                   metavar="PATH", help="hendu binary (default: target/release/hendu)")
    p.add_argument("--scan", action="store_true",
                   help="with `all`: also run the scan check")
    p.add_argument("--out", type=Path, metavar="FILE",
                   help="where to write the report (default: <data>/report.md)")
    a = p.parse_args(argv)
    data = a.data or (Path(os.environ["HENDU_BENCH_DIR"]) if os.environ.get("HENDU_BENCH_DIR")
                      else REPO_ROOT / ".bench-data")
    if a.clips_per_track < 1 or a.jobs < 1:
        p.error("--clips-per-track and --jobs must be at least 1")
    cfg = Config(data=data.resolve(), seed=a.seed, jobs=a.jobs,
                 clips_per_track=a.clips_per_track, hendu=a.hendu.resolve(),
                 out=a.out.resolve() if a.out else None)
    return a.step, a.scan, cfg


def main(argv: list[str]) -> int:
    step, with_scan, cfg = parse_args(argv)
    cfg.data.mkdir(parents=True, exist_ok=True)
    times: dict[str, float] = {}

    def timed(name, fn, *args):
        t0 = time.perf_counter()
        out = fn(*args)
        times[name] = time.perf_counter() - t0
        return out

    try:
        require_tools("ffmpeg", "ffprobe", "sox")
        run_result = scan_result = None
        if step == "report":
            corpus = read_json(cfg.corpus_manifest) if cfg.corpus_manifest.exists() else None
            for name in ("run", "scan"):
                path = cfg.results_dir / f"{name}.json"
                if path.exists():
                    if name == "run":
                        run_result = read_json(path)
                    else:
                        scan_result = read_json(path)
        else:
            corpus = timed("corpus", corpus_mod.build, cfg)
            if step in ("queries", "run", "all"):
                qman = timed("queries", queries_mod.build, cfg, corpus)
            if step in ("run", "all"):
                run_result = timed("run", runner.run_all, cfg, corpus, qman)
            if step == "scan" or (step == "all" and with_scan):
                scan_result = timed("scan", scan_mod.run_all, cfg, corpus)
        text = report_mod.render(cfg, corpus, run_result, scan_result, times)
    except BenchError as e:
        log(f"error: {e}")
        return 1
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    sys.stdout.write(text)
    cfg.report_path.parent.mkdir(parents=True, exist_ok=True)
    cfg.report_path.write_text(text)
    log(f"report written to {cfg.report_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
