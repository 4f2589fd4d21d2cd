"""The train flow's steps: thin Prefect tasks over the model logic (tasks/model) and the stores (tasks/store)."""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import optuna
import pandas as pd
import pandera.pandas as pa
from mlflow.entities import Metric, Param
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient
from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from sklearn.pipeline import Pipeline

from tasks.model import contract as contracts
from tasks.model import evaluate, families, reports, schemas
from tasks.model.contract import DataLineage, ModelContract
from tasks.model.families import DEFAULT_FAMILIES, fit, params_from_trial, trusted_types
from tasks.model.features import excluded_columns, feature_spec, model_input
from tasks.model.gate import GateDecision, GatePolicy, decide
from tasks.model.metrics import TaskType, class_labels
from tasks.model.sweep import SweepConfig, create_study, run_trials
from tasks.ops import events
from tasks.runtime.loaded import load_version
from tasks.settings import Settings
from tasks.steps.retries import IO_RETRIES, step
from tasks.store import data, features, registry, storage


@dataclass(frozen=True)
class TrainPlan:
    """One training run, resolved from the flow's parameters: what to train, under which names, how hard."""

    model_name: str
    experiment_name: str
    dataset: str
    target: str
    task_type: TaskType
    id_columns: tuple[str, ...]
    timestamp_column: str | None
    n_trials: int
    cv_folds: int
    test_size: float
    seed: int
    n_jobs: int = 1
    timeout_s: float | None = None
    optuna_storage: str | None = None
    study_name: str | None = None
    positive_class: Any = None
    drop_missing_target: bool = False
    families: tuple[str, ...] = DEFAULT_FAMILIES
    plugins: tuple[str, ...] = ()
    features: tuple[str, ...] = ()

    @property
    def not_features(self) -> tuple[str, ...]:
        return (*self.id_columns, *([self.timestamp_column] if self.timestamp_column else []))

    def sweep_config(self, contract: ModelContract, run_id: str, experiment_id: str, tracking_uri: str) -> SweepConfig:
        return SweepConfig(
            task_type=self.task_type,
            target=self.target,
            numeric=tuple(contract.numeric),
            categorical=tuple(contract.categorical),
            seed=self.seed,
            cv_folds=self.cv_folds,
            n_trials=self.n_trials,
            parent_run_id=run_id,
            experiment_id=experiment_id,
            tracking_uri=tracking_uri,
            data_uri=contract.data.uri,
            test_size=self.test_size,
            split_keys=self.id_columns,
            positive_class=contract.positive_class,
            families=self.families,
            plugins=self.plugins,
        )


# --- 1. data: load, schema, validate, snapshot -------------------------------------------------------------


@step(**IO_RETRIES)
def load_file(uri: str, settings: Settings) -> pd.DataFrame:
    return data.load_table(uri, settings)


@step(**IO_RETRIES)
def with_features(raw: pd.DataFrame, plan: TrainPlan, settings: Settings) -> pd.DataFrame:
    """The rows with the feature store's values as of each row's time (point in time: no value from after
    it), before validation, so the features are checked, versioned and described like any other column."""
    store = features.apply(settings)
    joined = features.training_frame(store, raw, plan.features, plan.timestamp_column)
    missing = joined[features.feature_columns(plan.features)].isna().all(axis=1).sum()
    logger = get_run_logger()
    logger.info("features %s joined; %d of %d rows had none known at their time", plan.features, missing, len(raw))
    return joined


def schema_uri(settings: Settings, dataset: str) -> str:
    return storage.join(settings.storage_url, "datasets", dataset, "schema.json")


@step(**IO_RETRIES)
def dataset_schema(raw: pd.DataFrame, source: str, plan: TrainPlan, settings: Settings) -> pa.DataFrameSchema:
    """The dataset's stored schema, or for data seen the first time one inferred from it (kept once accepted)."""
    uri = schema_uri(settings, plan.dataset)
    if storage.exists(uri, settings):
        return schemas.schema_from_json(storage.read_bytes(uri, settings).decode())
    if plan.target not in raw.columns:
        raise schemas.DataValidationError(
            source, [schemas.Problem(column=plan.target, check="column_in_dataframe", rows=0)]
        )
    inferred = schemas.infer_schema(raw, plan.target, plan.task_type != "regression", plan.timestamp_column)
    if not plan.features:
        return inferred
    # a lookup can find no value for an entity (new, or not materialized): the contract allows it, and a
    # missing whole number is a float's NaN, so counts become numbers
    looked_up = [c for c in features.feature_columns(plan.features) if c in inferred.columns]
    return inferred.update_columns({name: looked_up_column(inferred.columns[name]) for name in looked_up})


def looked_up_column(column: pa.Column) -> dict[str, object]:
    integer = schemas.column_kind(column.dtype) == "integer"
    return {"nullable": True, **({"dtype": "float64"} if integer else {})}


@step
def validate(frame: pd.DataFrame, schema: pa.DataFrameSchema, source: str, plan: TrainPlan) -> tuple[pd.DataFrame, int]:
    """Lazy validation; on failure, publish the report as a Prefect table before the flow ends. Returns the
    accepted rows and how many were dropped for a missing target (when the plan says to drop them)."""
    try:
        accepted, dropped = schemas.validate_for_training(
            frame,
            schema,
            source,
            plan.target,
            plan.task_type,
            min_class_rows=plan.cv_folds + 1,  # each class needs a row in every fold, plus one held out
            drop_missing_target=plan.drop_missing_target,
        )
    except schemas.DataValidationError as err:
        create_table_artifact(
            table=err.as_table(),
            key="data-validation-failures",
            description=f"Why {source} was rejected: nothing was trained or registered.",
        )
        raise
    if dropped:
        get_run_logger().warning("%d rows without a value of the target %r left out", dropped, plan.target)
    return accepted, dropped


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


@step
def contract_for(
    plan: TrainPlan, schema: pa.DataFrameSchema, accepted: pd.DataFrame, version: data.DataVersion, dropped: int
) -> ModelContract:
    """What the model of this run will be, known before it is trained: from the accepted data and its schema.
    The columns and their roles go to the Prefect artifact `model-input`, with why each left-out one is."""
    classification = plan.task_type != "regression"
    excluded = excluded_columns(schema, plan.target, exclude=plan.not_features)
    contract = contracts.build(
        task_type=plan.task_type,
        target=plan.target,
        classes=class_labels(accepted[plan.target]) if classification else None,
        spec=feature_spec(schema, plan.target, exclude=plan.not_features),
        schema=schema,
        data=DataLineage(
            dataset=version.dataset,
            digest=version.digest,
            uri=version.uri,
            rows=version.rows,
            dropped_missing_target=dropped,
        ),
        id_columns=list(plan.id_columns),
        timestamp_column=plan.timestamp_column,
        positive=plan.positive_class,
        excluded=excluded,
        plugins=list(plan.plugins),
        features=list(plan.features),
    )
    create_markdown_artifact(
        reports.model_input_markdown(plan.model_name, contract),
        key="model-input",
        description="Which columns feed the model, and why the others do not",
    )
    return contract


# --- 2. the sweep, the refit and its evaluation ------------------------------------------------------------


@step
def sweep(config: SweepConfig, train: pd.DataFrame, plan: TrainPlan) -> optuna.Study:
    """The study (shared through `plan.optuna_storage` with any sweep workers), run to its n_trials."""
    digest = config.data_uri.rsplit("/", 1)[-1].removesuffix(".parquet")  # a snapshot is named by its content hash
    study_name = plan.study_name or f"{plan.model_name}-{digest}-{plan.seed}-{config.parent_run_id[:8]}"
    study = create_study(study_name, plan.optuna_storage, config.seed, config)
    ran = run_trials(study, config, train, n_jobs=plan.n_jobs, timeout=plan.timeout_s, logger=get_run_logger())
    get_run_logger().info(
        "sweep %s: this process ran %d trials; best %.4f with %s", study_name, ran, study.best_value, study.best_params
    )
    return study


@dataclass(frozen=True)
class Candidate:
    model: Pipeline
    params: dict[str, Any]
    metrics: dict[str, float]


@step
def fit_and_evaluate(
    client: MlflowClient,
    run_id: str,
    study: optuna.Study,
    contract: ModelContract,
    seed: int,
    train: pd.DataFrame,
    test: pd.DataFrame,
) -> Candidate:
    """Refit the best configuration on all training rows with the sweep's own fit(); score it on held-out rows."""
    params = params_from_trial(study.best_params)
    spec, task, positive = contract.spec, contract.task_type, contract.positive_class
    model = fit(model_input(train, spec), train[contract.target], spec, params, task, seed)
    x_test, y_test = model_input(test, spec), test[contract.target]
    scores = evaluate.metrics(model, x_test, y_test, task, positive)
    importance = evaluate.feature_importance(model, x_test, y_test, task, seed, positive)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        plots = [
            *evaluate.plot_task(model, x_test, y_test, task, out, positive),
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


# --- 3. register, gate, promote ------------------------------------------------------------------------------


@step(**IO_RETRIES)
def log_and_register(
    run_id: str, model_name: str, candidate: Candidate, contract: ModelContract, train: pd.DataFrame
) -> str:
    """Log the whole pipeline (preprocessing inside) in the safe skops format, trusting only the types of its
    family, with its contract (now naming the family), and register it."""
    family = candidate.params["family"]
    contract = contract.model_copy(update={"family": family})
    example = model_input(train.head(5), contract.spec)
    signature = infer_signature(example, candidate.model.predict(example))
    with mlflow.start_run(run_id=run_id):
        info = mlflow.sklearn.log_model(
            candidate.model,
            name="model",
            signature=signature,
            input_example=example,
            serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_SKOPS,
            skops_trusted_types=trusted_types([family]),
            pip_requirements=runtime_requirements(family),  # inferring them re-imports the model: ~5 s a run
            metadata=contract.to_metadata(),
        )
    version = mlflow.register_model(
        info.model_uri, model_name, tags={"data.digest": contract.data.digest, "run_id": run_id}
    )
    return str(version.version)


def runtime_requirements(family: str) -> list[str]:
    from importlib.metadata import version

    names = ("mlflow", "scikit-learn", "skops", "pandas", "numpy", *families.get(family).packages)
    return [f"{name}=={version(name)}" for name in names]


@step(**IO_RETRIES)
def gate(
    client: MlflowClient,
    settings: Settings,
    model_name: str,
    candidate: Candidate,
    test: pd.DataFrame,
    policy: GatePolicy,
) -> GateDecision:
    """The candidate against the policy's floors and against the current champion on the same held-out rows."""
    champion_version, champion = champion_metrics(client, settings, model_name, test)
    return decide(candidate.metrics, champion, champion_version, policy)


def champion_metrics(
    client: MlflowClient, settings: Settings, model_name: str, test: pd.DataFrame
) -> tuple[str | None, dict[str, float] | None]:
    """Score the current champion on this run's held-out rows through its own contract (its features, its
    positive class), so the gate compares like with like."""
    champion = registry.current_champion(client, model_name)
    if champion is None:
        return None, None
    loaded = load_version(settings, model_name, str(champion.version), registry.CHAMPION)
    own = loaded.contract
    try:
        x_test, y_test = model_input(test, own.spec), test[own.target]
        return str(champion.version), evaluate.metrics(loaded.model, x_test, y_test, own.task_type, own.positive_class)
    except (KeyError, ValueError) as err:
        raise ValueError(
            f"current champion v{champion.version} of {model_name} cannot score this data ({err}); it was trained "
            "on other columns. Train under another model name, or promote explicitly with flows/promote.py."
        ) from err


@step(**IO_RETRIES)
def publish_decision(
    client: MlflowClient,
    model_name: str,
    version: str,
    decision: GateDecision,
    candidate: Candidate,
    contract: ModelContract,
    run_id: str,
) -> None:
    """Record why on the version, the model card beside it, and the decision as a Prefect artifact."""
    metrics = candidate.metrics
    commit = client.get_run(run_id).data.tags.get("mlflow.source.git.commit", "unknown")
    card = reports.model_card(
        model_name=model_name,
        version=version,
        contract=contract,
        metrics=metrics,
        params=candidate.params,
        git_commit=commit,
        decision=decision,
    )
    registry.record_gate(client, model_name, version, decision)
    client.log_text(run_id, card, "model_card.md")
    client.update_model_version(model_name, version, description=card)
    create_markdown_artifact(
        reports.gate_markdown(model_name, version, decision, metrics),
        key="gate-decision",
        description="Why this version was or was not promoted",
    )
    get_run_logger().info(
        "%s v%s %s: %s",
        model_name,
        version,
        "passes the gate" if decision.promote else "rejected",
        "; ".join(decision.reasons),
    )


@step(**IO_RETRIES)
def promote(
    client: MlflowClient, model_name: str, version: str, decision: GateDecision, actor: str
) -> registry.AuditEvent:
    return registry.set_champion(
        client, model_name, version, "promote", actor, "quality gate passed: " + "; ".join(decision.reasons)
    )


def announce(model_name: str, version: str, decision: GateDecision) -> None:
    """After the alias moved (or did not): automations such as the post-promotion smoke test react to this."""
    event = events.MODEL_PROMOTED if decision.promote else events.MODEL_REJECTED
    previous = decision.champion_version
    events.model_event(event, model_name, version, previous=previous, reasons=decision.reasons)
