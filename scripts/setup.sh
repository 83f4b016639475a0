#!/usr/bin/env bash
# Installs what Tessera needs on Debian/Ubuntu, skipping what is already there.
#   scripts/setup.sh          build dependencies (to run the server)
#   scripts/setup.sh --test   also what the tests need (Chromium, Node, ffmpeg, iproute2)
set -euo pipefail
cd "$(dirname "$0")/.."

# package:check — a check that passes when what the package provides is already there
# (so a Node.js installed from elsewhere is not fought over).
build_pkgs=("build-essential:command -v g++ && command -v make" "cmake:command -v cmake" "nasm:command -v nasm"
  "pkg-config:command -v pkg-config" "libdav1d-dev:pkg-config --exists dav1d"
  "libclang-dev:ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1")
test_pkgs=("chromium:command -v chromium" "nodejs:command -v node" "npm:command -v npm" "iproute2:command -v ip"
  "util-linux:command -v unshare" "ffmpeg:command -v ffprobe" "bc:command -v bc")
want=("${build_pkgs[@]}")
[[ "${1:-}" == "--test" ]] && want+=("${test_pkgs[@]}")

missing=()
for entry in "${want[@]}"; do
  pkg="${entry%%:*}"
  check="${entry#*:}"
  bash -c "$check" >/dev/null 2>&1 || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}" >&2
  SUDO=""
  [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null; then
  echo "setup: cargo not found. Install Rust (1.85 or newer) with rustup: https://rustup.rs" >&2
  exit 1
fi

if [[ "${1:-}" == "--test" ]]; then
  # playwright-core only drives the system Chromium; it never downloads a browser.
  (cd tests/e2e && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --silent)
fi
