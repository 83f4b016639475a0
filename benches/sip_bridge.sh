#!/usr/bin/env bash
# Conference-bridge load: N SIPp callers (benches/sip/uac_talk.xml: G.711 A-law from
# Debian's pcap, all talking) in ONE room on the real server over loopback. Reports the
# server's CPU per caller, audio tick lateness p50/p99, concealed (lost) frames and RSS per
# caller. SIPp runs on the same machine and its CPU is reported separately.
#   bash benches/sip_bridge.sh 100 500 1000
# Needs: sipp (Debian sip-tester), curl, python3; a release build (cargo build --release).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=target/release/tessera
[ -x "$bin" ] || { echo "build first: cargo build --release" >&2; exit 1; }
command -v sipp >/dev/null || { echo "needs sipp (apt-get install sip-tester)" >&2; exit 1; }
WINDOW=${WINDOW:-20}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
mkdir -p "$work/pcap"
ln -s /usr/share/sip-tester/*.pcap "$work/pcap/"
cp benches/sip/uac_talk.xml "$work/"
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
hz=$(getconf CLK_TCK)
printf '| callers | server CPU (%% of a core) | per caller | audio tick lateness p50 / p99 | frames concealed | RSS per caller | SIPp CPU |\n|---|---|---|---|---|---|---|\n'
for n in "${@:-100}"; do
  port=$((15060 + RANDOM % 1000))
  cat > "$work/tessera.toml" <<TOML
max_participants = $((n + 10))
max_participants_total = $((n + 10))
[sip]
invite_rate = 1000.0
invite_burst = $((n + 10))
TOML
  "$bin" --listen 127.0.0.1:0 --sip-listen "127.0.0.1:$port" --config "$work/tessera.toml" \
    > "$work/out.txt" 2> "$work/err.txt" &
  srv=$!
  for _ in $(seq 50); do grep -q 'listening on http' "$work/out.txt" && break; sleep 0.1; done
  http=$(grep -o 'http://[0-9.:]*' "$work/out.txt" | head -1)
  rss0=$(rss_kb "$srv")
  rate=$(( n / 10 > 20 ? n / 10 : 20 ))
  (cd "$work" && sipp -sf uac_talk.xml "127.0.0.1:$port" -s bridge -m "$n" -l "$n" -r "$rate" \
      -i 127.0.0.1 -mi 127.0.0.1 -nostdin -max_socket $((n * 4 + 100)) -timeout 120s \
      > sipp.out 2>&1) &
  sipp_job=$!
  # Wait until everyone is in the room, then let it settle.
  for _ in $(seq 600); do
    got=$(curl -s "$http/api/rooms" | python3 -c 'import json,sys; r=json.load(sys.stdin); print(len(r[0]["participants"]) if r else 0)')
    [ "$got" -ge "$n" ] && break
    sleep 0.2
  done
  sleep 3
  sipp_pid=$(pgrep -n -x sipp)
  curl -s "$http/api/rooms" > "$work/s0.json"; t0=$(ticks "$srv"); p0=$(ticks "$sipp_pid"); w0=$(date +%s.%N)
  sleep "$WINDOW"
  curl -s "$http/api/rooms" > "$work/s1.json"; t1=$(ticks "$srv"); p1=$(ticks "$sipp_pid"); w1=$(date +%s.%N)
  rss1=$(rss_kb "$srv")
  python3 - "$n" "$t0" "$t1" "$p0" "$p1" "$w0" "$w1" "$hz" "$rss0" "$rss1" "$work/s0.json" "$work/s1.json" <<'PY'
import json, sys
n, t0, t1, p0, p1 = (int(x) for x in sys.argv[1:6])
w0, w1 = float(sys.argv[6]), float(sys.argv[7])
hz, rss0, rss1 = int(sys.argv[8]), int(sys.argv[9]), int(sys.argv[10])
r0, r1 = (json.load(open(f))[0] for f in sys.argv[11:13])
secs = w1 - w0
cpu = (t1 - t0) / hz / secs * 100
sipp = (p1 - p0) / hz / secs * 100
in_room = len(r1["participants"])
frames = in_room * 50 * secs
lost = r1["audioConcealed"] - r0["audioConcealed"]
lat = r1["audioTickLatenessMs"]
print(f"| {n} ({in_room} in the room) | {cpu:.0f} % | {cpu / in_room:.2f} % | {lat['p50']:.1f} / {lat['p99']:.1f} ms | {lost / frames * 100:.2f} % | {(rss1 - rss0) / in_room:.0f} kB | {sipp:.0f} % |")
PY
  kill "$srv" 2>/dev/null || true; wait "$srv" 2>/dev/null || true
  kill "$sipp_job" 2>/dev/null || true; pkill -x sipp 2>/dev/null || true; wait 2>/dev/null || true
done
