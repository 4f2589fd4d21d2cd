"""The sweep worker flow's steps: join a running study, read its training rows, run trials."""

from __future__ import annotations

import dataclasses

import optuna
import pandas as pd
from prefect import get_run_logger

from tasks.model.sweep import SweepConfig, load_study, run_trials
from tasks.settings import Settings, redact_url
from tasks.steps.retries import IO_RETRIES, step
from tasks.store import data


@step(**IO_RETRIES)
def join_study(study_name: str, optuna_storage: str, seed: int, settings: Settings) -> tuple[optuna.Study, SweepConfig]:
    """The running study and its config, with this worker's own MLflow URI (the study keeps no passwords)."""
    study, config = load_study(study_name, optuna_storage, seed)
    own = settings.tracking_uri
    if redact_url(own) != config.tracking_uri:
        raise ValueError(
            f"this worker's MLflow is {redact_url(own)} but the study's runs are in {config.tracking_uri}: "
            "set TABLOOP_MLFLOW_TRACKING_URI to the same store"
        )
    return study, dataclasses.replace(config, tracking_uri=own)


@step(**IO_RETRIES)
def training_rows(config: SweepConfig, settings: Settings) -> pd.DataFrame:
    """The same training rows the train flow sweeps on: its snapshot, split by the same row-key rule."""
    frame = data.load_table(config.data_uri, settings)
    return data.split(frame, config.test_size, list(config.split_keys))[0]


@step
def run_trials_here(
    study: optuna.Study,
    config: SweepConfig,
    train: pd.DataFrame,
    n_jobs: int,
    timeout_s: float | None,
    max_trials: int | None = None,
) -> int:
    """Trials until the study holds its n_trials, from whichever process or machine (at most `max_trials` from
    this one); returns this one's count."""
    logger = get_run_logger()
    ran = run_trials(study, config, train, n_jobs=n_jobs, timeout=timeout_s, logger=logger, max_trials=max_trials)
    get_run_logger().info("sweep %s: this process ran %d trials", study.study_name, ran)
    return ran
