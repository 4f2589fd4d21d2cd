"""The Optuna sweep: seeded TPE, fold-wise pruning, every trial a nested MLflow run, shareable storage."""

from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import dataclass
from typing import Any

import optuna
import pandas as pd
from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.tracking import MlflowClient
from optuna.study import MaxTrialsCallback
from optuna.trial import TrialState
from sklearn.model_selection import KFold, StratifiedKFold

from tasks.features import FeatureSpec
from tasks.modeling import TaskType, fit, params_from_trial, primary_score, suggest_params
from tasks.settings import redact_url

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SweepConfig:
    """Everything a trial needs besides the data; stored on the study so other workers can join it."""

    task_type: TaskType
    target: str
    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    seed: int
    cv_folds: int
    n_trials: int
    parent_run_id: str
    experiment_id: str
    tracking_uri: str
    data_uri: str
    test_size: float
    split_keys: tuple[str, ...]

    @property
    def spec(self) -> FeatureSpec:
        return FeatureSpec(self.numeric, self.categorical)

    def to_attrs(self) -> dict[str, Any]:
        """For the study's user attributes: workers read them back. The MLflow password stays out (workers use
        their own settings); the data URI stays whole, workers read the snapshot through it."""
        attrs = {k: list(v) if isinstance(v, tuple) else v for k, v in self.__dict__.items()}
        return {**attrs, "tracking_uri": redact_url(self.tracking_uri)}

    @classmethod
    def from_attrs(cls, attrs: dict[str, Any]) -> SweepConfig:
        fields = {k: attrs[k] for k in cls.__dataclass_fields__}
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})


def create_study(name: str, storage: str | None, seed: int, config: SweepConfig | None = None) -> optuna.Study:
    """Create (or join) a maximising study with a seeded TPE sampler and a fold-wise median pruner."""
    study = optuna.create_study(
        study_name=name,
        storage=storage,
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1),
        load_if_exists=True,
    )
    if config is not None:
        study.set_user_attr("config", config.to_attrs())
    return study


def load_study(name: str, storage: str, seed: int) -> tuple[optuna.Study, SweepConfig]:
    study = create_study(name, storage, seed)
    if "config" not in study.user_attrs:
        raise ValueError(f"study {name!r} in {storage} has no sweep config; start it from the train flow")
    return study, SweepConfig.from_attrs(study.user_attrs["config"])


def run_trials(
    study: optuna.Study,
    config: SweepConfig,
    frame: pd.DataFrame,
    n_jobs: int = 1,
    timeout: float | None = None,
    logger: logging.Logger | logging.LoggerAdapter = log,
) -> int:
    """Run trials until the study holds `config.n_trials` finished trials (across every worker).
    Returns how many trials this call ran."""
    features = frame[list(config.spec.columns)]
    target = frame[config.target]
    client = MlflowClient(config.tracking_uri)
    worker = f"{socket.gethostname()}-{os.getpid()}"
    before = len(study.get_trials(deepcopy=False))

    def objective(trial: optuna.Trial) -> float:
        params = suggest_params(trial)
        trial.set_user_attr("worker", worker)
        run = client.create_run(
            config.experiment_id,
            run_name=f"trial-{trial.number:03d}",
            tags={
                "mlflow.parentRunId": config.parent_run_id,
                "optuna.study": study.study_name,
                "optuna.trial": str(trial.number),
                "sweep.worker": worker,
            },
        )
        status = RunStatus.to_string(RunStatus.FAILED)
        try:
            score = cross_validate(trial, features, target, config, params)
            status = RunStatus.to_string(RunStatus.FINISHED)
            return score
        except optuna.TrialPruned:
            status = RunStatus.to_string(RunStatus.KILLED)
            raise
        finally:
            _log_trial(client, run.info.run_id, trial, params, status)

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our progress line replaces its per-trial INFO
    finished = (TrialState.COMPLETE, TrialState.PRUNED)
    study.optimize(
        objective,
        n_trials=config.n_trials,
        n_jobs=n_jobs,
        timeout=timeout,
        callbacks=[MaxTrialsCallback(config.n_trials, states=finished), _progress(config.n_trials, logger)],
        gc_after_trial=False,
    )
    return len(study.get_trials(deepcopy=False)) - before


def cross_validate(
    trial: optuna.Trial, features: pd.DataFrame, target: pd.Series, config: SweepConfig, params: dict[str, Any]
) -> float:
    """Mean primary score over the folds, reported fold by fold so hopeless trials stop early."""
    splitter_cls = KFold if config.task_type == "regression" else StratifiedKFold
    splitter = splitter_cls(n_splits=config.cv_folds, shuffle=True, random_state=config.seed)
    scores: list[float] = []
    for fold, (train_idx, valid_idx) in enumerate(splitter.split(features, target)):
        model = fit(
            features.iloc[train_idx], target.iloc[train_idx], config.spec, params, config.task_type, config.seed
        )
        scores.append(primary_score(model, features.iloc[valid_idx], target.iloc[valid_idx], config.task_type))
        trial.set_user_attr("fold_scores", scores)
        trial.report(sum(scores) / len(scores), fold)
        if trial.should_prune():
            raise optuna.TrialPruned(f"pruned after fold {fold + 1}")
    return sum(scores) / len(scores)


def _log_trial(client: MlflowClient, run_id: str, trial: optuna.Trial, params: dict[str, Any], status: str) -> None:
    """One batched write per trial: SQLite tracking stores pay per round trip."""
    fold_scores: list[float] = trial.user_attrs.get("fold_scores", [])
    now_ms = int(time.time() * 1000)
    metrics = [Metric("cv_fold_score", s, now_ms, step) for step, s in enumerate(fold_scores)]
    if fold_scores:
        metrics.append(Metric("cv_score", sum(fold_scores) / len(fold_scores), now_ms, 0))
    client.log_batch(
        run_id,
        metrics=metrics,
        params=[Param(k, str(v)) for k, v in params_from_trial(params).items()],
        tags=[RunTag("optuna.state", status)],
    )
    client.set_terminated(run_id, status)


def _progress(total: int, logger: logging.Logger | logging.LoggerAdapter):
    def report(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        done = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))
        value = f"{trial.value:.4f}" if trial.value is not None else trial.state.name.lower()
        try:
            best = f"{study.best_value:.4f}"
        except ValueError:  # no completed trial yet
            best = "n/a"
        logger.info(
            "trial %d (%s): %s | %d/%d done | best %s",
            trial.number,
            trial.params.get("family"),
            value,
            done,
            total,
            best,
        )

    return report
