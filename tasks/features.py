"""The preprocessing that travels inside every model: serving and batch scoring need no feature code."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import pandera.pandas as pa
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

NUMERIC_DTYPE_PREFIXES = ("int", "uint", "float", "bool")


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
        dtype = str(column.dtype).lower()
        if name == target or name in exclude or dtype.startswith("datetime"):
            continue
        (numeric if dtype.startswith(NUMERIC_DTYPE_PREFIXES) else categorical).append(name)
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
    """The columns a model is fed, text as plain objects so every estimator and skops handle it alike."""
    inputs = frame[spec.columns].copy()
    for column in spec.categorical:
        inputs[column] = inputs[column].astype(object).where(inputs[column].notna(), None)
    for column in spec.numeric:
        inputs[column] = inputs[column].astype("float64")
    return inputs
