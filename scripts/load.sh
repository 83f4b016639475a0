#!/usr/bin/env bash
# Measures the real server with `tessera load` (network, DTLS and SRTP included): a
# 9-person room with video, then 200 audio-only participants in one room. Server and
# generator run on this machine, on loopback; the README's table came from this script.
# Usage: scripts/load.sh [SECONDS]   (the measured window of each run, default 20)
set -euo pipefail
cd "$(dirname "$0")/.."
window=${1:-20}
cargo build --release --locked
bin=target/release/tessera
work=$(mktemp -d)
trap 'kill "${srv:-}" 2>/dev/null || true; rm -rf "$work"' EXIT
cat > "$work/tessera.toml" <<TOML
max_participants = 250
max_participants_total = 300
[http]
join_rate = 100.0
join_burst = 300
TOML
export TESSERA_API_SECRET=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
export TESSERA_ADMIN_KEY=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
"$bin" --config "$work/tessera.toml" --listen 127.0.0.1:0 --sip-listen off \
  > "$work/out.txt" 2> "$work/err.txt" &
srv=$!
for _ in $(seq 100); do grep -q 'listening on http' "$work/out.txt" && break; sleep 0.1; done
url=$(grep -o 'http://[0-9.:]*' "$work/out.txt" | head -1)
echo "server: $url (pid $srv), $(nproc) cores"
"$bin" load --url "$url" --room load9 -n 9 --rate 5 --duration "$window"
sleep 3 # the first room empties and stops
"$bin" load --url "$url" --room bridge -n 200 --audio-only --rate 20 --duration "$window"
