"""Step 3: cut query clips from every track (indexed and held out) and degrade them,
one folder per condition, plus a manifest with the ground truth."""

from __future__ import annotations

import os
import tempfile
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from common import (BenchError, Config, Progress, ffmpeg_has_encoder, log, noise_gain,
                    read_json, require_tools, rng_for, run, short_hash, sox_rms, wav_seconds,
                    write_json)

EDGE_S = 10.0  # clips start and end at least this far from either end of the track
NOISE_BANK_S = 300.0
FAST_SPEED = 1.02
# Pink noise at these SNRs (dB, against the clip's own RMS).
PINK_SNR_DB = {"pink5db": 5.0, "pink0db": 0.0, "pink5db_3": 5.0, "pinkm5db": -5.0}
# DJ and broadcast conditions: played faster or slower (pitch and tempo together,
# as a turntable does), tempo changed with the key kept (a DJ's key-lock, a
# station's time compression), and the key shifted with the tempo kept.
SPEEDS = {"speed5": 1.05, "speed8": 1.08, "slow8": 0.92}
TEMPOS = {"tempo8": 1.08, "tempo_slow8": 0.92}
PITCHES = {"pitch_up1": 100, "pitch_down1": -100}  # cents
# A live-event room: the music reverberates, a crowd talks over it at ROOM_SNR_DB,
# and a cheap microphone with automatic gain sends 150-7000 Hz at 16 kHz, mono.
ROOM_REVERB = ["reverb", "70", "50", "100", "100", "0", "0"]
ROOM_SNR_DB = 5.0
ROOM_AGC = ["compand", "0.01,0.3", "6:-70,-70,-40,-25,-20,-14,0,-8", "0"]
BABBLE_TALKERS = ["en", "de", "fr", "es", "it", "nl", "en-us", "pl"]
BABBLE_WORDS = (
    "the of and to in is you that it he was for on are as with his they at be this "
    "have from or one had by word but not what all were we when your can said there "
    "use an each which she do how their if will up other about out many then them "
    "these so some her would make like him into time has look two more write go see "
    "number no way could people my than first water been call who oil its now find "
    "long down day did get come made may part music night stage crowd drink dance "
    "friend ticket band light sound loud weekend song later tonight really great"
).split()


@dataclass(frozen=True)
class Condition:
    name: str
    duration: float  # query length in seconds, as the engine receives it
    description: str


CONDITIONS = [
    Condition("clean3", 3.0, "clean, 3 s"),
    Condition("clean5", 5.0, "clean, 5 s"),
    Condition("clean10", 10.0, "clean, 10 s"),
    Condition("mp3_64k", 10.0, "10 s, MP3 64 kbps"),
    Condition("pink5db", 10.0, "10 s, pink noise at 5 dB SNR"),
    Condition("pink0db", 10.0, "10 s, pink noise at 0 dB SNR"),
    Condition("pink5db_3", 3.0, "3 s, pink noise at 5 dB SNR"),
    Condition("fast2", 10.0, "10 s, played 2% fast (pitch and tempo)"),
    Condition("phone", 10.0, "10 s, telephone channel (300-3400 Hz, 8 kHz, GSM)"),
    Condition("pinkm5db", 10.0, "10 s, pink noise at -5 dB SNR"),
    Condition("opus24", 10.0, "10 s, Ogg Opus 24 kbit/s"),
    Condition("speed5", 10.0, "10 s, played 5% fast (pitch and tempo)"),
    Condition("speed8", 10.0, "10 s, played 8% fast (pitch and tempo)"),
    Condition("slow8", 10.0, "10 s, played 8% slow (pitch and tempo)"),
    Condition("tempo8", 10.0, "10 s, tempo 8% faster, key kept"),
    Condition("tempo_slow8", 10.0, "10 s, tempo 8% slower, key kept"),
    Condition("pitch_up1", 10.0, "10 s, a semitone higher, tempo kept"),
    Condition("pitch_down1", 10.0, "10 s, a semitone lower, tempo kept"),
    Condition("room", 10.0, "10 s, a live-event room: reverberation, crowd babble at "
              "5 dB SNR, 150-7000 Hz, automatic gain, 16 kHz mono"),
]
CONDITION_NAMES = [c.name for c in CONDITIONS]


def source_span(cond: Condition) -> float:
    """Seconds of the original track a clip of this condition covers."""
    if cond.name == "fast2":
        return cond.duration * FAST_SPEED
    factor = SPEEDS.get(cond.name) or TEMPOS.get(cond.name) or 1.0
    return cond.duration * factor


SILENCE_DB = -50  # below this level (dBFS) a stretch of a track counts as silent
MAX_SILENT_SHARE = 0.1  # a clip may overlap silence by at most this share of its span


def silent_stretches(path: str) -> list[tuple[float, float]]:
    """Stretches of at least 0.5 s below SILENCE_DB in a track (ffmpeg silencedetect)."""
    proc = run(["ffmpeg", "-nostdin", "-hide_banner", "-i", path, "-af",
                f"silencedetect=noise={SILENCE_DB}dB:d=0.5", "-f", "null", "-"])
    stretches, start = [], None
    for line in proc.stderr.splitlines():
        if "silence_start:" in line:
            start = float(line.split("silence_start:")[1].split()[0])
        elif "silence_end:" in line and start is not None:
            stretches.append((start, float(line.split("silence_end:")[1].split()[0])))
            start = None
    if start is not None:
        stretches.append((start, float("inf")))
    return stretches


def silence_map(cfg: Config, corpus: dict) -> dict[str, list[tuple[float, float]]]:
    """Silent stretches of every track, computed once and cached next to the queries.

    A clip of digital silence (some game tracks have long pauses) cannot be recognised
    by any system; the protocol draws clip starts outside such stretches."""
    cache = cfg.queries_dir / "silence.json"
    if cache.exists():
        return {k: [tuple(x) for x in v] for k, v in read_json(cache).items()}
    log("queries: finding silent stretches in the tracks")
    paths = [t["path"] for t in corpus["tracks"]]
    with ProcessPoolExecutor(max_workers=cfg.jobs) as pool:
        found = dict(zip(paths, pool.map(silent_stretches, paths)))
    cfg.queries_dir.mkdir(parents=True, exist_ok=True)
    write_json(cache, found)
    return found


def silent_share(stretches: list[tuple[float, float]], start: float, span: float) -> float:
    covered = sum(max(0.0, min(e, start + span) - max(s, start)) for s, e in stretches)
    return covered / span


def plan(cfg: Config, corpus: dict) -> list[dict]:
    """The list of queries to make: deterministic in (seed, track, condition, index)."""
    jobs = []
    silences = silence_map(cfg, corpus)
    for track in corpus["tracks"]:
        for cond in CONDITIONS:
            span = source_span(cond)
            latest = track["duration"] - EDGE_S - span
            if latest < EDGE_S:
                continue
            for i in range(cfg.clips_per_track):
                rng = rng_for(cfg.seed, "clip", track["rel"], cond.name, i)
                for _ in range(50):
                    start = round(rng.uniform(EDGE_S, latest), 3)
                    if silent_share(silences[track["path"]], start, span) <= MAX_SILENT_SHARE:
                        break
                else:
                    continue  # a track that is mostly silence: no clip from it
                ext = {"mp3_64k": "mp3", "opus24": "opus"}.get(cond.name, "wav")
                name = short_hash(cfg.seed, track["rel"], cond.name, i, start) + "." + ext
                jobs.append({
                    "path": str(cfg.queries_dir / cond.name / name),
                    "condition": cond.name,
                    "track": track["path"] if track["split"] == "indexed" else None,
                    "from_track": track["path"],
                    "split": track["split"],
                    "start_s": start,
                    "duration_s": cond.duration,
                    "source_span_s": round(span, 3),
                    "noise_offset_s": round(rng.uniform(0, NOISE_BANK_S - span - 1), 3),
                    "sample_rate": track["sample_rate"],
                    "channels": track["channels"],
                })
    return jobs


def noise_bank(cfg: Config, rate: int, channels: int) -> Path:
    """A long pink-noise file per (rate, channels), made once with sox in repeatable mode;
    each noisy query takes its own stretch of it."""
    path = cfg.data / "noise" / f"pink_{rate}_{channels}.wav"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp.wav")
        run(["sox", "-R", "-n", "-r", rate, "-c", channels, "-b", "16", tmp,
             "synth", NOISE_BANK_S, "pinknoise", "gain", "-n", "-3"])
        os.replace(tmp, path)
    return path


def babble_bank(cfg: Config, rate: int, seconds: float = NOISE_BANK_S) -> Path:
    """A crowd talking, mono at `rate`, `seconds` long: eight espeak-ng talkers in
    different languages, voices and speeds reading random words, mixed (made once)."""
    name = f"babble_{rate}.wav" if seconds == NOISE_BANK_S else f"babble_{rate}_{seconds:.0f}.wav"
    path = cfg.data / "noise" / name
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cfg.data / "noise") as td:
        talkers = []
        for k, voice in enumerate(BABBLE_TALKERS):
            rng = rng_for(cfg.seed, "babble", k)
            text = " ".join(rng.choice(BABBLE_WORDS) for _ in range(int(seconds * 3)))
            raw = Path(td) / f"talker{k}.wav"
            run(["espeak-ng", "-v", voice + ("+f3" if k % 2 else "+m3"),
                 "-s", str(rng.randint(150, 200)), "-p", str(rng.randint(30, 70)),
                 "-w", raw, text])
            out = Path(td) / f"t{k}.wav"
            run(["sox", "-R", raw, "-r", rate, "-c", "1", "-b", "16", out,
                 "trim", "0", seconds, "pad", "0", seconds, "trim", "0",
                 seconds, "gain", "-n", "-3"])
            talkers.append(out)
        tmp = Path(td) / "babble.wav"
        run(["sox", "-R", "-m", *talkers, tmp, "gain", "-n", "-3"])
        os.replace(tmp, path)
    return path


def room(clip: Path, babble: Path, babble_offset: float, out: Path, tmp: Path) -> None:
    """The clip as a sensor in a crowded room hears it (see ROOM_*)."""
    mono = tmp / "mono.wav"
    length = wav_seconds(clip)
    run(["sox", "-R", clip, "-c", "1", "-b", "16", mono, *ROOM_REVERB, "trim", "0",
         f"{length:.6f}"])
    crowd = tmp / "crowd.wav"
    add_noise(mono, babble, babble_offset, ROOM_SNR_DB, crowd, tmp)
    run(["sox", "-R", crowd, "-r", "16000", "-c", "1", "-b", "16", out,
         "sinc", "150-7000", *ROOM_AGC, "gain", "-n", "-1"])


def extract(src: str, start: float, length: float, out: Path) -> None:
    """Decode `length` seconds of `src` from `start` into 16-bit WAV (sample-accurate)."""
    run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-ss", f"{start:.3f}", "-i", src,
         "-t", f"{length:.3f}", "-map", "0:a:0", "-c:a", "pcm_s16le", "-f", "wav", out])


def add_noise(clip: Path, noise: Path, noise_offset: float, snr_db: float, out: Path,
              tmp: Path) -> None:
    """Mix pink noise into `clip` at `snr_db`, SNR relative to the clip's own RMS."""
    seg = tmp / "noise.wav"
    length = wav_seconds(clip)
    run(["sox", "-R", noise, seg, "trim", f"{noise_offset:.3f}", f"{length:.6f}"])
    g = noise_gain(sox_rms(clip), sox_rms(seg), snr_db)
    # Both inputs are halved before mixing so the sum cannot clip; the result is then
    # brought back to a normal level (peak -1 dBFS). Levels do not change the SNR.
    run(["sox", "-R", "-m", "-v", "0.5", clip, "-v", f"{0.5 * g:.6f}", seg,
         "-b", "16", out, "gain", "-n", "-1"])


def phone(clip: Path, out: Path, tmp: Path, codec: str) -> None:
    """Telephone channel: 300-3400 Hz band-pass, mono 8 kHz, codec round trip, 16-bit WAV."""
    narrow = tmp / "narrow.wav"
    run(["sox", "-R", clip, "-r", "8000", "-c", "1", "-b", "16", narrow, "sinc", "300-3400"])
    if codec == "gsm":
        coded = tmp / "coded.gsm"
        run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", narrow, "-c:a", "libgsm",
             "-f", "gsm", coded])
        run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "gsm", "-i", coded,
             "-ar", "8000", "-ac", "1", "-c:a", "pcm_s16le", "-f", "wav", out])
    else:
        coded = tmp / "coded.wav"
        run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", narrow, "-c:a", "pcm_mulaw",
             coded])
        run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", coded, "-c:a", "pcm_s16le",
             "-f", "wav", out])


def make_query(job: dict, noise_path: str | None, phone_codec: str, tmp_root: str) -> str:
    """Produce one query file (worker function; runs in a process pool)."""
    out = Path(job["path"])
    if out.exists():
        return "cached"
    out.parent.mkdir(parents=True, exist_ok=True)
    cond = job["condition"]
    with tempfile.TemporaryDirectory(dir=tmp_root) as td:
        tmp = Path(td)
        partial = tmp / ("out" + out.suffix)
        if cond in ("clean3", "clean5", "clean10"):
            extract(job["from_track"], job["start_s"], job["duration_s"], partial)
        else:
            clip = tmp / "clip.wav"
            extract(job["from_track"], job["start_s"], job["source_span_s"], clip)
            if cond == "mp3_64k":
                run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", clip,
                     "-c:a", "libmp3lame", "-b:a", "64k", "-f", "mp3", partial])
            elif cond == "room":
                room(clip, Path(noise_path), job["noise_offset_s"], partial, tmp)
            elif cond == "opus24":
                run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", clip,
                     "-c:a", "libopus", "-b:a", "24k", "-f", "ogg", partial])
            elif cond in PINK_SNR_DB:
                add_noise(clip, Path(noise_path), job["noise_offset_s"], PINK_SNR_DB[cond],
                          partial, tmp)
            elif cond == "fast2":
                # `speed` raises pitch and tempo together, then resamples back to the
                # original rate: 10.2 s of the track become 10 s.
                run(["sox", "-R", clip, "-b", "16", partial, "speed", str(FAST_SPEED),
                     "rate", "-v", str(job["sample_rate"])])
            elif cond in SPEEDS:
                run(["sox", "-R", clip, "-b", "16", partial, "speed", str(SPEEDS[cond]),
                     "rate", "-v", str(job["sample_rate"])])
            elif cond in TEMPOS:
                # WSOLA time stretch: the key stays, 10.8 s of the track become 10 s.
                run(["sox", "-R", clip, "-b", "16", partial, "tempo", "-m",
                     str(TEMPOS[cond])])
            elif cond in PITCHES:
                run(["sox", "-R", clip, "-b", "16", partial, "pitch", str(PITCHES[cond]),
                     "rate", "-v", str(job["sample_rate"])])
            elif cond == "phone":
                phone(clip, partial, tmp, phone_codec)
            else:
                raise BenchError(f"unknown condition {cond}")
        os.replace(partial, out)  # same file system: data dir
    return "made"


def build(cfg: Config, corpus: dict) -> dict:
    """Run the queries step: generate missing clips with a process pool, write the manifest."""
    require_tools("ffmpeg", "sox", "espeak-ng")
    jobs = plan(cfg, corpus)
    if not ffmpeg_has_encoder("libopus"):
        raise BenchError("ffmpeg has no libopus encoder, which the opus24 condition needs "
                         "(Debian's ffmpeg has it)")
    phone_codec = "gsm" if ffmpeg_has_encoder("libgsm") else "mulaw"
    if phone_codec != "gsm":
        log("queries: ffmpeg has no libgsm encoder, the phone condition uses mu-law instead")
    cfg.tmp_dir.mkdir(parents=True, exist_ok=True)
    todo = [j for j in jobs if not os.path.exists(j["path"])]
    log(f"queries: {len(jobs)} queries planned, {len(jobs) - len(todo)} already made")
    noise = {}
    for j in todo:
        if j["condition"].startswith("pink"):
            key = ("pink", j["sample_rate"], j["channels"])
            if key not in noise:
                noise[key] = str(noise_bank(cfg, *key[1:]))
        elif j["condition"] == "room":
            key = ("babble", j["sample_rate"], 1)
            if key not in noise:
                noise[key] = str(babble_bank(cfg, j["sample_rate"]))
    if todo:
        progress = Progress("queries: generating", len(todo))
        with ProcessPoolExecutor(max_workers=cfg.jobs) as pool:
            futures = [
                pool.submit(make_query, j,
                            noise.get(("babble", j["sample_rate"], 1)
                                      if j["condition"] == "room"
                                      else ("pink", j["sample_rate"], j["channels"])),
                            phone_codec, str(cfg.tmp_dir))
                for j in todo
            ]
            for fut in as_completed(futures):
                fut.result()
                progress.step()
        progress.close()
    manifest = {
        "seed": cfg.seed,
        "clips_per_track": cfg.clips_per_track,
        "edge_s": EDGE_S,
        "phone_codec": phone_codec,
        "conditions": {c.name: {"duration_s": c.duration, "description": c.description}
                       for c in CONDITIONS},
        "queries": [
            {k: j[k] for k in ("path", "condition", "track", "from_track", "split",
                               "start_s", "duration_s")}
            for j in jobs
        ],
    }
    write_json(cfg.queries_manifest, manifest)
    log(f"queries: wrote {cfg.queries_manifest}")
    return manifest


def load(cfg: Config) -> dict:
    """The queries manifest written by `build`."""
    if not cfg.queries_manifest.exists():
        raise BenchError(f"no queries manifest at {cfg.queries_manifest}: "
                         "run `bench.py queries` first")
    return read_json(cfg.queries_manifest)
