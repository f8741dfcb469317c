# Two images from one file:
#   docker build --target api    -t trainserve-api .      # HTTP API, CPU only
#   docker build --target worker -t trainserve-worker .   # Celery worker for NVIDIA GPUs
# docker-compose.yml builds both. Both run as the unprivileged user `trainserve` (uid 10001,
# the same in both images, so they can share the data volume) and keep their data in /data.
#
# Layer order matters for rebuild time: pyproject.toml is copied alone and the pinned
# dependencies (torch==2.14.1, torchvision==0.29.1, ...) are installed from it, then the
# source is copied and the project installed with --no-deps. Editing code reuses the
# dependency layer; only changing pyproject.toml rebuilds it.

# ---------------------------------------------------------------- api
FROM python:3.12-slim-bookworm AS api

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH

RUN python -m venv /opt/venv \
 && useradd --uid 10001 --create-home --shell /usr/sbin/nologin trainserve \
 && mkdir /data && chown trainserve:trainserve /data

WORKDIR /src
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > requirements.txt \
 && pip install -r requirements.txt

COPY README.md ./
COPY app/ app/
COPY workers/ workers/
COPY models/ models/
RUN pip install --no-deps . && rm -rf build *.egg-info

USER trainserve
WORKDIR /home/trainserve
ENV TRAINSERVE_HOST=0.0.0.0 \
    TRAINSERVE_PORT=8000 \
    TRAINSERVE_DATA_DIR=/data
EXPOSE 8000
# No curl in slim images: Python's urllib. A non-2xx answer or no answer exits non-zero.
HEALTHCHECK --interval=15s --timeout=10s --start-period=30s --retries=3 \
    CMD python -c "import os, urllib.request as u; u.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('TRAINSERVE_PORT', '8000'), timeout=5)"
# Refuses to listen on 0.0.0.0 without TRAINSERVE_API_KEYS: set it when running the image.
CMD ["trainserve", "api"]

# ---------------------------------------------------------------- worker
# The `base` flavour is enough: torch's PyPI wheel (cu130) brings its own CUDA libraries
# (cuBLAS, cuDNN, NCCL...), so `-runtime` would only add a second copy of them. The host
# needs an NVIDIA driver for CUDA 13.0 (>= 580) and the NVIDIA Container Toolkit.
FROM nvidia/cuda:13.0.2-base-ubuntu24.04 AS worker

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH

# Ubuntu 24.04's Python is 3.12. uid 1000 is taken by the image's `ubuntu` user.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /opt/venv \
 && useradd --uid 10001 --create-home --shell /usr/sbin/nologin trainserve \
 && mkdir /data && chown trainserve:trainserve /data

WORKDIR /src
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > requirements.txt \
 && pip install -r requirements.txt

COPY README.md ./
COPY app/ app/
COPY workers/ workers/
COPY models/ models/
RUN pip install --no-deps . && rm -rf build *.egg-info

USER trainserve
WORKDIR /home/trainserve
ENV TRAINSERVE_DATA_DIR=/data
# The worker touches a file every 5 s from a thread, also while a job trains (a busy solo-pool
# worker answers no `celery inspect ping`); healthy while it is fresh (workers/liveness.py).
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD python -m workers.liveness
CMD ["trainserve", "worker", "--concurrency", "1", "--queues", "training"]
