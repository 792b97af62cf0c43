#!/usr/bin/env bash
# The kiosk's end-of-speech latencies on the replayed visit (fixtures/kiosk/visit: a
# question and two commands, at the recorded pace), ROUNDS runs (default 5) at THREADS
# threads (default 2): per utterance, the median and the spread of end of speech to the
# first token and to the whole answer.
#
#   bench/kiosk_latency.sh [THREADS]
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${1:-2}
rounds=${ROUNDS:-5}
cargo build --release --quiet
bin=${CARGO_TARGET_DIR:-target}/release/percept
out=$(mktemp)
for _ in $(seq "$rounds"); do
  "$bin" kiosk --json --replay fixtures/kiosk/visit --threads "$threads" 2>/dev/null >>"$out"
done
python3 - "$out" "$threads" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
by = {}
for r in rows:
    by.setdefault((r["seq"], r["transcript"]), []).append(r)
print(f"kiosk --replay fixtures/kiosk/visit, {sys.argv[2]} threads, {len(rows) // max(len(by), 1)} runs")
for (seq, t), rs in sorted(by.items()):
    kind = "action" if rs[0].get("action") else "answer"
    for key in ("end_of_speech_to_first_token_ms", "end_of_speech_to_answer_ms"):
        v = sorted(r[key] for r in rs)
        print(f"  {seq} {kind:6} {key[17:]:<15} median {statistics.median(v):6.0f} ms"
              f" (min {v[0]:.0f}, max {v[-1]:.0f})  {t!r}")
PY
rm -f "$out"
