#!/usr/bin/env bash
# Installs missing build dependencies, then builds and runs the server.
# Extra arguments go to tessera (see `--help`), e.g. scripts/run.sh --listen 0.0.0.0:8080
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec cargo run --release --locked -- "$@"
