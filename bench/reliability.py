"""The reliability soak: every fault scenario of tests/reliability over many seeds, and the figures.

    .venv/bin/python bench/reliability.py --seeds 1-20 [--scenario churn] [--json out.json]

A failing seed reproduces alone with `--seeds N --scenario NAME`; the fast variants of the same
scenarios run in `make test` (tests/reliability/test_reliability.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the scenarios import tests.support
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "reliability"))

from reliability_scenarios import SCENARIOS, Outcome, run


def seeds(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        low, _, high = part.partition("-")
        out += list(range(int(low), int(high or low) + 1))
    return out


async def soak(names: list[str], numbers: list[int]) -> list[Outcome]:
    outcomes = []
    for name in names:
        for seed in numbers:
            outcome = await run(name, seed)
            mark = "ok" if not outcome.problems else "FAIL"
            print(f"{name:14} seed {seed:3}  {mark:4}  {outcome.correct}/{outcome.total} nodes  "
                  f"{sum(outcome.injected.values()):4} faults  {outcome.seconds:5.1f}s", flush=True)
            for problem in outcome.problems:
                print(f"    {problem[:300]}", flush=True)
            outcomes.append(outcome)
    return outcomes


def table(outcomes: list[Outcome]) -> str:
    rows = ["| scenario | runs | failed runs | faults injected | nodes correct / total | mean s |",
            "| --- | ---: | ---: | --- | ---: | ---: |"]
    for name in dict.fromkeys(o.scenario for o in outcomes):
        mine = [o for o in outcomes if o.scenario == name]
        injected: Counter[str] = Counter()
        for o in mine:
            injected += o.injected
        kinds = ", ".join(f"{n} {k}" for k, n in sorted(injected.items()))
        rows.append(f"| {name} | {len(mine)} | {sum(1 for o in mine if o.problems)} | {kinds} | "
                    f"{sum(o.correct for o in mine)} / {sum(o.total for o in mine)} | "
                    f"{sum(o.seconds for o in mine) / len(mine):.1f} |")
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="1-10", help="e.g. 1-20 or 3,7,11")
    parser.add_argument("--scenario", action="append", choices=sorted(SCENARIOS), help="default: all")
    parser.add_argument("--json", type=Path, help="write every outcome here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.CRITICAL)
    outcomes = asyncio.run(soak(args.scenario or list(SCENARIOS), seeds(args.seeds)))
    print()
    print(table(outcomes))
    if args.json:
        args.json.write_text(json.dumps([{**o.__dict__, "injected": dict(o.injected)} for o in outcomes], indent=1))
    return 1 if any(o.problems for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
