#!/usr/bin/env bash
# The encoders alone, on the very pictures a 9-person room encodes: openh264 as Tessera
# runs it (`tessera bench encoder`) against libx264's fast presets (the ffmpeg peer's
# encoder), one thread each, same bitrate. Per encoder: CPU per frame and the mean
# per-frame luma PSNR of its stream against the composed source (what the viewer sees).
#
# usage: benches/codec_floor.sh [CONTENT=camera] [FRAMES=300] [WxH=1280x720] [KBPS=1200]
#   CONTENT: camera (benches/camera_clips.sh) or synthetic (Tessera's generated cameras)
set -euo pipefail
cd "$(dirname "$0")/.."
content=${1:-camera}; frames=${2:-300}; size=${3:-1280x720}; kbps=${4:-1200}
for t in ffmpeg bc python3; do
  command -v $t >/dev/null || { echo "codec_floor: needs $t" >&2; exit 1; }
done
cargo build --release --locked -q
bin=target/release/tessera
dir=$(mktemp -d); trap 'rm -rf "$dir"' EXIT
inputs=()
if [[ $content == camera ]]; then
  bash benches/camera_clips.sh 9 "$dir" $(( (frames + 29) / 30 )) 2>/dev/null
  for i in {0..8}; do inputs+=("$dir/input-$i.h264"); done
  inputs=(--inputs "${inputs[@]}")
elif [[ $content != synthetic ]]; then
  echo "codec_floor: CONTENT is camera or synthetic, not $content" >&2; exit 2
fi
# openh264: Tessera's settings are the last row (every analysis pass off).
$bin bench encoder ${inputs[@]+"${inputs[@]}"} --frames "$frames" --output "$size" \
  --bitrate "${kbps}k" --write-source "$dir/source.yuv" 2>/dev/null > "$dir/openh264.txt"
row=$(tail -n 1 "$dir/openh264.txt")
echo "content: $content, $frames frames of a 3x3 grid at $size, $kbps kbit/s, one thread"
echo "| encoder | ms/frame | kbit/s | PSNR-Y dB |"
echo "|---|---|---|---|"
echo "$row" | awk -F'|' '{printf "| openh264 low (Tessera) | %.2f | %.0f | %.2f |\n", $4, $5, $6}'
# CPU seconds (user + sys) of a command, the fastest of two runs.
cpu_of() {
  local best=
  for _ in 1 2; do
    local t
    t=$(python3 -c 'import resource, subprocess, sys
subprocess.run(sys.argv[1:], check=True)
r = resource.getrusage(resource.RUSAGE_CHILDREN)
print(r.ru_utime + r.ru_stime)' "$@")
    if [[ -z $best ]] || (( $(echo "$t < $best" | bc -l) )); then best=$t; fi
  done
  echo "$best"
}
raw=(ffmpeg -hide_banner -v error -f rawvideo -pix_fmt yuv420p -s "$size" -r 30 -i "$dir/source.yuv")
# What ffmpeg spends reading the frames and starting, with no encoder: taken off x264's.
base=$(cpu_of "${raw[@]}" -f null -)
for preset in ultrafast superfast veryfast; do
  cpu=$(cpu_of "${raw[@]}" -c:v libx264 -preset "$preset" -tune zerolatency \
      -b:v "${kbps}k" -maxrate "${kbps}k" -bufsize "$((kbps / 2))k" -g 300 -threads 1 \
      -y "$dir/$preset.h264")
  ms=$(echo "($cpu - $base) * 1000 / $frames" | bc -l)
  ffmpeg -hide_banner -v error -r 30 -i "$dir/$preset.h264" -f rawvideo -pix_fmt yuv420p \
    -s "$size" -r 30 -i "$dir/source.yuv" \
    -lavfi "[0:v]setpts=N/30/TB[a];[1:v]setpts=N/30/TB[b];[a][b]psnr=stats_file=$dir/$preset.psnr" \
    -f null - 2>/dev/null
  python3 - "$dir/$preset.psnr" "$dir/$preset.h264" "$preset" "$ms" "$frames" <<'P'
import os, re, sys
v = [float(re.search(r"psnr_y:([0-9.]+)", l).group(1)) for l in open(sys.argv[1])]
kbps = os.path.getsize(sys.argv[2]) * 8 * 30 / int(sys.argv[5]) / 1000
print(f"| x264 {sys.argv[3]} | {float(sys.argv[4]):.2f} | {kbps:.0f} | {sum(v) / len(v):.2f} |")
P
done
