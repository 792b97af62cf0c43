#!/usr/bin/env bash
# Peak resident memory (GNU time's maximum RSS) of percept's two apps on their bundled
# fixtures, 2 threads, each run ROUNDS times (default 3): the median and the spread.
#
#   bench/peak_rss.sh
#
# Uses the binary the README's commands build (cargo's default target folder unless
# CARGO_TARGET_DIR is set); builds it if needed.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${ROUNDS:-3}
cargo build --release --quiet
bin=${CARGO_TARGET_DIR:-target}/release/percept
[ -x /usr/bin/time ] || { echo "GNU time is needed: apt-get install time" >&2; exit 1; }

peak_mib() {
  /usr/bin/time -f '%M' -o /tmp/percept-rss.$$ "$bin" "$@" >/dev/null 2>/dev/null
  awk '{ printf "%.1f\n", $1 / 1024 }' /tmp/percept-rss.$$
}

measure() {
  local name=$1; shift
  local all=()
  for _ in $(seq "$rounds"); do all+=("$(peak_mib "$@" --threads 2)"); done
  printf '%s\n' "${all[@]}" | sort -n | awk -v name="$name" '
    { v[NR] = $1 } END { printf "%-36s peak RSS median %7.1f MiB (min %.1f, max %.1f, %d runs)\n",
      name, v[int((NR + 1) / 2)], v[1], v[NR], NR }'
}

measure "describe (fixtures/describe)" describe --json
measure "kiosk --audio questions.wav" kiosk --json --audio fixtures/kiosk/questions.wav
measure "kiosk --replay visit" kiosk --json --replay fixtures/kiosk/visit
rm -f /tmp/percept-rss.$$
