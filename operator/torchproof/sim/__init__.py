"""An embedded Kubernetes API server for demos, tests and benchmarks (see docs/embedded-cluster.md)."""

from torchproof.sim.cluster import BackgroundCluster, EmbeddedCluster, run_in_thread
from torchproof.sim.emulator import ApiFaults, ClusterEmulator
from torchproof.sim.store import ApiError

__all__ = [
    "ApiError", "ApiFaults", "BackgroundCluster", "ClusterEmulator", "EmbeddedCluster", "run_in_thread",
]
