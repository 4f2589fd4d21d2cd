"""The preprocessing that travels inside every model: serving and batch scoring need no feature code."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import pandera.pandas as pa
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from tasks.model.schemas import column_kind, not_a_feature


@dataclass(frozen=True)
class FeatureSpec:
    """Which columns feed the model, by kind. Ids, timestamps and the target never do."""

    numeric: tuple[str, ...]
    categorical: tuple[str, ...]

    @property
    def columns(self) -> list[str]:
        return [*self.numeric, *self.categorical]


def feature_spec(schema: pa.DataFrameSchema, target: str, exclude: tuple[str, ...] = ()) -> FeatureSpec:
    """Numbers and booleans are numeric features, text categorical; see excluded_columns for the rest."""
    left_out = excluded_columns(schema, target, exclude)
    numeric, categorical = [], []
    for name, column in schema.columns.items():
        if name not in left_out:
            (categorical if column_kind(column.dtype) == "text" else numeric).append(name)
    return FeatureSpec(tuple(numeric), tuple(categorical))


def excluded_columns(schema: pa.DataFrameSchema, target: str, exclude: tuple[str, ...] = ()) -> dict[str, str]:
    """Every column that does not feed the model, with the reason: the target, ids and timestamps, datetimes
    (no date parts are derived), and columns whose schema says they are not features (id-like or free text)."""
    reasons: dict[str, str] = {}
    for name, column in schema.columns.items():
        if name == target:
            reasons[name] = "the target"
        elif name in exclude:
            reasons[name] = "declared as an id or timestamp column"
        elif column_kind(column.dtype) == "timestamp":
            reasons[name] = "a datetime: not used as a feature (derive date parts into columns of their own)"
        elif (why := not_a_feature(column)) is not None:
            reasons[name] = why
    return reasons


def build_preprocessor(spec: FeatureSpec, impute_numbers: bool = True, scale: bool = True) -> ColumnTransformer:
    """Numbers imputed by their median with a missing-value indicator (unless the estimator takes NaN) and
    scaled (unless it does not need it); text imputed as "missing" and one-hot encoded, unknown values ignored."""
    steps = [("impute", SimpleImputer(strategy="median", add_indicator=True))] if impute_numbers else []
    steps += [("scale", StandardScaler())] if scale else []
    numeric = Pipeline(steps) if steps else "passthrough"
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
    columns: dict[str, pd.Series] = {}
    for name in spec.numeric:
        column = frame[name]
        columns[name] = (
            column if column.dtype == "float64" else pd.to_numeric(column, errors="coerce").astype("float64")
        )
    for name in spec.categorical:
        column = frame[name]
        if column.dtype != object or column.isna().any():  # columns already typed so are taken as they are
            column = column.astype(object).where(column.notna(), None)
        columns[name] = column
    return pd.DataFrame(columns, columns=spec.columns, copy=False)
