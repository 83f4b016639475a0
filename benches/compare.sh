#!/usr/bin/env bash
# Tessera vs the ffmpeg peer on the same clips, back to back on this machine.
# usage: benches/compare.sh [N=9] [SECONDS=10] [WxH=1280x720] [BITRATE_KBPS=1200] [CONTENT=synthetic]
#   CONTENT: synthetic (Tessera's noisy generated cameras, `bench room --write-inputs`) or
#            camera (benches/camera_clips.sh: ffmpeg-made scenes, denoised like a webcam)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-9}; secs=${2:-10}; size=${3:-1280x720}; kbps=${4:-1200}; content=${5:-synthetic}
command -v bc >/dev/null || { echo "compare: needs bc (apt-get install bc)" >&2; exit 1; }
cargo build --release --locked -q
bin=target/release/tessera
dir=$(mktemp -d); trap 'rm -rf "$dir"' EXIT
case $content in
  synthetic) $bin bench room --participants "$n" --input 640x360 --seconds "$secs" --write-inputs "$dir" 2>/dev/null ;;
  camera) bash benches/camera_clips.sh "$n" "$dir" "$secs" 2>/dev/null ;;
  *) echo "compare: CONTENT is synthetic or camera, not $content" >&2; exit 2 ;;
esac
inputs=(); for ((i = 0; i < n; i++)); do inputs+=("$dir/input-$i.h264"); done

$bin bench room --participants "$n" --output "$size" --bitrate "${kbps}k" --seconds "$secs" --inputs "${inputs[@]}" --json > "$dir/tessera.json"
t=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["realtime_factor"])' "$dir/tessera.json")
f=$(bash benches/peer_ffmpeg.sh "$n" "$dir" "$secs" "$size" "$kbps" | tail -n 1)
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "content: $content, $n participants, $secs s, $size at $kbps kbit/s"
printf 'tessera realtime factor: %.2fx\nffmpeg  realtime factor: %.2fx\nratio tessera/ffmpeg:    %.2f\n' "$t" "$f" "$(echo "$t / $f" | bc -l)"
cat "$dir/tessera.json"
