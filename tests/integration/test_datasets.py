"""Datasets shaped like the public ones users bring, through the real train flow: each trains with its
positive class right end to end, or is refused by name. Small files made here; nothing is downloaded."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException

from flows.train import TrainParams, train
from tasks.model import schemas
from tasks.model.features import model_input
from tasks.runtime.loaded import load_version
from tasks.store import registry

pytestmark = pytest.mark.integration
QUICK = {"n_trials": 2, "cv_folds": 2, "families": ["linear", "hist_gradient_boosting"]}


def table(n: int, seed: int, label) -> pd.DataFrame:
    """Two informative numbers, a category, a name per row, a date, a boolean; `label(score, rng)` makes y."""
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    colour = rng.choice(["red", "green", "blue"], n)
    score = 1.5 * x1 - x2 + 0.8 * (colour == "red") + rng.normal(scale=0.5, size=n)
    return pd.DataFrame(
        {
            "customer": [f"{rng.choice(['Ann', 'Bo', 'Cy'])} {i} {rng.integers(10**6)}" for i in range(n)],
            "signed": pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 900, n), "D"),
            "x1": x1.round(4),
            "x2": x2.round(4),
            "colour": colour,
            "flag": rng.random(n) < 0.5,
            "y": label(score, rng),
        }
    )


def trained(tmp_path, frame: pd.DataFrame, name: str, **params):
    path = tmp_path / f"{name}.csv"
    frame.to_csv(path, index=False)
    result = train(TrainParams(data_uri=str(path), target="y", model_name=name, **QUICK, **params))
    return result, registry.load_contract(name, result.model_version)


def positive_probability_is_served(settings, name: str, version: str, frame: pd.DataFrame) -> None:
    """The runtime's probability of the contract's positive class is the model's own for that class."""
    loaded = load_version(settings, name, version, "champion")
    contract = loaded.contract
    scored = loaded.score(model_input(frame, contract.spec))
    column = scored.classes.index(contract.positive_class)
    own = loaded.model.predict_proba(model_input(frame, contract.spec))[
        :, list(loaded.model.classes_).index(contract.positive_class)
    ]
    assert np.allclose(scored.probabilities[:, column], own)


@pytest.mark.parametrize(
    ("name", "label", "positive"),
    [
        ("text-labels", lambda s, r: np.where(s > 0.3, "Yes", "No"), "Yes"),
        ("booleans", lambda s, r: s > 0.3, True),
        ("one-two", lambda s, r: np.where(s > 0.3, 2, 1), 2),
    ],
)
def test_binary_targets_of_any_label_type(prefect_server, settings, client, tmp_path, name, label, positive):
    frame = table(500, seed=3, label=label)
    result, contract = trained(tmp_path, frame, name, task_type="binary")
    assert result.promoted and contract.positive_class == positive and type(contract.positive_class) is type(positive)
    assert result.metrics["roc_auc"] > 0.8 and 0 < result.metrics["average_precision"] <= 1
    assert {"customer", "signed"} <= set(contract.excluded)  # a name per row and a date: not features
    assert "identifier or free text" in contract.excluded["customer"] and "datetime" in contract.excluded["signed"]
    assert set(contract.spec.columns) == {"x1", "x2", "colour", "flag"}
    positive_probability_is_served(settings, name, result.model_version, frame.head(20))


def test_the_positive_class_can_be_chosen(prefect_server, settings, client, tmp_path):
    frame = table(400, seed=4, label=lambda s, r: np.where(s > 0.3, "Up", "Down"))
    result, contract = trained(tmp_path, frame, "down-is-positive", task_type="binary", positive_class="Down")
    assert contract.positive_class == "Down" and result.metrics["roc_auc"] > 0.8  # AUC of P(Down) for Down
    positive_probability_is_served(settings, "down-is-positive", result.model_version, frame.head(10))


def test_text_multiclass_and_integer_regression(prefect_server, settings, client, tmp_path):
    three = table(600, seed=5, label=lambda s, r: np.select([s < -0.5, s < 0.8], ["low", "mid"], "high"))
    result, contract = trained(tmp_path, three, "three-classes", task_type="multiclass")
    assert contract.classes == ["high", "low", "mid"] and contract.positive_class is None
    assert result.metrics["f1_macro"] > 0.5
    counts = table(500, seed=6, label=lambda s, r: np.round(100 + 20 * s).astype(int))
    result, contract = trained(tmp_path, counts, "counts", task_type="regression")
    assert contract.task_type == "regression" and result.metrics["r2"] > 0.7


def test_a_rare_positive_class_trains_with_stratified_folds(prefect_server, settings, client, tmp_path):
    rare = table(1500, seed=7, label=lambda s, r: (s > np.quantile(s, 0.94)).astype(int))  # 6% positives
    assert 0.05 < rare["y"].mean() < 0.07
    result, contract = trained(tmp_path, rare, "rare", task_type="binary")
    assert contract.positive_class == 1 and result.metrics["average_precision"] > 0.3


def test_wide_data_trains(prefect_server, settings, client, tmp_path):
    rng = np.random.default_rng(8)
    wide = pd.DataFrame(rng.normal(size=(600, 120)), columns=[f"f{i:03d}" for i in range(120)]).round(4)
    wide["y"] = np.where(wide["f000"] + wide["f001"] > 0, "a", "b")
    result, contract = trained(tmp_path, wide, "wide", task_type="binary")
    assert len(contract.numeric) == 120 and result.metrics["roc_auc"] > 0.8


def test_missing_targets_are_refused_by_name_or_dropped_on_request(prefect_server, settings, client, tmp_path):
    frame = table(400, seed=9, label=lambda s, r: np.where(s > 0.3, "Yes", "No")).astype({"y": object})
    frame.loc[[1, 5, 9, 13], "y"] = None
    path = tmp_path / "holes.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(schemas.DataValidationError, match="'y' is the target and is missing in 4 rows"):
        train(TrainParams(data_uri=str(path), target="y", model_name="holes", **QUICK))
    with pytest.raises(MlflowException):
        client.get_registered_model("holes")  # nothing was registered
    result = train(TrainParams(data_uri=str(path), target="y", model_name="holes", drop_missing_target=True, **QUICK))
    contract = registry.load_contract("holes", result.model_version)
    assert contract.data.dropped_missing_target == 4 and contract.data.rows == 396


def test_overflowing_values_are_refused_naming_the_column(prefect_server, settings, client, tmp_path):
    frame = table(300, seed=10, label=lambda s, r: s.round(3))
    frame.loc[[2, 3], "x1"] = 1e308
    path = tmp_path / "huge.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(schemas.DataValidationError, match=r"column .x1.: check magnitude_at_most_1e\+38 failed for 2"):
        train(TrainParams(data_uri=str(path), target="y", task_type="regression", model_name="huge", **QUICK))
