#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what the tests need,
# then checks formatting, lints, and runs every test of the workspace.
# Usage: scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null; then
  echo "error: cargo not found; install Rust with rustup (https://rustup.rs) first" >&2
  exit 1
fi
# The toolchain pinned in rust-toolchain.toml, with rustfmt and clippy.
rustup show active-toolchain >/dev/null

# shellcheck source=scripts/build-deps.sh
source scripts/build-deps.sh
ensure_build_deps
# shellcheck source=scripts/test-services.sh
source scripts/test-services.sh

echo "== format"
cargo fmt --all -- --check
echo "== lint"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== build (the end-to-end tests run the service binaries)"
cargo build --workspace --bins --locked
echo "== test"
if command -v cargo-nextest >/dev/null; then
  cargo nextest run --workspace --locked --no-fail-fast
  cargo test --workspace --locked --doc
else
  cargo test --workspace --locked --no-fail-fast
fi
echo "== deploy (images, Compose, Kubernetes)"
scripts/test-deploy.sh
