#!/usr/bin/env bash
# Pipeline figures: start-up and idle memory of each service, samples per
# second through recognition with one and two replicas, upload-to-play
# latency. Release build, on the test servers (MariaDB, Redis, secantusdb),
# which it starts like the test command does. Prints a table for
# docs/benchmarks.md.
# Usage: bench/pipeline/run.sh (HENDU_BIN_DIR: other binaries of the services, to compare)
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=scripts/build-deps.sh
source scripts/build-deps.sh
ensure_build_deps
# shellcheck source=scripts/test-services.sh
source scripts/test-services.sh
cargo build --release --locked --bins -p hendu-hash-generator -p hendu-communication \
  -p hendu-recognition -p hendu-filter -p hendu-e2e
HENDU_BIN_DIR="${HENDU_BIN_DIR:-$PWD/target/release}" target/release/pipeline-bench
echo
echo "MongoDB stand-in after the run: time per write as a new collection grows"
.venv/bin/python bench/pipeline/stand-in-writes.py "$HENDU_TEST_MONGO_URL"
