# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# The CPU build of torch runs the probe in tests; 2.13.0 lies on this kind of machine's disk.
TORCH ?= torch==2.13.0

.PHONY: venv demo test lint typecheck unit bench clean system-deps lock image image-push kind-load crd dashboards \
	profiles

venv: $(STAMP)

# The operator's runtime dependencies at the versions the image ships (requirements.lock), then the rest.
$(STAMP): pyproject.toml simulator/pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q '$(TORCH)'
	$(PY) -m pip install -q --require-hashes --no-deps -r requirements.lock
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) -m pip install -q -e ./simulator
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/torchproof simulate --fleet examples/fleet.yaml --profile profiles/pytorch-20.06.yaml

lint: $(STAMP)
	$(VENV)/bin/ruff check operator simulator tests bench deploy/monitoring
	$(VENV)/bin/mypy
	$(VENV)/bin/vermin -q --no-tips --violations -t=3.6- operator/torchproof/probe/probe.py

# Debian packages the tests use: openssl (the embedded cluster's HTTPS port, for kubectl's credentials),
# util-linux's unshare (the operator started as the image's uid), and prometheus with its promtool (the
# dashboard and alerts tested against a real Prometheus; the tests start their own, never the package's
# service). kubectl comes with the machine image.
SYSTEM_TOOLS := openssl:openssl unshare:util-linux prometheus:prometheus promtool:prometheus

system-deps:
	@missing=$$(for pair in $(SYSTEM_TOOLS); do command -v $${pair%%:*} >/dev/null || echo $${pair#*:}; done); \
	if [ -n "$$missing" ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$(echo $$missing | tr ' ' '\n' | sort -u); fi

test: system-deps lint
	$(VENV)/bin/pytest -q -p no:cacheprovider

bench: $(STAMP)
	$(PY) -m bench.scale

# The CRD and its package-data copy, generated from the typed models in operator/torchproof/profile.py;
# tests/profile/test_crd.py fails while the committed files differ from what this writes.
crd: $(STAMP)
	$(PY) -m torchproof.crdgen .

# Every profiles/pytorch-YY.MM.yaml, generated from the release catalogue profiles/releases.yaml;
# tests/profile/test_releases.py fails while a committed profile differs from what this writes.
profiles: $(STAMP)
	$(VENV)/bin/torchproof profile generate --all

# The Grafana dashboard, generated from deploy/monitoring/dashboard.py (grafana-foundation-sdk);
# tests/monitoring/test_dashboard.py fails while the committed JSON differs from what this writes.
dashboards: $(STAMP)
	$(PY) deploy/monitoring/dashboard.py

# The operator image (Dockerfile): its runtime dependencies come from requirements.lock, which `make lock`
# writes from pyproject.toml's dependencies (uv, from the dev extra, with every wheel's hash).
IMAGE ?= ghcr.io/torchproof/torchproof
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
REVISION := $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
CONTAINER_TOOL ?= $(shell command -v docker || command -v podman)
KIND_CLUSTER ?= kind

lock: $(STAMP)
	$(VENV)/bin/uv pip compile pyproject.toml --generate-hashes --universal --python-version 3.11 --no-header \
		--quiet -o requirements.lock

image:
	@if [ -z "$(CONTAINER_TOOL)" ]; then \
		echo "make image: neither docker nor podman is installed (or set CONTAINER_TOOL)" >&2; exit 2; fi
	@if ! $(CONTAINER_TOOL) info >/dev/null 2>&1; then \
		echo "make image: $(CONTAINER_TOOL) is installed but cannot build here (is its daemon or socket up?)" >&2; exit 2; fi
	$(CONTAINER_TOOL) build --build-arg VERSION=$(VERSION) --build-arg REVISION=$(REVISION) \
		-t $(IMAGE):$(VERSION) .

image-push: image
	$(CONTAINER_TOOL) push $(IMAGE):$(VERSION)

kind-load: image
	kind load docker-image $(IMAGE):$(VERSION) --name $(KIND_CLUSTER)

clean:
	rm -rf $(VENV) build *.egg-info
