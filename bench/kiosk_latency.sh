#!/usr/bin/env bash
# The kiosk's end-of-speech latencies on the replayed visit (fixtures/kiosk/visit: a
# question and two commands, at the recorded pace), ROUNDS runs (default 5) at THREADS
# threads (default 2): per utterance, the median and the spread of end of speech to the
# first token and to the whole answer.
#
# With BASELINE=path/to/another/percept, runs it and this build alternately (same machine,
# same minutes) and prints both, for an A/B of a change.
#
#   [BASELINE=BIN] bench/kiosk_latency.sh [THREADS]
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${1:-2}
rounds=${ROUNDS:-5}
cargo build --release --quiet
bin=${CARGO_TARGET_DIR:-target}/release/percept
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
run() {
  "$1" kiosk --json --replay fixtures/kiosk/visit --knowledge fixtures/kiosk/museum.toml \
    --threads "$threads" 2>/dev/null >>"$2"
}
for _ in $(seq "$rounds"); do
  if [ -n "${BASELINE:-}" ]; then run "$BASELINE" "$dir/baseline"; fi
  run "$bin" "$dir/this"
done
python3 - "$dir" "$threads" <<'PY'
import json, os, statistics, sys
for name in ("baseline", "this"):
    path = os.path.join(sys.argv[1], name)
    if not os.path.exists(path):
        continue
    rows = [json.loads(l) for l in open(path)]
    by = {}
    for r in rows:
        by.setdefault((r["seq"], r["transcript"]), []).append(r)
    runs = len(rows) // max(len(by), 1)
    print(f"{name}: kiosk --replay fixtures/kiosk/visit, {sys.argv[2]} threads, {runs} runs")
    for (seq, t), rs in sorted(by.items()):
        kind = "action" if rs[0].get("action") else "answer"
        for key in ("end_of_speech_to_first_token_ms", "end_of_speech_to_answer_ms"):
            v = sorted(r[key] for r in rs)
            print(f"  {seq} {kind:6} {key[17:]:<15} median {statistics.median(v):6.0f} ms"
                  f" (min {v[0]:.0f}, max {v[-1]:.0f})  {t!r}")
PY
