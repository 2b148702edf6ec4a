"""`torchproof probe`: run the probe on this machine and show what it found.

The probe runs exactly as in a validation pod (a subprocess of this Python, plan in TORCHPROOF_PLAN,
result in a file), so a local run also dry-runs a profile's plan on a machine without GPUs
(`--device cpu`). Its result is read back through the operator's own parser.

Exit codes, for scripts and CI: 0 every check passed or was skipped; 1 a check errored or timed out (the
table or JSON is still printed); 2 bad usage (an option, or a profile that cannot be read or is invalid);
3 the probe could not run or wrote no usable result.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from torchproof import logs
from torchproof.checks import BY_NAME, NAMES
from torchproof.checks.base import fmt
from torchproof.contract import PLAN_ENV, PLAN_SCHEMA
from torchproof.podspec import build_plan
from torchproof.probe import PROBE_PATH
from torchproof.profile import InvalidSpec, parse_profile
from torchproof.result import ProbeResult, UntrustedResult, parse_result

EXIT_OK, EXIT_CHECK_FAILED, EXIT_USAGE, EXIT_NO_RESULT = 0, 1, 2, 3
FAILED_STATUSES = ("error", "timeout")
DEFAULT_BUDGET_SECONDS = 120
# Past the budget the probe cuts its own checks; this covers interpreter start, torch import and writing.
GRACE_SECONDS = 60


class LocalProbeError(Exception):
    """The local run could not start or produced no usable result; the message says why."""


class BadProfile(LocalProbeError):
    """The profile file cannot be read or is not a valid profile: a usage error."""


@dataclass(frozen=True)
class LocalRun:
    raw: bytes
    result: ProbeResult
    stdout: str


def default_plan() -> dict[str, Any]:
    """Every check with the probe's own default sizes, as when no profile is given."""
    return {"schema": PLAN_SCHEMA, "profile": None, "device": "cuda",
            "timeBudgetSeconds": DEFAULT_BUDGET_SECONDS, "checks": {name: {} for name in NAMES}}


def profile_plan(path: str) -> dict[str, Any]:
    """The plan the operator would send for this profile file, or LocalProbeError naming the bad field."""
    try:
        doc = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        return build_plan(parse_profile(doc))
    except OSError as exc:
        raise BadProfile(f"{path}: cannot read: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise BadProfile(f"{path}: not YAML: {exc}") from None
    except InvalidSpec as exc:
        raise BadProfile(f"{path}: {exc}") from None


def local_plan(profile: str | None, device: str, timeout: float | None) -> dict[str, Any]:
    plan = profile_plan(profile) if profile else default_plan()
    plan = {**plan, "device": device}
    plan.pop("resultPath", None)
    if timeout is not None:
        plan["timeBudgetSeconds"] = timeout
    return plan


def run_local(plan: dict[str, Any], python: str | None = None) -> LocalRun:
    """Run probe.py with `python` (default: this one) under `plan`; the result it wrote, parsed as the operator
    parses it."""
    hard_limit = float(plan["timeBudgetSeconds"]) + GRACE_SECONDS
    with tempfile.TemporaryDirectory(prefix="torchproof-probe-") as tmp:
        result_path = Path(tmp) / "result.json"
        env = {**os.environ, PLAN_ENV: json.dumps(plan)}
        cmd = [python or sys.executable, str(PROBE_PATH), "--device", plan["device"], "--result", str(result_path)]
        try:
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=hard_limit, check=False)
        except subprocess.TimeoutExpired:
            raise LocalProbeError(f"the probe ran past {hard_limit:.0f} s and was killed") from None
        if proc.returncode != 0 or not result_path.exists():
            tail = proc.stderr.strip().splitlines()[-5:]
            raise LocalProbeError(f"the probe exited {proc.returncode} without a result: " + " | ".join(tail))
        raw = result_path.read_bytes()
    try:
        return LocalRun(raw=raw, result=parse_result(raw), stdout=proc.stdout)
    except UntrustedResult as exc:
        raise LocalProbeError(f"the probe's result breaks the contract: {exc}") from None


# -- the table -------------------------------------------------------------------------------------


def format_table(result: ProbeResult) -> str:
    """One line per check: name, status, seconds, and its key numbers (or why it did not run)."""
    rows = [("check", "status", "seconds", "numbers")]
    for name, c in result.checks.items():
        numbers = BY_NAME[name].describe(result, c) if c.status == "ok" else c.error or c.reason or ""
        rows.append((name, c.status, "-" if c.seconds is None else f"{c.seconds:.2f}", numbers))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:>{widths[2]}}  {r[3]}".rstrip() for r in rows]
    lines.append(f"probe {result.probe} on {result.device}, {fmt(result.seconds)} s in all")
    return "\n".join(lines)


def failed_checks(result: ProbeResult) -> list[str]:
    return [name for name, c in result.checks.items() if c.status in FAILED_STATUSES]


def main(argv: list[str], *, own_logging: bool = True) -> int:
    """`own_logging`: set up logging from this parser's options (False when `torchproof probe` already did)."""
    parser = argparse.ArgumentParser(prog="torchproof probe", description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n")[-1].strip(),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", help="profile YAML whose checks to run (default: every check)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda")
    parser.add_argument("--json", action="store_true", help="print the probe's compact result as JSON")
    parser.add_argument("--timeout", type=float, metavar="S",
                        help=f"time budget in seconds (default: the profile's, else {DEFAULT_BUDGET_SECONDS})")
    if own_logging:
        logs.add_arguments(parser)
    args = parser.parse_args(argv)
    if own_logging:
        logs.configure(args)
    if args.timeout is not None and args.timeout <= 0:
        parser.error("--timeout: expected a positive number of seconds")
    try:
        run = run_local(local_plan(args.profile, args.device, args.timeout))
    except BadProfile as exc:
        print(f"torchproof probe: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except LocalProbeError as exc:
        print(f"torchproof probe: {exc}", file=sys.stderr)
        return EXIT_NO_RESULT
    print(run.raw.decode("utf-8") if args.json else format_table(run.result))
    failed = failed_checks(run.result)
    if failed:
        print(f"torchproof probe: {len(failed)} check(s) errored or timed out: {', '.join(failed)}", file=sys.stderr)
        return EXIT_CHECK_FAILED
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
