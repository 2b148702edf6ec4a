"""The scale benchmark on a tiny fleet: its accounting, not its speed (that is what `make bench` measures)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from torchproof_sim.cluster import EmbeddedCluster
from torchproof_sim.simulate import CRD_PATH

from bench.scale import fleet as F
from bench.scale.record import Recorder, min_gap, percentile
from bench.scale.report import BEGIN, END, SECTION

ROOT = Path(__file__).resolve().parents[2]


def bench(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bench.scale", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One real run: 20 nodes, 2 profiles, the operator as a process; its JSON and the doc it updates."""
    out = tmp_path_factory.mktemp("bench")
    doc = out / "performance.md"
    doc.write_text(f"# Performance\n\n## GPU probe\n\nkept\n\n{SECTION}\n\nprose kept\n\n{BEGIN}\nold\n{END}\n"
                   "\nafter\n")
    run = bench("--nodes", "20", "--profiles", "2", "--probe-seconds", "0.1", "--max-concurrent", "5",
                "--timeout", "60", "--json", str(out / "scale.json"), "--doc", str(doc))
    assert run.returncode == 0, run.stderr[-3000:]
    document = json.loads((out / "scale.json").read_text())
    return {"document": document, "result": document["results"][0], "doc": doc.read_text()}


def test_every_node_gets_the_verdict_its_kind_should_get_for_each_profile(smoke: dict[str, Any]) -> None:
    r = smoke["result"]
    assert r["validations"] == 40 and r["probedValidations"] == 2 * F.probed_nodes(20) == 34
    expected = {"passed": 16, "failed": 1, "incompatible": 3}
    assert r["expectedVerdicts"] == expected
    assert r["verdicts"] == {"pytorch-20.06": expected, "pytorch-20.06-b": expected}
    for counts in r["statusCounts"].values():
        assert counts["total"] == 20 and counts["pending"] == 0
        assert {k: counts[k] for k in expected} == expected
    assert r["kubeletErrors"] == []


def test_requests_are_counted_once_per_pod_and_label(smoke: dict[str, Any]) -> None:
    r = smoke["result"]
    by_resource, by_verb = r["requests"]["byResource"], r["requests"]["byVerb"]
    assert by_resource["create pods"] == by_resource["delete pods"] == r["pods"]["created"] == 34
    assert by_resource["patch nodes"] >= r["validations"]  # one label each, plus any 409 retries
    writes = sum(n for verb, n in by_verb.items() if verb in ("create", "update", "patch", "delete"))
    assert r["writesPerValidation"] == round(writes / 40, 3)
    assert sum(n for key, n in by_resource.items() if key.split()[0] == "patch") == by_verb["patch"]
    assert r["requestsPerValidation"]["create"] == round(by_verb["create"] / 40, 3)


def test_status_writes_latency_and_concurrency_are_accounted(smoke: dict[str, Any]) -> None:
    r = smoke["result"]
    status = r["statusWrites"]
    assert status["total"] == r["requests"]["byResource"]["patch pytorchreleaseprofiles/status"]
    assert status["perProfile"] == round(status["total"] / 2, 1)
    latency = r["labelLatencySeconds"]
    assert latency["samples"] == 34  # one per pod: its termination to its node's label
    assert 0 < latency["p50"] <= latency["p99"] <= latency["max"]
    assert 0 < r["pods"]["peakRunningPerProfile"] <= 5
    assert r["idealSeconds"] == pytest.approx(0.1 * math.ceil(17 / 5))
    assert r["idealRatio"] == pytest.approx(r["idealSeconds"] / r["convergedSeconds"], abs=0.002)
    assert r["convergedSeconds"] <= r["statusSettledSeconds"]
    op = r["operator"]
    assert op["peakRssMiB"] > 20 and op["cpuSeconds"] > 0 and op["passes"] >= 1
    # every label landed once; a node patch that failed is sent again by a later pass
    assert r["requests"]["byResource"]["patch nodes"] == r["validations"] + op["apiErrors"]
    assert sum(op["apiErrorsByVerbAndStatus"].values()) == op["apiErrors"]


def test_results_carry_their_provenance_and_the_doc_keeps_what_is_not_generated(smoke: dict[str, Any]) -> None:
    document, doc = smoke["document"], smoke["doc"]
    assert document["command"].startswith("python -m bench.scale --nodes 20") and document["cpus"] >= 1
    assert "## GPU probe\n\nkept" in doc and "prose kept" in doc and doc.endswith(f"{END}\n\nafter\n")
    assert "old" not in doc and "| 20 | 2 |" in doc and document["date"] in doc
    row = next(line for line in doc.splitlines() if line.startswith("| 20 | 2 |")).split(" | ")
    op = smoke["result"]["operator"]
    assert row[-2] == f"{op['cpuSeconds']:.1f} s ({op['cpuSeconds'] * 1000 / 40:.2f} ms)"  # CPU per validation
    assert row[-1].partition(" ")[0].strip(" |") == str(op["apiErrors"])  # the failed calls, then by verb/status


def test_bad_flags_are_refused_before_anything_runs() -> None:
    run = bench("--nodes", "5")
    assert run.returncode == 2 and "nodes: at least 20" in run.stderr
    run = bench("--profiles", "2")
    assert run.returncode == 2 and "--profiles needs --nodes" in run.stderr
    run = bench("--nodes", "20", "--max-concurrent", "0")
    assert run.returncode == 2 and "max_concurrent: 1 to 1000" in run.stderr


def test_the_fleet_mix_scales_by_whole_nodes() -> None:
    assert sum(F.replicas(5000).values()) == 5000 and F.probed_nodes(5000) == 4250
    assert sum(F.replicas(33).values()) == 33
    assert F.ideal_seconds(4250, 100, 0.5) == 21.5
    # one-GPU nodes probe each profile in turn: five profiles on 100 nodes cannot take under five probe times
    assert (F.node_turns(1), F.node_turns(5), F.node_turns(5, gpus_per_probe=8)) == (1, 5, 5)
    assert F.ideal_seconds(85, 100, 1.0, F.node_turns(5)) == 5.0
    assert F.ideal_seconds(4250, 100, 1.0, F.node_turns(5)) == 43.0  # the slots, not the nodes, bound a big fleet
    with pytest.raises(ValueError, match="nodes: at least 20"):
        F.replicas(19)
    names = [p["metadata"]["name"] for p in F.profiles({"metadata": {"name": "x"}, "spec": {}}, 3, 7)]
    assert names == ["x", "x-b", "x-c"]


def test_percentile_and_gaps() -> None:
    assert percentile([], 50) is None
    assert percentile([3.0, 1.0, 2.0, 4.0], 50) == 2.0 and percentile(range(1, 101), 99) == 99
    assert min_gap([5.0, 1.0, 3.5]) == 1.5 and min_gap([1.0]) is None


async def test_recorder_times_termination_to_label_per_profile_and_node() -> None:
    ticks = iter(float(t) for t in range(100))
    recorder = Recorder(("p",), clock=lambda: next(ticks))
    async with EmbeddedCluster(crd_paths=[CRD_PATH]) as cluster:
        stop = recorder.attach(cluster.emulator.store)
        em = cluster.emulator
        await em.create_object("v1/nodes", {"metadata": {"name": "n1"}})
        pod = {"metadata": {"name": "v", "namespace": "torchproof", "labels": {"torchproof.dev/profile": "p"},
                            "annotations": {"torchproof.dev/node": "n1"}}}
        await em.create_object("v1/pods", pod)  # t=0: created
        await em.patch_object("v1/pods", "torchproof", "v", {"status": {"phase": "Running"}}, "status")
        await em.patch_object("v1/pods", "torchproof", "v", {"status": {"phase": "Succeeded"}}, "status")  # t=1
        await em.patch_object("v1/nodes", None, "n1", {"metadata": {"labels": {"torchproof.dev/p": "passed"}}})  # 2
        await em.patch_object("v1/nodes", None, "n1", {"metadata": {"labels": {"other": "x"}}})  # not a verdict
        await em.delete_object("v1/pods", "torchproof", "v")
        stop()
        await em.patch_object("v1/nodes", None, "n1", {"metadata": {"labels": {"torchproof.dev/p": "failed"}}})
    assert recorder.latencies() == [1.0]
    assert recorder.verdicts == {"p": {"passed": 1}}
    assert (recorder.pods_created["p"], recorder.pods_peak["p"], recorder.pods_active["p"]) == (1, 1, set())
