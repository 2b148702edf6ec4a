"""The release catalogue: profiles/releases.yaml holds the reference's rows, every committed profile is what it
generates, no unconfirmed value becomes a requirement, and `torchproof profile generate` writes and checks."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from torchproof import cli, releases
from torchproof.profile import parse_profile

ROOT = Path(__file__).resolve().parents[2]
TABLE_PATH = ROOT / "profiles" / "releases.yaml"
TABLE: dict[str, Any] = yaml.safe_load(TABLE_PATH.read_text())
REFERENCE = (ROOT.parent / "shared" / "reference" / "ngc-pytorch-releases.md").read_text()
ALL = releases.releases(TABLE)


def spec(release: str, table: dict[str, Any] = TABLE) -> dict[str, Any]:
    return releases.generate(table, release).body["spec"]  # type: ignore[no-any-return]


def said(release: str) -> str:
    """The profile's comments as one line."""
    text = releases.profile_text(TABLE, release)
    return " ".join(line.removeprefix("# ") for line in text.splitlines() if line.startswith("#"))


def row(release: str, table: dict[str, Any] = TABLE) -> dict[str, Any]:
    return next(r for r in table["releases"] if r["release"] == release)


def test_the_table_has_every_release_the_reference_lists() -> None:
    listed = re.findall(r"^\| (\d\d\.\d\d) \|", REFERENCE.split("## Table 1")[1].split("## Table 2")[0], re.MULTILINE)
    assert listed == ALL
    assert (len(ALL), ALL[0], ALL[-1]) == (76, "20.01", "26.07")
    assert not {"20.04", "20.05", "25.07"} & set(ALL)  # never published


@pytest.mark.parametrize("release", ALL)
def test_the_committed_profile_is_what_the_table_generates(release: str) -> None:
    path = ROOT / "profiles" / releases.file_name(release)
    assert path.read_text(encoding="utf-8") == releases.profile_text(TABLE, release), "run `make profiles`"


def test_no_profile_is_left_that_the_table_does_not_list() -> None:
    assert sorted(p.name for p in (ROOT / "profiles").glob("pytorch-*.yaml")) == sorted(
        releases.file_name(r) for r in ALL)


@pytest.mark.parametrize("release", ALL)
def test_only_confirmed_components_are_in_the_spec_and_the_rest_is_said(release: str) -> None:
    r = row(release)
    confirmed = {k: v for k, v in r["components"].items() if not str(v).endswith(" (U)")}
    assert spec(release).get("components", {}) == confirmed
    for name, value in r["components"].items():
        if str(value).endswith(" (U)"):
            assert f"{name} {value.removesuffix(' (U)')}" in said(release), name
    parse_profile(releases.generate(TABLE, release).body)


@pytest.mark.parametrize("release", [r["release"] for r in TABLE["releases"]
                                     if str(r["driver"].get("printed", "")).endswith(" (U)")])
def test_an_unconfirmed_driver_number_is_a_comment_never_the_minimum(release: str) -> None:
    printed = row(release)["driver"]["printed"].removesuffix(" (U)")
    minimum = spec(release)["requirements"]["driver"]["minimum"]
    bounds = {*TABLE["toolkitDrivers"].values(), *TABLE["minorVersionFloors"].values()}
    built = row(release)["driver"].get("builtFor")
    if built and not built.endswith(" (U)"):
        bounds.add(built.split(".")[0])
    assert minimum in bounds
    assert f"driver as printed {printed}" in said(release)


def test_confirming_a_value_puts_it_in_the_spec_and_unconfirming_takes_it_out() -> None:
    table = copy.deepcopy(TABLE)
    row("24.07", table)["driver"]["printed"] = "555"
    assert spec("24.07", table)["requirements"]["driver"]["minimum"] == "555"
    row("24.10", table)["driver"]["printed"] = "560 (U)"
    assert spec("24.10", table)["requirements"]["driver"]["minimum"] == "560"  # CUDA 12.6's own minimum
    row("24.10", table)["components"]["cuda"] = "12.6.2 (U)"
    assert spec("24.10", table)["requirements"]["driver"]["minimum"] == "525"  # the CUDA 12 floor
    assert "cuda" not in spec("24.10", table)["components"]


def test_24_10_names_hopper_among_pascal_to_ada() -> None:
    req = spec("24.10")["requirements"]
    assert req["minComputeCapability"] == "6.0"
    assert req["architectures"] == ["Pascal", "Volta", "Turing", "Ampere", "Hopper", "AdaLovelace"]
    assert req["driver"]["minimum"] == "560"


def test_pascal_and_volta_are_dropped_from_25_01() -> None:
    for release in ALL:
        cc = spec(release)["requirements"]["minComputeCapability"]
        assert cc == ("7.5" if release >= "25.01" else "6.0"), release
    assert "Pascal" not in spec("25.01")["requirements"]["architectures"]
    assert "Blackwell" in spec("25.01")["requirements"]["architectures"]


@pytest.mark.parametrize(("release", "minimum"), [
    ("24.03", "550"), ("24.05", "550"), ("24.06", "555"),  # the notes print a stale 545
    ("25.01", "570"), ("25.02", "570"), ("25.03", "570"),  # stale 560
    ("25.08", "580"), ("25.10", "580"),  # stale 575; CUDA 13.0
    ("26.03", "595"), ("26.07", "610"),  # no number printed: the image's built-for driver
    ("26.02", "580"), ("25.12", "580"),  # CUDA 13.1's 590 is unconfirmed: the CUDA 13 floor
    ("20.06", "450"), ("21.04", "465.19.01"), ("25.04", "575"),  # the notes' own number
])
def test_the_toolkit_minimum_replaces_a_stale_or_missing_number(release: str, minimum: str) -> None:
    assert spec(release)["requirements"]["driver"]["minimum"] == minimum


def test_branches_not_older_than_the_minimum_are_left_out_and_said() -> None:
    branches = [b["branch"] for b in spec("20.01")["requirements"]["driver"]["datacenterBranches"]]
    assert branches == [384, 396, 410, 418]  # 440.30 is on the minimum's own branch (440.33.01)
    assert "Datacenter branch 440.30 left out" in said("20.01")


def test_amp_checks_only_what_the_release_ships() -> None:
    assert spec("20.01")["checks"]["amp"] == {"enabled": False}  # Apex unconfirmed, no native AMP yet
    assert spec("20.03")["checks"]["amp"] == {"native": False, "apex": True, "bf16": False}
    assert spec("24.10")["checks"]["amp"] == {"native": True, "apex": False, "bf16": True}
    assert spec("25.10")["checks"]["amp"] == {"native": True, "apex": True, "bf16": True}


def test_the_20_06_profile_keeps_its_hand_tuned_fields() -> None:
    s = spec("20.06")
    assert s["imagePullPolicy"] == "IfNotPresent"
    assert s["checks"]["tensorCores"] == {"enabled": True, "size": 4096, "iterations": 20, "minSpeedup": 2.0}
    assert len(s["knownIssues"]) == 12
    assert s["requirements"]["architectures"] == ["Pascal", "Volta", "Turing"]


# ---- the command -----------------------------------------------------------------------------------------


def generate(*args: str) -> int:
    return cli.main(["profile", "generate", "--table", str(TABLE_PATH), *args])


def test_generate_writes_one_release(tmp_path: Path) -> None:
    assert generate("24.10", "--out", str(tmp_path)) == 0
    assert [p.name for p in tmp_path.iterdir()] == ["pytorch-24.10.yaml"]
    assert (tmp_path / "pytorch-24.10.yaml").read_text() == (ROOT / "profiles" / "pytorch-24.10.yaml").read_text()


def test_check_fails_on_a_difference_and_all_removes_strays(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert generate("--all", "--out", str(tmp_path)) == 0
    assert generate("--all", "--check", "--out", str(tmp_path)) == 0
    (tmp_path / "pytorch-24.10.yaml").write_text("edited by hand\n")
    (tmp_path / "pytorch-99.01.yaml").write_text("a release the table does not list\n")
    assert generate("--all", "--check", "--out", str(tmp_path)) == 1
    err = capsys.readouterr().err
    assert "pytorch-24.10.yaml: differs" in err and "pytorch-99.01.yaml: differs" in err
    assert generate("--all", "--out", str(tmp_path)) == 0
    assert not (tmp_path / "pytorch-99.01.yaml").exists()
    assert generate("--all", "--check", "--out", str(tmp_path)) == 0


def test_generate_refuses_an_unknown_release(capsys: pytest.CaptureFixture[str]) -> None:
    assert generate("20.04", "--stdout") == 2
    assert "release 20.04 is not in the catalogue" in capsys.readouterr().err


def test_stdout_prints_documents_kubectl_applies(capsys: pytest.CaptureFixture[str]) -> None:
    assert generate("24.10", "25.01", "--stdout") == 0
    docs = list(yaml.safe_load_all(capsys.readouterr().out))
    assert [d["metadata"]["name"] for d in docs] == ["pytorch-24.10", "pytorch-25.01"]
