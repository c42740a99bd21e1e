#!/usr/bin/env bash
# The web service with a million plays in MySQL: page render times (p50,
# p99) of the dashboard, the plays table and a report, for a musician, an
# administrator and an operator; WebSocket fan-out to many open dashboards
# and the memory per open page. Release build, on the test servers (MariaDB,
# Redis, secantusdb), which it starts like the test command does. Prints
# tables for docs/benchmarks.md.
# Usage: bench/web/run.sh [--plays N] [--sockets N] [--requests N]
#        (defaults: 1000000 plays, 1000 sockets, 40 requests a page)
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=scripts/build-deps.sh
source scripts/build-deps.sh
ensure_build_deps
# shellcheck source=scripts/test-services.sh
source scripts/test-services.sh
ulimit -n "$(ulimit -Hn)"
cargo build --release --locked --bins -p hendu-web -p hendu-e2e
HENDU_BIN_DIR="${HENDU_BIN_DIR:-$PWD/target/release}" target/release/web-bench "$@"
