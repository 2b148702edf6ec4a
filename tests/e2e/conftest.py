"""The real operator (kopf + the kubernetes client over HTTP) against the embedded cluster, which enforces
RBAC: the operator runs as the ServiceAccount of deploy/rbac (`embedded_operator`), and a test in which any
request was refused (401, 403) fails at teardown."""

from __future__ import annotations

from tests.support.rig import MIXED_FLEET, rig_fixture

env = rig_fixture(MIXED_FLEET)
fault_env = rig_fixture()  # over the `fleet_nodes` a test parametrizes
