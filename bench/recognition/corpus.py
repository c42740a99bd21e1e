"""Step 1 and 2: build the music corpus from Debian packages and split it into the
indexed set and the held-out set (never indexed, queried only for false positives)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from common import (BenchError, Config, Progress, log, probe, read_json, require_tools,
                    rng_for, write_json)

PACKAGES = [
    "supertux-data",
    "hedgewars-data",
    "colobot-common-sounds",
    "singularity-music",
    "blobwars-data",
    "drascula-music",
]

MIN_DURATION_S = 60.0
HELD_OUT_SHARE = 0.15
# Smaller files cannot hold 60 s of music at any usable bitrate (64 KiB / 60 s is
# under 9 kbit/s); skipping them saves probing ~1000 short sound effects.
MIN_FILE_BYTES = 64 * 1024

# Near-duplicate pairs inside the corpus: (package, kept file, dropped file).
NEAR_DUPLICATES = [
    ("colobot-common-sounds", "Infinite.ogg", "music008.ogg"),
    ("drascula-music", "track1.ogg", "track30.ogg"),
]

# Pairs that share a stretch of music (about 10-40 s) but are otherwise distinct.
# Both are kept; the split puts them on the same side so that a held-out query
# never has its material in the index, and answers naming the partner are counted
# separately ("related").
RELATED = [
    ("colobot-common-sounds", "Humanitarian.ogg", "Hv2.ogg"),
    ("colobot-common-sounds", "music004.ogg", "music007.ogg"),
    ("colobot-common-sounds", "music007.ogg", "music009.ogg"),
]


def download(cfg: Config) -> dict[str, Path]:
    """Fetch each package's .deb into <data>/debs with `apt-get download` (skipped if present)."""
    debs_dir = cfg.data / "debs"
    debs_dir.mkdir(parents=True, exist_ok=True)
    debs = {}
    for pkg in PACKAGES:
        found = sorted(debs_dir.glob(f"{pkg}_*.deb"))
        if not found:
            log(f"corpus: apt-get download {pkg}")
            proc = subprocess.run(["apt-get", "download", pkg], cwd=debs_dir,
                                  stdin=subprocess.DEVNULL, capture_output=True, text=True)
            found = sorted(debs_dir.glob(f"{pkg}_*.deb"))
            if proc.returncode != 0 or not found:
                msg = proc.stderr.strip()
                hint = ""
                if "Unable to locate" in msg or "candidate" in msg or "No packages found" in msg:
                    hint = ("\n  the package lists look missing or stale: run `apt-get update` "
                            "(as root or with sudo) and try again")
                raise BenchError(f"apt-get download {pkg} failed:\n{msg}{hint}")
        debs[pkg] = found[-1]
    return debs


def unpack(cfg: Config, debs: dict[str, Path]) -> dict[str, Path]:
    """Extract each .deb with `dpkg-deb -x` into <data>/unpacked/<package> (skipped if done)."""
    roots = {}
    for pkg, deb in debs.items():
        root = cfg.data / "unpacked" / pkg
        marker = root / ".unpacked"
        if not marker.exists() or marker.read_text().strip() != deb.name:
            log(f"corpus: dpkg-deb -x {deb.name}")
            shutil.rmtree(root, ignore_errors=True)
            root.mkdir(parents=True)
            subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
            marker.write_text(deb.name + "\n")
        roots[pkg] = root
    return roots


def is_ogg(path: str) -> bool:
    """True for a regular file starting with the Ogg page magic 'OggS'."""
    if not os.path.isfile(path):
        return False
    with open(path, "rb") as f:
        return f.read(4) == b"OggS"


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def probe_music(path: str) -> dict | None:
    """ffprobe info and SHA-256 of an Ogg file if it is audio longer than MIN_DURATION_S
    (worker function)."""
    info = probe(Path(path))
    if info["has_video"] or not info.get("codec") or info["duration"] <= MIN_DURATION_S:
        return None
    info["sha256"] = sha256_file(path)
    return info


def find_tracks(cfg: Config, roots: dict[str, Path]) -> tuple[list[dict], list[dict]]:
    """All Ogg audio files longer than MIN_DURATION_S, minus exact and near duplicates.
    Returns (tracks, dropped)."""
    candidates = []
    for pkg, root in roots.items():
        for dirpath, dirnames, files in os.walk(root):
            dirnames.sort()
            for name in sorted(files):
                p = os.path.join(dirpath, name)
                if os.path.islink(p):
                    continue  # the target is found on its own
                if os.path.getsize(p) >= MIN_FILE_BYTES and is_ogg(p):
                    candidates.append((pkg, root, p))
    tracks, dropped, seen = [], [], {}
    progress = Progress("corpus: probing Ogg files", len(candidates))
    with ProcessPoolExecutor(max_workers=cfg.jobs) as pool:
        infos = pool.map(probe_music, [p for _, _, p in candidates], chunksize=8)
        for (pkg, root, p), info in zip(candidates, infos):
            progress.step()
            if info is None:
                continue
            if info["sha256"] in seen:
                dropped.append({"path": p, "reason": f"identical to {seen[info['sha256']]}"})
                continue
            seen[info["sha256"]] = p
            tracks.append({
                "path": p,
                "rel": f"{pkg}/{os.path.relpath(p, root)}",
                "package": pkg,
                "duration": round(info["duration"], 3),
                "codec": info["codec"],
                "sample_rate": info["sample_rate"],
                "channels": info["channels"],
                "sha256": info["sha256"],
            })
    progress.close()
    by_name = {(t["package"], os.path.basename(t["path"])): t for t in tracks}
    for pkg, keep, drop in NEAR_DUPLICATES:
        if (pkg, keep) in by_name and (pkg, drop) in by_name:
            t = by_name[(pkg, drop)]
            tracks.remove(t)
            dropped.append({"path": t["path"], "reason": f"near duplicate of {keep}"})
    return tracks, dropped


def split(tracks: list[dict], seed: int) -> None:
    """Mark about HELD_OUT_SHARE of the tracks of each package as held out (in place).
    Related tracks are grouped so that both members land on the same side."""
    group_of = {}
    for pkg, a, b in RELATED:
        ga, gb = group_of.get((pkg, a), (pkg, a)), group_of.get((pkg, b), (pkg, b))
        for k, g in list(group_of.items()):
            if g == gb:
                group_of[k] = ga
        group_of[(pkg, a)] = ga
        group_of[(pkg, b)] = ga
    for pkg in sorted({t["package"] for t in tracks}):
        members = sorted((t for t in tracks if t["package"] == pkg), key=lambda t: t["rel"])
        groups: dict[tuple, list[dict]] = {}
        for t in members:
            key = group_of.get((pkg, os.path.basename(t["path"])), (pkg, t["rel"]))
            groups.setdefault(key, []).append(t)
        keys = sorted(groups, key=str)
        rng = rng_for(seed, "split", pkg)
        rng.shuffle(keys)
        target = round(HELD_OUT_SHARE * len(members))
        held = 0
        for key in keys:
            side = "heldout" if held < target and held + len(groups[key]) <= target else "indexed"
            for t in groups[key]:
                t["split"] = side
            if side == "heldout":
                held += len(groups[key])


def related_pairs(tracks: list[dict]) -> list[tuple[str, str]]:
    """Paths of the RELATED pairs present in the corpus."""
    by_name = {(t["package"], os.path.basename(t["path"])): t["path"] for t in tracks}
    return [(by_name[(p, a)], by_name[(p, b)]) for p, a, b in RELATED
            if (p, a) in by_name and (p, b) in by_name]


def load(cfg: Config) -> dict:
    """The corpus manifest, if it exists and its files are still in place."""
    path = cfg.corpus_manifest
    if not path.exists():
        raise BenchError(f"no corpus manifest at {path}: run `bench.py corpus` first")
    return read_json(path)


def build(cfg: Config) -> dict:
    """Run the corpus step (download, unpack, find, dedupe, split); cached in corpus.json."""
    path = cfg.corpus_manifest
    if path.exists():
        manifest = read_json(path)
        if (manifest.get("seed") == cfg.seed
                and all(os.path.isfile(t["path"]) for t in manifest["tracks"])):
            log(f"corpus: using {path} ({len(manifest['tracks'])} tracks)")
            return manifest
    require_tools("apt-get", "dpkg-deb", "ffprobe")
    debs = download(cfg)
    roots = unpack(cfg, debs)
    tracks, dropped = find_tracks(cfg, roots)
    if not tracks:
        raise BenchError("no music found in the unpacked packages")
    split(tracks, cfg.seed)
    tracks.sort(key=lambda t: t["rel"])
    manifest = {
        "seed": cfg.seed,
        "min_duration_s": MIN_DURATION_S,
        "packages": {pkg: deb.name for pkg, deb in debs.items()},
        "tracks": tracks,
        "dropped": dropped,
        "related": related_pairs(tracks),
    }
    write_json(path, manifest)
    log(f"corpus: wrote {path}")
    return manifest


def summary(manifest: dict) -> dict:
    """Counts and hours for the report."""
    tracks = manifest["tracks"]
    indexed = [t for t in tracks if t["split"] == "indexed"]
    held = [t for t in tracks if t["split"] == "heldout"]
    per_pkg = {}
    for t in tracks:
        d = per_pkg.setdefault(t["package"], {"indexed": 0, "heldout": 0, "seconds": 0.0})
        d[t["split"]] += 1
        d["seconds"] += t["duration"]
    return {
        "tracks": len(tracks),
        "indexed": len(indexed),
        "heldout": len(held),
        "indexed_hours": sum(t["duration"] for t in indexed) / 3600,
        "heldout_hours": sum(t["duration"] for t in held) / 3600,
        "per_package": per_pkg,
        "dropped": len(manifest["dropped"]),
    }
