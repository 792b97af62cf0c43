#!/usr/bin/env bash
# The GPU check: every model's wgpu test (compared with the CPU path, and for the LLM with
# llama.cpp) and the language model's speed on the GPU. A few minutes on a machine with a
# Vulkan driver. Without a GPU the tests run on Mesa's llvmpipe, as in CI, but the speed
# figures take long there (decode is about 1 token per second): skip them with NO_BENCH=1.
#
#   bench/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
# Where the README's commands build (cargo's default unless CARGO_TARGET_DIR is set).
target=${CARGO_TARGET_DIR:-target}
command -v nvidia-smi >/dev/null && nvidia-smi -L
cargo test --release --workspace --test vision --test silero --test whisper \
  --test centernet --test llm_reference -- wgpu --nocapture
[ -n "${NO_BENCH:-}" ] && exit 0
cargo build --release --quiet
"$target/release/percept" bench llm --device wgpu
"$target/release/percept" bench llm --device wgpu -p 128 -n 128
