"""One study, two worker processes: the sweep spreads over processes that share one Optuna storage."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import optuna
import pytest
from optuna.trial import TrialState

from tasks.demo import generate
from tasks.demo import schema as demo_schema
from tasks.model import schemas
from tasks.model.sweep import create_study
from tasks.store import data

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def worker_command(study: str, storage: str, seed: int) -> list[str]:
    return [sys.executable, "flows/sweep.py", "--study-name", study, "--storage", storage, "--seed", str(seed)]


def test_two_workers_share_one_study(prefect_server, settings, client, demo_sweep_config, tmp_path):
    frame = schemas.validate(generate(n_rows=500, seed=4), demo_schema(), "demo")
    version = data.snapshot(frame, "churn-demo", settings)
    config = demo_sweep_config(n_trials=10, seed=42, data_uri=version.uri)
    experiment = client.get_experiment_by_name(settings.experiment_name)
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    create_study("shared", storage, config.seed, config)

    env = {**os.environ, "PREFECT_API_URL": prefect_server}
    workers = [
        subprocess.Popen(
            # at most 6 of the 10 trials each: both must run some, however far apart the two processes start
            [*worker_command("shared", storage, seed), "--max-trials", "6"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for seed in (1, 2)
    ]
    outputs = [w.communicate(timeout=600)[0] for w in workers]
    for worker, output in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, output[-3000:]

    study = optuna.load_study(study_name="shared", storage=storage)
    finished = study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
    # the budget is the trial numbers below n_trials: a trial a worker was handed after that is failed unrun
    assert len(finished) == config.n_trials
    assert all(t.number >= config.n_trials for t in study.get_trials(states=(TrialState.FAIL,)))
    assert len({t.user_attrs["worker"] for t in finished}) == 2, "both workers ran trials"
    children = client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{config.parent_run_id}'"
    )
    assert len(children) == len(finished)
    assert {r.data.tags["sweep.worker"] for r in children} == {t.user_attrs["worker"] for t in finished}


POSTGRES = os.environ.get("TABLOOP_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def postgres_stores(tmp_path) -> Iterator[dict[str, str]]:
    """Databases of its own on the machine's PostgreSQL, and an MLflow tracking server on one of them."""
    from tasks.store import databases

    prefix = f"test_{uuid.uuid4().hex[:8]}"
    names = [f"{prefix}_mlflow", f"{prefix}_optuna"]
    databases.ensure_databases(POSTGRES, names, "TABLOOP_TEST_POSTGRES_URL")
    port = free_port()
    env = {
        **os.environ,
        "MLFLOW_BACKEND_STORE_URI": databases.database_url(POSTGRES, names[0]),
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    }
    command = [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    command += ["--artifacts-destination", (tmp_path / "artifacts").as_uri()]
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None and time.time() < deadline, "the MLflow server did not come up"
            time.sleep(1)
        yield {"tracking_uri": url, "optuna": databases.database_url(POSTGRES, names[1], "psycopg2")}
    finally:
        server.terminate()
        server.wait(timeout=30)
        databases.drop_databases(POSTGRES, names)


def test_the_train_flow_and_two_workers_share_one_study_on_postgresql(prefect_server, postgres_stores, tmp_path):
    """As on three machines: the train flow and two sweep workers in their own processes, one Optuna study and
    one MLflow tracking server, both on PostgreSQL. Every trial is a nested run of the flow's one parent run,
    and the study holds exactly n_trials finished trials."""
    from mlflow.tracking import MlflowClient

    n_trials, storage, study_name = 24, postgres_stores["optuna"], "shared-on-postgres"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("TABLOOP_")},
        "PREFECT_API_URL": prefect_server,
        "TABLOOP_STORAGE_URL": str(tmp_path / "storage"),
        "TABLOOP_MLFLOW_TRACKING_URI": postgres_stores["tracking_uri"],
    }
    flags = ["--demo-rows", "3000", "--n-trials", str(n_trials), "--cv-folds", "2", "--model-name", "swept"]
    flags += ["--optuna-storage", storage, "--study-name", study_name]
    options = {"cwd": ROOT, "env": env, "stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "text": True}
    trainer = subprocess.Popen([sys.executable, "flows/train.py", *flags], **options)
    deadline = time.time() + 300
    while (
        study_name not in optuna.get_all_study_names(storage)
        or "config" not in optuna.load_study(study_name=study_name, storage=storage).user_attrs
    ):
        assert trainer.poll() is None, trainer.communicate()[0][-3000:]
        assert time.time() < deadline, "the train flow never started its study"
        time.sleep(0.5)
    join = [sys.executable, "flows/sweep.py", "--study-name", study_name, "--storage", storage]
    workers = [subprocess.Popen([*join, "--seed", str(seed)], **options) for seed in (1, 2)]
    for process in (*workers, trainer):
        output = process.communicate(timeout=900)[0]
        assert process.returncode == 0, output[-3000:]

    study = optuna.load_study(study_name=study_name, storage=storage)
    finished = study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
    assert len(finished) == n_trials
    assert all(t.number >= n_trials for t in study.get_trials(states=(TrialState.FAIL,)))
    assert len({t.user_attrs["worker"] for t in finished}) >= 2, "the trials were spread over processes"
    client = MlflowClient(postgres_stores["tracking_uri"], postgres_stores["tracking_uri"])
    parent = study.user_attrs["config"]["parent_run_id"]
    children = client.search_runs(
        [client.get_run(parent).info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent}'"
    )
    assert len(children) == n_trials
    assert {r.data.tags["sweep.worker"] for r in children} == {t.user_attrs["worker"] for t in finished}
    assert client.get_model_version_by_alias("swept", "champion").run_id == parent
