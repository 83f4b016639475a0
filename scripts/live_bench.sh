#!/usr/bin/env bash
# Measures what live output costs the real server (issue 25): a 4-person room (`tessera
# load`, synthetic WebRTC participants over WHIP), alone, then with each output added on
# its own — a recording, an RTMP push to a real nginx-rtmp, an HLS player, 20 WHEP
# watchers — and with all of them at once. Server CPU is `process_cpu_seconds_total` over
# each run's measured window. Server, generator and nginx share this machine's cores.
# Usage: scripts/live_bench.sh [SECONDS]   (each run's measured window, default 20)
set -euo pipefail
cd "$(dirname "$0")/.."
window=${1:-20}
cargo build --release --locked
bin=target/release/tessera
work=$(mktemp -d)
trap 'kill "${srv:-}" "${ngx:-}" 2>/dev/null || true; rm -rf "$work"' EXIT
port=19351
cat > "$work/nginx.conf" <<NGINX
load_module /usr/lib/nginx/modules/ngx_rtmp_module.so;
daemon off; master_process off; pid $work/nginx.pid; error_log $work/nginx.log;
events {}
rtmp { server { listen 127.0.0.1:$port; application live { live on; } } }
NGINX
/usr/sbin/nginx -c "$work/nginx.conf" -p "$work" -e "$work/nginx.log" &
ngx=$!
cat > "$work/tessera.toml" <<TOML
[recording]
dir = "$work/rec"
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
echo "server: $url (pid $srv), $(nproc) cores, window $window s"
row() {
  local name=$1; shift
  local json
  json=$("$bin" load --url "$url" --room "bench-$RANDOM" -n 4 --rate 5 --duration "$window" --json "$@")
  python3 -c '
import json, sys
s = json.loads(sys.argv[2])
cpu = s["serverCpuPercent"]
print("| %s | %d/4 | %d/%d | %.0f kbit/s | %.1f %% | %d |" % (sys.argv[1], s["joined"],
      s["watchersReceiving"], s["watchers"], s["videoKbpsPerParticipant"], cpu, len(s["errors"])))
for e in s["errors"][:3]:
    print("  error:", e, file=sys.stderr)' "$name" "$json"
  sleep 3 # the room empties and stops
}
echo "| run | joined | watchers receiving | video per participant | server CPU (% of a core) | errors |"
echo "|---|---|---|---|---|---|"
row "4-person room alone"
row "+ recording (1280x720)" --record
row "+ RTMP push (nginx-rtmp)" --rtmp "rtmp://127.0.0.1:$port/live/bench"
row "+ HLS player" --hls
row "+ 20 WHEP watchers" --watchers 20
row "+ recording + RTMP + HLS + 20 watchers" --record --rtmp "rtmp://127.0.0.1:$port/live/bench" --hls --watchers 20
