"""The training flow end to end on a real Prefect engine and a real SQLite MLflow store, with small data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException

from flows.promote import promote
from flows.train import TrainParams, train
from tasks.demo import ID_COLUMN, TARGET, TIMESTAMP_COLUMN, generate
from tasks.demo import schema as demo_schema
from tasks.model import schemas
from tasks.model.gate import GatePolicy
from tasks.runtime.loaded import read_contract
from tasks.store import data, registry

pytestmark = pytest.mark.integration
SMALL = {"demo_rows": 600, "n_trials": 4, "cv_folds": 2}


def versions(client, name: str) -> list[str]:
    try:
        return [str(v.version) for v in client.search_model_versions(f"name = '{name}'")]
    except MlflowException:
        return []


def test_end_to_end_demo_run_then_same_data_again(prefect_server, settings, client):
    first = train(TrainParams(**SMALL))
    name = settings.model_name
    assert first.promoted and first.model_version == "1"
    assert str(registry.current_champion(client, name).version) == "1"

    run = client.get_run(first.run_id)
    children = client.search_runs([run.info.experiment_id], f"tags.mlflow.parentRunId = '{first.run_id}'")
    assert len(children) == SMALL["n_trials"]
    assert run.data.tags["data.digest"] == first.data_digest
    assert run.data.tags["mlflow.source.git.commit"]
    assert run.inputs.dataset_inputs[0].dataset.digest == first.data_digest
    assert {"test_roc_auc", "test_accuracy", "test_log_loss", "cv_best_score"} <= set(run.data.metrics)
    artifacts = {a.path for a in client.list_artifacts(first.run_id, "evaluation")}
    assert {
        "evaluation/confusion_matrix.png",
        "evaluation/roc_curve.png",
        "evaluation/feature_importance.png",
        "evaluation/optuna_history.html",
    } <= artifacts
    card = client.download_artifacts(first.run_id, "model_card.md")
    assert first.data_digest in Path(card).read_text()
    version = client.get_model_version(name, "1")
    assert version.tags["gate.status"] == "passed" and "Model card" in version.description

    # the logged model carries its preprocessing and schema: raw rows in, probabilities out
    import mlflow

    model = mlflow.sklearn.load_model(f"models:/{name}@champion")
    rows = generate(n_rows=5, seed=123).drop(columns=[TARGET, ID_COLUMN, TIMESTAMP_COLUMN])
    assert model.predict_proba(rows).shape == (5, 2)
    local = mlflow.artifacts.download_artifacts(f"models:/{name}/1")
    contract = read_contract(Path(local))
    assert set(contract.schema.columns) == set(demo_schema().columns)
    assert (contract.target, contract.classes, contract.positive_class) == (TARGET, [0, 1], 1)
    assert contract.data.digest == first.data_digest and contract.id_columns == [ID_COLUMN]
    assert registry.load_contract(name, "1") == contract  # read from the registry without the model

    snapshots = sorted((settings.local_state_dir / "datasets" / "churn-demo").glob("*.parquet"))
    assert [p.stem for p in snapshots] == [first.data_digest]

    second = train(TrainParams(**SMALL))
    assert second.data_digest == first.data_digest
    assert sorted((settings.local_state_dir / "datasets" / "churn-demo").glob("*.parquet")) == snapshots
    assert second.model_version == "2"
    if not second.promoted:
        assert client.get_model_version(name, "2").tags["gate.status"] == "rejected"
        assert str(registry.current_champion(client, name).version) == "1"


def bad_files(tmp_path) -> dict[str, tuple[str, type[Exception], str]]:
    """Each bad dataset the flow must refuse, the error type, and a phrase the message must contain."""
    good = generate(n_rows=300, seed=5)
    cases: dict[str, tuple[str, type[Exception], str]] = {}

    def csv(name: str, frame: pd.DataFrame) -> str:
        path = tmp_path / f"{name}.csv"
        frame.to_csv(path, index=False)
        return str(path)

    cases["missing-column"] = (
        csv("missing", good.drop(columns=["tenure_months"])),
        schemas.DataValidationError,
        "column 'tenure_months': required column is missing",
    )
    cases["missing-target"] = (
        csv("notarget", good.drop(columns=[TARGET])),
        schemas.DataValidationError,
        f"column '{TARGET}': required column is missing",
    )
    wrong_type = good.astype({"monthly_charges": object})
    wrong_type.loc[4, "monthly_charges"] = "twelve"
    cases["wrong-type"] = (csv("wrongtype", wrong_type), schemas.DataValidationError, "coerce_dtype('float64')")
    nulls = good.copy()
    nulls.loc[[1, 2], "contract"] = None
    cases["nulls"] = (csv("nulls", nulls), schemas.DataValidationError, "column 'contract': check not_nullable")
    out_of_range = good.copy()
    out_of_range.loc[3, "support_tickets"] = 10_000
    cases["out-of-range"] = (csv("range", out_of_range), schemas.DataValidationError, "in_range(0, 100)")
    unknown = good.copy()
    unknown.loc[7, "internet_service"] = "satellite"
    cases["unknown-category"] = (csv("unknown", unknown), schemas.DataValidationError, "'satellite'")
    (tmp_path / "empty.csv").write_text("")
    cases["empty-file"] = (str(tmp_path / "empty.csv"), data.DataLoadError, "file is empty")
    (tmp_path / "garbage.parquet").write_bytes(b"\x00\x01 not parquet at all")
    cases["unreadable-file"] = (str(tmp_path / "garbage.parquet"), data.DataLoadError, "unreadable as parquet")

    # the resilience corpus: encodings, headers, extreme values, degenerate columns and targets
    accented = good.astype({"region": object})
    accented.loc[0, "region"] = "Zürich"
    accented.to_csv(tmp_path / "latin1.csv", index=False, encoding="latin-1")
    cases["latin-1"] = (str(tmp_path / "latin1.csv"), data.DataLoadError, "not valid UTF-8 text")
    good.to_csv(tmp_path / "utf16.csv", index=False, encoding="utf-16")
    cases["utf-16"] = (str(tmp_path / "utf16.csv"), data.DataLoadError, "not valid UTF-8 text")
    text = good.to_csv(index=False).splitlines()
    (tmp_path / "dup.csv").write_text("\n".join([text[0].replace("age", "tenure_months"), *text[1:]]))
    cases["duplicated-header"] = (str(tmp_path / "dup.csv"), data.DataLoadError, "duplicated column names")
    huge = good.copy()
    huge.loc[5, "monthly_charges"] = 1e308
    cases["huge-value"] = (csv("huge", huge), schemas.DataValidationError, "in_range(0, 1000)")
    infinite = good.copy()
    infinite.loc[6, "total_charges"] = np.inf
    cases["infinite-value"] = (csv("inf", infinite), schemas.DataValidationError, "in_range(0, 200000)")
    cases["all-null-column"] = (
        csv("allnull", good.assign(data_usage_gb=np.nan)),
        schemas.DataValidationError,
        "column 'data_usage_gb': every value is null",
    )
    cases["single-class-target"] = (
        csv("oneclass", good.assign(**{TARGET: 0})),
        schemas.DataValidationError,
        f"column '{TARGET}': check at_least_two_classes",
    )
    return cases


def test_bad_data_ends_the_flow_before_training_and_registers_nothing(prefect_server, settings, client, tmp_path):
    # The dataset's schema is the demo's: store it as the accepted schema of "churn-upload" first.
    good = generate(n_rows=300, seed=5)
    data.snapshot(schemas.validate(good, demo_schema(), "seed"), "churn-upload", settings)
    from tasks.steps.train import schema_uri
    from tasks.store import storage

    storage.write_bytes_once(
        schema_uri(settings, "churn-upload"), schemas.schema_to_json(demo_schema()).encode(), settings
    )
    for case, (uri, error, phrase) in bad_files(tmp_path).items():
        with pytest.raises(error) as info:
            train(TrainParams(data_uri=uri, dataset_name="churn-upload", target=TARGET, **SMALL))
        assert phrase in str(info.value), f"{case}: {info.value}"
        assert versions(client, settings.model_name) == [], case
    assert len(list((settings.local_state_dir / "datasets" / "churn-upload").glob("*.parquet"))) == 1


def test_bring_your_own_csv_infers_a_schema_and_holds_later_data_to_it(prefect_server, settings, client, tmp_path):
    first = generate(n_rows=600, seed=21)
    first.to_csv(tmp_path / "customers.csv", index=False)
    params = {"target": TARGET, "id_columns": [ID_COLUMN], "timestamp_column": TIMESTAMP_COLUMN, **SMALL}
    result = train(TrainParams(data_uri=str(tmp_path / "customers.csv"), **params))
    assert result.promoted
    assert (settings.local_state_dir / "datasets" / "customers" / "schema.json").exists()

    later = generate(n_rows=300, seed=22)
    later.loc[0, "region"] = "mars"
    later.to_csv(tmp_path / "customers.csv", index=False)
    with pytest.raises(schemas.DataValidationError, match="'mars'"):
        train(TrainParams(data_uri=str(tmp_path / "customers.csv"), **params))
    assert versions(client, settings.model_name) == ["1"]


def test_worse_challenger_is_rejected_and_champion_kept(prefect_server, settings, client, tmp_path):
    champion = train(TrainParams(**SMALL))
    assert champion.promoted
    # Same rows, but the labels of the training side shuffled: the challenger learns noise. The held-out side
    # (same row-key split) keeps its true labels, so both models are judged on the same clean rows.
    frame = generate(n_rows=SMALL["demo_rows"])
    _, test = data.split(frame, 0.2, [ID_COLUMN])
    is_train = ~frame[ID_COLUMN].isin(test[ID_COLUMN])
    frame.loc[is_train, TARGET] = np.random.default_rng(0).permutation(frame.loc[is_train, TARGET].to_numpy())
    frame.to_csv(tmp_path / "noisy.csv", index=False)
    challenger = train(
        TrainParams(
            data_uri=str(tmp_path / "noisy.csv"),
            target=TARGET,
            id_columns=[ID_COLUMN],
            timestamp_column=TIMESTAMP_COLUMN,
            gate=GatePolicy(min_primary=0.0),
            **SMALL,
        )
    )
    assert not challenger.promoted
    assert "does not beat champion v1" in challenger.reasons[0]
    assert str(registry.current_champion(client, settings.model_name).version) == "1"
    assert client.get_model_version(settings.model_name, challenger.model_version).tags["gate.status"] == "rejected"


def test_manual_promotion_and_rollback_leave_an_audit_trail(prefect_server, settings, client):
    first = train(TrainParams(**SMALL))
    second = train(TrainParams(**SMALL, seed=7, gate=GatePolicy(margin=1.0)))  # cannot pass the gate
    assert first.promoted and not second.promoted
    name = settings.model_name

    event = promote(version=second.model_version, reason="approved after offline review", actor="carol")
    assert (event.previous, event.version, event.by) == ("1", "2", "carol")
    assert str(registry.current_champion(client, name).version) == "2"

    back = promote(rollback=True, reason="conversion dropped", actor="dave")
    assert (back.action, back.previous, back.version) == ("rollback", "2", "1")
    assert str(registry.current_champion(client, name).version) == "1"
    trail = [(e.action, e.version, e.by) for e in registry.history(client, name)]
    assert trail == [("promote", "1", first_actor(client, name)), ("promote", "2", "carol"), ("rollback", "1", "dave")]

    with pytest.raises(ValueError, match="reason is required"):
        promote(version="2", reason=" ")
    with pytest.raises(MlflowException):
        promote(version="99", reason="does not exist")
    assert str(registry.current_champion(client, name).version) == "1"


def first_actor(client, name: str) -> str:
    return registry.history(client, name)[0].by
