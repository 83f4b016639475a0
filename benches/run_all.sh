#!/usr/bin/env bash
# Every number in BENCHMARKS.md, in one run: criterion micro-benchmarks, the room
# benchmark in its main configurations, and the side-by-side ffmpeg comparison.
# usage: benches/run_all.sh [OUT_DIR=target/bench-results]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-target/bench-results}
mkdir -p "$out"
scripts/setup.sh --bench
bin=target/release/tessera
cargo build --release --locked -q
{
  echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -g | awk '/Mem:/{print $2}') GiB"
  echo "date: $(date -u +%FT%TZ)  commit: $(git rev-parse --short HEAD 2>/dev/null || echo none)"
} | tee "$out/machine.txt"

cargo bench --locked --bench mixer --bench compositor --bench codecs -- --warm-up-time 1 --measurement-time 3 2>&1 \
  | grep -E '^[a-z_0-9]+/|time:' | tee "$out/criterion.txt"

# Camera-like inputs (ffmpeg-made scenes, denoised like a webcam), 16 of them.
cam="$out/camera"
bash benches/camera_clips.sh 16 "$cam" 10 2>/dev/null
cam9=(); for i in $(seq 0 8); do cam9+=("$cam/input-$i.h264"); done
cam16=(); for i in $(seq 0 15); do cam16+=("$cam/input-$i.h264"); done

room() { local name=$1; shift; echo "== room $name: $*"; $bin bench room "$@" 2>/dev/null | tee "$out/room-$name.txt"; }
room 9p-grid-720p --participants 9 --output 1280x720 --bitrate 1200k --seconds 10
room 9p-grid-720p-pipelined --participants 9 --output 1280x720 --bitrate 1200k --seconds 10 --pipeline
room 9p-grid-720p-camera --participants 9 --output 1280x720 --bitrate 1200k --seconds 10 --inputs "${cam9[@]}"
room 9p-grid-720p-paced --participants 9 --output 1280x720 --bitrate 1200k --seconds 10 --paced
room 9p-grid-720p-camera-paced --participants 9 --output 1280x720 --bitrate 1200k --seconds 10 --paced --inputs "${cam9[@]}"
room 4p-grid-720p-paced --participants 4 --output 1280x720 --bitrate 1200k --seconds 10 --paced
room 16p-speaker-720p --participants 16 --layout speaker --output 1280x720 --bitrate 1200k --seconds 10
room 16p-shared-720p --participants 16 --layout grid-shared --output 1280x720 --bitrate 1200k --seconds 10
room 16p-shared-720p-camera --participants 16 --layout grid-shared --output 1280x720 --bitrate 1200k --seconds 10 --inputs "${cam16[@]}"
room 1000p-audio --participants 1000 --audio-only --seconds 10
room 1000p-audio-paced --participants 1000 --audio-only --seconds 10 --paced

for content in synthetic camera; do
  # Full-size inputs; then the size a 9-person room asks its senders for, against the
  # peer's cheapest preset and against the one whose pictures are as good as Tessera's.
  for run in ":ultrafast" "480x270:ultrafast" "480x270:superfast"; do
    asked=${run%:*}; preset=${run#*:}
    echo "== compare with ffmpeg (9 participants, 10 s, 1280x720, 1200 kbit/s, $content, inputs ${asked:-640x360}, x264 $preset)"
    bash benches/compare.sh 9 10 1280x720 1200 "$content" "$asked" "$preset" 2>&1 | grep -vE '^\s*[{}"]' \
      | tee "$out/compare-$content-${asked:-full}-$preset.txt"
  done
  echo "== the encoders alone ($content)"
  bash benches/codec_floor.sh "$content" 2>&1 | tee "$out/codec-floor-$content.txt"
done
