#!/usr/bin/env bash
# Sensors over TCP: bytes and round trips of one upload over v1, v2 and
# REST; idle v2 sessions held and the service's memory per session; many
# devices sending a fingerprint every 30 s over v2 and the acknowledgement
# latency. Release build, on the test servers (MariaDB, Redis, secantusdb),
# which it starts like the test command does. Prints tables for
# docs/benchmarks.md.
# Usage: bench/sensors/run.sh [--idle N] [--devices N] [--minutes M]
#        (defaults: 10000 idle sessions, 1000 devices, 3 minutes)
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=scripts/build-deps.sh
source scripts/build-deps.sh
ensure_build_deps
# shellcheck source=scripts/test-services.sh
source scripts/test-services.sh
# Each side of 10,000 connections needs as many descriptors.
ulimit -n "$(ulimit -Hn)"
cargo build --release --locked --bins -p hendu-communication -p hendu-e2e
HENDU_BIN_DIR="${HENDU_BIN_DIR:-$PWD/target/release}" target/release/sensors-bench "$@"
