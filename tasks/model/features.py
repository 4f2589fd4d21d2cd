"""The preprocessing that travels inside every model: serving and batch scoring need no feature code."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import pandera.pandas as pa
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from tasks.model.schemas import column_kind


@dataclass(frozen=True)
class FeatureSpec:
    """Which columns feed the model, by kind. Ids, timestamps and the target never do."""

    numeric: tuple[str, ...]
    categorical: tuple[str, ...]

    @property
    def columns(self) -> list[str]:
        return [*self.numeric, *self.categorical]


def feature_spec(schema: pa.DataFrameSchema, target: str, exclude: tuple[str, ...] = ()) -> FeatureSpec:
    numeric, categorical = [], []
    for name, column in schema.columns.items():
        kind = column_kind(column.dtype)
        if name == target or name in exclude or kind == "timestamp":
            continue
        (categorical if kind == "text" else numeric).append(name)
    return FeatureSpec(tuple(numeric), tuple(categorical))


def build_preprocessor(spec: FeatureSpec) -> ColumnTransformer:
    numeric = Pipeline([("impute", SimpleImputer(strategy="median", add_indicator=True)), ("scale", StandardScaler())])
    categorical = Pipeline(
        [
            ("impute", SimpleImputer(strategy="constant", fill_value="missing")),
            ("encode", OneHotEncoder(handle_unknown="ignore", sparse_output=False)),
        ]
    )
    return ColumnTransformer(
        [("numeric", numeric, list(spec.numeric)), ("categorical", categorical, list(spec.categorical))],
        remainder="drop",
        verbose_feature_names_out=False,
    )


def model_input(frame: pd.DataFrame, spec: FeatureSpec) -> pd.DataFrame:
    """The columns a model is fed, typed one way wherever they come from (snapshots, logged JSON, files to
    score): numbers as float64, text as plain objects with None for missing, so every estimator and skops
    handle it alike. Serving's validator builds the same typing from request columns (RecordValidator.frame)."""
    inputs = frame[spec.columns].copy()
    for column in spec.categorical:
        inputs[column] = inputs[column].astype(object).where(inputs[column].notna(), None)
    for column in spec.numeric:
        inputs[column] = pd.to_numeric(inputs[column], errors="coerce").astype("float64")
    return inputs
