"""PyTorchReleaseProfiles generated from the release catalogue (profiles/releases.yaml).

One facts table holds what the reference knows of every NGC PyTorch release, each value confirmed or
marked " (U)"; this module turns one row into a profile. An unconfirmed value never becomes part of the
spec: it goes into the profile's comments, and where a requirement has no confirmed value the weakest
bound that is confirmed stands in (the CUDA major's floor, the compute-capability milestone), so that the
probe, not a guess, decides. Pure: text in, text out; `torchproof profile generate` is the shell.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import yaml

from torchproof.versions import DriverVersion

UNCONFIRMED: Final = " (U)"
COMPONENTS: Final = ("cuda", "pytorch", "python", "ubuntu", "cudnn", "nccl", "tensorrt")
IMAGE: Final = "nvcr.io/nvidia/pytorch:{release}-py3"
REVALIDATE_AFTER: Final = "168h"
WIDTH: Final = 112
# Where a profile's spec keys go, in the order the hand-written profiles have them.
#: Checks that need a torch API a release may predate; `features` in the table says from which release.
CHECK_FEATURES: Final = ("sdpa", "fp8", "compile")
SPEC_ORDER: Final = ("release", "image", "imagePullPolicy", "components", "requirements", "checks", "knownIssues",
                     "validation", "maxConcurrent", "revalidateAfter")


class CatalogueError(ValueError):
    """The facts table cannot give a profile for this release."""


def file_name(release: str) -> str:
    return f"pytorch-{release}.yaml"


def _split(raw: Any) -> tuple[str, bool]:
    """(value, confirmed) of one cell."""
    text = str(raw)
    if text.endswith(UNCONFIRMED):
        return text[: -len(UNCONFIRMED)], False
    return text, True


def _key(release: str) -> tuple[int, int]:
    year, month = release.split(".")
    return int(year), int(month)


@dataclass(frozen=True)
class Generated:
    """A profile and the comment lines that say where each requirement came from."""

    release: str
    body: dict[str, Any]
    comments: tuple[str, ...]


def releases(table: Mapping[str, Any]) -> list[str]:
    """Every release the table lists, oldest first."""
    return sorted((str(r["release"]) for r in table["releases"]), key=_key)


def _row(table: Mapping[str, Any], release: str) -> Mapping[str, Any]:
    for row in table["releases"]:
        if str(row["release"]) == release:
            return row  # type: ignore[no-any-return]
    raise CatalogueError(f"release {release} is not in the catalogue (known: {', '.join(releases(table))})")


def _cuda_minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


def _driver_minimum(table: Mapping[str, Any], row: Mapping[str, Any]) -> tuple[str, str]:
    """The driver requirement and the sentence that says why it is that one."""
    driver = row.get("driver") or {}
    cuda = row["components"].get("cuda")
    cuda_value, cuda_confirmed = _split(cuda) if cuda is not None else ("", False)
    printed = driver.get("printed")
    if printed is not None:
        value, confirmed = _split(printed)
        if confirmed and not driver.get("stale"):
            return value, f"driver minimum {value}: the release notes' number"
    toolkit = table["toolkitDrivers"].get(_cuda_minor(cuda_value)) if cuda_confirmed else None
    if toolkit is not None:
        why = "the notes print none" if printed is None else (
            f"the notes print {_split(printed)[0]}, which is "
            + ("stale" if driver.get("stale") else "unconfirmed"))
        return str(toolkit), f"driver minimum {toolkit}: CUDA {cuda_value}'s own minimum ({why})"
    built = driver.get("builtFor")
    if built is not None:
        value, confirmed = _split(built)
        if confirmed:
            branch = str(DriverVersion.parse(value).branch)
            return branch, f"driver minimum {branch}: the branch of the image's built-for driver {value}"
    if not cuda_value:
        raise CatalogueError(f"{row['release']}: no driver minimum and no CUDA version to take a floor from")
    major = cuda_value.split(".")[0]
    floor = str(table["minorVersionFloors"][major])
    what = "no confirmed minimum" if printed is None else f"the notes' {printed} is not confirmed"
    return floor, (f"driver minimum {floor}: {what}, so the floor of CUDA {major}.x (minor-version "
                   "compatibility); the probe decides above it")


def _branches(row: Mapping[str, Any], minimum: str) -> tuple[list[dict[str, Any]], list[str]]:
    """Forward-compatibility branches older than the minimum; an unconfirmed or stale list is an allowance,
    never a requirement, so it is kept and said."""
    driver = row.get("driver") or {}
    floor = DriverVersion.parse(minimum).branch
    kept, dropped = [], []
    for raw in sorted(driver.get("branches") or (), key=lambda b: DriverVersion.parse(str(b))):
        version = DriverVersion.parse(str(raw))
        if version.branch < floor:
            kept.append({"branch": version.branch, "minimum": str(raw)})
        else:
            dropped.append(str(raw))
    notes = []
    if kept and driver.get("branchesNote"):
        notes.append(f"Datacenter branches {driver['branchesNote']} in the notes: kept as allowances "
                     "(the probe decides on them)")
    if dropped:
        notes.append(f"Datacenter branch {', '.join(dropped)} left out: on the branch of the minimum {minimum}, "
                     "or newer")
    return kept, notes


def _compute_capability(table: Mapping[str, Any], row: Mapping[str, Any]) -> tuple[str, str | None]:
    value, confirmed = _split(row["minComputeCapability"])
    if confirmed:
        return value, None
    release = _key(str(row["release"]))
    floors = [f for f in table["computeCapabilityFloors"] if _key(str(f["from"])) <= release]
    held = str(max(floors, key=lambda f: _key(str(f["from"])))["minimum"])
    return held, (f"Minimum compute capability {held}: the confirmed milestone (the row's {value}+ is "
                  "unconfirmed)")


def _checks(table: Mapping[str, Any], row: Mapping[str, Any]) -> dict[str, Any]:
    """The amp APIs the release has, and the checks whose torch API it predates turned off (rather than
    planned and skipped on every node)."""
    release = _key(str(row["release"]))
    has = {name: release >= _key(str(since)) for name, since in table["features"].items()}
    apex = row.get("apex") == "yes"
    amp = {"native": has["nativeAmp"], "apex": apex, "bf16": has["bf16"]}
    out: dict[str, Any] = {"amp": amp if any(amp.values()) else {"enabled": False}}
    out.update({name: {"enabled": False} for name in CHECK_FEATURES if not has[name]})
    return out


def generate(table: Mapping[str, Any], release: str) -> Generated:
    """The profile of one release, as an object ready for `kubectl apply`."""
    row = _row(table, release)
    components: dict[str, str] = {}
    unconfirmed: list[str] = []
    for name in COMPONENTS:
        raw = row["components"].get(name)
        if raw is None:
            continue
        value, confirmed = _split(raw)
        if confirmed:
            components[name] = value
        else:
            unconfirmed.append(f"{name} {value}")
    minimum, driver_why = _driver_minimum(table, row)
    branches, branch_notes = _branches(row, minimum)
    cc, cc_why = _compute_capability(table, row)
    driver: dict[str, Any] = {"minimum": minimum}
    if branches:
        driver["datacenterBranches"] = branches
    requirements: dict[str, Any] = {"driver": driver, "minComputeCapability": cc}
    if row.get("architectures"):
        requirements["architectures"] = list(row["architectures"])
    spec: dict[str, Any] = {
        "release": release,
        "image": IMAGE.format(release=release),
        **({"components": components} if components else {}),
        "requirements": requirements,
        "checks": _checks(table, row),
        "revalidateAfter": REVALIDATE_AFTER,
    }
    if row.get("knownIssues"):
        spec["knownIssues"] = [dict(i) for i in row["knownIssues"]]
    written = dict(row.get("profile") or {})
    if "checks" in written:  # hand-written checks first; generated ones it does not name after them
        written["checks"] = {**written["checks"],
                             **{k: v for k, v in spec["checks"].items() if k not in written["checks"]}}
    spec.update(written)
    spec = {key: spec[key] for key in SPEC_ORDER if key in spec}

    driver_row = row.get("driver") or {}
    for key, label in (("printed", "driver as printed"), ("builtFor", "built-for driver")):
        if key in driver_row and not _split(driver_row[key])[1]:
            unconfirmed.append(f"{label} {_split(driver_row[key])[0]}")
    if row.get("apex", "").endswith(UNCONFIRMED):
        unconfirmed.append("Apex shipped (so the amp check leaves Apex out)")
    arch_list = row.get("archList")
    lines = [f"Requirements: {driver_why}."]
    lines += [f"{n}." for n in branch_notes]
    if cc_why:
        lines.append(f"{cc_why}.")
    if arch_list:
        value, confirmed = _split(arch_list)
        lines.append(f"TORCH_CUDA_ARCH_LIST{'' if confirmed else UNCONFIRMED}: {value}.")
    if unconfirmed:
        lines.append("Unconfirmed (U), so not in the spec: " + "; ".join(unconfirmed) + ".")
    lines += [f"Note: {n}" for n in row.get("notes") or ()]
    body = {"apiVersion": "torchproof.dev/v1alpha1", "kind": "PyTorchReleaseProfile",
            "metadata": {"name": f"pytorch-{release}"}, "spec": spec}
    return Generated(release, body, tuple(lines))


class _Dumper(yaml.SafeDumper):
    """Leaf mappings and lists of scalars on one line, as the hand-written profiles have them."""


def _is_scalar(value: Any) -> bool:
    return not isinstance(value, dict | list) and not (isinstance(value, str) and len(value) > 60)


def _represent_dict(dumper: yaml.SafeDumper, data: dict[str, Any]) -> yaml.Node:
    flow = bool(data) and all(_is_scalar(v) for v in data.values())
    return dumper.represent_mapping("tag:yaml.org,2002:map", data.items(), flow_style=flow)


def _represent_list(dumper: yaml.SafeDumper, data: list[Any]) -> yaml.Node:
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=all(map(_is_scalar, data)))


_Dumper.add_representer(dict, _represent_dict)
_Dumper.add_representer(list, _represent_list)


def _comment(text: str) -> list[str]:
    return [f"# {line}" for line in textwrap.wrap(text, WIDTH - 2, break_on_hyphens=False)]


def render(generated: Generated, sources: Sequence[str] = ()) -> str:
    """The profile file: a header that says where it came from, then the object."""
    r = generated.release
    head = [f"NGC PyTorch {r}, generated from profiles/releases.yaml by `torchproof profile generate {r}`: edit "
            "the table and run `make profiles`, not this file. Facts: shared/reference/ngc-pytorch-releases.md"
            + (f" (sources {', '.join(sources)})." if sources else ".")]
    lines = [line for text in (*head, *generated.comments) for line in _comment(text)]
    body = yaml.dump(generated.body, Dumper=_Dumper, sort_keys=False, width=WIDTH, allow_unicode=True)
    return "\n".join(lines) + "\n" + body


def profile_text(table: Mapping[str, Any], release: str) -> str:
    """The committed text of one release's profile."""
    return render(generate(table, release), [str(s) for s in _row(table, release).get("sources") or ()])


def all_profiles(table: Mapping[str, Any]) -> dict[str, str]:
    """File name → text, for every release in the table."""
    return {file_name(r): profile_text(table, r) for r in releases(table)}
