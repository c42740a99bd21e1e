#!/usr/bin/env bash
# Radio monitor figures: streams per core against the MP3 decoding ceiling,
# memory per station, reconnection after a drop. Release build; a real
# Icecast server and ffmpeg (installed like the test command does). Prints
# a table for docs/benchmarks.md.
# Usage: bench/radio/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=scripts/build-deps.sh
source scripts/build-deps.sh
ensure_build_deps
# shellcheck source=scripts/test-services.sh
source scripts/test-services.sh
cargo build --release --locked --bins -p hendu-radio-monitor -p hendu-e2e
HENDU_BIN_DIR="${HENDU_BIN_DIR:-$PWD/target/release}" target/release/radio-bench
