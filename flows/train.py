"""Train: raw data -> validated, versioned snapshot -> Optuna sweep -> evaluated model -> gated @champion.

python flows/train.py                                        # the demo data
python flows/train.py --data-uri customers.csv --target churned --task-type binary
python flows/train.py --spec models/customers.yaml           # the same parameters from a YAML file
python flows/train.py --spec customers                       # the model declared in models/customers.yaml
python flows/train.py --spec churn --report report.md         # also write the gate decision and model card
python flows/train.py --model-name churn-activity --features customer_activity:tickets_30d   # demo + feature store
python flows/train.py --help                                 # every parameter
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `python flows/train.py` from anywhere

# SciPy before Prefect and MLflow: when skops (the model format) is first imported, it looks up each of SciPy's
# ufuncs in every loaded module, in import order. Loaded this early, SciPy is found near the front of that scan.
import scipy.special  # noqa: F401

# isort: split
import mlflow
import pandas as pd
from prefect import flow
from pydantic import BaseModel

from tasks import demo
from tasks.model import families
from tasks.model.spec import TrainParams
from tasks.ops import cli, specs
from tasks.ops.shell import shell_run
from tasks.settings import Settings, get_settings
from tasks.steps import approval, runs
from tasks.steps import train as steps
from tasks.steps.retries import IO_RETRIES, step
from tasks.steps.train import TrainPlan
from tasks.store import features, registry
from tasks.store.data import split


class TrainResult(BaseModel):
    run_id: str
    model_name: str
    model_version: str
    promoted: bool
    reasons: list[str]
    data_digest: str
    best_params: dict[str, Any]
    metrics: dict[str, float]


@flow(name="train", log_prints=True)
def train(params: TrainParams | None = None, spec: str | None = None) -> TrainResult:
    """`spec`: a YAML spec file (local or s3://) or a declared model's name; fields set in `params` override it."""
    settings = get_settings()
    overrides = params.model_dump(exclude_unset=True) if params else {}
    params = specs.load(spec, settings, overrides) if spec else (params or TrainParams())
    plan = plan_for(params, settings)
    client = registry.connect(settings, plan.experiment_name)

    # 1. load and validate: bad data stops here, before anything is trained or registered
    if params.is_demo:
        raw, source = load_demo(params.demo_rows, params.demo_seed, params.demo_drift), demo.SOURCE
        if plan.features:  # the demo's customers' activity becomes the feature store's source first
            publish_demo_activity(raw, settings)
            raw = steps.with_features(raw, plan, settings)
        schema = demo.schema(features.feature_columns(plan.features))
    else:
        raw, source = steps.load_file(params.data_uri, settings), params.data_uri
        if plan.features:  # from the feature store, as of each row's time
            raw = steps.with_features(raw, plan, settings)
        schema = steps.dataset_schema(raw, source, plan, settings)
    accepted, dropped = steps.validate(raw, schema, source, plan)

    # 2. version the accepted data by content hash; hold out rows by their key; what the model will be
    version = steps.snapshot(accepted, plan.dataset, schema, settings)
    train_rows, test_rows = split(accepted, plan.test_size, list(plan.id_columns))
    contract = steps.contract_for(plan, schema, accepted, version, dropped)

    # 3. the parent run, after settling what a killed run left behind
    runs.close_abandoned(client, plan.model_name, plan.experiment_name)
    run_id = runs.start_run(client, plan.experiment_name, contract, accepted, runs.git_commit())
    with runs.run_status(client, run_id):
        # 4. sweep, every trial a nested run under this one; refit the best and evaluate it on held-out rows
        config = plan.sweep_config(contract, run_id, client.get_run(run_id).info.experiment_id, settings.tracking_uri)
        study = steps.sweep(config, train_rows, plan)
        candidate = steps.fit_and_evaluate(client, run_id, study, contract, plan.seed, train_rows, test_rows)

        # 5. register with its contract; gate against the champion on the same held-out rows
        model_version = steps.log_and_register(run_id, plan.model_name, candidate, contract, train_rows)
        decision = steps.gate(client, settings, plan.model_name, candidate, test_rows, params.gate)
        # with gate.require_approval a person decides: the run waits for the form in the Prefect UI
        decision, actor = approval.reviewed(
            decision, plan.model_name, model_version, params.gate, settings, params.actor
        )

        # 6. publish why (model card, tags, artifact); the alias moves last, or not at all
        steps.publish_decision(client, plan.model_name, model_version, decision, candidate, contract, run_id)
        if decision.promote:
            steps.promote(client, plan.model_name, model_version, decision, actor)
        steps.announce(plan.model_name, model_version, decision)
    return TrainResult(
        run_id=run_id,
        model_name=plan.model_name,
        model_version=model_version,
        promoted=decision.promote,
        reasons=decision.reasons,
        data_digest=version.digest,
        best_params=candidate.params,
        metrics=candidate.metrics,
    )


def plan_for(params: TrainParams, settings: Settings) -> TrainPlan:
    """The parameters resolved: names, columns and the demo's defaults where no data was given."""
    families.load_plugins(params.plugins)
    for family in params.families:
        families.get(family)  # an unknown name fails here, before any data is read
    if params.is_demo:
        dataset = params.dataset_name or demo.DATASET
        model_name = demo.model_name(params.model_name, settings.model_name)
        target, id_columns = params.target or demo.TARGET, [demo.ID_COLUMN]
        timestamp = params.timestamp_column or demo.TIMESTAMP_COLUMN
    else:
        dataset = params.dataset_name or Path(params.data_uri.split("?")[0]).stem
        model_name = params.model_name or settings.model_name or dataset
        target, id_columns, timestamp = params.target, [], params.timestamp_column
    return TrainPlan(
        model_name=model_name,
        experiment_name=settings.experiment_name or model_name,
        dataset=dataset,
        target=target,
        task_type=params.task_type,
        id_columns=tuple(params.id_columns if params.id_columns is not None else id_columns),
        timestamp_column=timestamp,
        n_trials=params.n_trials,
        cv_folds=params.cv_folds,
        test_size=params.test_size,
        seed=params.seed,
        n_jobs=params.n_jobs,
        timeout_s=params.timeout_s,
        optuna_storage=params.optuna_storage or settings.optuna_storage,
        study_name=params.study_name,
        positive_class=params.positive_class,
        drop_missing_target=params.drop_missing_target,
        families=tuple(params.families),
        plugins=tuple(params.plugins),
        features=tuple(params.features),
    )


@step
def load_demo(rows: int, seed: int, drift: float) -> pd.DataFrame:
    return demo.generate(n_rows=rows, seed=seed, drift=drift)


@step(**IO_RETRIES)
def publish_demo_activity(customers: pd.DataFrame, settings: Settings) -> None:
    demo.publish_activity(customers, settings)


def main(argv: list[str] | None = None) -> TrainResult:
    shell = argparse.ArgumentParser(add_help=False)
    shell.add_argument("--report", type=Path, help="also write the gate decision and the model card (Markdown)")
    options, rest = shell.parse_known_args(argv)
    params = cli.parse(TrainParams, rest, __doc__, lambda ref, flags: specs.load(ref, get_settings(), flags))
    with shell_run():
        result = train(params)
    verdict = "promoted to @champion" if result.promoted else "not promoted"
    print(f"{result.model_name} v{result.model_version} {verdict}: {'; '.join(result.reasons)}")
    if options.report is not None:
        options.report.write_text(report(result, get_settings()))
    return result


def report(result: TrainResult, settings: Settings) -> str:
    """The gate decision and the model card, e.g. for a pull-request comment (templates/github/)."""
    registry.connect(settings)
    card = mlflow.artifacts.load_text(f"runs:/{result.run_id}/model_card.md")
    verdict = "promoted to `@champion`" if result.promoted else "**not promoted**"
    reasons = "\n".join(f"- {reason}" for reason in result.reasons)
    return f"## {result.model_name} v{result.model_version}: {verdict}\n\n{reasons}\n\n{card}\n"


if __name__ == "__main__":
    main()
