"""One benchmark configuration: cluster + kubelet here, the operator (`torchproof run`) in its own process.

The operator process is the unit measured: its API requests (every HTTP request the embedded API server
serves comes from it; the kubelet and this harness write in-process), its peak RSS and CPU time.
"""

from __future__ import annotations

import asyncio
import os
import resource
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families
from torchproof_sim.cluster import EmbeddedCluster
from torchproof_sim.fleet import parse_fleet
from torchproof_sim.kubelet import SimKubelet
from torchproof_sim.simulate import CRD_PATH, NAMESPACE, PROFILES, settled

from bench import ROOT
from bench.scale import fleet as F
from bench.scale.record import Recorder, min_gap, percentile

BASE_PROFILE = ROOT / "profiles" / "pytorch-20.06.yaml"
WRITES = ("create", "update", "patch", "delete")
STATUS_WRITE = "patch pytorchreleaseprofiles/status"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class BenchError(Exception):
    """The run could not be measured: the operator died, never became idle, or never converged."""


@dataclass(frozen=True)
class Config:
    nodes: int
    profiles: int
    probe_seconds: float = 1.0
    max_concurrent: int = 100
    timeout: float = 600.0

    def __post_init__(self) -> None:
        if self.nodes < F.BLOCK:
            raise ValueError(f"nodes: at least {F.BLOCK}, got {self.nodes}")
        if not 1 <= self.profiles <= 26:
            raise ValueError(f"profiles: 1 to 26, got {self.profiles}")
        if self.probe_seconds <= 0:
            raise ValueError(f"probe_seconds: must be positive, got {self.probe_seconds}")
        if not 1 <= self.max_concurrent <= 1000:
            raise ValueError(f"max_concurrent: 1 to 1000 (the CRD's range), got {self.max_concurrent}")


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a live process, from /proc/<pid>/stat (fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def proc_peak_rss_mib(pid: int) -> float:
    """The process's peak resident set (VmHWM) in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise BenchError(f"/proc/{pid}/status has no VmHWM")


async def wait_until(what: str, predicate: Callable[[], bool], timeout: float, alive: Callable[[], None]) -> float:
    """Poll until `predicate()`; returns the monotonic time it first held. `alive()` raises when hope is lost."""
    deadline = time.monotonic() + timeout
    while not predicate():
        alive()
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(0.02)
    return time.monotonic()


def delta(after: Mapping[str, int], before: Mapping[str, int]) -> dict[str, int]:
    return {k: n for k in sorted(after) if (n := after[k] - before.get(k, 0))}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Operator:
    """`torchproof run` as a child process against a kubeconfig; its log goes to a file."""

    def __init__(self, kubeconfig: Path, log: Path, cprofile: Path | None = None) -> None:
        self.log = log
        env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
        profiler = ["-m", "cProfile", "-o", str(cprofile)] if cprofile is not None else []
        self.metrics_port = free_port()
        command = [sys.executable, *profiler, "-m", "torchproof.cli", "run", "--kubeconfig", str(kubeconfig),
                   "--standalone", "--metrics-port", str(self.metrics_port), "--metrics-address", "127.0.0.1",
                   "--health-port", "0"]
        with log.open("wb") as out:
            self.process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
        self.started = time.monotonic()

    def alive(self) -> None:
        if self.process.poll() is not None:
            tail = self.log.read_text(errors="replace")[-2000:]
            raise BenchError(f"the operator exited with {self.process.returncode}:\n{tail}")

    def cpu(self) -> float:
        return proc_cpu_seconds(self.process.pid)

    def peak_rss_mib(self) -> float:
        return proc_peak_rss_mib(self.process.pid)

    async def idle(self, timeout: float, quiet: float = 1.0, threshold: float = 0.05) -> float:
        """Wait until the operator spent under `threshold` CPU seconds in the last `quiet` seconds."""
        samples: list[tuple[float, float]] = []

        def quiet_now() -> bool:
            now = time.monotonic()
            samples.append((now, self.cpu()))
            old = [s for s in samples if s[0] <= now - quiet]
            return bool(old) and samples[-1][1] - old[-1][1] < threshold

        return await wait_until("the operator to become idle", quiet_now, timeout, self.alive)

    def metrics(self) -> tuple[dict[str, float], dict[str, int]]:
        """Reconcile passes, their total seconds and failed API calls, summed over profiles, from /metrics; and
        the failed calls by verb and HTTP status (`"<verb> <status>"`)."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
        wanted = {
            "torchproof_reconcile_duration_seconds_count": "passes",
            "torchproof_reconcile_duration_seconds_sum": "passSeconds",
            "torchproof_api_errors_total": "apiErrors",
        }
        out = dict.fromkeys(wanted.values(), 0.0)
        errors: Counter[str] = Counter()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name in wanted:
                    out[wanted[sample.name]] += sample.value
                if sample.name == "torchproof_api_errors_total" and sample.value:
                    errors[f"{sample.labels['verb']} {sample.labels['code']}"] += int(sample.value)
        return out, dict(sorted(errors.items()))

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


async def run(config: Config, workdir: Path, cprofile: Path | None = None) -> dict[str, Any]:
    """Run one configuration; returns its figures (see docs/performance.md for each field).

    With `cprofile`, the operator runs under cProfile and writes its statistics there when it stops.
    """
    bodies = F.profiles(yaml.safe_load(BASE_PROFILE.read_text()), config.profiles, config.max_concurrent)
    names = tuple(str(b["metadata"]["name"]) for b in bodies)
    fleet = parse_fleet(F.fleet_data(config.nodes))
    recorder = Recorder(names)
    setup_started = time.monotonic()
    async with (
        EmbeddedCluster(crd_paths=[CRD_PATH], namespace=NAMESPACE) as cluster,
        SimKubelet(cluster.emulator, fleet, probe_seconds=config.probe_seconds) as kubelet,
    ):
        setup_seconds = time.monotonic() - setup_started
        emulator = cluster.emulator
        stop_recording = recorder.attach(emulator.store)
        # Plain HTTP, as before the cluster served HTTPS: TLS would add to both sides' CPU seconds.
        kubeconfig = cluster.write_kubeconfig(workdir / "kubeconfig", tls=False)
        operator = Operator(kubeconfig, workdir / "operator.log", cprofile)
        try:
            await wait_until("the operator's watches", lambda: emulator.request_counts()["byVerb"].get("watch", 0) >= 3,
                             120, operator.alive)
            ready_at = await operator.idle(timeout=300)
            before, cpu_before = emulator.request_counts(), operator.cpu()
            parent_before = resource.getrusage(resource.RUSAGE_SELF)
            applied_at = time.monotonic()
            for body in bodies:
                await emulator.create_object(PROFILES, body)
            expected = config.nodes * config.profiles
            await wait_until(f"{expected} verdict labels", lambda: recorder.labelled_count() >= expected,
                             config.timeout, operator.alive)
            labels_at = max(recorder.labelled.values())

            def all_settled() -> bool:
                return all((p := emulator.get_object(PROFILES, None, n)) is not None and settled(p) for n in names)

            settled_at = await wait_until("every profile's status to settle", all_settled, 30, operator.alive)
            after, cpu_after, rss = emulator.request_counts(), operator.cpu(), operator.peak_rss_mib()
            metrics, errors = await asyncio.to_thread(operator.metrics)
            parent_after = resource.getrusage(resource.RUSAGE_SELF)
        finally:
            operator.stop()
            stop_recording()
        statuses = {n: (emulator.get_object(PROFILES, None, n) or {}).get("status") or {} for n in names}
        kubelet_errors = [repr(e) for e in kubelet.errors]
    return figures(
        config=config, recorder=recorder, statuses=statuses,
        by_verb=delta(after["byVerb"], before["byVerb"]),
        by_resource=delta(after["byResource"], before["byResource"]),
        converged_seconds=labels_at - applied_at, settled_seconds=settled_at - applied_at,
        operator={
            "startupSeconds": round(ready_at - operator.started, 2),
            "cpuSeconds": round(cpu_after - cpu_before, 2),
            "cpuSecondsTotal": round(cpu_after, 2),
            "peakRssMiB": round(rss, 1),
            "passes": int(metrics["passes"]),
            "meanPassSeconds": round(metrics["passSeconds"] / metrics["passes"], 3) if metrics["passes"] else None,
            "apiErrors": int(metrics["apiErrors"]),
            "apiErrorsByVerbAndStatus": errors,
        },
        harness={
            "setupSeconds": round(setup_seconds, 2),
            "cpuSeconds": round(parent_after.ru_utime + parent_after.ru_stime
                                - parent_before.ru_utime - parent_before.ru_stime, 2),
        },
        kubelet_errors=kubelet_errors,
    )


def figures(
    *, config: Config, recorder: Recorder, statuses: Mapping[str, Mapping[str, Any]], by_verb: Mapping[str, int],
    by_resource: Mapping[str, int], converged_seconds: float, settled_seconds: float,
    operator: Mapping[str, Any], harness: Mapping[str, Any], kubelet_errors: list[str],
) -> dict[str, Any]:
    """The run's figures from its raw counts and times (pure, so the accounting is tested on its own)."""
    validations = config.nodes * config.profiles
    probed = F.probed_nodes(config.nodes)
    ideal = F.ideal_seconds(probed, config.max_concurrent, config.probe_seconds, F.node_turns(config.profiles))
    writes = sum(by_verb.get(v, 0) for v in WRITES)
    status_writes = by_resource.get(STATUS_WRITE, 0)
    latencies = recorder.latencies()
    gaps = [g for times in recorder.status_changes.values() if (g := min_gap(times)) is not None]
    per_profile_rate = status_writes / config.profiles / settled_seconds if settled_seconds > 0 else 0.0
    result = {
        "config": asdict(config),
        "validations": validations,
        "probedValidations": probed * config.profiles,
        "idealSeconds": round(ideal, 3),
        "convergedSeconds": round(converged_seconds, 3),
        "statusSettledSeconds": round(settled_seconds, 3),
        "idealRatio": round(ideal / converged_seconds, 3) if converged_seconds > 0 else None,
        "requests": {"byVerb": dict(by_verb), "byResource": dict(by_resource)},
        "requestsPerValidation": {v: round(n / validations, 3) for v, n in by_verb.items()},
        "writesPerValidation": round(writes / validations, 3),
        "statusWrites": {
            "total": status_writes,
            "perProfile": round(status_writes / config.profiles, 1),
            "perProfilePerSecond": round(per_profile_rate, 3),
            "minGapSeconds": round(min(gaps), 3) if gaps else None,
        },
        "labelLatencySeconds": {
            "samples": len(latencies),
            "p50": _round(percentile(latencies, 50)),
            "p99": _round(percentile(latencies, 99)),
            "max": _round(max(latencies, default=None)),
        },
        "operator": dict(operator),
        "harness": dict(harness),
        "pods": {
            "created": sum(recorder.pods_created.values()),
            "peakRunningPerProfile": max(recorder.pods_peak.values(), default=0),
        },
        "verdicts": {p: dict(sorted(c.items())) for p, c in recorder.verdicts.items()},
        "expectedVerdicts": dict(sorted(F.expected_verdicts(config.nodes).items())),
        "statusCounts": {name: dict(status.get("counts") or {}) for name, status in statuses.items()},
        "kubeletErrors": kubelet_errors,
    }
    result["targets"] = targets(result)
    return result


def targets(result: Mapping[str, Any]) -> dict[str, bool | None]:
    """The issue's goals for this run (the RSS and ideal-ratio goals are set for 5,000 nodes)."""
    at_scale = result["config"]["nodes"] >= 5000
    ratio = result["idealRatio"]
    return {
        "writesPerValidation<=3.5": result["writesPerValidation"] <= 3.5,
        "statusWritesPerSecondPerProfile<=1": result["statusWrites"]["perProfilePerSecond"] <= 1.0,
        "idealRatio>=0.8": (ratio is not None and ratio >= 0.8) if at_scale else None,
        "peakRssMiB<=300": result["operator"]["peakRssMiB"] <= 300 if at_scale else None,
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
