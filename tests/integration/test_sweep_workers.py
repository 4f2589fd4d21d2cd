"""One study, two worker processes: the sweep spreads over processes that share one Optuna storage."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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
            [sys.executable, "flows/sweep.py", "--study-name", "shared", "--storage", storage, "--seed", str(seed)],
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
