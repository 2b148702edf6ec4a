"""`python -m bench.scale`: the matrix (100/1,000/5,000 nodes by 1 and 5 profiles), or one configuration with flags."""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import shlex
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench import ROOT
from bench.scale.report import update_doc
from bench.scale.run import BenchError, Config, run

MATRIX = [(nodes, profiles) for nodes in (100, 1000, 5000) for profiles in (1, 5)]
DEFAULT_JSON = ROOT / "docs" / "bench" / "scale.json"
DEFAULT_DOC = ROOT / "docs" / "performance.md"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__)
    p.add_argument("--nodes", type=int, help="one configuration: this many GPU nodes (at least 20)")
    p.add_argument("--profiles", type=int, default=None, help="one configuration: this many profiles (default 1)")
    p.add_argument("--probe-seconds", type=float, default=1.0, help="simulated probe time (default 1.0)")
    p.add_argument("--max-concurrent", type=int, default=100, help="each profile's maxConcurrent (default 100)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds one configuration may take to converge")
    p.add_argument("--json", type=Path, default=None,
                   help=f"write the results here (default: {DEFAULT_JSON.relative_to(ROOT)} for the matrix, "
                        "stdout for one configuration)")
    p.add_argument("--doc", type=Path, default=None,
                   help=f"update this markdown file's fleet-scale section (default: {DEFAULT_DOC.relative_to(ROOT)} "
                        "for the matrix, none for one configuration)")
    p.add_argument("--cprofile", type=Path, default=None, help="run the operator under cProfile, stats to this file")
    return p


def configs(args: argparse.Namespace) -> list[Config]:
    common = {"probe_seconds": args.probe_seconds, "max_concurrent": args.max_concurrent, "timeout": args.timeout}
    if args.nodes is None and args.profiles is None:
        return [Config(nodes=n, profiles=p, **common) for n, p in MATRIX]
    if args.nodes is None:
        raise ValueError("--profiles needs --nodes")
    return [Config(nodes=args.nodes, profiles=args.profiles or 1, **common)]


def environment() -> dict[str, Any]:
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python -m bench.scale" + "".join(f" {shlex.quote(a)}" for a in sys.argv[1:]),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "machine": platform.machine(),
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        chosen = configs(args)
    except ValueError as exc:
        print(f"python -m bench.scale: {exc}", file=sys.stderr)
        return 2
    single = args.nodes is not None
    results: list[dict[str, Any]] = []
    failed = False
    for config in chosen:
        print(f"nodes={config.nodes} profiles={config.profiles} ...", file=sys.stderr, flush=True)
        with tempfile.TemporaryDirectory(prefix="bench-scale-") as workdir:
            try:
                result = asyncio.run(run(config, Path(workdir), args.cprofile))
            except BenchError as exc:  # recorded, and the other configurations still run
                print(f"python -m bench.scale: nodes={config.nodes} profiles={config.profiles}: {exc}",
                      file=sys.stderr)
                results.append({"config": asdict(config), "error": str(exc)[:2000]})
                failed = True
                continue
        print(f"  converged in {result['convergedSeconds']:.1f} s (ideal {result['idealSeconds']:.1f} s), "
              f"{result['writesPerValidation']:.2f} writes per validation, "
              f"operator {result['operator']['peakRssMiB']:.0f} MiB / {result['operator']['cpuSeconds']:.1f} CPU s",
              file=sys.stderr, flush=True)
        results.append(result)
    document = {**environment(), "results": results}
    json_path = args.json or (None if single else DEFAULT_JSON)
    if json_path is None:
        print(json.dumps(document, indent=2))
    else:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(document, indent=2) + "\n")
    doc_path = args.doc or (None if single else DEFAULT_DOC)
    if doc_path is not None:
        update_doc(doc_path, document)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
