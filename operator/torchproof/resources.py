"""Files the package carries (so that every command works from a wheel, not only from a checkout)."""

from __future__ import annotations

from importlib.resources import as_file, files
from pathlib import Path


def crd_text() -> str:
    """The PyTorchReleaseProfile CRD, as `crds/pytorchreleaseprofiles.yaml` in the source tree holds it."""
    return (files("torchproof") / "data" / "pytorchreleaseprofiles.yaml").read_text(encoding="utf-8")


def crd_path() -> Path:
    """A filesystem path to the packaged CRD (an installed package is a directory; no zip imports here)."""
    with as_file(files("torchproof") / "data" / "pytorchreleaseprofiles.yaml") as path:
        return Path(path)
