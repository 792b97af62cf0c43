#!/usr/bin/env bash
# Language-model speed of percept next to llama.cpp's, on the same GGUF file, the same
# machine and the same thread counts, run alternately in one go.
#
#   bench/llama_cpp.sh [THREADS...]        (default: 1 2)
#
# llama.cpp is built once from the llama-cpp-python sdist (which vendors it), fetched with
# pip, into $PERCEPT_BENCH_CACHE (default ~/.cache/percept-bench). Needs cmake and a C++
# compiler (Debian: apt-get install cmake g++).
set -euo pipefail
cd "$(dirname "$0")/.."
threads=("$@")
[ ${#threads[@]} -gt 0 ] || threads=(1 2)
rounds=${ROUNDS:-3}
cache=${PERCEPT_BENCH_CACHE:-$HOME/.cache/percept-bench}
bench_bin=$cache/llama.cpp/build/bin/llama-bench
completion_bin=$cache/llama.cpp/build/bin/llama-completion

if [ ! -x "$bench_bin" ]; then
  command -v cmake >/dev/null || { echo "cmake is needed: apt-get install cmake g++" >&2; exit 1; }
  mkdir -p "$cache/sdist"
  ls "$cache"/sdist/llama_cpp_python-*.tar.gz >/dev/null 2>&1 ||
    python3 -m pip download --no-deps --no-binary=llama-cpp-python llama-cpp-python -d "$cache/sdist"
  sdist=$(ls "$cache"/sdist/llama_cpp_python-*.tar.gz | head -1)
  rm -rf "$cache/src" && mkdir -p "$cache/src"
  tar -xzf "$sdist" -C "$cache/src"
  rm -rf "$cache/llama.cpp" && mv "$cache"/src/*/vendor/llama.cpp "$cache/llama.cpp"
  # The instruction sets this CPU has, named one by one rather than -march=native: CPUs
  # that advertise AMX can sit in VMs that do not enable it (llama-bench died with SIGILL
  # in its AMX kernel here), so AMX stays off.
  isa=(-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON)
  has() { grep -qw "$1" /proc/cpuinfo; }
  has avx512f && isa+=(-DGGML_AVX512=ON)
  has avx512vbmi && isa+=(-DGGML_AVX512_VBMI=ON)
  has avx512_vnni && isa+=(-DGGML_AVX512_VNNI=ON)
  has avx512_bf16 && isa+=(-DGGML_AVX512_BF16=ON)
  has avx_vnni && isa+=(-DGGML_AVX_VNNI=ON)
  cmake -S "$cache/llama.cpp" -B "$cache/llama.cpp/build" -DCMAKE_BUILD_TYPE=Release "${isa[@]}" \
    -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=OFF >&2
  cmake --build "$cache/llama.cpp/build" --target llama-bench -j "$(nproc)" >&2
fi
# llama-completion (for the memory comparison) came later: built into the same tree.
[ -x "$completion_bin" ] ||
  cmake --build "$cache/llama.cpp/build" --target llama-completion -j "$(nproc)" >&2

# Where the README's commands build (cargo's default unless CARGO_TARGET_DIR is set), so
# the burn stack is compiled once on a machine.
cargo build --release --quiet
target=${CARGO_TARGET_DIR:-target}
percept=$target/release/percept
model=$("$percept" models list --json | python3 -c 'import json,sys; print(json.loads(sys.stdin.readline())["path"])')
[ -f "$model" ] || { echo "model missing: run percept models pull" >&2; exit 1; }

# The machine and the instruction sets each side can use.
echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) cores"
echo "instruction sets: $(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -x -E 'avx2|fma|f16c|avx512f|avx512bw|avx512_vnni|avx_vnni|avx512_bf16|amx_int8' | tr '\n' ' ')"
echo "percept's kernels: $("$percept" bench llm -p 1 -n 1 -r 1 --json 2>/dev/null | python3 -c 'import json,sys; print(json.loads(sys.stdin.read()).get("kernels", "?"))')"

out=$(mktemp)
for t in "${threads[@]}"; do
  for r in $(seq "$rounds"); do
    # Alternate which runs first, so drift in the machine's state hits both alike.
    if (( r % 2 )); then order="llama percept"; else order="percept llama"; fi
    for who in $order; do
      if [ "$who" = llama ]; then
        "$bench_bin" -m "$model" -p 64 -n 64 -t "$t" -r 3 -o jsonl 2>/dev/null |
          python3 -c "
import json, sys
for line in sys.stdin:
    r = json.loads(line)
    test = 'pp' if r['n_prompt'] else 'tg'
    print('llama.cpp', $t, test, r['avg_ts'])" >>"$out"
      else
        "$percept" bench llm -p 64 -n 64 -r 3 --threads "$t" --json 2>/dev/null |
          python3 -c "
import json, sys
r = json.loads(sys.stdin.read())
print('percept', $t, 'pp', r['prompt_tok_s'])
print('percept', $t, 'tg', r['gen_tok_s'])" >>"$out"
      fi
    done
  done
done

python3 - "$out" <<'PY'
import sys, statistics as st
rows = [l.split() for l in open(sys.argv[1])]
res = {}
for who, t, test, v in rows:
    res.setdefault((int(t), test), {}).setdefault(who, []).append(float(v))
# Medians of the rounds, with their range: one slow round does not move the figure.
print(f"{len(rows) // max(len(res), 1) // 2} rounds each; tok/s, median (min-max)")
print(f"{'threads':>7} {'test':>5} {'llama.cpp':>22} {'percept':>22} {'ratio':>6}")
def cell(v):
    return f"{st.median(v):.1f} ({min(v):.1f}-{max(v):.1f})"
for (t, test), d in sorted(res.items()):
    l, p = st.median(d['llama.cpp']), st.median(d['percept'])
    name = 'pp64' if test == 'pp' else 'tg64'
    print(f"{t:>7} {name:>5} {cell(d['llama.cpp']):>22} {cell(d['percept']):>22} {p / l:>6.2f}")
PY
rm -f "$out"

# Peak resident memory answering the same chat prompt (32 greedy tokens, 2 threads).
# llama.cpp allocates its KV cache for the whole context up front (-c, default the model's
# 8192); percept grows its cache with the conversation, so both ends are shown.
peak_kb() {
  python3 -c 'import resource, subprocess, sys
subprocess.run(sys.argv[1:], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)' "$@"
}
prompt="What is the capital of France?"
ours=$(peak_kb "$percept" chat "$prompt" --max-tokens 32 --threads 2)
theirs=()
for ctx in 512 8192; do
  theirs+=("$(peak_kb "$completion_bin" -m "$model" -cnv -st -p "$prompt" -n 32 -t 2 --temp 0 -c "$ctx")")
done
python3 - "$ours" "${theirs[@]}" <<'PY'
import sys
ours, c512, c8192 = (int(v) / 1024 for v in sys.argv[1:])
print(f"\n{'peak RSS, same chat prompt':<30} {'MiB':>8} {'percept/llama.cpp':>18}")
print(f"{'percept chat':<30} {ours:>8.1f}")
for name, v in (("llama-completion -c 512", c512), ("llama-completion -c 8192", c8192)):
    print(f"{name:<30} {v:>8.1f} {ours / v:>18.2f}")
PY
