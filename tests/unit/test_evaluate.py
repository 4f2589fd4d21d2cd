"""Held-out evaluation: permutation importance agrees with scikit-learn's, however the shuffles are batched."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.inspection import permutation_importance

from tasks.model.evaluate import feature_importance
from tasks.model.families import fit
from tasks.model.features import FeatureSpec

SPEC = FeatureSpec(numeric=("signal", "noise"), categorical=("colour",))


def labelled(n_rows: int, seed: int) -> tuple[pd.DataFrame, pd.Series]:
    """The label follows `signal` strongly and `colour` a little; `noise` is noise."""
    rng = np.random.default_rng(seed)
    colour = pd.Categorical(rng.choice(["red", "green", "blue"], n_rows), categories=["red", "green", "blue"])
    signal, noise = rng.normal(size=n_rows), rng.normal(size=n_rows)
    logit = 2.5 * signal + 1.0 * (np.asarray(colour) == "red") + rng.normal(scale=0.5, size=n_rows)
    # a shuffled, non-contiguous index, as a held-out split has
    index = rng.permutation(np.arange(0, 3 * n_rows, 3))
    features = pd.DataFrame({"signal": signal, "noise": noise, "colour": colour}, index=index)
    return features, pd.Series((logit > 0).astype(int), index=index, name="label")


@pytest.fixture(scope="module")
def model_and_holdout():
    x_train, y_train = labelled(3000, seed=1)
    model = fit(x_train, y_train, SPEC, {"family": "linear", "linear_c": 1.0}, "binary", seed=0)
    return model, *labelled(2000, seed=2)


def test_importance_ranks_the_columns_the_label_depends_on(model_and_holdout):
    model, x_test, y_test = model_and_holdout
    importance = feature_importance(model, x_test, y_test, "binary", seed=7)
    assert list(importance.index) == ["signal", "colour", "noise"]
    assert importance["signal"] > 0.2
    assert importance["colour"] > 0.01
    assert abs(importance["noise"]) < 0.01


def test_importance_matches_scikit_learns(model_and_holdout):
    model, x_test, y_test = model_and_holdout
    ours = feature_importance(model, x_test, y_test, "binary", seed=7, n_repeats=5)
    theirs = permutation_importance(model, x_test, y_test, scoring="roc_auc", n_repeats=5, random_state=7)
    reference = pd.Series(theirs.importances_mean, index=x_test.columns)
    # different random shuffles, so not equal: within the spread of one shuffle's score on 2,000 rows
    assert (ours - reference[ours.index]).abs().max() < 0.01


def test_batching_the_shuffles_changes_nothing(model_and_holdout):
    model, x_test, y_test = model_and_holdout
    one_call = feature_importance(model, x_test, y_test, "binary", seed=7)
    call_per_shuffle = feature_importance(model, x_test, y_test, "binary", seed=7, rows_per_call=len(x_test))
    pd.testing.assert_series_equal(one_call, call_per_shuffle)


def test_input_is_left_as_it_was(model_and_holdout):
    model, x_test, y_test = model_and_holdout
    before = x_test.copy()
    feature_importance(model, x_test, y_test, "binary", seed=7)
    pd.testing.assert_frame_equal(x_test, before)
