#!/usr/bin/env bash
# Measure the probe on this machine's GPU: bench/gpu/run.sh [--device cpu|cuda] [--size N] ...
# Uses the torch found here ($PYTHON, else python3); writes JSON and a markdown snippet to $OUT or ./bench-out.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
exec "${PYTHON:-python3}" "$here/probe_bench.py" "$@"
