#!/usr/bin/env bash
# Camera-like benchmark inputs made with free tools (ffmpeg's own sources; nothing is
# downloaded): N clips of 640x360@30, H.264 constrained baseline at 600 kbit/s in Annex B,
# as a WebRTC camera would send them. Each participant gets a different scene and hue:
#   smooth moving gradients, a slow Mandelbrot zoom, the testsrc2 pattern, a blurred
#   Game of Life, all with mild sensor noise that a temporal denoiser (hqdn3d, as webcams
#   and their drivers do) mostly removes. Unlike the synthetic clips' fresh per-pixel
#   noise every frame, most of each picture is predictable from the last one.
#
# usage: benches/camera_clips.sh N DIR [SECONDS=10] [WxH=640x360] [KBPS=600]
#   writes DIR/input-0.h264 … DIR/input-(N-1).h264 (the names `bench room --inputs` and
#   benches/peer_ffmpeg.sh use); WxH and KBPS make the clips a sender sends when it was
#   asked for less (`sendLimit`: e.g. 480x270 at 389)
set -euo pipefail
n=${1:?participants}; dir=${2:?output dir}; secs=${3:-10}; size=${4:-640x360}; kbps=${5:-600}
w=${size%x*}; h=${size#*x}
command -v ffmpeg >/dev/null || { echo "camera_clips: needs ffmpeg (apt-get install ffmpeg)" >&2; exit 1; }
mkdir -p "$dir"
scenes=(
  "gradients=size=640x360:rate=30:speed=0.015:c0=0x3050a0:c1=0xd0a070:c2=0x406030:nb_colors=3"
  "mandelbrot=size=640x360:rate=30:start_scale=2.5:end_scale=0.8:end_pts=400"
  "testsrc2=size=640x360:rate=30"
  "life=size=320x180:rate=30:mold=8:ratio=0.12:life_color=0xe0c090:death_color=0x203040,scale=640:360:flags=bicubic,gblur=sigma=2"
)
for ((i = 0; i < n; i++)); do
  src=${scenes[i % ${#scenes[@]}]}
  ffmpeg -hide_banner -nostdin -v error -y -f lavfi -i "$src" -t "$secs" \
    -vf "hue=h=$((i * 37 % 360)),noise=alls=6:allf=t,hqdn3d=4:3:6:6,scale=$w:$h:flags=bicubic,format=yuv420p" \
    -c:v libx264 -profile:v baseline -preset veryfast -tune zerolatency \
    -b:v "${kbps}k" -maxrate "${kbps}k" -bufsize "$((kbps / 2))k" -g 300 -bf 0 \
    -f h264 "$dir/input-$i.h264"
  echo "camera_clips: wrote $dir/input-$i.h264" >&2
done
