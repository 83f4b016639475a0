#!/usr/bin/env bash
# Tessera vs the ffmpeg peer on the same clips, back to back on this machine.
# usage: benches/compare.sh [N=9] [SECONDS=10] [WxH=1280x720] [BITRATE_KBPS=1200] [CONTENT=synthetic] [ASKED=] [PRESET=ultrafast]
#   CONTENT: synthetic (Tessera's noisy generated cameras, `bench room --write-inputs`) or
#            camera (benches/camera_clips.sh: ffmpeg-made scenes, denoised like a webcam)
#   ASKED:   WxH. Tessera asks every sender for the size its largest tile needs
#            (`sendLimit`; 480x270 for a 9-person room's 3x3 personal grids at 1280x720);
#            with ASKED, Tessera is fed the clips a sender that honours the ask sends (that
#            size, at the asked bitrate), while the peer, which asks nothing, decodes the
#            full 640x360 clips.
#   PRESET:  the peer's libx264 preset. ultrafast is cheaper per frame than Tessera's
#            openh264 but its pictures are 1.6–2.4 dB worse at the same bitrate;
#            superfast is the first whose pictures are as good (benches/codec_floor.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-9}; secs=${2:-10}; size=${3:-1280x720}; kbps=${4:-1200}; content=${5:-synthetic}; asked=${6:-}; preset=${7:-ultrafast}
command -v bc >/dev/null || { echo "compare: needs bc (apt-get install bc)" >&2; exit 1; }
cargo build --release --locked -q
bin=target/release/tessera
dir=$(mktemp -d); trap 'rm -rf "$dir"' EXIT
case $content in
  synthetic) $bin bench room --participants "$n" --input 640x360 --seconds "$secs" --write-inputs "$dir" 2>/dev/null ;;
  camera) bash benches/camera_clips.sh "$n" "$dir" "$secs" 2>/dev/null ;;
  *) echo "compare: CONTENT is synthetic or camera, not $content" >&2; exit 2 ;;
esac
tdir=$dir
if [[ -n $asked ]]; then
  tdir=$dir/asked
  # The asked bitrate for that size (0.1 bit per pixel at 30 fps, as the server asks).
  akbps=$(( ${asked%x*} * ${asked#*x} * 30 / 10 / 1000 ))
  case $content in
    synthetic) $bin bench room --participants "$n" --input "$asked" --input-bitrate asked --seconds "$secs" --write-inputs "$tdir" 2>/dev/null ;;
    camera) bash benches/camera_clips.sh "$n" "$tdir" "$secs" "$asked" "$akbps" 2>/dev/null ;;
  esac
fi
inputs=(); for ((i = 0; i < n; i++)); do inputs+=("$tdir/input-$i.h264"); done

$bin bench room --participants "$n" --output "$size" --bitrate "${kbps}k" --seconds "$secs" --inputs "${inputs[@]}" --json > "$dir/tessera.json"
t=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["realtime_factor"])' "$dir/tessera.json")
f=$(bash benches/peer_ffmpeg.sh "$n" "$dir" "$secs" "$size" "$kbps" 30 "$preset" | tail -n 1)
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "content: $content, $n participants, $secs s, $size at $kbps kbit/s; Tessera's inputs: ${asked:-the same 640x360 clips} (the peer's: 640x360)"
echo "peer: libx264 $preset"
printf 'tessera realtime factor: %.2fx\nffmpeg  realtime factor: %.2fx\nratio tessera/ffmpeg:    %.2f\n' "$t" "$f" "$(echo "$t / $f" | bc -l)"
cat "$dir/tessera.json"
