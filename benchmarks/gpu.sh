#!/usr/bin/env bash
# The GPU benchmark as one command with a hard time budget (default 7.5 minutes):
# ResNet-101, bf16, channels_last on synthetic data; prediction, IFGSM (with and without early
# exit) and LIME at n=1000, each next to its FLOP floor. Prints a Markdown table and writes it to
# $OUT/gpu_benchmark.md when $OUT is set. Without a GPU it runs the small CPU configuration.
#
#   benchmarks/gpu.sh                   # auto: GPU if torch sees one
#   benchmarks/gpu.sh --device cpu      # any extra arguments go to bench_gpu.py
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-}"
if [[ -z "$PY" ]]; then
  if [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=python3; fi
fi
BUDGET="${GPU_BENCH_BUDGET_S:-450}"
ARGS=()
if [[ -n "${OUT:-}" ]]; then ARGS+=(--json "$OUT/gpu_benchmark.json"); fi
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader || true
fi
exec timeout --kill-after=15 "$BUDGET" "$PY" benchmarks/bench_gpu.py "${ARGS[@]}" "$@"
