# autoaug image: the pipeline (`dvc repro`, `autoaug worker`), the MLflow server and the API
# all run from this one image, so MLflow, Optuna and psycopg versions match everywhere.
#
#   docker compose build                                                # CPU wheels (default)
#   docker compose build --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128   # CUDA
#   (or set TORCH_INDEX in .env)
#
# No ENTRYPOINT: each compose service gives its own `command:`.
FROM python:3.11-slim

# PyTorch wheel index: .../whl/cpu (small, no CUDA) or .../whl/cuXYZ for NVIDIA GPUs.
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MPLBACKEND=Agg \
    DVC_NO_ANALYTICS=1 \
    HOME=/home/autoaug

# git: DVC (and MLflow's run tags) read the checkout's git repository.
RUN apt-get update \
    && apt-get install -y --no-install-recommends git \
    && rm -rf /var/lib/apt/lists/*

# The checkout is bind-mounted at /workspace and usually belongs to another UID than the
# container's user: without this, git (and libgit2 inside DVC) refuse it as "dubious ownership".
RUN git config --system --add safe.directory '*'

# torch first, from the chosen wheel index, in the ranges of pyproject.toml; the
# `pip install -e .` below then finds them satisfied and keeps them.
RUN pip install --index-url "${TORCH_INDEX}" "torch>=2.4,<2.15" "torchvision>=0.19,<0.30"

WORKDIR /workspace
COPY pyproject.toml README.md ./
COPY pipeline ./pipeline
COPY service ./service
RUN pip install -e .

# User: a non-root `autoaug` (UID/GID 1000) by default. The pipeline, worker and api services
# bind-mount the checkout and write into it (outputs/, published/, .dvc/cache, .autoaug/), so
# docker-compose.yml runs them as `user: ${AUTOAUG_UID}:${AUTOAUG_GID}` (your `id -u`/`id -g`,
# 1000 by default): files they write stay yours on the host, not root's. Any such UID works
# here because HOME (caches of pip, matplotlib, DVC, torch) is world-writable with the sticky
# bit. /mlartifacts is pre-created and owned by `autoaug` so the fresh named volume mounted on
# it by the mlflow service (which runs as this default user) is writable.
RUN groupadd --gid 1000 autoaug \
    && useradd --uid 1000 --gid 1000 --home-dir /home/autoaug --create-home --shell /bin/bash autoaug \
    && chmod 1777 /home/autoaug \
    && mkdir -p /mlartifacts \
    && chown autoaug:autoaug /mlartifacts
USER autoaug
