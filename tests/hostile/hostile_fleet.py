"""The hostile suite's fleet: two T4 nodes and a CPU node, all carrying labels torchproof does not own."""

from __future__ import annotations

from typing import Any

T4 = {"product": "Tesla T4", "count": 1, "driver": "450.51.06"}
FOREIGN = {"team": "ml", "torchproof.dev/other": "keep"}
FLEET: list[dict[str, Any]] = [{"name": "t4-a", "gpu": T4, "labels": FOREIGN},
                               {"name": "t4-b", "gpu": T4, "labels": FOREIGN}, {"name": "cpu-1", "labels": FOREIGN}]
