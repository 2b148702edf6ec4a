"""Fleet scale benchmark: the real operator, as its own process, against the embedded cluster and a simulated fleet.

`python -m bench.scale` runs the matrix of docs/performance.md; `--nodes N --profiles P` runs one configuration.
"""
