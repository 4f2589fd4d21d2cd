"""The training run's life in MLflow: the code version, the parent run and its status, and recovery of runs a
killed process left open."""

from __future__ import annotations

import os
import socket
import subprocess
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import mlflow
import pandas as pd
from mlflow.tracking import MlflowClient
from prefect import get_run_logger

from tasks.model.contract import ModelContract
from tasks.settings import PROJECT_ROOT, redact_url
from tasks.steps.retries import IO_RETRIES, step

OWNER_HOST_TAG, OWNER_PID_TAG = "tabloop.host", "tabloop.pid"


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


@step(**IO_RETRIES)
def close_abandoned(client: MlflowClient, model_name: str, experiment_name: str) -> list[str]:
    """Settle what a training that died left behind; returns the runs closed.

    A SIGKILLed or OOM-killed training cannot close its own run: runs left RUNNING by a process of this host
    that is gone are marked KILLED, with their running trials. Runs of other hosts, or of a live process here
    (a concurrent training), are left alone. Then every version registered by a KILLED or FAILED run that no
    gate decided is tagged `gate.status=abandoned`, so no version is left looking like it awaits a decision
    (none of them ever held an alias: the gate moves it last)."""
    experiment = client.get_experiment_by_name(experiment_name)
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
            client.set_tag(orphan.info.run_id, "tabloop.closed_because", f"process {pid} on {host} is gone")
            client.set_terminated(orphan.info.run_id, "KILLED")
        closed.append(run.info.run_id)
    for version in client.search_model_versions(f"name = '{model_name}'"):
        if "gate.status" in (version.tags or {}) or not version.run_id:
            continue
        status = client.get_run(version.run_id).info.status
        if status in {"KILLED", "FAILED"}:
            client.set_model_version_tag(model_name, version.version, "gate.status", "abandoned")
            client.set_model_version_tag(
                model_name,
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
    client: MlflowClient, experiment_name: str, contract: ModelContract, frame: pd.DataFrame, commit: str
) -> str:
    """Open the parent MLflow run and record its lineage: the data version as a dataset input, and the code."""
    experiment = client.get_experiment_by_name(experiment_name)
    data = contract.data
    run = client.create_run(
        experiment.experiment_id,
        run_name=f"train-{data.digest[:8]}",
        tags={
            "mlflow.source.git.commit": commit,
            "data.digest": data.digest,
            "data.uri": redact_url(data.uri),
            "data.dataset": data.dataset,
            "data.rows": str(data.rows),
            "data.dropped_missing_target": str(data.dropped_missing_target),
            "task_type": contract.task_type,
            "target": contract.target,
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
            frame, source=redact_url(data.uri), targets=contract.target, name=data.dataset, digest=data.digest
        )
        with mlflow.start_run(run_id=run.info.run_id):
            mlflow.log_input(dataset, context="training")  # infers the dataset's schema here
    return run.info.run_id


@contextmanager
def run_status(client: MlflowClient, run_id: str) -> Iterator[None]:
    """Close the parent run as FINISHED, or FAILED when any later step raises."""
    try:
        yield
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")
