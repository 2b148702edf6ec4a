# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# The CPU build of torch runs the probe in tests; 2.13.0 lies on this kind of machine's disk.
TORCH ?= torch==2.13.0

.PHONY: venv demo test lint typecheck unit bench clean system-deps

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q '$(TORCH)'
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/torchproof simulate --fleet examples/fleet.yaml --profile profiles/pytorch-20.06.yaml

lint: $(STAMP)
	$(VENV)/bin/ruff check operator tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/vermin -q --no-tips --violations -t=3.6- operator/torchproof/probe/probe.py

# Debian packages the tests use: openssl (the embedded cluster's HTTPS port, for kubectl's credentials) and
# util-linux's unshare (the operator started as the image's uid). kubectl comes with the machine image.
SYSTEM_TOOLS := openssl:openssl unshare:util-linux

system-deps:
	@missing=$$(for pair in $(SYSTEM_TOOLS); do command -v $${pair%%:*} >/dev/null || echo $${pair#*:}; done); \
	if [ -n "$$missing" ]; then apt-get update -qq && apt-get install -y -qq $$missing; fi

test: system-deps lint
	$(VENV)/bin/pytest -q -p no:cacheprovider

bench: $(STAMP)
	$(PY) -m bench.scale

clean:
	rm -rf $(VENV) build *.egg-info
