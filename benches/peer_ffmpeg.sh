#!/usr/bin/env bash
# The same MCU workload in ffmpeg, as a peer to compare Tessera against:
# N H.264 inputs (decoded), N personal grid composites without self-view at the output
# size, N N-1 audio mixes of distinct tones, N libx264 encodes (ultrafast, zerolatency —
# Debian's ffmpeg has no openh264 encoder) at the same bitrate plus N Opus encodes.
# Prints the realtime factor (media seconds / wall seconds) on the last line.
#
# usage: benches/peer_ffmpeg.sh N INPUT_DIR SECONDS [WxH] [BITRATE_KBPS] [FPS] [PRESET]
#   INPUT_DIR holds input-0.h264 … input-(N-1).h264 (tessera bench room --write-inputs DIR)
#   PRESET: libx264's preset (ultrafast). `superfast` is the one whose pictures match
#   Tessera's openh264 in quality (BENCHMARKS.md "The peer's picture quality").
set -euo pipefail
n=${1:?participants}; dir=${2:?input dir}; secs=${3:?seconds}
size=${4:-1280x720}; kbps=${5:-1200}; fps=${6:-30}; preset=${7:-ultrafast}
ow=${size%x*}; oh=${size#*x}
tones=(300 400 500 650 800 1000 1200 1500 1800)

# Grid for N-1 tiles (same rule as Tessera's grid layout, without gaps).
m=$((n - 1))
cols=1; while ((cols * cols < m)); do cols=$((cols + 1)); done
rows=$(((m + cols - 1) / cols))
tw=$(((ow / cols) & ~1)); th=$(((oh / rows) & ~1))

args=(-hide_banner -nostdin -v error -stats)
for ((i = 0; i < n; i++)); do
  args+=(-f h264 -framerate "$fps" -stream_loop -1 -i "$dir/input-$i.h264")
done
for ((i = 0; i < n; i++)); do
  args+=(-f lavfi -i "sine=frequency=${tones[i % 9]}:sample_rate=48000")
done

fc=""
# Each input feeds the N-1 composites that show it.
for ((i = 0; i < n; i++)); do
  outs=""; for ((k = 0; k < n; k++)); do ((k == i)) || outs+="[v${i}to${k}]"; done
  fc+="[$i:v]scale=${tw}:${th}:force_original_aspect_ratio=increase,crop=${tw}:${th},split=$m${outs};"
  outs=""; for ((k = 0; k < n; k++)); do ((k == i)) || outs+="[a${i}to${k}]"; done
  fc+="[$((n + i)):a]asplit=$m${outs};"
done
for ((k = 0; k < n; k++)); do
  ins=""; layout=""; t=0
  for ((i = 0; i < n; i++)); do
    ((i == k)) && continue
    ins+="[v${i}to${k}]"
    layout+="$((t % cols * tw))_$((t / cols * th))|"; t=$((t + 1))
  done
  if ((m == 1)); then
    fc+="${ins}pad=${ow}:${oh}:(ow-iw)/2:(oh-ih)/2[vout$k];"
  else
    fc+="${ins}xstack=inputs=$m:layout=${layout%|}:fill=black,pad=${ow}:${oh}:(ow-iw)/2:(oh-ih)/2[vout$k];"
  fi
  ins=""; for ((i = 0; i < n; i++)); do ((i == k)) || ins+="[a${i}to${k}]"; done
  if ((m == 1)); then fc+="${ins}anull[aout$k];"; else fc+="${ins}amix=inputs=$m:normalize=0[aout$k];"; fi
done
args+=(-filter_complex "${fc%;}")
for ((k = 0; k < n; k++)); do
  args+=(-map "[vout$k]" -map "[aout$k]" -t "$secs"
    -c:v libx264 -preset "$preset" -tune zerolatency -b:v "${kbps}k" -maxrate "${kbps}k" -bufsize "$((kbps / 2))k" -g 300 -pix_fmt yuv420p
    -c:a libopus -b:a 32k -f null -)
done

start=$(date +%s.%N)
ffmpeg "${args[@]}" 2>&1 | tr '\r' '\n' | tail -n 2 >&2
end=$(date +%s.%N)
echo "ffmpeg peer: $n participants, ${ow}x${oh}@${fps} ${kbps}k, x264 $preset, ${secs} media s in $(echo "$end - $start" | bc -l | cut -c1-6) wall s" >&2
echo "scale=3; $secs / ($end - $start)" | bc -l
