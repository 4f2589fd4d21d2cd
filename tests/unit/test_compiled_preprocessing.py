"""The numpy replay of the fitted preprocessing gives scikit-learn's numbers exactly, or stands aside."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import MinMaxScaler, OrdinalEncoder

from tasks.model.compiled import compile_preprocessor, compile_verified
from tasks.model.features import FeatureSpec, build_preprocessor

SPEC = FeatureSpec(numeric=("age", "spend", "empty", "flag"), categorical=("plan", "region"))


def training_frame(rows: int, rng: np.random.Generator) -> pd.DataFrame:
    """Typed as features.model_input types them: float64 numbers, object text with None for missing."""
    age = rng.normal(40, 12, rows)
    age[rng.random(rows) < 0.2] = np.nan
    plan = rng.choice(np.array(["basic", "plus", "pro", None], dtype=object), rows)
    return pd.DataFrame(
        {
            "age": age,
            "spend": rng.exponential(50, rows),
            "empty": np.full(rows, np.nan),  # never observed: the imputer drops it, its indicator stays
            "flag": rng.integers(0, 2, rows).astype("float64"),
            "plan": plan,
            "region": rng.choice(np.array(["north", "south"], dtype=object), rows),
        }
    )


def new_rows(rng: np.random.Generator, size: int = 40) -> pd.DataFrame:
    """Rows a client might send: missing numbers, None and NaN text, values never seen in training."""
    frame = training_frame(size, rng)
    frame.loc[::3, "spend"] = np.nan
    frame.loc[::4, "empty"] = 7.0
    frame["plan"] = frame["plan"].astype(object)
    frame.loc[::5, "plan"] = "enterprise"
    frame.loc[1::5, "plan"] = np.nan
    frame.loc[2::7, "region"] = None
    return frame


def fitted(estimator, impute: bool, scale: bool, task: str = "binary") -> Pipeline:
    rng = np.random.default_rng(0)
    frame = training_frame(300, rng)
    if not impute:  # estimators that take NaN themselves still cannot bin a column that is never observed
        frame["empty"] = rng.normal(0, 1, len(frame))
    target = frame["spend"] if task == "regression" else (frame["spend"] > 40).astype(int)
    pipeline = Pipeline([("preprocess", build_preprocessor(SPEC, impute, scale)), ("model", estimator)])
    return pipeline.fit(frame, target)


def columns_of(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    return {name: frame[name].to_numpy() for name in frame.columns}


@pytest.mark.filterwarnings("ignore:Skipping features without any observed values")
@pytest.mark.parametrize(
    ("estimator", "impute", "scale", "task"),
    [
        (LogisticRegression(max_iter=500), True, True, "binary"),
        (HistGradientBoostingClassifier(max_iter=20), False, False, "binary"),
        (HistGradientBoostingClassifier(max_iter=20), True, False, "binary"),
        (Ridge(), True, True, "regression"),
    ],
)
def test_the_replay_equals_scikit_learn_on_rows_it_never_saw(estimator, impute, scale, task) -> None:
    pipeline = fitted(estimator, impute, scale, task)
    compiled = compile_verified(pipeline)
    assert compiled is not None
    for size in (40, 4000):  # text encoded value by value, and whole columns at once
        rows = new_rows(np.random.default_rng(1), size)
        replayed = compiled.transform(columns_of(rows))
        np.testing.assert_array_equal(replayed, pipeline.steps[0][1].transform(rows))
        if task == "regression":
            np.testing.assert_array_equal(compiled.estimator.predict(replayed), pipeline.predict(rows))
        else:
            np.testing.assert_array_equal(compiled.estimator.predict_proba(replayed), pipeline.predict_proba(rows))


@pytest.mark.filterwarnings("ignore:Skipping features without any observed values")
def test_values_the_replay_does_not_cover_are_left_to_scikit_learn() -> None:
    compiled = compile_verified(fitted(LogisticRegression(max_iter=500), True, True))
    assert compiled is not None
    rows = new_rows(np.random.default_rng(2))
    infinite = columns_of(rows) | {"spend": np.where(np.arange(len(rows)) == 3, np.inf, rows["spend"])}
    assert compiled.transform(infinite) is None  # scikit-learn refuses infinity: it must be the one to say so
    numbers_as_text = columns_of(rows) | {"plan": np.array([1] * len(rows), dtype=object)}
    assert compiled.transform(numbers_as_text) is None
    as_text = columns_of(rows) | {"flag": rows["flag"].to_numpy().astype(object)}
    assert compiled.transform(as_text) is None
    many = new_rows(np.random.default_rng(3), 1000)
    pandas_missing = columns_of(many) | {"plan": many["plan"].astype("string").astype(object).to_numpy()}  # pd.NA
    assert compiled.transform(pandas_missing) is None
    numbers_among_text = columns_of(many) | {"region": np.array(["north", 2] * 500, dtype=object)}
    assert compiled.transform(numbers_among_text) is None


@pytest.mark.filterwarnings("ignore:Skipping features without any observed values")
def test_integer_and_boolean_columns_give_scikit_learns_numbers() -> None:
    """As a Parquet file hands them to batch scoring, before any cast to float."""
    pipeline = fitted(LogisticRegression(max_iter=500), True, True)
    compiled = compile_verified(pipeline)
    rows = new_rows(np.random.default_rng(4), 500)
    rows["flag"] = rows["flag"].astype(bool)
    rows["spend"] = rows["spend"].fillna(0).round().astype(np.int64)
    np.testing.assert_array_equal(compiled.transform(columns_of(rows)), pipeline.steps[0][1].transform(rows))


@pytest.mark.filterwarnings("ignore:Skipping features without any observed values")
@pytest.mark.parametrize("kept", [("age", "spend", "empty", "flag"), ("plan", "region")])
def test_only_numbers_or_only_text_compile_too(kept) -> None:
    rng = np.random.default_rng(5)
    frame = training_frame(300, rng)[list(kept)]
    spec = FeatureSpec(tuple(c for c in kept if c in SPEC.numeric), tuple(c for c in kept if c in SPEC.categorical))
    pipeline = Pipeline([("preprocess", build_preprocessor(spec)), ("model", LogisticRegression(max_iter=500))])
    pipeline.fit(frame, rng.integers(0, 2, len(frame)))
    compiled = compile_verified(pipeline)
    assert compiled is not None
    rows = new_rows(np.random.default_rng(6), 300)[list(kept)]
    np.testing.assert_array_equal(compiled.transform(columns_of(rows)), pipeline.steps[0][1].transform(rows))


def test_a_preprocessing_it_does_not_know_is_not_compiled() -> None:
    rng = np.random.default_rng(0)
    frame = training_frame(100, rng)[["plan", "region"]].fillna("none")
    ordinal = Pipeline([("preprocess", OrdinalEncoder()), ("model", LogisticRegression())])
    ordinal.fit(frame, rng.integers(0, 2, len(frame)))
    assert compile_preprocessor(ordinal) is None
    assert compile_verified(ordinal) is None
    numbers = training_frame(100, rng)[["spend", "flag"]]
    scaled = ColumnTransformer([("numeric", MinMaxScaler(), ["spend", "flag"])])
    minmax = Pipeline([("preprocess", scaled), ("model", LogisticRegression())])
    minmax.fit(numbers, rng.integers(0, 2, len(numbers)))
    assert compile_preprocessor(minmax) is None
