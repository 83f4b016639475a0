#!/usr/bin/env bash
# Runs every test: unit, Rust integration (real server, webrtc-crate clients) and the
# browser end-to-end test (headless Debian Chromium). Installs what is missing first.
# Tests run inside a private network namespace with only loopback, and a private mount
# namespace (the disk-full recording test mounts a small tmpfs), when the kernel allows.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test

# Build everything (needs the network for crates); the tests themselves run offline.
cargo build --release --locked
cargo test --release --locked --no-run

isolated() {
  if unshare -n -m true 2>/dev/null; then
    unshare -n -m bash -c 'ip link set lo up && exec "$@"' _ "$@"
  else
    echo "test: WARNING: unshare -n -m is not permitted here; running on the host's loopback" >&2
    echo "test: WARNING: without a mount namespace the disk-full recording test cannot mount its tmpfs: skipping it" >&2
    TESSERA_SKIP_PRIVILEGED_TESTS=1 "$@"
  fi
}

isolated cargo test --release --locked --offline
isolated node tests/e2e/browser.test.mjs
echo "all tests passed"
