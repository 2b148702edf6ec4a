"""The probe that runs inside the release image; shipped as a file, never imported by the operator."""

from pathlib import Path

PROBE_PATH = Path(__file__).with_name("probe.py")


def probe_source() -> str:
    """probe.py's text, for the content-hashed ConfigMap the pod mounts."""
    return PROBE_PATH.read_text(encoding="utf-8")
