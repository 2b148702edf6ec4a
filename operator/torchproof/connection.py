"""Finding the cluster and waiting for its API server, with errors a person reads in one line.

A command started before its API server answers (a node booting, a control plane upgrading) retries with
backoff and says so, instead of dying with a traceback; a refusal (401, 403) is not transient and ends it.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any

import yaml
from kubernetes.client import Configuration
from kubernetes.config import ConfigException

from torchproof.kube import KubeError, load_configuration

RETRIABLE = frozenset({0, 429, 500, 502, 503, 504})  # not reached, throttled, or the server is not ready
FIRST_DELAY_SECONDS = 1.0
MAX_DELAY_SECONDS = 30.0

log = logging.getLogger("torchproof.connection")


class NoCluster(Exception):
    """Neither the in-cluster service account nor a kubeconfig could be loaded; the message names both."""


def kubeconfig_path(kubeconfig: str | None, environ: dict[str, str] | None = None) -> str:
    """The kubeconfig the client reads: --kubeconfig, else the first of $KUBECONFIG, else ~/.kube/config."""
    env = os.environ if environ is None else environ
    first = (env.get("KUBECONFIG") or "").split(os.pathsep)[0]
    return kubeconfig or first or os.path.expanduser("~/.kube/config")


def connect(kubeconfig: str | None) -> Configuration:
    """Credentials from the in-cluster service account, else the kubeconfig; `NoCluster` naming both places."""
    try:
        return load_configuration(kubeconfig=kubeconfig)
    except (ConfigException, OSError, yaml.YAMLError, ValueError, TypeError, KeyError) as exc:
        in_cluster = ("KUBERNETES_SERVICE_HOST is not set" if not os.environ.get("KUBERNETES_SERVICE_HOST")
                      else "its service account token or CA could not be read")
        why = " ".join(str(exc).split()) or type(exc).__name__
        raise NoCluster(f"not in a cluster ({in_cluster}) and no usable kubeconfig at "
                        f"{kubeconfig_path(kubeconfig)} ({why})") from None


async def until_reachable(
    call: Callable[[], Awaitable[Any]],
    *,
    first: float = FIRST_DELAY_SECONDS,
    cap: float = MAX_DELAY_SECONDS,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> Any:
    """`call()`'s value once it succeeds; each transient failure logs `retrying in Ns: <why>` and waits, the
    delay doubling up to `cap`. A `KubeError` that retrying cannot fix is raised."""
    delay = first
    while True:
        try:
            return await call()
        except KubeError as exc:
            if exc.status not in RETRIABLE:
                raise
            log.warning("retrying in %.0fs: %s", delay, exc)
        await sleep(delay)
        delay = min(cap, delay * 2)
