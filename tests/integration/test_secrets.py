"""No secret from the environment reaches what we record: MLflow params, tags, descriptions and text artifacts,
Prefect logs, artifacts and parameters, or the storage folder. A guard against logging settings or env."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from flows.train import TrainParams, train
from tasks.settings import redact_url

pytestmark = pytest.mark.integration
SECRETS = {
    "AWS_SECRET_ACCESS_KEY": "sekret-aws-5b1f0c",
    "TABLOOP_API_TOKEN": "sekret-token-77c2e1",
    "TABLOOP_ALERT_WEBHOOK_URL": "https://hooks.example/services/sekret-hook-91de3a",
}
TEXT_SUFFIXES = {".md", ".json", ".txt", ".html", ".yaml", ".yml", ".csv", ""}


def mlflow_text(client, experiment_id: str) -> list[str]:
    found = []
    for run in client.search_runs([experiment_id]):
        found += [json.dumps(run.data.params), json.dumps(run.data.tags), run.info.run_name or ""]
        pending = [a for a in client.list_artifacts(run.info.run_id)]
        while pending:
            item = pending.pop()
            if item.is_dir:
                pending += client.list_artifacts(run.info.run_id, item.path)
            elif Path(item.path).suffix in TEXT_SUFFIXES:
                found.append(Path(client.download_artifacts(run.info.run_id, item.path)).read_text(errors="replace"))
    for model in client.search_registered_models():
        found += [json.dumps(model.tags), model.description or ""]
        for version in client.search_model_versions(f"name = '{model.name}'"):
            found += [json.dumps(version.tags), version.description or "", version.source or ""]
    return found


def prefect_text(api: str) -> list[str]:
    body = {"flows": {"name": {"any_": ["train"]}}, "sort": "START_TIME_DESC", "limit": 1}
    (run,) = httpx.post(f"{api}/flow_runs/filter", json=body).json()
    logs = httpx.post(f"{api}/logs/filter", json={"logs": {"flow_run_id": {"any_": [run["id"]]}}, "limit": 200}).json()
    artifacts = httpx.post(f"{api}/artifacts/filter", json={"artifacts": {"flow_run_id": {"any_": [run["id"]]}}}).json()
    return [json.dumps(run["parameters"]), *(log["message"] for log in logs), *(json.dumps(a) for a in artifacts)]


def storage_text(root: Path) -> list[str]:
    return [p.read_text(errors="replace") for p in root.rglob("*") if p.is_file() and p.suffix in TEXT_SUFFIXES]


def test_no_secret_reaches_logs_tags_or_artifacts(prefect_server, settings, client, monkeypatch):
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    result = train(TrainParams(demo_rows=600, n_trials=2, cv_folds=2))
    assert result.promoted  # the run did everything it records: trials, plots, card, registration, gate

    experiment = client.get_experiment_by_name(settings.experiment_name)
    recorded = "\n".join(
        [
            *mlflow_text(client, experiment.experiment_id),
            *prefect_text(prefect_server),
            *storage_text(Path(settings.storage_url)),
        ]
    )
    assert len(recorded) > 10_000, "the scan read what the run recorded"
    for name, value in SECRETS.items():
        assert value not in recorded, f"{name} leaked"


def test_passwords_in_urls_are_redacted_before_they_are_recorded(demo_sweep_config):
    assert redact_url("postgresql://mlops:hunter2@db:5432/mlflow") == "postgresql://mlops:***@db:5432/mlflow"
    assert redact_url("http://mlflow:5000") == "http://mlflow:5000"
    assert redact_url("s3://bucket/key") == "s3://bucket/key"
    config = demo_sweep_config(n_trials=1)
    attrs = config.__class__(**{**config.__dict__, "tracking_uri": "postgresql://u:hunter2@h/db"}).to_attrs()
    assert "hunter2" not in json.dumps(attrs)
