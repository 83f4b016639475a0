#!/usr/bin/env bash
# Runs every test: unit, Rust integration (real server, webrtc-crate clients), the setup
# script's decisions, and the browser end-to-end test (headless Debian Chromium). Installs
# what is missing first (scripts/setup.sh --test: the build and the test packages).
# Tests run inside a private network namespace with only loopback and a private mount
# namespace (the disk-full recording test mounts a small tmpfs) when the kernel allows;
# otherwise on the host's loopback, and the disk-full test shows as ignored.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test

# Build everything (needs the network for crates); the tests themselves run offline.
cargo build --release --locked
cargo test --release --locked --no-run

if unshare -n -m true 2>/dev/null; then
  isolated() { unshare -n -m bash -c 'ip link set lo up && exec "$@"' _ "$@"; }
  privileged=(--include-ignored)
else
  echo "test: WARNING: unshare -n -m is not permitted here: running on the host's loopback;" \
    "the disk-full recording test needs a mount namespace and will show as ignored" >&2
  isolated() { "$@"; }
  privileged=()
fi

isolated cargo test --release --locked --offline -- "${privileged[@]}"
isolated node tests/e2e/browser.test.mjs
echo "all tests passed"
