# The one image of tabloop: Prefect flow runs (the Kubernetes work pool's jobs), Ray Serve nodes (KubeRay) and
# the MLflow tracking server (deployments/k8s/). Build from the repository root:
#   docker build -t tabloop:$(git rev-parse --short HEAD) .
# Ray's images pin their Python; this one is the project's own (3.11), so the head and workers of a RayService
# must all run this image.
FROM python:3.11.7-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MLFLOW_DISABLE_TELEMETRY=true \
    PREFECT_SERVER_ANALYTICS_ENABLED=false \
    DO_NOT_TRACK=true \
    TABLOOP_PROJECT_DIR=/app \
    TABLOOP_STORAGE_URL=/app/.storage \
    PREFECT_HOME=/app/.storage/prefect

RUN groupadd --gid 10001 tabloop \
    && useradd --uid 10001 --gid tabloop --create-home --shell /usr/sbin/nologin tabloop

WORKDIR /app

# Dependencies first, in their own layer: a code change does not reinstall them. The pins are pyproject.toml's;
# the empty packages let pip resolve and install everything the project needs before the code is copied.
COPY pyproject.toml README.md ./
RUN mkdir flows tasks serving deployments \
    && touch flows/__init__.py tasks/__init__.py serving/__init__.py deployments/__init__.py \
    && pip install --no-cache-dir . \
    && pip uninstall --yes tabloop \
    && rm -rf flows tasks serving deployments

# The code, installed editable so the project folder (models/, serving/config.yaml, prefect.yaml) is /app:
# Prefect's pull step runs flows from TABLOOP_PROJECT_DIR and Ray Serve imports serving.app from here.
COPY flows/ flows/
COPY tasks/ tasks/
COPY serving/ serving/
COPY deployments/ deployments/
COPY models/ models/
COPY prefect.yaml ./
RUN pip install --no-cache-dir --no-deps -e . \
    && mkdir -p /app/.storage/prefect \
    && chown -R tabloop:tabloop /app/.storage

USER 10001:10001

# 8000: the model API (Ray Serve); 5000: MLflow when the image runs the tracking server.
EXPOSE 8000 5000
CMD ["python", "flows/train.py", "--help"]
