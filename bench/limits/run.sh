#!/usr/bin/env bash
# What refusing hostile input costs the services (time to the answer, peak
# memory growth), and the cost of one credential check. Release build, on
# the test servers (MariaDB, Redis, secantusdb), which it starts like the
# test command does. Prints tables for docs/benchmarks.md.
# Usage: bench/limits/run.sh            the services of this checkout
#        HENDU_BIN_DIR=DIR bench/limits/run.sh --legacy
#                                       binaries built before the limits
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=scripts/build-deps.sh
source scripts/build-deps.sh
ensure_build_deps
# shellcheck source=scripts/test-services.sh
source scripts/test-services.sh
cargo build --release --locked --bins -p hendu-hash-generator -p hendu-communication -p hendu-e2e
HENDU_BIN_DIR="${HENDU_BIN_DIR:-$PWD/target/release}" target/release/limits-bench "$@"
