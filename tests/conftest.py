"""Shared fixtures: one Prefect test server per session, and a fresh MLflow store and storage folder per test."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# Before prefect is imported anywhere: offline, and patient with a slow CI start.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")
# Every Ray instance the tests start is a throwaway on loopback: token auth off for the whole session. Ray caches
# the mode per process and turns it on for a new local instance once ~/.ray/auth_token exists (any earlier
# `ray.init()` on the machine writes it), so a mode set by one test would leave the next at odds with its own
# cluster. The stack's processes get token auth and their own token explicitly (deployments/stack.py).
os.environ["RAY_AUTH_MODE"] = "disabled"


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[str]:
    """A real Prefect API (temporary server, SQLite) shared by every test that runs a flow."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield PREFECT_API_URL.value()


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Settings pointing every store at this test's own folder, through the environment like users do."""
    from tasks.settings import get_settings

    storage = tmp_path / "storage"
    storage.mkdir()
    monkeypatch.setenv("TABLOOP_STORAGE_URL", str(storage))
    monkeypatch.setenv("TABLOOP_MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("TABLOOP_MODEL_NAME", "churn-test")
    monkeypatch.setenv("TABLOOP_EXPERIMENT_NAME", "churn-test")
    return get_settings()


@pytest.fixture
def client(settings):
    from tasks.store import registry

    return registry.connect(settings, settings.experiment_name)


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A real S3 API on loopback (moto's server mode), reached through s3fs and boto3 like AWS would be."""
    from moto.server import ThreadedMotoServer

    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def demo_sweep_config(settings, client):
    """Builds a SweepConfig for the demo data under a fresh parent run in this test's MLflow store."""
    from tasks.demo import ID_COLUMN, TARGET, TIMESTAMP_COLUMN
    from tasks.demo import schema as demo_schema
    from tasks.model.features import feature_spec
    from tasks.model.sweep import SweepConfig

    def build(n_trials: int, seed: int = 11, data_uri: str = "unused"):
        spec = feature_spec(demo_schema(), TARGET, exclude=(ID_COLUMN, TIMESTAMP_COLUMN))
        experiment = client.get_experiment_by_name(settings.experiment_name)
        parent = client.create_run(experiment.experiment_id, run_name="parent")
        return SweepConfig(
            task_type="binary",
            target=TARGET,
            numeric=spec.numeric,
            categorical=spec.categorical,
            seed=seed,
            cv_folds=2,
            n_trials=n_trials,
            parent_run_id=parent.info.run_id,
            experiment_id=experiment.experiment_id,
            tracking_uri=settings.tracking_uri,
            data_uri=data_uri,
            test_size=0.2,
            split_keys=(ID_COLUMN,),
        )

    return build
