# The rnnlm service image (docs/deploy.md). Stages:
#   build  a virtual environment: torch, then the dependencies, then the project
#   base   slim runtime: that environment, the default bundles, a non-root user
#   train  base + training/ (`python -m training ...`, the compose `train` profile)
#   api    base + the HTTP service (the default target)
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
# torch from PyTorch's own index: the CPU build by default, TORCH_VARIANT=cu128 (say) for
# CUDA; or, with TORCH_WHEELS=1, the wheel put in wheels/ (for machines without that index).
# torch alone (--no-deps): its dependencies come with the others, pinned by constraints.txt.
ARG TORCH_VERSION=2.13.0
ARG TORCH_VARIANT=cpu
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/${TORCH_VARIANT}
ARG TORCH_WHEELS=0
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv
COPY wheels/ /tmp/wheels/
# Torch's C++ headers, test binaries and protoc build and test torch itself: not served.
RUN if [ "$TORCH_WHEELS" = 1 ]; then pip install --no-deps /tmp/wheels/torch-"$TORCH_VERSION"*.whl; \
    else pip install --no-deps --index-url "$TORCH_INDEX_URL" "torch==$TORCH_VERSION"; fi \
    && torch=$(python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")/torch \
    && rm -rf "$torch/include" "$torch/test" \
    && find "$torch/bin" -type f ! -name torch_shm_manager -delete
# The dependencies in their own layer, rebuilt only when pyproject.toml or the pins change:
# the versions of constraints.txt (`make lock`), so an image built later has the same ones.
COPY pyproject.toml constraints.txt /src/
RUN python -c "import tomllib; deps = tomllib.load(open('/src/pyproject.toml', 'rb'))['project']['dependencies']; print(*deps, sep='\n')" >/tmp/requirements.txt \
    && pip install -c /src/constraints.txt -r /tmp/requirements.txt
COPY README.md LICENSE /src/
COPY models/ /src/models/
COPY app/ /src/app/
RUN pip install --no-deps /src

FROM ${BASE_IMAGE} AS base
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/venv/bin:$PATH \
    RNNLM_CHECKPOINT_DIR=/srv/rnnlm/checkpoints
RUN groupadd --gid 10001 rnnlm && useradd --create-home --uid 10001 --gid 10001 rnnlm
COPY --from=build /opt/venv /opt/venv
WORKDIR /srv/rnnlm
# Owned by the service user so that a `train` container can add bundles to the volume
# seeded from here; the api mounts that volume read-only.
COPY --chown=10001:10001 checkpoints/ checkpoints/
USER 10001:10001

FROM base AS train
COPY training/ training/
ENTRYPOINT ["python", "-m", "training"]
CMD ["--help"]

FROM base AS api
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/ready', timeout=2)"]
# uvicorn with the server's limits (app/server.py: head and body deadlines, connections).
CMD ["python", "-m", "app", "--host", "0.0.0.0", "--port", "8000"]
