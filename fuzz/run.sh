#!/usr/bin/env bash
# Builds every fuzz target (or those named), then runs each for SECONDS_EACH seconds (default
# 300), JOBS at a time (default: one per core), from its committed seeds (fuzz/seeds/T) and the corpus kept in
# fuzz/corpus/T, and prints one line per target: executions, corpus size, new crashes (files
# libFuzzer left in fuzz/artifacts/T). Exits 1 when a target does not build or a run crashes,
# so that a target that rots or a crash that returns fails the test that calls it
# (`tests/fuzz_smoke.rs`, 20 s each).
# Needs cargo-fuzz (`scripts/setup` installs it); RUSTC_BOOTSTRAP lets stable build the
# sanitizer flags libFuzzer wants. FUZZ_TARGET_DIR (default fuzz/target) is where they build.
#
#   [SECONDS_EACH=3600] [JOBS=N] [FUZZ_TARGET_DIR=DIR] fuzz/run.sh [TARGET...]
set -euo pipefail
cd "$(dirname "$0")"
seconds=${SECONDS_EACH:-300}
target_dir=${FUZZ_TARGET_DIR:-target}
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=($(sed -n 's/^name = "\(.*\)"$/\1/p' Cargo.toml | grep -v '^percept-fuzz$'))
fi
export RUSTC_BOOTSTRAP=1
jobs=${JOBS:-$(nproc)}
# One cargo invocation builds them all (its jobs share the cores better than one per target).
build=(cargo fuzz build -O --target-dir "$target_dir")
[ $# -eq 0 ] || build=(bash -c 'for t in "$@"; do cargo fuzz build -O --target-dir "$0" "$t" || exit 1; done' "$target_dir" "${targets[@]}")
if ! "${build[@]}" >/tmp/percept-fuzz-build.$$ 2>&1; then
  cat /tmp/percept-fuzz-build.$$ >&2
  echo "the fuzz targets do not build" >&2
  rm -f /tmp/percept-fuzz-build.$$
  exit 1
fi
rm -f /tmp/percept-fuzz-build.$$
results=$(mktemp -d)

# Runs target $1 for $seconds; writes its report line to $results/$1.line (and the end of its
# log to $results/$1.fail when it crashed).
run_one() {
  local t=$1 log before status=0 execs crashes
  mkdir -p "corpus/$t" "seeds/$t" "artifacts/$t"
  before=$(find "artifacts/$t" -type f | wc -l)
  log=$(mktemp)
  cargo fuzz run -O --target-dir "$target_dir" "$t" "corpus/$t" "seeds/$t" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 >"$log" 2>&1 || status=$?
  # '#' then digits: libFuzzer ends with '###### Recommended dictionary' lines, which a
  # bare '#[0-9]*' took for a count of nothing. -a: a target's messages may carry the
  # input's raw bytes, and grep would call the log binary and print no count (the
  # hour-long gguf run of session 9 lost its count so).
  execs=$( (grep -a -o '^#[0-9][0-9]*' "$log" || true) | tail -n 1 | tr -d '#')
  crashes=$(( $(find "artifacts/$t" -type f | wc -l) - before ))
  printf '%-14s %5s s  %12s executions  corpus %5s  new crashes %s\n' \
    "$t" "$seconds" "${execs:-0}" "$(ls "corpus/$t" | wc -l)" "$crashes" >"$results/$t.line"
  if [ "$status" -ne 0 ] || [ "$crashes" -ne 0 ]; then
    tail -n 40 "$log" >"$results/$t.fail"
  fi
  rm -f "$log"
}

# $jobs targets at a time (JOBS, default one per core).
for t in "${targets[@]}"; do
  while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n || true; done
  run_one "$t" &
done
wait
failed=0
for t in "${targets[@]}"; do
  cat "$results/$t.line" 2>/dev/null || { echo "$t: no report" ; failed=1; }
  if [ -f "$results/$t.fail" ]; then
    cat "$results/$t.fail" >&2
    failed=1
  fi
done
rm -rf "$results"
exit "$failed"
