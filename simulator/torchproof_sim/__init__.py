"""An embedded Kubernetes API server for demos, tests and benchmarks (see docs/embedded-cluster.md)."""

from torchproof_sim.cluster import BackgroundCluster, EmbeddedCluster, run_in_thread
from torchproof_sim.emulator import ApiFaults, ClusterEmulator
from torchproof_sim.store import ApiError

__all__ = [
    "ApiError", "ApiFaults", "BackgroundCluster", "ClusterEmulator", "EmbeddedCluster", "run_in_thread",
]
