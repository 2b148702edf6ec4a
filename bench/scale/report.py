"""The results as markdown: one table row per configuration, written into its own section of a document."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

SECTION = "## Fleet scale (embedded cluster)"


def table(results: Sequence[Mapping[str, Any]]) -> str:
    rows = [
        "| nodes | profiles | converged | ideal | ratio | writes/validation | status writes/s/profile "
        "| label latency p50 / p99 | operator peak RSS | operator CPU (per validation) | failed API calls |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        if "error" in r:
            rows.append(f"| {r['config']['nodes']:,} | {r['config']['profiles']} | failed: "
                        f"{r['error'].splitlines()[0][:120]} |" + " |" * 9)
            continue
        latency = r["labelLatencySeconds"]
        rows.append(
            f"| {r['config']['nodes']:,} | {r['config']['profiles']} | {r['convergedSeconds']:.1f} s "
            f"| {r['idealSeconds']:.1f} s | {r['idealRatio']:.2f} | {r['writesPerValidation']:.2f} "
            f"| {r['statusWrites']['perProfilePerSecond']:.2f} "
            f"| {_ms(latency['p50'])} / {_ms(latency['p99'])} "
            f"| {r['operator']['peakRssMiB']:.0f} MiB "
            f"| {r['operator']['cpuSeconds']:.1f} s ({r['operator']['cpuSeconds'] * 1000 / r['validations']:.2f} ms) "
            f"| {_failures(r['operator'])} |"
        )
    return "\n".join(rows)


def requests_table(results: Sequence[Mapping[str, Any]]) -> str:
    """API requests per validation (one profile on one node) by verb and resource."""
    results = [r for r in results if "error" not in r]
    keys = sorted({k for r in results for k in r["requests"]["byResource"]})
    rows = ["| nodes | profiles | " + " | ".join(keys) + " |", "| ---: | ---: |" + " ---: |" * len(keys)]
    for r in results:
        cells = [f"{r['requests']['byResource'].get(k, 0) / r['validations']:.3f}" for k in keys]
        rows.append(f"| {r['config']['nodes']:,} | {r['config']['profiles']} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _failures(operator: Mapping[str, Any]) -> str:
    """The operator's failed API calls, with their verbs and statuses: `0`, or `3 (delete 404: 3)`."""
    by = operator.get("apiErrorsByVerbAndStatus") or {}
    detail = ", ".join(f"{key}: {n}" for key, n in by.items())
    return f"{operator['apiErrors']} ({detail})" if detail else str(operator["apiErrors"])


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f} ms"


def section(document: Mapping[str, Any], body: str) -> str:
    """The generated part of the section: provenance, then the tables."""
    results = document["results"]
    first = results[0]["config"] if results else {}
    return "\n".join([
        f"Measured {document['date']} on {document['cpus']} CPUs ({document['machine']}, Python "
        f"{document['python']}) with `{document['command']}`; probe time {first.get('probe_seconds')} s, "
        f"maxConcurrent {first.get('max_concurrent')} per profile. Raw figures: `docs/bench/scale.json`.",
        "",
        table(results),
        "",
        "API requests per validation, by verb and resource:",
        "",
        requests_table(results),
        "",
        body,
    ]).rstrip() + "\n"


BEGIN = "<!-- bench.scale: generated from here -->"
END = "<!-- bench.scale: generated to here -->"


def update_doc(path: Path, document: Mapping[str, Any]) -> None:
    """Replace the generated block of the fleet-scale section; the rest of the file stays as it is."""
    text = path.read_text() if path.exists() else f"# Performance\n\n{SECTION}\n\n{BEGIN}\n{END}\n"
    if BEGIN not in text or END not in text:
        raise ValueError(f"{path}: no generated block ({BEGIN} … {END}) to replace")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    path.write_text(f"{head}{BEGIN}\n{section(document, '')}{END}{tail}")
