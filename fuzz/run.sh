#!/usr/bin/env bash
# Runs every fuzz target (or those named) for SECONDS_EACH seconds (default 300), one after the
# other, from its committed seeds (fuzz/seeds/T) and the corpus kept in fuzz/corpus/T, and
# prints one line per target: executions, corpus size, crashes (files in fuzz/artifacts/T).
# Needs cargo-fuzz (`cargo install cargo-fuzz`); RUSTC_BOOTSTRAP lets stable build the
# sanitizer flags libFuzzer wants.
#
#   [SECONDS_EACH=3600] fuzz/run.sh [TARGET...]
set -euo pipefail
cd "$(dirname "$0")"
seconds=${SECONDS_EACH:-300}
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=($(sed -n 's/^name = "\(.*\)"$/\1/p' Cargo.toml | grep -v '^percept-fuzz$'))
fi
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "seeds/$t" "artifacts/$t"
  log=$(mktemp)
  RUSTC_BOOTSTRAP=1 cargo fuzz run -O "$t" "corpus/$t" "seeds/$t" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 >"$log" 2>&1 || true
  execs=$(grep -o '^#[0-9]*' "$log" | tail -n 1 | tr -d '#')
  crashes=$(find "artifacts/$t" -type f | wc -l)
  printf '%-14s %5s s  %12s executions  corpus %5s  crashes %s\n' \
    "$t" "$seconds" "${execs:-0}" "$(ls "corpus/$t" | wc -l)" "$crashes"
  rm -f "$log"
done
