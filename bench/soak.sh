#!/usr/bin/env bash
# Soak: `percept describe` replaying its fixture in a loop and `percept kiosk` answering
# typed lines, side by side at one thread each, for SECONDS_TOTAL seconds (default 600);
# resident memory sampled every 5 s. Fails on RSS growth after the warm-up of more than
# 1% per hour, or on a lost, repeated or out-of-order item (bench/soak.py says how).
#
#   [SECONDS_TOTAL=3600] bench/soak.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
exec python3 bench/soak.py "${CARGO_TARGET_DIR:-target}/release/percept" "${SECONDS_TOTAL:-600}"
