#!/usr/bin/env bash
# Storage measurements on the servers (issue: storage):
#  1. one ~4-minute corpus track's fingerprint blocks written to and read back
#     from MongoDB (time, bytes);
#  2. the development corpus indexed into MySQL + MongoDB with `hendu index`,
#     then loaded back into the matcher by `hendu match` (what a recogniser
#     replica does at start-up), five times.
# Needs the corpus of bench/recognition (`python3 bench/recognition/bench.py corpus`)
# and a release build. Starts the servers the way the tests do (scripts/test-services.sh)
# and uses a private MySQL database, MongoDB database and Redis prefix, dropped at the end.
# Usage: bench/storage/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=scripts/build-deps.sh
source scripts/build-deps.sh
ensure_build_deps

DATA="${HENDU_BENCH_DIR:-.bench-data}"
[ -f "$DATA/corpus.json" ] || { echo "error: no corpus; run: python3 bench/recognition/bench.py corpus" >&2; exit 1; }
# shellcheck source=scripts/test-services.sh
source scripts/test-services.sh
cargo build --release -q -p hendu
HENDU=target/release/hendu

NAME="hendu_bench_$$"
mariadb -h127.0.0.1 -uroot -e "CREATE DATABASE $NAME"
cleanup() {
  mariadb -h127.0.0.1 -uroot -e "DROP DATABASE IF EXISTS $NAME" || true
  kill "${SECANTUS_PID:-0}" 2>/dev/null || true
}
trap cleanup EXIT
export HENDU_MYSQL_URL="mysql://root@127.0.0.1:3306/$NAME"
export HENDU_MONGO_URL="$HENDU_TEST_MONGO_URL/$NAME"
export HENDU_REDIS_URL="$HENDU_TEST_REDIS_URL"
export HENDU_REDIS_PREFIX="$NAME:"

mapfile -t FILES < <(python3 -c '
import json, sys
c = json.load(open(sys.argv[1]))
for t in c["tracks"]:
    if t["split"] == "indexed":
        print(t["path"])' "$DATA/corpus.json")
FOUR_MIN=$(python3 -c '
import json, sys
c = json.load(open(sys.argv[1]))
t = min((t for t in c["tracks"] if t["split"] == "indexed"), key=lambda t: abs(t["duration"] - 240))
print(t["path"])' "$DATA/corpus.json")

echo "== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(date -u +%F)"
echo "== MongoDB server: secantusdb $SECANTUS_VERSION (MongoDB wire protocol, in memory)"
echo "== 1. one track's blocks to MongoDB and back"
HENDU_MONGO_URL="$HENDU_TEST_MONGO_URL/${NAME}_blocks" \
  cargo bench -q -p hendu-storage --bench mongo_fingerprints -- "$FOUR_MIN"

echo "== 2. index the corpus into the servers (${#FILES[@]} tracks)"
/usr/bin/time -f "index: %e s wall, %M KB peak RSS" "$HENDU" index --jobs 2 "${FILES[@]}" 2>&1 | grep -v "^note:"
CLIP="$DATA/clip-for-load.wav"
ffmpeg -loglevel error -y -ss 30 -t 10 -i "$FOUR_MIN" "$CLIP"
echo "== 3. load the catalogue from the servers into the matcher, 5 times"
for _ in 1 2 3 4 5; do
  /usr/bin/time -f "   process: %e s wall (start, connect, load, one query), %M KB peak RSS" \
    "$HENDU" match "$CLIP" 2>&1 >/dev/null | grep -E "loaded|process"
done
