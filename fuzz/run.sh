#!/usr/bin/env bash
# Runs every fuzz target (or those named) until 1,000,000 executions or 30 minutes,
# whichever comes first, with libFuzzer's memory limit, then prints one line per target.
# Needs a nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`). See FUZZING.md.
#   bash fuzz/run.sh [TARGET...]      RUNS=… SECONDS_PER_TARGET=… to change the budget
set -euo pipefail
cd "$(dirname "$0")"
RUNS=${RUNS:-1000000}
SECS=${SECONDS_PER_TARGET:-1800}
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(signaling_message sdp_offer whip_request layout_json config_toml rtcp_feedback h264_ingest av1_ingest vp8_ingest vp9_ingest)
cargo +nightly fuzz build -O --debug-assertions
mkdir -p logs
for t in "${targets[@]}"; do
  case "$t" in
    h264_ingest|av1_ingest|vp8_ingest|vp9_ingest) max_len=65536 ;;
    sdp_offer|whip_request) max_len=16384 ;;
    *) max_len=4096 ;;
  esac
  mkdir -p "corpus/$t" "seeds/$t" "artifacts/$t"
  start=$(date +%s)
  set +e
  cargo +nightly fuzz run -O --debug-assertions "$t" "corpus/$t" "seeds/$t" -- \
    -runs="$RUNS" -max_total_time="$SECS" -rss_limit_mb=2048 -malloc_limit_mb=2048 \
    -timeout=10 -max_len="$max_len" -print_final_stats=1 > "logs/$t.log" 2>&1
  rc=$?
  set -e
  secs=$(( $(date +%s) - start ))
  execs=$(grep -a 'stat::number_of_executed_units' "logs/$t.log" | awk '{print $2}' | tail -1)
  cov=$(grep -a -o 'cov: [0-9]*' "logs/$t.log" | tail -1)
  echo "$t: rc=$rc execs=${execs:-?} seconds=$secs ${cov:-} corpus=$(ls "corpus/$t" | wc -l) artifacts=$(ls "artifacts/$t" | wc -l)"
done
