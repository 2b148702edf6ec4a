"""Time the probe, every check, on a real GPU and check its GEMM estimate against a long torch.matmul reference.

Standalone on purpose (standard library and torch only): a GPU machine has the working tree and its
own torch, not torchproof's virtualenv. Targets: the whole probe within 20 s of wall time, CUDA
start-up included; each GEMM TFLOP/s figure within 15% of the reference at the same size. Each check's
numbers are recorded, and the fp16/bf16 GEMM figures are set against the GPU catalogue's dense peak
(torchproof/catalogue.py, read from the working tree when this Python can import it).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

PROBE = Path(__file__).resolve().parents[2] / "operator" / "torchproof" / "probe" / "probe.py"
PLAN_SCHEMA = "torchproof.dev/probe-plan/v1"
CHECKS = ("environment", "gpu", "cuda", "amp", "tensorCores", "channelsLast", "conv3d", "multiGpu", "sdpa", "fp8",
          "nccl", "memory", "compile")
OPERATOR = Path(__file__).resolve().parents[2] / "operator"
WALL_TARGET_SECONDS = 20.0
GEMM_TOLERANCE = 0.15


def run_probe(device: str, size: int, iterations: int, out: Path) -> tuple[float, dict[str, Any]]:
    """The probe as the pod runs it, in a fresh interpreter: wall time includes import and CUDA start."""
    checks: dict[str, Any] = {name: {} for name in CHECKS}
    checks["tensorCores"] = {"size": size, "iterations": iterations}
    plan = {"schema": PLAN_SCHEMA, "device": device, "timeBudgetSeconds": 120, "checks": checks}
    result_path = out / "probe-result.json"
    env = {**os.environ, "TORCHPROOF_PLAN": json.dumps(plan)}
    started = time.monotonic()
    proc = subprocess.run([sys.executable, str(PROBE), "--device", device, "--result", str(result_path)],
                          env=env, capture_output=True, text=True, timeout=300, check=False)
    wall = time.monotonic() - started
    (out / "probe-stdout.txt").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise SystemExit(f"probe exited {proc.returncode}: {proc.stderr[-2000:]}")
    return wall, json.loads(result_path.read_text())


def reference_tflops(device: str, dtype_name: str, size: int, iterations: int) -> float:
    """A long, plain torch.matmul run: warm-up, then `iterations` back to back, timed on the device."""
    import torch

    if hasattr(torch.backends.cuda.matmul, "allow_tf32"):
        torch.backends.cuda.matmul.allow_tf32 = False
    dtype = getattr(torch, {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}[dtype_name])
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    for _ in range(max(10, iterations // 10)):
        torch.matmul(a, b)
    if device == "cuda":
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iterations):
            torch.matmul(a, b)
        end.record()
        end.synchronize()
        seconds = start.elapsed_time(end) / 1000.0
    else:
        t0 = time.perf_counter()
        for _ in range(iterations):
            torch.matmul(a, b)
        seconds = time.perf_counter() - t0
    return float(2.0 * size**3 * iterations / seconds / 1e12)


def catalogue_peak(product: str) -> dict[str, float | None] | None:
    """The catalogue's dense peak TFLOP/s of this board; None where it lists none or cannot be imported."""
    sys.path.insert(0, str(OPERATOR))
    try:
        from torchproof import catalogue
    except Exception:  # an older Python than the operator's: the peak is then not compared
        return None
    finally:
        sys.path.remove(str(OPERATOR))
    peak = catalogue.peak(product)
    return None if peak is None else {"fp32": peak.fp32, "tf32": peak.tf32, "fp16": peak.fp16, "bf16": peak.bf16}


def numbers(check: dict[str, Any]) -> str:
    """A check's own fields, compactly: sub-runs as name(field=value ...)."""
    parts = []
    for key, value in check.items():
        if key in ("status", "seconds"):
            continue
        if isinstance(value, dict):
            inner = " ".join(f"{k}={v}" for k, v in value.items())
            parts.append(f"{key}({inner})")
        else:
            parts.append(f"{key}={value}")
    return ", ".join(parts).replace("|", "/")


def gpu_name(result: dict[str, Any], device: str) -> str:
    devices = (result.get("gpu") or {}).get("devices") or []
    if devices:
        return str(devices[0].get("name"))
    if device == "cuda":
        import torch

        return str(torch.cuda.get_device_name(0))
    return "cpu"


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"### Probe on {report['gpu']} ({report['date']}, torch {report['torch']}, {report['device']})",
        "",
        f"Whole probe: {report['wallSeconds']:.1f} s wall (target <= {WALL_TARGET_SECONDS:.0f} s: "
        f"{'met' if report['wallTargetMet'] else 'missed'}).",
        "",
        "| check | status | seconds | numbers |",
        "| --- | --- | --- | --- |",
    ]
    lines += [f"| {name} | {c['status']} | {c['seconds']:.2f} | {numbers(report['result']['checks'][name])} |"
              for name, c in report["checks"].items()]
    lines += ["", f"GEMM at n={report['gemmSize']} (probe: {report['probeIterations']} iterations; reference: "
              f"{report['referenceIterations']}):", "",
              "| precision | probe TFLOP/s | reference TFLOP/s | deviation | catalogue peak | of peak |",
              "| --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {g['precision']} | {g['probe']:.3g} | {g['reference']:.3g} | {g['deviation']:+.1%} | "
              f"{'-' if g['peak'] is None else format(g['peak'], 'g')} | "
              f"{'-' if g['ofPeak'] is None else format(g['ofPeak'], '.0%')} |" for g in report["gemm"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda")
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--iterations", type=int, default=20, help="the probe's GEMM iterations")
    parser.add_argument("--reference-iterations", type=int, default=500)
    parser.add_argument("--out", default=os.environ.get("OUT") or "bench-out")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    wall, result = run_probe(args.device, args.size, args.iterations, out)
    tc = result["checks"].get("tensorCores", {})
    size = tc.get("size", args.size)  # the probe caps sizes in CPU mode
    gemm = []
    name = gpu_name(result, args.device)
    peaks = catalogue_peak(name) if args.device == "cuda" else None
    for precision in ("fp32", "fp16", "bf16"):
        measured = tc.get(precision)
        if measured:
            ref = reference_tflops(args.device, precision, size, args.reference_iterations)
            deviation = measured / ref - 1.0
            peak = (peaks or {}).get(precision)
            gemm.append({"precision": precision, "probe": measured, "reference": ref, "deviation": deviation,
                         "withinTolerance": abs(deviation) <= GEMM_TOLERANCE, "peak": peak,
                         "ofPeak": None if peak is None else measured / peak})
    import torch

    report = {
        "date": datetime.date.today().isoformat(), "device": args.device, "gpu": name,
        "torch": torch.__version__, "wallSeconds": wall, "wallTargetMet": wall <= WALL_TARGET_SECONDS,
        "checks": {name: {"status": c["status"], "seconds": c["seconds"]} for name, c in result["checks"].items()},
        "gemmSize": size, "probeIterations": tc.get("iterations"), "referenceIterations": args.reference_iterations,
        "gemm": gemm, "gemmTargetMet": all(g["withinTolerance"] for g in gemm) and bool(gemm),
        "result": result,
    }
    (out / "probe_bench.json").write_text(json.dumps(report, indent=2))
    (out / "probe_bench.md").write_text(markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
