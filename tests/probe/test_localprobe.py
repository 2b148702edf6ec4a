"""`torchproof probe`: plans from profiles, the subprocess run, the table and --json."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from probe_harness import assert_contract
from torchproof import localprobe
from torchproof.checks import NAMES
from torchproof.result import parse_result

PROFILE = Path(__file__).resolve().parents[2] / "profiles" / "pytorch-20.06.yaml"


@pytest.fixture(scope="module")
def table() -> str:
    proc = subprocess.run([sys.executable, "-m", "torchproof.localprobe", "--device", "cpu"],
                          capture_output=True, text=True, timeout=120, check=True)
    return proc.stdout


def test_the_module_prints_a_table_of_every_check(table: str) -> None:
    lines = table.splitlines()
    assert lines[0].split() == ["check", "status", "seconds", "numbers"]
    rows = {line.split()[0]: line.split()[1] for line in lines[1:-1]}
    assert rows == {"environment": "ok", "gpu": "ok", "cuda": "skipped", "amp": "ok", "tensorCores": "ok",
                    "channelsLast": "ok", "conv3d": "ok", "multiGpu": "skipped", "sdpa": "ok", "fp8": "skipped",
                    "nccl": "skipped", "memory": "ok", "compile": "ok"}
    assert "native bfloat16: loss" in table and "0 NaN in 2 iterations" in table
    assert lines[-1].startswith("probe 1.0 on cpu")


def test_json_runs_the_profiles_plan(capsys: pytest.CaptureFixture[str]) -> None:
    assert localprobe.main(["--profile", str(PROFILE), "--device", "cpu", "--json", "--timeout", "60"]) == 0
    out = capsys.readouterr().out
    doc = assert_contract(out.strip().encode())
    assert doc["checks"]["amp"]["bf16"] == {"skipped": "not in the plan"}  # the 20.06 profile has bf16: false


def test_the_plan_follows_the_profile_device_and_timeout() -> None:
    plan = localprobe.local_plan(str(PROFILE), "cpu", 30)
    assert plan["device"] == "cpu" and plan["timeBudgetSeconds"] == 30
    assert "resultPath" not in plan
    assert plan["checks"]["amp"] == {"steps": 8, "native": True, "apex": True, "bf16": False}
    assert localprobe.local_plan(None, "cuda", None)["checks"].keys() == set(NAMES)


def test_a_bad_profile_names_the_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = yaml.safe_load(PROFILE.read_text())
    doc["spec"]["checks"]["amp"]["steps"] = 0
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(doc))
    assert localprobe.main(["--profile", str(bad), "--device", "cpu"]) == localprobe.EXIT_USAGE
    err = capsys.readouterr().err
    assert f"{bad}: spec.checks.amp.steps" in err


@pytest.mark.parametrize(("content", "message"), [(None, "cannot read"), ("a: [", "not YAML")])
def test_an_unreadable_profile_is_a_clear_error(tmp_path: Path, content: str | None, message: str) -> None:
    path = tmp_path / "p.yaml"
    if content is not None:
        path.write_text(content)
    with pytest.raises(localprobe.LocalProbeError, match=f"{path}: {message}"):
        localprobe.profile_plan(str(path))


def test_a_probe_that_writes_no_result_is_reported(tmp_path: Path) -> None:
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\necho 'no torch here' >&2\nexit 4\n")
    fake.chmod(0o755)
    with pytest.raises(localprobe.LocalProbeError, match="exited 4 without a result: no torch here"):
        localprobe.run_local(localprobe.local_plan(None, "cpu", 5), python=str(fake))


def test_the_table_shows_errors_and_reasons_instead_of_numbers() -> None:
    raw = json.dumps({
        "schema": "torchproof.dev/probe-result/v1", "probe": "1.0", "device": "cuda", "seconds": 2.5,
        "gpu": {"source": "nvml", "driver": "450.51.06", "cudaDriver": "11.0", "count": 1,
                "devices": [{"index": 0, "name": "Tesla T4", "cc": "7.5", "memoryMiB": 15109}]},
        "checks": {
            "gpu": {"status": "ok", "seconds": 0.05},
            "cuda": {"status": "error", "seconds": 1.0, "available": False,
                     "error": "RuntimeError: CUDA driver version is insufficient for CUDA runtime version"},
            "tensorCores": {"status": "ok", "seconds": 1.2, "size": 4096, "fp32": 7.9, "fp16": 52.1,
                            "fp16Speedup": 6.6},
            "conv3d": {"status": "timeout", "seconds": 100.0},
            "multiGpu": {"status": "skipped", "seconds": 0.0, "reason": "1 GPU in the pod"},
        },
    })
    lines = localprobe.format_table(parse_result(raw)).splitlines()
    assert "nvml: driver 450.51.06, cuda driver 11.0, 1 GPU: Tesla T4 (cc 7.5, 15109 MiB)" in lines[1]
    assert lines[2].split(None, 3)[1:] == ["error", "1.00",
                                           "RuntimeError: CUDA driver version is insufficient for CUDA runtime version"]
    assert "n=4096: fp32 7.9, fp16 52.1 TFLOP/s (fp16 x6.6)" in lines[3]
    assert lines[4].split() == ["conv3d", "timeout", "100.00"]
    assert lines[5].endswith("1 GPU in the pod")


def fake_probe(tmp_path: Path, statuses: dict[str, str]) -> Path:
    """A `python` that writes a contract-valid result with these check statuses where the probe would."""
    result = {"schema": "torchproof.dev/probe-result/v1", "probe": "1.0", "device": "cpu", "seconds": 1.0,
              "checks": {name: {"status": status, "seconds": 0.1} for name, status in statuses.items()}}
    (tmp_path / "result.json").write_text(json.dumps(result))
    fake = tmp_path / "python"
    fake.write_text(f'#!/bin/sh\nwhile [ "$1" != --result ]; do shift; done\ncp {tmp_path}/result.json "$2"\n')
    fake.chmod(0o755)
    return fake


@pytest.mark.parametrize(("statuses", "code"), [
    ({"gpu": "ok", "conv3d": "ok"}, localprobe.EXIT_OK),
    ({"gpu": "ok", "multiGpu": "skipped"}, localprobe.EXIT_OK),
    ({"gpu": "ok", "cuda": "error"}, localprobe.EXIT_CHECK_FAILED),
    ({"gpu": "ok", "conv3d": "timeout"}, localprobe.EXIT_CHECK_FAILED),
])
def test_the_exit_code_says_whether_a_check_errored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    statuses: dict[str, str], code: int,
) -> None:
    monkeypatch.setattr(sys, "executable", str(fake_probe(tmp_path, statuses)))
    assert localprobe.main(["--device", "cpu"]) == code
    out, err = capsys.readouterr()
    assert out.splitlines()[0].split() == ["check", "status", "seconds", "numbers"]  # the table is still printed
    failed = [name for name, status in statuses.items() if status in ("error", "timeout")]
    assert err == (f"torchproof probe: 1 check(s) errored or timed out: {failed[0]}\n" if failed else "")


@pytest.mark.parametrize(("argv", "why"), [
    (["--device", "tpu"], "error: argument --device: invalid choice: 'tpu'"),
    (["--timeout", "0"], "error: --timeout: expected a positive number of seconds"),
    (["--profile", "/nonexistent/profile.yaml"], "/nonexistent/profile.yaml: cannot read: No such file"),
])
def test_bad_usage_exits_2(argv: list[str], why: str, capsys: pytest.CaptureFixture[str]) -> None:
    try:
        code = localprobe.main(argv)
    except SystemExit as exc:  # argparse's own errors
        code = int(str(exc.code))
    assert code == localprobe.EXIT_USAGE
    assert why in capsys.readouterr().err.splitlines()[-1]


def test_a_probe_without_a_result_exits_3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\necho 'no torch here' >&2\nexit 4\n")
    fake.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(fake))
    assert localprobe.main(["--device", "cpu", "--timeout", "5"]) == localprobe.EXIT_NO_RESULT
    assert capsys.readouterr().err == "torchproof probe: the probe exited 4 without a result: no torch here\n"


def test_the_cli_passes_its_exit_code_through(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "torchproof.cli", "probe", "--profile", str(tmp_path / "none.yaml")],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == localprobe.EXIT_USAGE and proc.stdout == ""
    assert proc.stderr.startswith("torchproof probe: ") and proc.stderr.count("\n") == 1
