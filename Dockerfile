# The operator image (`make image`). The probe does not run here: it runs inside each release's own image.
#
# The base is pinned to an exact tag. To pin it by digest as well, or to refresh it (a new Python patch or
# Debian point release): `docker buildx imagetools inspect python:3.11-slim-bookworm` prints the current
# tag's index digest; write it here as `python:3.11.X-slim-bookworm@sha256:<digest>`, then `make lock image`
# and run the tests.
ARG BASE_IMAGE=python:3.11.14-slim-bookworm

FROM ${BASE_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/torchproof
# The runtime dependencies, exactly as locked (versions and hashes; `make lock`), in a layer of their own that a
# change to the code does not rebuild. No simulator, no test tools: those are the `sim` and `dev` extras.
COPY requirements.lock /tmp/requirements.lock
RUN /opt/torchproof/bin/pip install --require-hashes --no-deps -r /tmp/requirements.lock
# Then the package alone: its dependencies are all in the layer above.
COPY pyproject.toml README.md /src/
COPY operator /src/operator
RUN /opt/torchproof/bin/pip wheel --no-deps --wheel-dir /tmp/wheel /src \
    && /opt/torchproof/bin/pip install --no-deps /tmp/wheel/*.whl

FROM ${BASE_IMAGE}
ARG VERSION=unknown
ARG REVISION=unknown
ARG SOURCE=https://github.com/torchproof/torchproof
# No licence is stated for torchproof yet: NOASSERTION is SPDX's word for that (`make image LICENSE=...`).
ARG LICENSE=NOASSERTION
LABEL org.opencontainers.image.title="torchproof" \
      org.opencontainers.image.description="Kubernetes operator that validates NVIDIA PyTorch container releases node by node" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="${LICENSE}" \
      org.opencontainers.image.base.name="${BASE_IMAGE}"
COPY --from=build /opt/torchproof /opt/torchproof
# TORCHPROOF_REVISION: the commit, in torchproof_build_info.
ENV PATH=/opt/torchproof/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 TORCHPROOF_REVISION=${REVISION}
# A numeric uid without a passwd entry: kopf's identity comes from POD_ID (the Deployment sets it).
USER 65532:65532
ENTRYPOINT ["torchproof"]
CMD ["run", "--standalone"]
