#!/usr/bin/env bash
# Pipeline figures: start-up and idle memory of each service, samples per
# second through recognition with one and two replicas, upload-to-play
# latency. Release build, on the test servers (MariaDB, Redis, secantusdb),
# which it starts like the test command does. Prints a table for
# docs/benchmarks.md.
# Usage: bench/pipeline/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=scripts/test-services.sh
source scripts/test-services.sh
cargo build --release --locked --bins -p hendu-hash-generator -p hendu-communication \
  -p hendu-recognition -p hendu-filter -p hendu-e2e
HENDU_BIN_DIR="$PWD/target/release" target/release/pipeline-bench
