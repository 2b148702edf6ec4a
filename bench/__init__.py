"""Benchmarks: `python -m bench.scale` (fleet scale on the embedded cluster); bench/gpu (the probe on a GPU)."""
