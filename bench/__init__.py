"""Benchmarks: `python -m bench.scale` (fleet scale on the embedded cluster); bench/gpu (the probe on a GPU)."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # the checkout: profiles/ and docs/ are read and written here
