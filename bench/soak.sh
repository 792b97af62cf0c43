#!/usr/bin/env bash
# Soak: the kiosk answering typed lines (questions, commands, talk, in a loop) for
# SECONDS_TOTAL seconds (default 600) at 2 threads, its resident memory sampled every
# second; prints the samples' start, peak and end, and the least-squares slope of RSS over
# the second half of the run in MiB per minute (a leak shows as a steady positive slope).
#
#   [SECONDS_TOTAL=3600] bench/soak.sh
set -euo pipefail
cd "$(dirname "$0")/.."
total=${SECONDS_TOTAL:-600}
cargo build --release --quiet
bin=${CARGO_TARGET_DIR:-target}/release/percept
lines=(
  "What time does the museum open on Sunday?"
  "Where is the cafe?"
  "Show me the map of the second floor."
  "Thank you."
  "How much is a ticket for a child?"
  "Can you switch the screen to French?"
  "It was the best of times, it was the worst of times."
  "What's the wifi password?"
)
samples=$(mktemp)
replies=$(mktemp)
trap 'rm -f "$samples" "$replies"' EXIT
(while :; do printf '%s\n' "${lines[@]}"; done) |
  "$bin" kiosk --text - --threads 2 --json >"$replies" 2>/dev/null &
pid=$(pgrep -n -f "$bin kiosk --text -")
for s in $(seq "$total"); do
  sleep 1
  rss=$(awk '/VmRSS/ { print $2 }' "/proc/$pid/status" 2>/dev/null) || break
  echo "$s $rss" >>"$samples"
done
kill "$pid" 2>/dev/null || true
python3 - "$samples" "$replies" <<'PY'
import sys
rows = [tuple(map(float, l.split())) for l in open(sys.argv[1]) if l.strip()]
if len(rows) < 10:
    sys.exit("too few samples: did the kiosk start?")
half = rows[len(rows) // 2:]
n = len(half)
mx = sum(t for t, _ in half) / n
my = sum(r for _, r in half) / n
slope = sum((t - mx) * (r - my) for t, r in half) / sum((t - mx) ** 2 for t, _ in half)
mib = lambda kb: kb / 1024
replies = sum(1 for _ in open(sys.argv[2]))
print(f"soak: {len(rows)} s, {replies} replies, RSS start {mib(rows[0][1]):.1f} MiB, peak "
      f"{mib(max(r for _, r in rows)):.1f} MiB, end {mib(rows[-1][1]):.1f} MiB; "
      f"slope over the second half {mib(slope) * 60:+.3f} MiB/min")
PY
