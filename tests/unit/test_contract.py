"""The model contract: built from the data, one positive-class rule, a JSON round trip, and the old form read."""

from __future__ import annotations

import json

import mlflow
import numpy as np
import pandas as pd
import pytest

from tasks.demo import ID_COLUMN, TARGET, TIMESTAMP_COLUMN, generate
from tasks.demo import schema as demo_schema
from tasks.model import contract, evaluate, metrics, schemas
from tasks.model.families import fit
from tasks.model.features import feature_spec, model_input
from tasks.runtime.loaded import load_version
from tasks.store import registry


def demo_contract(**changes) -> contract.ModelContract:
    schema = demo_schema()
    built = contract.build(
        task_type="binary",
        target=TARGET,
        classes=[0, 1],
        spec=feature_spec(schema, TARGET, exclude=(ID_COLUMN, TIMESTAMP_COLUMN)),
        schema=schema,
        data=contract.DataLineage(dataset="churn-demo", digest="abc", uri="/s/datasets/churn-demo/abc.parquet", rows=9),
        id_columns=[ID_COLUMN],
        timestamp_column=TIMESTAMP_COLUMN,
    )
    return built.model_copy(update=changes)


@pytest.mark.parametrize(
    ("labels", "positive"),
    [([0, 1, 1], 1), ([True, False], True), (["No", "Yes"], "Yes"), (["Up", "Down"], "Up"), ([1, 2, 2], 2)],
)
def test_the_positive_class_is_the_last_class_in_sorted_order(labels, positive):
    classes = metrics.class_labels(pd.Series(labels))
    assert metrics.positive_class(classes) == positive
    assert type(metrics.positive_class(classes)) is type(positive)  # plain Python, not numpy


def test_the_contract_survives_its_json_form_with_label_types_intact():
    for classes, positive in (([0, 1], 1), ([False, True], True), (["No", "Yes"], "Yes")):
        original = demo_contract(classes=classes, positive_class=positive)
        restored = contract.ModelContract.model_validate(
            json.loads(json.dumps(original.to_metadata()))[contract.CONTRACT_KEY]
        )
        assert restored == original
        assert type(restored.positive_class) is type(positive)
    assert set(demo_contract().schema.columns) == set(demo_schema().columns)
    assert demo_contract().passthrough_columns == [ID_COLUMN, TIMESTAMP_COLUMN]


def test_binary_metrics_are_about_the_positive_class_whatever_the_label_type():
    """Text labels used to crash average_precision (pos_label=1); the flipped coding must give the same scores."""
    rng = np.random.default_rng(0)
    features = pd.DataFrame({"x": rng.normal(size=400), "c": rng.choice(["a", "b"], 400)})
    truth = (features["x"] + rng.normal(scale=0.5, size=400) > 0).to_numpy()
    spec = feature_spec(schemas.infer_schema(features.assign(y=0), "y", False), "y")
    scores = {}
    for name, labels, positive in (("ints", truth.astype(int), 1), ("text", np.where(truth, "Yes", "No"), "Yes")):
        target = pd.Series(labels)
        model = fit(model_input(features, spec), target, spec, {"family": "linear", "linear_c": 1.0}, "binary", 0)
        scores[name] = evaluate.metrics(model, model_input(features, spec), target, "binary", positive)
    assert scores["text"] == pytest.approx(scores["ints"])
    assert scores["ints"]["primary"] == scores["ints"]["roc_auc"] > 0.8


def test_positive_mask_compares_labels_read_back_with_other_types():
    assert metrics.positive_mask(pd.Series(["1", "0"]), 1).tolist() == [True, False]
    assert metrics.positive_mask(pd.Series([1.0, 0.0]), 1).tolist() == [True, False]
    assert metrics.positive_mask(pd.Series(["Yes", "No"]), "Yes").tolist() == [True, False]
    assert metrics.positive_mask(pd.Series([True, False]), True).tolist() == [True, False]


def test_a_version_saved_before_the_contract_still_loads(client, settings):
    """The old form: a flat metadata dict and extra_files/schema.json. Read once, in contract.from_metadata."""
    frame = schemas.validate(generate(n_rows=300, seed=1), demo_schema(), "demo")
    spec = feature_spec(demo_schema(), TARGET, exclude=(ID_COLUMN, TIMESTAMP_COLUMN))
    params = {"family": "linear", "linear_c": 1.0}
    model = fit(model_input(frame, spec), frame[TARGET], spec, params, "binary", 0)
    legacy = {
        "data_digest": "0123456789abcdef",
        "data_uri": f"{settings.storage_url}/datasets/churn-demo/0123456789abcdef.parquet",
        "target": TARGET,
        "task_type": "binary",
        "id_columns": [ID_COLUMN],
        "timestamp_column": TIMESTAMP_COLUMN,
        "numeric": list(spec.numeric),
        "categorical": list(spec.categorical),
    }
    schema_file = settings.local_state_dir / "schema.json"
    schema_file.write_text(schemas.schema_to_json(demo_schema()))
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_SKOPS,
            skops_trusted_types=["numpy.dtype"],
            extra_files=[str(schema_file)],
            metadata=legacy,
        )
    version = str(mlflow.register_model(info.model_uri, settings.model_name).version)

    read = registry.load_contract(settings.model_name, version)
    assert (read.task_type, read.target, read.classes, read.positive_class) == ("binary", TARGET, [0, 1], 1)
    assert (read.numeric, read.categorical) == (list(spec.numeric), list(spec.categorical))
    assert (read.data.dataset, read.data.digest, read.primary_metric) == ("churn-demo", "0123456789abcdef", "roc_auc")
    loaded = load_version(settings, settings.model_name, version, "champion")
    assert loaded.contract == read
    assert loaded.describe()["positive_class"] == 1
    records = json.loads(frame.head(3).drop(columns=[TARGET]).to_json(orient="records", date_format="iso"))
    assert len(loaded.predict(loaded.validator.frame(loaded.validator.validate(records)))) == 3
