"""Shared helpers for the recognition benchmark: settings, external tools,
subprocess timing, JSON files, progress output and small statistics."""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
import subprocess
import sys
import time
import wave
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

DEFAULT_SEED = 20261124

REPO_ROOT = Path(__file__).resolve().parents[2]

TOOL_HINTS = {
    "ffmpeg": "apt-get install ffmpeg",
    "ffprobe": "apt-get install ffmpeg",
    "sox": "apt-get install sox libsox-fmt-all",
    "apt-get": "this step needs a Debian or Ubuntu system (apt)",
    "dpkg-deb": "this step needs a Debian or Ubuntu system (dpkg)",
}


class BenchError(RuntimeError):
    """An error that ends the benchmark with a message for the user (no traceback)."""


# Broadcast-style compression: fast attack, boosts quiet passages, ~3:1 above -50 dB.
BROADCAST_COMPAND = ["compand", "0.01,0.2", "6:-80,-80,-50,-30,-20,-15,0,-8", "0"]


@dataclass
class Config:
    """Settings shared by every step."""

    data: Path
    seed: int = DEFAULT_SEED
    jobs: int = 2
    clips_per_track: int = 2
    hendu: Path = REPO_ROOT / "target" / "release" / "hendu"
    out: Path | None = None

    @property
    def corpus_manifest(self) -> Path:
        return self.data / "corpus.json"

    @property
    def queries_dir(self) -> Path:
        return self.data / "queries"

    @property
    def queries_manifest(self) -> Path:
        return self.queries_dir / "queries.json"

    @property
    def run_dir(self) -> Path:
        return self.data / "run"

    @property
    def store(self) -> Path:
        return self.run_dir / "store"

    @property
    def scan_dir(self) -> Path:
        return self.data / "scan"

    @property
    def results_dir(self) -> Path:
        return self.data / "results"

    @property
    def tmp_dir(self) -> Path:
        return self.data / "tmp"

    @property
    def report_path(self) -> Path:
        return self.out if self.out is not None else self.data / "report.md"


# --------------------------------------------------------------------------
# External tools


def require_tools(*names: str) -> None:
    """Fail with an install hint if any of the named programs is not on PATH."""
    missing = [n for n in names if shutil.which(n) is None]
    if missing:
        hints = sorted({TOOL_HINTS.get(n, f"install {n}") for n in missing})
        raise BenchError(
            "missing required program(s): " + ", ".join(missing) + "\n"
            "  install with: " + "; ".join(hints)
        )


def run(cmd: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run a helper command (ffmpeg, sox, ...), raising BenchError with its stderr on failure."""
    proc = subprocess.run(
        [str(c) for c in cmd], cwd=cwd, stdin=subprocess.DEVNULL,
        capture_output=True, text=True,
    )
    if proc.returncode != 0:
        raise BenchError(
            f"command failed ({proc.returncode}): {' '.join(map(str, cmd))}\n"
            + proc.stderr.strip()[-2000:]
        )
    return proc


def ffmpeg_has_encoder(name: str) -> bool:
    """True if the installed ffmpeg lists the given audio encoder."""
    out = run(["ffmpeg", "-hide_banner", "-encoders"]).stdout
    return any(line.split()[1:2] == [name] for line in out.splitlines() if line.strip())


def probe(path: Path) -> dict:
    """Duration, codec, sample rate and channels of the first audio stream (via ffprobe)."""
    out = run([
        "ffprobe", "-v", "error", "-show_entries",
        "format=duration:stream=codec_type,codec_name,sample_rate,channels",
        "-of", "json", path,
    ]).stdout
    info = json.loads(out)
    streams = info.get("streams", [])
    audio = [s for s in streams if s.get("codec_type") == "audio"]
    if not audio:
        return {"duration": 0.0, "has_video": False}
    a = audio[0]
    duration = float(info.get("format", {}).get("duration") or 0.0)
    return {
        "duration": duration,
        "codec": a.get("codec_name"),
        "sample_rate": int(a.get("sample_rate") or 0),
        "channels": int(a.get("channels") or 0),
        "has_video": any(s.get("codec_type") == "video" for s in streams),
    }


def wav_frames(path: Path) -> tuple[int, int]:
    """(frames, sample rate) of a PCM WAV file."""
    with wave.open(str(path), "rb") as w:
        return w.getnframes(), w.getframerate()


def wav_seconds(path: Path) -> float:
    frames, rate = wav_frames(path)
    return frames / rate


def sox_rms(path: Path) -> float:
    """RMS amplitude (full scale = 1.0) of an audio file, from `sox FILE -n stat`."""
    err = run(["sox", path, "-n", "stat"]).stderr
    for line in err.splitlines():
        if line.startswith("RMS") and "amplitude" in line:
            return float(line.split(":")[1])
    raise BenchError(f"could not read RMS of {path} from sox stat output")


def noise_gain(signal_rms: float, noise_rms: float, snr_db: float) -> float:
    """Factor to apply to noise of `noise_rms` so that signal/noise equals `snr_db`."""
    if noise_rms <= 0:
        raise BenchError("noise has zero RMS")
    return signal_rms / (noise_rms * 10 ** (snr_db / 20))


# --------------------------------------------------------------------------
# Timing a child process


@dataclass
class ChildRun:
    """Outcome of one timed child process."""

    lines: list[str]
    times: list[float]  # arrival time of each stdout line, seconds since start
    wall_s: float
    user_s: float
    sys_s: float
    max_rss_kb: int
    returncode: int
    stderr_path: Path


def run_timed(cmd: list[str], stderr_path: Path) -> ChildRun:
    """Run `cmd`, collecting stdout lines with their arrival times, and return the
    child's wall time and resource usage (peak RSS) measured with os.wait4."""
    stderr_path.parent.mkdir(parents=True, exist_ok=True)
    with open(stderr_path, "w") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(
            [str(c) for c in cmd], stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=err, text=True, bufsize=1,
        )
        lines, times = [], []
        assert proc.stdout is not None
        for line in proc.stdout:
            times.append(time.perf_counter() - start)
            lines.append(line.rstrip("\n"))
        proc.stdout.close()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
    return ChildRun(lines, times, wall, usage.ru_utime, usage.ru_stime,
                    usage.ru_maxrss, proc.returncode, stderr_path)


def arg_batches(args: list[str], fixed_len: int = 0) -> list[list[str]]:
    """Split `args` into as few command lines as fit in the system's argument size
    limit (one batch in the usual case)."""
    try:
        limit = os.sysconf("SC_ARG_MAX")
    except (ValueError, OSError):
        limit = 131072
    env_len = sum(len(k) + len(v) + 2 for k, v in os.environ.items())
    budget = max(32768, (limit - env_len) // 2 - fixed_len)
    batches: list[list[str]] = [[]]
    size = 0
    for a in args:
        need = len(os.fsencode(a)) + 1 + 8  # pointer included
        if batches[-1] and size + need > budget:
            batches.append([])
            size = 0
        batches[-1].append(a)
        size += need
    return batches


# --------------------------------------------------------------------------
# Files, randomness, progress


def write_json(path: Path, obj) -> None:
    """Write JSON atomically (temporary file then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=False)
        f.write("\n")
    os.replace(tmp, path)


def read_json(path: Path):
    with open(path) as f:
        return json.load(f)


def rng_for(seed: int, *parts) -> random.Random:
    """A random generator that depends only on the seed and the given labels, so
    each decision is reproducible whatever else changes."""
    return random.Random(":".join([str(seed), *map(str, parts)]))


def short_hash(*parts, n: int = 12) -> str:
    return hashlib.sha256(":".join(map(str, parts)).encode()).hexdigest()[:n]


def dir_size(path: Path) -> int:
    """Total size in bytes of the regular files under `path`."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            p = os.path.join(root, name)
            if not os.path.islink(p):
                total += os.path.getsize(p)
    return total


def log(msg: str) -> None:
    """Progress and status messages go to stderr; stdout carries only the report."""
    print(msg, file=sys.stderr, flush=True)


class Progress:
    """A counter printed on stderr: in place on a terminal, every ~10% otherwise."""

    def __init__(self, label: str, total: int):
        self.label, self.total, self.done = label, total, 0
        self.tty = sys.stderr.isatty()
        self.start = time.perf_counter()
        self._last_decile = -1

    def step(self, n: int = 1) -> None:
        self.done += n
        if self.tty:
            print(f"\r{self.label}: {self.done}/{self.total}", end="", file=sys.stderr, flush=True)
        else:
            decile = self.done * 10 // max(1, self.total)
            if decile != self._last_decile:
                self._last_decile = decile
                log(f"{self.label}: {self.done}/{self.total}")

    def close(self) -> None:
        if self.tty:
            print(file=sys.stderr)
        log(f"{self.label}: done ({self.total} items, {time.perf_counter() - self.start:.1f} s)")


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for an empty list."""
    if not values:
        return None
    v = sorted(values)
    k = max(1, math.ceil(q / 100 * len(v)))
    return v[min(k, len(v)) - 1]


def median(values: list[float]) -> float | None:
    if not values:
        return None
    v = sorted(values)
    m = len(v) // 2
    return v[m] if len(v) % 2 else (v[m - 1] + v[m]) / 2


def render_parallel(cfg: Config, label: str, work: Path, fn, jobs: list, *args) -> list[str]:
    """Render each job with `fn(job, out, *args)` in worker processes into a fresh
    numbered WAV under `work`; returns the files in job order."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    cfg.tmp_dir.mkdir(parents=True, exist_ok=True)
    outs = [str(work / f"{i:02d}.wav") for i in range(len(jobs))]
    progress = Progress(label, len(jobs))
    with ProcessPoolExecutor(max_workers=cfg.jobs) as pool:
        for _ in pool.map(fn, jobs, outs, *([arg] * len(jobs) for arg in args)):
            progress.step()
    progress.close()
    return outs


def publish_recording(tmp: Path, wav: Path, work: Path, truth_path: Path,
                      segments: list[dict]) -> None:
    """Move a mixed recording into place, drop its pieces, and write its truth."""
    os.replace(tmp, wav)
    shutil.rmtree(work)
    frames, rate = wav_frames(wav)
    write_json(truth_path, {"file": str(wav), "speed": 1.0, "duration_s": frames / rate,
                            "segments": segments})
    log(f"scan: wrote {wav} ({frames / rate / 60:.1f} min)")
