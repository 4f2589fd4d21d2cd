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
    monkeypatch.setenv("CHURNOPS_STORAGE_URL", str(storage))
    monkeypatch.setenv("CHURNOPS_MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("CHURNOPS_MODEL_NAME", "churn-test")
    monkeypatch.setenv("CHURNOPS_EXPERIMENT_NAME", "churn-test")
    return get_settings()


@pytest.fixture
def client(settings):
    from tasks import registry

    return registry.connect(settings)
