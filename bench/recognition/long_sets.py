"""The scan check's long recordings of the live kinds: a radio hour with presenters
talking over intros and outros, crossfades, jingles, ad breaks and a track played
twice; and the DJ set heard through a room. Each comes with its ground truth, in the
form `scan.score` reads: plays of indexed tracks as "indexed" segments (a crossfaded
play from the middle of one fade to the middle of the next), the rest for reference."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from common import (BROADCAST_COMPAND, Config, log, noise_gain, publish_recording, read_json,
                    render_parallel, rng_for, run, sox_rms, wav_frames, write_json)
from queries import BABBLE_WORDS, babble_bank, extract, room

RADIO_RATE = 22050
RADIO_PLAYS = 21
RADIO_PLAY_S = (150.0, 240.0)
# The 15th play is the 3rd play's track again, from another point.
RADIO_REPEAT = (2, 14)
# What joins consecutive plays (20 joins): a crossfade; the presenter talking over
# the end of one and the start of the next; a jingle (held-out music under a station
# call); an ad break (two ads: a voice over a held-out music bed).
RADIO_JOINS = ["crossfade"] * 7 + ["talk"] * 6 + ["jingle"] * 4 + ["ads"] * 3
CROSSFADE_S = 4.0
TALK_S = (8.0, 16.0)
JINGLE_S = (5.0, 9.0)
AD_S = (25.0, 35.0)
ADS_PER_BREAK = 2
# The voice this far above the music it talks over (RMS), and an ad's bed this far
# below its voice.
VOICE_OVER_MUSIC_DB = 3.0
AD_BED_DB = -10.0
PRESENTERS = ["en+m3", "en-us+f2"]


def radio_plan(cfg: Config, corpus: dict) -> tuple[list[dict], list[dict]]:
    """The hour's items (each placed at `at_s`) and its timeline, in order."""
    rng = rng_for(cfg.seed, "radio")
    indexed = sorted((t for t in corpus["tracks"] if t["split"] == "indexed"
                      and t["duration"] > 100.0), key=lambda t: t["rel"])
    held = sorted((t for t in corpus["tracks"] if t["split"] == "heldout"),
                  key=lambda t: t["rel"])
    picks = rng.sample(indexed, RADIO_PLAYS - 1)
    picks.insert(RADIO_REPEAT[1], picks[RADIO_REPEAT[0]])
    joins = list(RADIO_JOINS)
    rng.shuffle(joins)
    items: list[dict] = []
    timeline: list[dict] = []
    at = 0.0

    def heldout(length: float) -> dict:
        track = rng.choice(held)
        length = min(length, track["duration"] - 1.0)
        return {"track": track["path"], "length_s": round(length, 3),
                "offset_s": round(rng.uniform(0.0, track["duration"] - length - 0.5), 3)}

    def voice(at_s: float, length: float, over: list[int], presenter: int) -> None:
        items.append({"kind": "voice", "at_s": at_s, "length_s": round(length, 3),
                      "voice": PRESENTERS[presenter % len(PRESENTERS)],
                      "seed": len(items), "over": over})
        timeline.append({"kind": "talk", "start_s": at_s, "end_s": at_s + length})

    def station_call(length: float) -> None:
        nonlocal at
        jingle = heldout(length)
        items.append({"kind": "music", "at_s": at, "fade_in": 0.3, "fade_out": 0.3,
                      **jingle})
        voice(at + 0.5, jingle["length_s"] - 1.0, [len(items) - 1], len(items))
        timeline.append({"kind": "jingle", "start_s": at,
                         "end_s": at + jingle["length_s"], "track": jingle["track"]})
        at += jingle["length_s"]

    station_call(rng.uniform(*JINGLE_S))
    for i, track in enumerate(picks):
        length = min(rng.uniform(*RADIO_PLAY_S), track["duration"] - 2.0)
        offset = rng.uniform(0.0, track["duration"] - length - 1.0)
        fade_in = CROSSFADE_S if i > 0 and joins[i - 1] == "crossfade" else 0.5
        join = joins[i] if i < len(joins) else "end"
        fade_out = CROSSFADE_S if join == "crossfade" else 1.0
        items.append({"kind": "music", "at_s": at, "track": track["path"],
                      "offset_s": round(offset, 3), "length_s": round(length, 3),
                      "fade_in": fade_in, "fade_out": fade_out})
        play = len(items) - 1
        start = at + (CROSSFADE_S / 2 if fade_in == CROSSFADE_S else 0.0)
        end = at + length - (CROSSFADE_S / 2 if join == "crossfade" else 0.0)
        timeline.append({"kind": "indexed", "start_s": start, "end_s": end,
                         "track": track["path"], "offset_s": offset + (start - at),
                         "join_after": join})
        at += length
        if join == "crossfade":
            at -= CROSSFADE_S
        elif join == "talk":
            # The presenter starts over the outro and talks into the next intro.
            talk = rng.uniform(*TALK_S)
            before = rng.uniform(0.3, 0.7) * talk
            # Over this play and the next, which comes right after the voice.
            voice(at - before, talk, [play, len(items) + 1], i)
        elif join == "jingle":
            station_call(rng.uniform(*JINGLE_S))
        elif join == "ads":
            for _ in range(ADS_PER_BREAK):
                bed = heldout(rng.uniform(*AD_S))
                items.append({"kind": "music", "at_s": at, "fade_in": 0.5, "fade_out": 1.0,
                              "bed": True, **bed})
                voice(at + 1.0, bed["length_s"] - 2.5, [len(items) - 1], i + 1)
                timeline.append({"kind": "ad", "start_s": at,
                                 "end_s": at + bed["length_s"], "track": bed["track"]})
                at += bed["length_s"]
    return items, timeline


def render_music(item: dict, out: str, tmp_root: str) -> str:
    """One music item, mono at RADIO_RATE, faded, peak -3 dBFS (worker function)."""
    with tempfile.TemporaryDirectory(dir=tmp_root) as td:
        raw = Path(td) / "raw.wav"
        extract(item["track"], item["offset_s"], item["length_s"], raw)
        run(["sox", "-R", raw, "-r", RADIO_RATE, "-c", "1", "-b", "16", out,
             "rate", "-v", RADIO_RATE, "fade", "t", item["fade_in"], "0", item["fade_out"],
             "gain", "-n", "-3"])
    return out


def render_voice(item: dict, out: str, tmp_root: str, seed: int) -> str:
    """A presenter reading random words for the item's length (worker function)."""
    rng = rng_for(seed, "radio voice", item["seed"])
    words = " ".join(rng.choice(BABBLE_WORDS) for _ in range(int(item["length_s"] * 3) + 5))
    with tempfile.TemporaryDirectory(dir=tmp_root) as td:
        raw = Path(td) / "voice.wav"
        run(["espeak-ng", "-v", item["voice"], "-s", "165", "-w", raw, words])
        run(["sox", "-R", raw, "-r", RADIO_RATE, "-c", "1", "-b", "16", out,
             "trim", "0", f"{item['length_s']:.3f}", "fade", "t", "0.2", "0", "0.4",
             "gain", "-n", "-3"])
    return out


def render_item(item: dict, out: str, tmp_root: str, seed: int) -> str:
    if item["kind"] == "voice":
        return render_voice(item, out, tmp_root, seed)
    return render_music(item, out, tmp_root)


def build_radio_hour(cfg: Config, corpus: dict) -> tuple[Path, Path]:
    """radio.wav: the radio hour, mono at RADIO_RATE, and its truth (cached)."""
    wav = cfg.scan_dir / "radio.wav"
    truth_path = cfg.scan_dir / "radio.truth.json"
    if wav.exists() and truth_path.exists():
        return wav, truth_path
    items, timeline = radio_plan(cfg, corpus)
    work = cfg.scan_dir / "radio_items"
    outs = render_parallel(cfg, "scan: rendering the radio hour", work, render_item, items,
                           str(cfg.tmp_dir), cfg.seed)
    # Levels: a voice VOICE_OVER_MUSIC_DB above the music it talks over; an ad's bed
    # AD_BED_DB below its voice.
    rms = [sox_rms(Path(out)) for out in outs]
    gains = [1.0] * len(items)
    for k, item in enumerate(items):
        if item["kind"] == "voice":
            music = sum(rms[j] for j in item["over"]) / len(item["over"])
            gains[k] = noise_gain(music, rms[k], -VOICE_OVER_MUSIC_DB)
            if any(items[j].get("bed") for j in item["over"]):
                bed = item["over"][0]
                gains[bed] = noise_gain(rms[k] * gains[k], rms[bed], -AD_BED_DB)
    # Mixed through pipes that pad each item to its place (no full-length copies),
    # each at half its level so that a voice over music cannot clip; then the
    # broadcast processing of the whole hour.
    inputs = []
    for item, out, gain in zip(items, outs, gains):
        inputs += ["-v", f"{0.5 * gain:.6f}", f"|sox -R {out} -p pad {item['at_s']:.4f}"]
    tmp = wav.with_name("radio.tmp.wav")
    log("scan: mixing the radio hour")
    run(["sox", "-R", "-m", *inputs, "-b", "16", tmp, "gain", "-n", "-3", *BROADCAST_COMPAND,
         "gain", "-n", "-1"])
    publish_recording(tmp, wav, work, truth_path, timeline)
    return wav, truth_path


def build_dj_room(cfg: Config, dj: Path, dj_truth: Path) -> tuple[Path, Path]:
    """dj_room.wav: the DJ set as a sensor in a crowded room hears it (the room
    condition of the queries over the whole set), and its truth (cached)."""
    wav = cfg.scan_dir / "dj_room.wav"
    truth_path = cfg.scan_dir / "dj_room.truth.json"
    if (wav.exists() and truth_path.exists()
            and wav.stat().st_mtime >= dj.stat().st_mtime):
        return wav, truth_path
    log("scan: the DJ set through a room")
    frames, rate = wav_frames(dj)
    babble = babble_bank(cfg, rate, seconds=float(int(frames / rate) + 10))
    cfg.tmp_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cfg.tmp_dir) as td:
        tmp = Path(td)
        out = tmp / "dj_room.wav"
        room(dj, babble, 0.0, out, tmp)
        shutil.move(str(out), wav)
    truth = read_json(dj_truth)
    write_json(truth_path, dict(truth, file=str(wav)))
    log(f"scan: wrote {wav}")
    return wav, truth_path
