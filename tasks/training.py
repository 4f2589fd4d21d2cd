"""The training flow's steps: thin Prefect tasks that compose the pure functions of the other modules."""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import mlflow
import optuna
import pandas as pd
import pandera.pandas as pa
from mlflow.entities import Metric, Param
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff
from sklearn.pipeline import Pipeline

from tasks import data, evaluate, events, registry, reports, schemas, storage
from tasks.demo_data import make_churn_data
from tasks.features import FeatureSpec, model_input
from tasks.modeling import SKOPS_TRUSTED_TYPES, TaskType, fit, params_from_trial
from tasks.settings import PROJECT_ROOT, Settings, redact_url
from tasks.sweep import SweepConfig, create_study, load_study, run_trials

# Inputs here are frames and clients: hashing them for a cache key costs time and buys nothing.
step = partial(task, cache_policy=NO_CACHE)


def is_transient(exc: BaseException | None) -> bool:
    """Network and filesystem hiccups anywhere in the cause chain; a corrupt file or a bad model is not one.

    An S3 read timeout is not one either: s3fs has already retried it five times, each waiting out the
    configured read timeout, so the endpoint is stalled and another round would only multiply the wait."""
    from botocore.exceptions import ConnectionError as S3ConnectionError
    from botocore.exceptions import ReadTimeoutError

    while exc is not None:
        if isinstance(exc, data.DataLoadError | ReadTimeoutError):
            return False
        # requests and socket errors derive from OSError; botocore's connection errors do not
        if isinstance(exc, OSError | S3ConnectionError):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _retry_if_transient(task: Any, task_run: Any, state: Any) -> bool:
    return is_transient(state.result(raise_on_failure=False))


IO_RETRIES: dict[str, Any] = {
    "retries": 3,
    "retry_delay_seconds": exponential_backoff(backoff_factor=2),
    "retry_jitter_factor": 0.5,
    "retry_condition_fn": _retry_if_transient,
}


@step
def load_demo(rows: int, seed: int, drift: float) -> pd.DataFrame:
    return make_churn_data(n_rows=rows, seed=seed, drift=drift)


@step(**IO_RETRIES)
def load_file(uri: str, settings: Settings) -> pd.DataFrame:
    return data.load_table(uri, settings)


def schema_for(
    raw: pd.DataFrame,
    uri: str,
    target: str,
    classification: bool,
    timestamp: str | None,
    stored: pa.DataFrameSchema | None,
) -> pa.DataFrameSchema:
    """The dataset's stored schema, or for data seen the first time one inferred from it (kept once accepted)."""
    if stored is not None:
        return stored
    if target not in raw.columns:
        raise schemas.DataValidationError(uri, [schemas.Problem(column=target, check="column_in_dataframe", rows=0)])
    return schemas.infer_schema(raw, target, classification, timestamp)


@contextmanager
def run_status(client: MlflowClient, run_id: str) -> Iterator[None]:
    """Close the parent run as FINISHED, or FAILED when any later step raises."""
    try:
        yield
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")


def schema_uri(settings: Settings, dataset: str) -> str:
    return storage.join(settings.storage_url, "datasets", dataset, "schema.json")


@step(**IO_RETRIES)
def stored_schema(settings: Settings, dataset: str) -> pa.DataFrameSchema | None:
    uri = schema_uri(settings, dataset)
    if not storage.exists(uri, settings):
        return None
    return schemas.schema_from_json(storage.read_bytes(uri, settings).decode())


@step
def validate(
    frame: pd.DataFrame, schema: pa.DataFrameSchema, source: str, target: str, task_type: str, cv_folds: int
) -> pd.DataFrame:
    """Lazy validation; on failure, publish the report as a Prefect table before the flow ends."""
    try:
        # each class needs a row in every fold, plus one for the held-out split
        return schemas.validate_for_training(frame, schema, source, target, task_type, min_class_rows=cv_folds + 1)
    except schemas.DataValidationError as err:
        create_table_artifact(
            table=err.as_table(),
            key="data-validation-failures",
            description=f"Why {source} was rejected: nothing was trained or registered.",
        )
        raise


@step(**IO_RETRIES)
def snapshot(frame: pd.DataFrame, dataset: str, schema: pa.DataFrameSchema, settings: Settings) -> data.DataVersion:
    """Write the data once under its content hash; the first accepted schema of a dataset is kept beside it."""
    version = data.snapshot(frame, dataset, settings)
    storage.write_bytes_once(schema_uri(settings, dataset), schemas.schema_to_json(schema).encode(), settings)
    get_run_logger().info(
        "data version %s: %s (%s)",
        version.digest,
        version.uri,
        "new snapshot" if version.created else "already stored, not written again",
    )
    return version


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=5, check=True
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


OWNER_HOST_TAG, OWNER_PID_TAG = "churnops.host", "churnops.pid"


@step(**IO_RETRIES)
def close_abandoned(client: MlflowClient, settings: Settings) -> list[str]:
    """Settle what a training that died left behind; returns the runs closed.

    A SIGKILLed or OOM-killed training cannot close its own run: runs left RUNNING by a process of this host
    that is gone are marked KILLED, with their running trials. Runs of other hosts, or of a live process here
    (a concurrent training), are left alone. Then every version registered by a KILLED or FAILED run that no
    gate decided is tagged `gate.status=abandoned`, so no version is left looking like it awaits a decision
    (none of them ever held an alias: the gate moves it last)."""
    experiment = client.get_experiment_by_name(settings.experiment_name)
    if experiment is None:
        return []
    host = socket.gethostname()
    closed = []
    for run in client.search_runs(
        [experiment.experiment_id],
        filter_string=f"attributes.status = 'RUNNING' and tags.`{OWNER_HOST_TAG}` = '{host}'",
    ):
        pid = run.data.tags.get(OWNER_PID_TAG, "")
        if not pid.isdigit() or _process_alive(int(pid)):
            continue
        trials = client.search_runs(
            [experiment.experiment_id],
            filter_string=f"attributes.status = 'RUNNING' and tags.`mlflow.parentRunId` = '{run.info.run_id}'",
        )
        for orphan in [run, *trials]:
            client.set_tag(orphan.info.run_id, "churnops.closed_because", f"process {pid} on {host} is gone")
            client.set_terminated(orphan.info.run_id, "KILLED")
        closed.append(run.info.run_id)
    for version in client.search_model_versions(f"name = '{settings.model_name}'"):
        if "gate.status" in (version.tags or {}) or not version.run_id:
            continue
        status = client.get_run(version.run_id).info.status
        if status in {"KILLED", "FAILED"}:
            client.set_model_version_tag(settings.model_name, version.version, "gate.status", "abandoned")
            client.set_model_version_tag(
                settings.model_name,
                version.version,
                "gate.reasons",
                f"its training run ended {status} before the gate decided; never promoted",
            )
    if closed:
        get_run_logger().warning("closed %d training run(s) left RUNNING by a killed process: %s", len(closed), closed)
    return closed


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


@step(**IO_RETRIES)
def start_run(
    client: MlflowClient,
    settings: Settings,
    version: data.DataVersion,
    frame: pd.DataFrame,
    target: str,
    task_type: TaskType,
    commit: str,
    run_name: str | None,
) -> str:
    """Open the parent MLflow run and record its lineage: the data version as a dataset input, and the code."""
    experiment = client.get_experiment_by_name(settings.experiment_name)
    run = client.create_run(
        experiment.experiment_id,
        run_name=run_name,
        tags={
            "mlflow.source.git.commit": commit,
            "data.digest": version.digest,
            "data.uri": redact_url(version.uri),
            "data.dataset": version.dataset,
            "data.rows": str(version.rows),
            "task_type": task_type,
            "target": target,
            OWNER_HOST_TAG: socket.gethostname(),
            OWNER_PID_TAG: str(os.getpid()),
        },
    )
    with warnings.catch_warnings():
        # Both are about other uses of MLflow: the integer-column hint concerns model signatures (a dataset
        # record holds no missing-value contract), and a local path matches two equivalent source types.
        warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer column", category=UserWarning)
        warnings.filterwarnings("ignore", message="The specified dataset source can be", category=UserWarning)
        dataset = mlflow.data.from_pandas(
            frame, source=redact_url(version.uri), targets=target, name=version.dataset, digest=version.digest
        )
        with mlflow.start_run(run_id=run.info.run_id):
            mlflow.log_input(dataset, context="training")  # infers the dataset's schema here
    return run.info.run_id


@step
def sweep(
    config: SweepConfig,
    train: pd.DataFrame,
    study_name: str,
    optuna_storage: str | None,
    n_jobs: int,
    timeout_s: float | None,
) -> optuna.Study:
    study = create_study(study_name, optuna_storage, config.seed, config)
    ran = run_trials(study, config, train, n_jobs=n_jobs, timeout=timeout_s, logger=get_run_logger())
    get_run_logger().info(
        "sweep %s: this process ran %d trials; best %.4f with %s", study_name, ran, study.best_value, study.best_params
    )
    return study


@step(**IO_RETRIES)
def join_study(study_name: str, optuna_storage: str, seed: int, settings: Settings) -> tuple[optuna.Study, SweepConfig]:
    """The running study and its config, with this worker's own MLflow URI (the study keeps no passwords)."""
    study, config = load_study(study_name, optuna_storage, seed)
    own = settings.tracking_uri
    if redact_url(own) != config.tracking_uri:
        raise ValueError(
            f"this worker's MLflow is {redact_url(own)} but the study's runs are in {config.tracking_uri}: "
            "set CHURNOPS_MLFLOW_TRACKING_URI to the same store"
        )
    return study, dataclasses.replace(config, tracking_uri=own)


@step(**IO_RETRIES)
def training_rows(config: SweepConfig, settings: Settings) -> pd.DataFrame:
    """The same training rows the train flow sweeps on: its snapshot, split by the same row-key rule."""
    frame = data.load_table(config.data_uri, settings)
    return data.split(frame, config.test_size, list(config.split_keys))[0]


@step
def run_worker_trials(
    study: optuna.Study, config: SweepConfig, train: pd.DataFrame, n_jobs: int, timeout_s: float | None
) -> int:
    return run_trials(study, config, train, n_jobs=n_jobs, timeout=timeout_s, logger=get_run_logger())


@dataclass(frozen=True)
class Candidate:
    model: Pipeline
    params: dict[str, Any]
    metrics: dict[str, float]


@step
def fit_and_evaluate(
    client: MlflowClient, run_id: str, study: optuna.Study, config: SweepConfig, train: pd.DataFrame, test: pd.DataFrame
) -> Candidate:
    """Refit the best configuration on all training rows with the sweep's own fit(); score it on held-out rows."""
    params = params_from_trial(study.best_params)
    spec = config.spec
    model = fit(model_input(train, spec), train[config.target], spec, params, config.task_type, config.seed)
    x_test, y_test = model_input(test, spec), test[config.target]
    scores = evaluate.metrics(model, x_test, y_test, config.task_type)
    importance = evaluate.feature_importance(model, x_test, y_test, config.task_type, config.seed)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        plots = [
            *evaluate.plot_task(model, x_test, y_test, config.task_type, out),
            evaluate.plot_importance(importance, out),
            *evaluate.plot_study(study, out),
        ]
        importance.rename("importance").to_csv(out / "feature_importance.csv")
        for path in [*plots, out / "feature_importance.csv"]:
            client.log_artifact(run_id, str(path), "evaluation")
    now_ms = int(time.time() * 1000)
    client.log_batch(  # one round trip, not one per value
        run_id,
        metrics=[
            *(Metric(f"test_{key}", value, now_ms, 0) for key, value in scores.items()),
            Metric("cv_best_score", study.best_value, now_ms, 0),
        ],
        params=[Param(f"best.{key}", str(value)) for key, value in params.items()],
    )
    return Candidate(model, params, scores)


@step(**IO_RETRIES)
def log_and_register(
    run_id: str,
    candidate: Candidate,
    spec: FeatureSpec,
    schema: pa.DataFrameSchema,
    train: pd.DataFrame,
    settings: Settings,
    metadata: dict[str, Any],
) -> str:
    """Log the whole pipeline (preprocessing inside) in the safe skops format, with its schema, and register it."""
    example = model_input(train.head(5), spec)
    signature = infer_signature(example, candidate.model.predict(example))
    with tempfile.TemporaryDirectory() as tmp:
        schema_file = Path(tmp) / "schema.json"
        schema_file.write_text(schemas.schema_to_json(schema))
        with mlflow.start_run(run_id=run_id):
            info = mlflow.sklearn.log_model(
                candidate.model,
                name="model",
                signature=signature,
                input_example=example,
                serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_SKOPS,
                skops_trusted_types=SKOPS_TRUSTED_TYPES,
                extra_files=[str(schema_file)],
                pip_requirements=runtime_requirements(),  # inferring them re-imports the model: ~5 s a run
                metadata=metadata,
            )
    version = mlflow.register_model(
        info.model_uri, settings.model_name, tags={"data.digest": metadata["data_digest"], "run_id": run_id}
    )
    return str(version.version)


def runtime_requirements() -> list[str]:
    from importlib.metadata import version

    return [f"{name}=={version(name)}" for name in ("mlflow", "scikit-learn", "skops", "pandas", "numpy")]


@step(**IO_RETRIES)
def champion_metrics(
    client: MlflowClient, settings: Settings, config: SweepConfig, test: pd.DataFrame
) -> tuple[str | None, dict[str, float] | None]:
    """Score the current champion on this run's held-out rows, so the gate compares like with like."""
    champion = registry.current_champion(client, settings.model_name)
    if champion is None:
        return None, None
    model = mlflow.sklearn.load_model(f"models:/{settings.model_name}/{champion.version}")
    x_test, y_test = model_input(test, config.spec), test[config.target]
    try:
        return str(champion.version), evaluate.metrics(model, x_test, y_test, config.task_type)
    except (KeyError, ValueError) as err:
        raise ValueError(
            f"current champion v{champion.version} cannot score this data ({err}); it was trained on other "
            "columns. Use another model name, or promote explicitly with flows/promote.py."
        ) from err


@step(**IO_RETRIES)
def publish_decision(
    client: MlflowClient,
    settings: Settings,
    version: str,
    decision: registry.GateDecision,
    metrics: dict[str, float],
    card: str,
    run_id: str,
) -> None:
    """Record why on the version, the model card beside it, and the decision as a Prefect artifact."""
    registry.record_gate(client, settings.model_name, version, decision)
    client.log_text(run_id, card, "model_card.md")
    client.update_model_version(settings.model_name, version, description=card)
    create_markdown_artifact(
        reports.gate_markdown(settings.model_name, version, decision, metrics),
        key="gate-decision",
        description="Why this version was or was not promoted",
    )
    get_run_logger().info(
        "%s v%s %s: %s",
        settings.model_name,
        version,
        "passes the gate" if decision.promote else "rejected",
        "; ".join(decision.reasons),
    )


@step(**IO_RETRIES)
def promote(
    client: MlflowClient, settings: Settings, version: str, decision: registry.GateDecision, actor: str
) -> registry.AuditEvent:
    return registry.set_champion(
        client, settings.model_name, version, "promote", actor, "quality gate passed: " + "; ".join(decision.reasons)
    )


def announce(settings: Settings, version: str, decision: registry.GateDecision) -> None:
    """After the alias moved (or did not): automations such as the post-promotion smoke test react to this."""
    event = events.MODEL_PROMOTED if decision.promote else events.MODEL_REJECTED
    previous = decision.champion_version
    events.model_event(event, settings.model_name, version, previous=previous, reasons=decision.reasons)


@step(**IO_RETRIES)
def move_champion(
    client: MlflowClient, settings: Settings, version: str | None, rollback: bool, reason: str, actor: str
) -> registry.AuditEvent:
    """A decision outside the gate (a person, the smoke test): promote `version` (it must exist) or roll back
    along the audit trail; then announce the move for automations."""
    name = settings.model_name
    if rollback:
        current = registry.current_champion(client, name)
        if current is None:
            raise ValueError(f"{name} has no @champion to roll back from")
        target = registry.rollback_target(registry.history(client, name), str(current.version))
        moved = registry.set_champion(client, name, target, "rollback", actor, reason)
    else:
        client.get_model_version(name, str(version))  # raises a clear 'not found' for a version that does not exist
        moved = registry.set_champion(client, name, str(version), "promote", actor, reason)
    event = events.MODEL_ROLLED_BACK if rollback else events.MODEL_PROMOTED
    events.model_event(event, name, moved.version, previous=moved.previous, reasons=[reason], by=moved.by)
    return moved
