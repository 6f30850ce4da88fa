#!/usr/bin/env bash
# GPU readiness check, under 8 minutes on one H100/H200 (see benchmarks/gpu_check.py for what it runs):
#   bash benchmarks/gpu_check.sh [OUT_DIR] [more gpu_check.py options]
# Writes OUT_DIR/gpu_check.md (default: $OUT, else gpu_check_results/). Without a CUDA device it stops at once
# with "no CUDA device" and exit status 1.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-${OUT:-gpu_check_results}}"
shift || true
exec "${PYTHON:-python3}" benchmarks/gpu_check.py --out "$out" "$@"
