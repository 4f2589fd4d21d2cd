"""The Optuna sweep: seeded TPE, fold-wise pruning, every trial a nested MLflow run, shareable storage."""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import optuna
import pandas as pd
from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from optuna.study import MaxTrialsCallback
from optuna.trial import TrialState
from sklearn.model_selection import KFold, StratifiedKFold

from tasks.model.families import DEFAULT_FAMILIES, fit, load_plugins, params_from_trial, suggest_params
from tasks.model.features import FeatureSpec, model_input
from tasks.model.metrics import TaskType, primary_score
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
    positive_class: Any = None  # binary tasks: the contract's positive class
    families: tuple[str, ...] = DEFAULT_FAMILIES
    plugins: tuple[str, ...] = ()  # modules that register families of a user's own

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
        fields = {k: attrs[k] for k in cls.__dataclass_fields__ if k in attrs}
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


class OverBudget(Exception):
    """A trial created after the budget was used up; recorded as failed, with no run, and this worker stops."""


def run_trials(
    study: optuna.Study,
    config: SweepConfig,
    frame: pd.DataFrame,
    n_jobs: int = 1,
    timeout: float | None = None,
    logger: logging.Logger | logging.LoggerAdapter = log,
    max_trials: int | None = None,
) -> int:
    """Run trials until the study holds `config.n_trials` trials (across every worker): the budget is the trial
    numbers below n_trials, which the storage hands out one by one. `max_trials` caps what this call takes of
    it (a worker with a time slot, say). Returns how many trials this call ran."""
    load_plugins(config.plugins)
    features = model_input(frame, config.spec)
    target = frame[config.target]
    worker = f"{socket.gethostname()}-{os.getpid()}"
    before = len(study.get_trials(deepcopy=False))
    trial_runs = TrialRuns(MlflowClient(config.tracking_uri), config, study.study_name, worker)

    def objective(trial: optuna.Trial) -> float:
        trial_runs.raise_if_failed()  # a tracking store that refuses writes stops the sweep at the next trial
        if trial.number >= config.n_trials:  # workers asked at the same moment: the storage numbered this one last
            study.stop()
            raise OverBudget(f"trial {trial.number}: the study's {config.n_trials} trials are all taken")
        params = suggest_params(trial, config.families)
        trial.set_user_attr("worker", worker)
        trial_runs.started(trial.number)
        status = RunStatus.to_string(RunStatus.FAILED)
        try:
            score = cross_validate(trial, features, target, config, params)
            status = RunStatus.to_string(RunStatus.FINISHED)
            return score
        except optuna.TrialPruned:
            status = RunStatus.to_string(RunStatus.KILLED)
            raise
        finally:
            trial_runs.finished(trial.number, params, trial.user_attrs.get("fold_scores", []), status)

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # our progress line replaces its per-trial INFO
    try:
        study.optimize(
            objective,
            n_trials=config.n_trials if max_trials is None else min(config.n_trials, max_trials),
            n_jobs=n_jobs,
            timeout=timeout,
            catch=(OverBudget,),
            callbacks=[MaxTrialsCallback(config.n_trials, states=None), _progress(config.n_trials, logger)],
            gc_after_trial=False,
        )
    except BaseException:
        trial_runs.close(raise_error=False)  # the sweep's own error is the one to report
        raise
    trial_runs.close()
    return len(study.get_trials(deepcopy=False)) - before


class TrialRuns:
    """Each trial's nested MLflow run, written by one background thread so trials never wait on the tracking
    store (three writes per trial, ~23 ms on SQLite here: about 4% of the demo sweep). Start and end times are
    taken when the trial starts and ends, not when the writes land. `close()` waits for every write."""

    def __init__(self, client: MlflowClient, config: SweepConfig, study_name: str, worker: str) -> None:
        self.client, self.config, self.study_name, self.worker = client, config, study_name, worker
        self.error: BaseException | None = None
        self._run_ids: dict[int, str] = {}
        self._writes: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        # The client's first call imports its plugins (feast's parse their own source with ast.parse, which on
        # Python 3.11 is not thread-safe): make it here, before trials run beside the writer.
        try:
            client.get_experiment(config.experiment_id)
        except MlflowException as err:
            raise RuntimeError(f"could not record trials in MLflow: {err}") from err
        self._writer = threading.Thread(target=self._write_all, name="trial-runs", daemon=True)
        self._writer.start()

    def started(self, number: int) -> None:
        self._writes.put(partial(self._create, number, _now_ms()))

    def finished(self, number: int, params: dict[str, Any], fold_scores: list[float], status: str) -> None:
        self._writes.put(partial(self._finish, number, params, list(fold_scores), status, _now_ms()))

    def raise_if_failed(self) -> None:
        if self.error is not None:
            raise RuntimeError(f"could not record trials in MLflow: {self.error}") from self.error

    def close(self, raise_error: bool = True) -> None:
        self._writes.put(None)
        self._writer.join()
        if raise_error:
            self.raise_if_failed()

    def _write_all(self) -> None:
        while (write := self._writes.get()) is not None:
            if self.error is None:  # after the first failure, drop the rest: the sweep is about to stop
                try:
                    write()
                except Exception as err:
                    self.error = err

    def _create(self, number: int, start_ms: int) -> None:
        run = self.client.create_run(
            self.config.experiment_id,
            start_time=start_ms,
            run_name=f"trial-{number:03d}",
            tags={
                "mlflow.parentRunId": self.config.parent_run_id,
                "optuna.study": self.study_name,
                "optuna.trial": str(number),
                "sweep.worker": self.worker,
            },
        )
        self._run_ids[number] = run.info.run_id

    def _finish(self, number: int, params: dict[str, Any], fold_scores: list[float], status: str, end_ms: int) -> None:
        """One batched write, then the end: SQLite tracking stores pay per round trip."""
        run_id = self._run_ids.pop(number)
        metrics = [Metric("cv_fold_score", s, end_ms, step) for step, s in enumerate(fold_scores)]
        if fold_scores:
            metrics.append(Metric("cv_score", sum(fold_scores) / len(fold_scores), end_ms, 0))
        self.client.log_batch(
            run_id,
            metrics=metrics,
            params=[Param(k, str(v)) for k, v in params_from_trial(params).items()],
            tags=[RunTag("optuna.state", status)],
        )
        self.client.set_terminated(run_id, status, end_time=end_ms)


def _now_ms() -> int:
    return int(time.time() * 1000)


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
        held_out = features.iloc[valid_idx], target.iloc[valid_idx]
        scores.append(primary_score(model, *held_out, config.task_type, config.positive_class))
        trial.set_user_attr("fold_scores", scores)
        trial.report(sum(scores) / len(scores), fold)
        if trial.should_prune():
            raise optuna.TrialPruned(f"pruned after fold {fold + 1}")
    return sum(scores) / len(scores)


def _progress(total: int, logger: logging.Logger | logging.LoggerAdapter):
    def report(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if trial.number >= total:  # over budget (OverBudget): not a trial of the sweep
            return
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
