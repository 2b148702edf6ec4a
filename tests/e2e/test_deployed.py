"""The operator as `deploy/default` installs it: the rendered manifests, and `torchproof run` started exactly as the
rendered Deployment starts it (its args and env, the image's user without a passwd entry, no HOME, a read-only
working directory)."""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import re
import shutil
import signal
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from torchproof.cli import parser

from tests.support.polling import eventually
from tests.support.rig import KEY, Rig, profile
from tests.support.tools import render

ROOT = Path(__file__).resolve().parents[2]
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}
pytestmark = pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl renders the kustomization")


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = (doc for doc in docs if doc["kind"] == kind)
    return found


def test_an_overlay_to_another_namespace_moves_every_reference(tmp_path: Path, monkeypatch: Any) -> None:
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "namespace": "gpu-validation", "resources": [os.path.relpath(ROOT / "deploy" / "default", tmp_path)],
    }))
    docs = render(tmp_path)
    for doc in docs:
        meta = doc["metadata"]
        if doc["kind"] == "Namespace":
            assert meta["name"] == "gpu-validation"
        elif doc["kind"] not in CLUSTER_SCOPED:
            assert meta.get("namespace") == "gpu-validation", (doc["kind"], meta["name"])
        for subject in doc.get("subjects") or ():
            assert subject["namespace"] == "gpu-validation", (doc["kind"], subject)
    container = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert not [arg for arg in container["args"] if "torchproof" in arg.split("=")[-1]]
    env = {e["name"]: e for e in container["env"]}
    assert env["POD_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    monkeypatch.setenv("POD_NAMESPACE", "gpu-validation")
    assert parser().parse_args(container["args"]).namespace == "gpu-validation"


def _image_user_and_entrypoint() -> tuple[int, int, list[str]]:
    text = (ROOT / "Dockerfile").read_text()
    user = re.findall(r"^USER (\d+):(\d+)$", text, re.MULTILINE)[-1]
    entrypoint = json.loads(re.findall(r"^ENTRYPOINT (\[.*\])$", text, re.MULTILINE)[-1])
    return int(user[0]), int(user[1]), entrypoint


def _field(path: str, pod: dict[str, Any]) -> str:
    """The downward API's value for a fieldRef, from the pod the Deployment would make."""
    value: Any = pod
    for part in path.split("."):
        value = value[part]
    return str(value)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _own_ports(args: list[str]) -> list[str]:
    """The Deployment's args with each `--*-port` moved to a free port: in a pod the ports are the pod's own
    network namespace's, here they are the host's, which other processes may be using."""
    return [f"{arg.split('=')[0]}={_free_port()}" if arg.split("=")[0].endswith("-port") else arg for arg in args]


def as_image_user(uid: int, gid: int) -> list[str]:
    """Run as the image's uid and gid, which have no passwd entry here either: a user namespace maps this
    process's own uid onto them, so files it can read stay readable (the interpreter may live under /root)."""
    return ["unshare", "--user", f"--map-user={uid}", f"--map-group={gid}", "--"]


@pytest.mark.skipif(shutil.which("unshare") is None, reason="unshare (util-linux) maps the image's uid")
async def test_the_operator_starts_as_deployed(env: Rig) -> None:
    deployment = one(render(ROOT / "deploy" / "default"), "Deployment")
    spec = deployment["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    uid, gid, entrypoint = _image_user_and_entrypoint()
    assert spec["securityContext"]["runAsUser"] == uid and spec["securityContext"]["runAsNonRoot"]
    assert container["securityContext"]["readOnlyRootFilesystem"]
    with pytest.raises(KeyError):
        pwd.getpwuid(uid)  # as in the image: its user has no passwd entry
    args = _own_ports(container["args"])
    assert [a.split("=")[0] for a in args] == [a.split("=")[0] for a in container["args"]]

    pod = {"metadata": {"name": "torchproof-6c9d8f7b5-x2x4q", "namespace": deployment["metadata"]["namespace"]}}
    shared = Path(tempfile.mkdtemp(prefix="torchproof-deployed-"))
    workdir = shared / "workdir"
    workdir.mkdir(mode=0o555)  # read-only, also for its owner
    kubeconfig = await env.operator_kubeconfig(shared / "kubeconfig")
    executable = Path(sys.executable).parent / entrypoint[0]
    environ = {  # no HOME, USER or LOGNAME, as in the pod
        "PATH": f"{executable.parent}:/usr/bin:/bin",
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": str(ROOT / "operator"),  # this tree's code, as the image installs it, not another checkout's
        # In a pod the client finds the service account's token; here a kubeconfig carries that token.
        "KUBECONFIG": str(kubeconfig),
        **{e["name"]: e.get("value") or _field(e["valueFrom"]["fieldRef"]["fieldPath"], pod)
           for e in container.get("env") or ()},
    }
    proc = await asyncio.create_subprocess_exec(
        *as_image_user(uid, gid), str(executable), *entrypoint[1:], *args,
        env=environ, cwd=workdir, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    try:
        await env.apply(profile())
        await eventually(lambda: env.converged() or proc.returncode is not None, timeout=60,
                         what="convergence under the deployed `torchproof run`")
        assert proc.returncode is None, "the operator exited"
        assert env.label("t4-a") == "passed" and env.label("k80-a") == "incompatible"
        namespaces = {p["metadata"]["namespace"] for p in env.cluster.emulator.list_objects("v1/pods", None)}
        assert namespaces <= {pod["metadata"]["namespace"]}  # POD_NAMESPACE, not a namespace in the args
        assert env.node("t4-a")["metadata"]["labels"][KEY] == "passed"
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = await asyncio.wait_for(proc.communicate(), timeout=30)
        workdir.chmod(0o755)
        shutil.rmtree(shared, ignore_errors=True)
    text = output.decode(errors="replace")
    assert proc.returncode == 0, text[-2000:]
    assert "Traceback" not in text, text[-2000:]
