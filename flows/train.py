"""Train: raw data -> validated, versioned snapshot -> Optuna sweep -> evaluated model -> gated @champion.

Run it with no arguments for the demo churn data: `python flows/train.py`.
"""

from __future__ import annotations

import getpass
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `python flows/train.py` from anywhere

# SciPy before Prefect and MLflow: when skops (the model format) is first imported, it looks up each of SciPy's
# ufuncs in every loaded module, in import order. Loaded this early, SciPy is found near the front of that scan.
import scipy.special  # noqa: F401

# isort: split
from prefect import flow
from pydantic import BaseModel, Field

from tasks import demo_data, registry, reports, schemas, training
from tasks.data import split
from tasks.features import feature_spec
from tasks.modeling import TaskType
from tasks.runtime import shell_run
from tasks.settings import get_settings
from tasks.sweep import SweepConfig


class TrainParams(BaseModel):
    """What to train on and how hard to search. The defaults train the demo churn model."""

    data_uri: str | None = Field(None, description="CSV/Parquet path or s3:// URL; None generates demo data.")
    dataset_name: str | None = Field(None, description="Name the data versions are kept under; default from the file.")
    target: str = demo_data.TARGET
    task_type: TaskType = "binary"
    id_columns: list[str] | None = Field(None, description="Columns that identify rows and are never features.")
    timestamp_column: str | None = None
    demo_rows: int = Field(5000, ge=100)
    demo_seed: int = 42
    demo_drift: float = Field(0.0, ge=0, le=1)
    n_trials: int = Field(30, ge=1)
    n_jobs: int = Field(1, ge=1, description="Trials run in parallel threads in this process.")
    timeout_s: float | None = Field(None, gt=0, description="Stop starting new trials after this many seconds.")
    cv_folds: int = Field(3, ge=2)
    test_size: float = Field(0.2, gt=0, lt=1)
    seed: int = 42
    optuna_storage: str | None = Field(
        None, description="Shared Optuna storage (sqlite:///..., postgresql://...) so sweep workers can join."
    )
    study_name: str | None = Field(None, description="Defaults to <model>-<data digest>-<seed>.")
    gate: registry.GatePolicy = Field(default_factory=registry.GatePolicy)
    actor: str = Field(default_factory=getpass.getuser, description="Who the audit trail names.")

    @property
    def is_demo(self) -> bool:
        return self.data_uri is None


class TrainResult(BaseModel):
    run_id: str
    model_version: str
    promoted: bool
    reasons: list[str]
    data_digest: str
    best_params: dict[str, Any]
    metrics: dict[str, float]


@flow(name="train", log_prints=True)
def train(params: TrainParams | None = None) -> TrainResult:
    params = params or TrainParams()
    settings = get_settings()
    client = registry.connect(settings)
    dataset = params.dataset_name or ("churn-demo" if params.is_demo else Path(params.data_uri).stem)
    id_columns = (
        params.id_columns if params.id_columns is not None else ([demo_data.ID_COLUMN] if params.is_demo else [])
    )
    timestamp = params.timestamp_column or (demo_data.TIMESTAMP_COLUMN if params.is_demo else None)

    # 1. load and validate: bad data stops here, before anything is trained or registered
    if params.is_demo:
        raw, source = training.load_demo(params.demo_rows, params.demo_seed, params.demo_drift), "demo data"
        schema = schemas.demo_schema()
    else:
        raw, source = training.load_file(params.data_uri, settings), params.data_uri
        schema = training.schema_for(
            raw,
            source,
            params.target,
            params.task_type != "regression",
            timestamp,
            training.stored_schema(settings, dataset),
        )
    accepted = training.validate(raw, schema, source, params.target, params.task_type, params.cv_folds)

    # 2. version the accepted data by content hash
    version = training.snapshot(accepted, dataset, schema, settings)
    train_rows, test_rows = split(accepted, params.test_size, id_columns)
    spec = feature_spec(schema, params.target, exclude=(*id_columns, *([timestamp] if timestamp else [])))
    commit = training.git_commit()
    training.close_abandoned(client, settings)
    run_id = training.start_run(
        client, settings, version, accepted, params.target, params.task_type, commit, f"train-{version.digest[:8]}"
    )

    with training.run_status(client, run_id):
        # 3. sweep: every trial a nested run under this one
        config = SweepConfig(
            task_type=params.task_type,
            target=params.target,
            numeric=spec.numeric,
            categorical=spec.categorical,
            seed=params.seed,
            cv_folds=params.cv_folds,
            n_trials=params.n_trials,
            parent_run_id=run_id,
            experiment_id=client.get_run(run_id).info.experiment_id,
            tracking_uri=settings.tracking_uri,
            data_uri=version.uri,
            test_size=params.test_size,
            split_keys=tuple(id_columns),
        )
        study_name = params.study_name or f"{settings.model_name}-{version.digest}-{params.seed}-{run_id[:8]}"
        study = training.sweep(config, train_rows, study_name, params.optuna_storage, params.n_jobs, params.timeout_s)

        # 4. refit the best, evaluate on held-out rows, log with its preprocessing and schema, register
        candidate = training.fit_and_evaluate(client, run_id, study, config, train_rows, test_rows)
        model_version = training.log_and_register(
            run_id,
            candidate,
            spec,
            schema,
            train_rows,
            settings,
            metadata={
                "data_digest": version.digest,
                "data_uri": version.uri,
                "target": params.target,
                "task_type": params.task_type,
                "id_columns": id_columns,
                "timestamp_column": timestamp,
                "numeric": list(spec.numeric),
                "categorical": list(spec.categorical),
            },
        )

        # 5. gate against the champion on the same held-out rows; the alias moves last, or not at all
        champion = training.champion_metrics(client, settings, config, test_rows)
        decision = registry.decide(candidate.metrics, champion[1], champion[0], params.gate)
        card = reports.model_card(
            model_name=settings.model_name,
            version=model_version,
            task_type=params.task_type,
            target=params.target,
            data=version,
            features=spec.columns,
            metrics=candidate.metrics,
            params=candidate.params,
            git_commit=commit,
            decision=decision,
        )
        training.publish_decision(client, settings, model_version, decision, candidate.metrics, card, run_id)
        if decision.promote:
            training.promote(client, settings, model_version, decision, params.actor)
        training.announce(settings, model_version, decision)
    return TrainResult(
        run_id=run_id,
        model_version=model_version,
        promoted=decision.promote,
        reasons=decision.reasons,
        data_digest=version.digest,
        best_params=candidate.params,
        metrics=candidate.metrics,
    )


if __name__ == "__main__":
    with shell_run():
        result = train()
    verdict = "promoted to @champion" if result.promoted else "not promoted"
    print(f"model v{result.model_version} {verdict}: {'; '.join(result.reasons)}")
