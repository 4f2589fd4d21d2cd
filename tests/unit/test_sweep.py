"""The sweep: nested MLflow runs per trial, reproducibility, and the model it produces."""

from __future__ import annotations

import dataclasses

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState

from tasks.demo import ID_COLUMN, TARGET, TIMESTAMP_COLUMN, generate
from tasks.demo import schema as demo_schema
from tasks.model import schemas
from tasks.model.families import DEFAULT_FAMILIES, fit, suggest_params
from tasks.model.features import feature_spec
from tasks.model.metrics import primary_score
from tasks.model.sweep import create_study, run_trials
from tasks.store import data


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return schemas.validate(generate(n_rows=500, seed=3), demo_schema(), "demo")


def test_every_trial_is_a_nested_run_with_params_and_cv_score(client, demo_sweep_config, frame):
    config = demo_sweep_config(n_trials=5)
    study = create_study("nested", None, config.seed, config)
    assert run_trials(study, config, frame) == 5
    children = client.search_runs(
        [config.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{config.parent_run_id}'"
    )
    assert len(children) == 5
    for run in children:
        assert run.data.params["family"] in DEFAULT_FAMILIES
        assert run.info.status in {"FINISHED", "KILLED"}
        assert "cv_fold_score" in run.data.metrics
    finished = [r for r in children if r.info.status == "FINISHED"]
    assert {round(r.data.metrics["cv_score"], 6) for r in finished} == {
        round(t.value, 6) for t in study.trials if t.value is not None
    }


def test_same_seed_and_data_give_the_same_best_params(demo_sweep_config, frame):
    best = []
    for attempt in range(2):
        config = demo_sweep_config(n_trials=6)
        study = create_study(f"repro-{attempt}", None, config.seed, config)
        run_trials(study, config, frame)
        best.append((study.best_params, study.best_value))
    assert best[0] == best[1]


@pytest.mark.parametrize("family", [*DEFAULT_FAMILIES, "xgboost", "lightgbm"])
def test_fit_learns_something_for_every_family(frame, family):
    train, test = data.split(frame, 0.3, [ID_COLUMN])
    spec = feature_spec(demo_schema(), TARGET, exclude=(ID_COLUMN, TIMESTAMP_COLUMN))
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
    params = suggest_params(trial, (family,))  # a point of the family's own search space
    model = fit(train[spec.columns], train[TARGET], spec, params, "binary", seed=0)
    assert primary_score(model, test[spec.columns], test[TARGET], "binary") > 0.65
    # the preprocessing lives in the pipeline: an unseen category and a missing number still score
    odd = test[spec.columns].head(2).copy()
    odd["region"] = ["atlantis", None]
    odd["age"] = [None, 40.0]
    assert model.predict_proba(odd).shape == (2, 2)


def test_parallel_trials_in_threads_all_log_their_nested_run(client, demo_sweep_config, frame):
    config = demo_sweep_config(n_trials=4)
    study = create_study("threads", None, config.seed, config)
    run_trials(study, config, frame, n_jobs=2)
    children = client.search_runs(
        [config.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{config.parent_run_id}'"
    )
    assert len(study.trials) >= 4
    assert sorted(int(r.data.tags["optuna.trial"]) for r in children) == [t.number for t in study.trials]


def test_trial_runs_keep_the_trials_own_start_and_end_times(client, demo_sweep_config, frame):
    """Trial runs are written in the background; their times still say when each trial ran."""
    config = demo_sweep_config(n_trials=3)
    study = create_study("times", None, config.seed, config)
    run_trials(study, config, frame)
    children = client.search_runs(
        [config.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{config.parent_run_id}'"
    )
    by_number = {int(r.data.tags["optuna.trial"]): r.info for r in children}
    for trial in study.trials:
        run = by_number[trial.number]
        assert abs(run.start_time - trial.datetime_start.timestamp() * 1000) < 1000
        assert abs(run.end_time - trial.datetime_complete.timestamp() * 1000) < 1000
        assert run.start_time <= run.end_time


def test_a_tracking_store_that_refuses_trial_runs_stops_the_sweep(demo_sweep_config, frame):
    config = dataclasses.replace(demo_sweep_config(n_trials=6), experiment_id="987654")  # no such experiment
    study = create_study("refused", None, config.seed, config)
    with pytest.raises(RuntimeError, match="could not record trials in MLflow"):
        run_trials(study, config, frame)
    assert len(study.trials) < 6, "the sweep stopped instead of training trials nobody can see"


def test_a_worker_that_asks_after_the_budget_is_taken_runs_nothing(client, demo_sweep_config, frame):
    """The race between workers, made deterministic: another worker holds the last trial numbers (running), so
    the trial this worker is handed is over the budget. It is recorded as failed, gets no MLflow run, and the
    worker stops instead of training an extra trial."""
    config = demo_sweep_config(n_trials=3)
    study = create_study("taken", None, config.seed, config)
    held = [study.ask() for _ in range(3)]  # numbers 0-2, still running elsewhere
    run_trials(study, config, frame)
    assert [t.number for t in held] == [0, 1, 2]
    states = {t.number: t.state for t in study.trials}
    assert states == {0: TrialState.RUNNING, 1: TrialState.RUNNING, 2: TrialState.RUNNING, 3: TrialState.FAIL}
    children = client.search_runs(
        [config.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{config.parent_run_id}'"
    )
    assert children == []


def test_a_worker_with_max_trials_leaves_the_rest_of_the_budget_to_others(demo_sweep_config, frame):
    config = demo_sweep_config(n_trials=5)
    study = create_study("capped", None, config.seed, config)
    assert run_trials(study, config, frame, max_trials=2) == 2
    assert run_trials(study, config, frame) == 3
    assert len(study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))) == 5
