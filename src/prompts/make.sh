#!/usr/bin/env bash
# Regenerates the spoken prompts shipped in the binary (src/prompts/*.raw: 16 kHz mono
# signed 16-bit little-endian, peak -6 dBFS) with free tools: espeak-ng (speech) and sox.
#   apt-get install espeak-ng sox && bash src/prompts/make.sh
set -euo pipefail
cd "$(dirname "$0")"
say() {
  local name=$1 text=$2 tmp
  tmp=$(mktemp --suffix=.wav)
  espeak-ng -v en-us -s 165 -w "$tmp" "$text"
  sox "$tmp" -r 16000 -c 1 -b 16 -e signed-integer -t raw "$name.raw" norm -6
  rm -f "$tmp"
}
say enter_pin "Please enter the conference PIN, followed by the pound key."
say wrong_pin "That PIN is not correct."
say goodbye "Goodbye."
say alone "You are the only participant in this conference."
say muted "You are muted."
say unmuted "You are unmuted."
say moderator "You are now a moderator."
say not_allowed "Only a moderator can do that."
say locked "The conference is locked."
say unlocked "The conference is unlocked."
say everyone_muted "Everyone else is muted."
say everyone_unmuted "Everyone is unmuted."
say recording "This conference is now being recorded."
