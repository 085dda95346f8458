#!/usr/bin/env bash
# Builds the libFuzzer targets of csrc/fuzz/ (clang, -fsanitize=fuzzer,address,undefined; not part
# of the package build), seeds them from real .mdl files (tools/fuzz_seeds.py) and runs each for
# RUNS executions per job (default 10 million) in JOBS parallel jobs (default 1), recording the
# counts under bench/results/fuzz_TARGET.json.
# FUZZ_TARGETS picks targets (default "model chunks"); FUZZ_WORK the work folder (default build/fuzz).
# Needs: Debian's clang (apt-get install clang), and mdlsae importable (PYTHONPATH=python).
#   tools/fuzz.sh [RUNS] [JOBS]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-10000000}
jobs=${2:-1}
work=$(realpath -m "${FUZZ_WORK:-build/fuzz}")
mkdir -p "$work"
common=(csrc/codec/tables.cpp csrc/codec/chunk_codec.cpp csrc/cpu/parallel.cpp)
flags=(-std=c++17 -O1 -g -Icsrc -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
       -ffp-contract=off -pthread)
targets=${FUZZ_TARGETS:-model chunks}
for t in $targets; do
  clang++ "${flags[@]}" "csrc/fuzz/fuzz_$t.cpp" "${common[@]}" -o "$work/fuzz_$t"
done
PYTHONPATH=${PYTHONPATH:-python} python3 tools/fuzz_seeds.py "$work/seeds"
for t in $targets; do
  mkdir -p "$work/corpus_$t" "$work/crashes_$t"
  log="$work/fuzz_$t.log"
  rm -f "$work"/fuzz-*.log
  start=$(date +%s)
  # run inside $work: with -jobs > 1 libFuzzer writes each job's log (fuzz-N.log) to the current directory
  (cd "$work" && "./fuzz_$t" -runs="$runs" -jobs="$jobs" -workers="$jobs" -print_final_stats=1 \
    -artifact_prefix="crashes_$t/" -timeout=10 -rss_limit_mb=2048 "corpus_$t" "seeds/$t") > "$log" 2>&1 || true
  secs=$(( $(date +%s) - start ))
  execs=$(cat "$work"/fuzz-*.log | awk '/stat::number_of_executed_units/ {s += $2} END {print s + 0}')
  found=$(ls "$work/crashes_$t" | wc -l)
  printf '{"date": "%s", "machine": "%s", "clang": "%s", "target": "fuzz_%s", "executions": %d, "seconds": %d, "findings": %d, "runs_per_job": %d, "jobs": %d}\n' \
    "$(date -u +%F)" "$(uname -nm)" "$(clang++ --version | head -1)" "$t" "$execs" "$secs" "$found" "$runs" "$jobs" \
    > "bench/results/fuzz_$t.json"
  echo "fuzz_$t: $execs executions in ${secs}s, $found findings"
done
