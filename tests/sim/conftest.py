"""Fixtures: an embedded cluster serving a small test CRD, async or in a background thread."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import kubernetes.client
import pytest
import yaml
from gadgets import GADGET_CRD
from torchproof_sim import BackgroundCluster, EmbeddedCluster, run_in_thread


@pytest.fixture
def crd_path(tmp_path: Path) -> Path:
    path = tmp_path / "gadgets-crd.yaml"
    path.write_text(yaml.safe_dump(GADGET_CRD))
    return path


@pytest.fixture
async def cluster(crd_path: Path) -> AsyncIterator[EmbeddedCluster]:
    async with EmbeddedCluster(crd_paths=[crd_path], namespace="testns") as running:
        yield running


@pytest.fixture
def background(crd_path: Path) -> Iterator[BackgroundCluster]:
    with run_in_thread(crd_paths=[crd_path], namespace="testns") as running:
        yield running


@pytest.fixture
def api(background: BackgroundCluster) -> Iterator[kubernetes.client.ApiClient]:
    config = kubernetes.client.Configuration(host=background.url, api_key={"authorization": background.admin_token},
                                             api_key_prefix={"authorization": "Bearer"})
    with kubernetes.client.ApiClient(config) as client:
        yield client
