"""The fitted preprocessing of `features.build_preprocessor`, replayed with numpy on columns.

scikit-learn's ColumnTransformer pays a fixed cost per call on a DataFrame (column selection through pandas,
input checks, dataframe-library detection) that is most of a small request's time; the arithmetic itself is a
few array operations. `compile_preprocessor` reads the fitted parameters of a pipeline whose first step is
exactly what build_preprocessor makes and replays them on a dict of columns; any other shape (a transformer we
do not know, options we never set) compiles to None and the pipeline is called as it is. `compile_verified`
also checks the replay against scikit-learn on probe rows made from the fitted parameters (every category,
missing values, an unseen value) and keeps it only if the two outputs are identical. A call with values outside
what the replay covers (infinities, text columns holding other than text or None) returns None from
`transform`, and the caller falls back to the pipeline for that call, so its answer is scikit-learn's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

Columns = Mapping[str, np.ndarray]  # float64 for numeric features, object (str or None) for text


@dataclass(frozen=True)
class NumericBlock:
    """Numbers: passthrough, or median-imputed with missing indicators, optionally standardised."""

    columns: tuple[str, ...]
    fill: np.ndarray | None  # the imputer's statistics, one per input column (NaN: column dropped)
    indicate: np.ndarray | None  # input column indexes that get a missing-value indicator
    mean: np.ndarray | None  # the scaler's, over the imputed columns and the indicators
    scale: np.ndarray | None

    def transform(self, columns: Columns, rows: int) -> np.ndarray | None:
        values = np.empty((rows, len(self.columns)), dtype="float64")  # any float input is cast on assignment
        for index, name in enumerate(self.columns):
            column = columns[name]
            if column.dtype.kind not in "fiub":  # integers and booleans: converted as scikit-learn converts them
                return None
            values[:, index] = column
        if np.isinf(values).any():  # scikit-learn refuses these: let it say so
            return None
        if self.fill is not None:
            missing = np.isnan(values)
            kept = ~np.isnan(self.fill)
            imputed = np.where(missing, self.fill, values)[:, kept]
            if self.indicate is not None:
                imputed = np.hstack([imputed, missing[:, self.indicate].astype("float64")])
            values = imputed
        if self.mean is not None:
            values = values - self.mean
        if self.scale is not None:
            values = values / self.scale
        return values


@dataclass(frozen=True)
class TextBlock:
    """Text: NaN imputed by a constant, then one-hot encoded (None is a category of its own; unseen: zeros)."""

    columns: tuple[str, ...]
    fill: tuple[Any, ...]  # the imputer's constant per column
    categories: tuple[dict[Any, int], ...]  # category -> position in the column's one-hot block
    indexes: tuple[pd.Index, ...]  # the same, for whole columns at once
    width: int

    def transform(self, columns: Columns, rows: int) -> np.ndarray | None:
        encoded = np.zeros((rows, self.width), dtype="float64")
        offset = 0
        for position, name in enumerate(self.columns):
            values, fill = columns[name], self.fill[position]
            if rows < VECTORISED_ROWS:
                codes = _codes_each(values, fill, self.categories[position])
            else:
                codes = _codes_vectorised(values, fill, self.indexes[position])
            if codes is None:
                return None
            seen = codes >= 0
            encoded[np.flatnonzero(seen), offset + codes[seen]] = 1.0
            offset += len(self.categories[position])
        return encoded


# Below this many rows a dict lookup per value is quicker than pandas' per-call set-up
VECTORISED_ROWS = 256


def _codes_each(values: np.ndarray, fill: Any, lookup: dict[Any, int]) -> np.ndarray | None:
    codes = np.empty(len(values), dtype=np.int64)
    for row, value in enumerate(values):
        if type(value) is float and value != value:
            value = fill
        elif value is not None and type(value) is not str:
            return None
        codes[row] = lookup.get(value, -1)
    return codes


def _codes_vectorised(values: np.ndarray, fill: Any, index: pd.Index) -> np.ndarray | None:
    if values.dtype != object or pd.api.types.infer_dtype(values, skipna=True) not in {"string", "empty"}:
        return None
    try:
        nan = values != values  # NaN only: None equals None (and stays a category of its own)
    except TypeError:  # pd.NA, whose comparisons have no truth value: scikit-learn decides
        return None
    if nan.any():
        values = np.where(nan, fill, values)
    return index.get_indexer(values)


@dataclass(frozen=True)
class CompiledPreprocessor:
    """The pipeline's preprocessing as numpy, and the estimator it feeds."""

    blocks: tuple[NumericBlock | TextBlock, ...]
    estimator: Any

    @property
    def columns(self) -> list[str]:
        return [name for block in self.blocks for name in block.columns]

    def transform(self, columns: Columns) -> np.ndarray | None:
        """The estimator's input for these columns, or None where scikit-learn must decide."""
        rows = len(next(iter(columns.values()))) if columns else 0
        parts = []
        for block in self.blocks:
            part = block.transform(columns, rows)
            if part is None:
                return None
            parts.append(part)
        return np.hstack(parts) if parts else np.empty((rows, 0))


def compile_preprocessor(pipeline: Any) -> CompiledPreprocessor | None:
    """The replay of `Pipeline([("preprocess", build_preprocessor(...)), ("model", estimator)])`, or None."""
    if not isinstance(pipeline, Pipeline) or len(pipeline.steps) != 2:
        return None
    transformer, estimator = pipeline.steps[0][1], pipeline.steps[1][1]
    if not isinstance(transformer, ColumnTransformer) or transformer.sparse_output_:
        return None
    if getattr(transformer, "_sklearn_output_config", {}).get("transform", "default") != "default":
        return None  # the estimator was fitted on a DataFrame with names: it must get one
    blocks: list[NumericBlock | TextBlock] = []
    for name, step, selected in transformer.transformers_:
        if isinstance(step, str) and step == "drop":
            continue
        if not isinstance(selected, list) or not all(isinstance(column, str) for column in selected):
            return None
        if not selected:
            continue
        block = _numeric(step, tuple(selected)) if name == "numeric" else _text(step, tuple(selected))
        if block is None:
            return None
        blocks.append(block)
    return CompiledPreprocessor(tuple(blocks), estimator)


def _numeric(step: Any, columns: tuple[str, ...]) -> NumericBlock | None:
    if _is_passthrough(step):
        return NumericBlock(columns, None, None, None, None)
    if not isinstance(step, Pipeline):
        return None
    fill = indicate = mean = scale = None
    for position, (_, part) in enumerate(step.steps):
        if position == 0 and type(part) is SimpleImputer:
            if part.strategy not in {"median", "mean"} or part.keep_empty_features or not _nan(part.missing_values):
                return None
            fill = np.asarray(part.statistics_, dtype="float64")
            if part.indicator_ is not None:
                if part.indicator_.features != "missing-only":
                    return None
                indicate = np.asarray(part.indicator_.features_, dtype=np.int64)
        elif position == len(step.steps) - 1 and type(part) is StandardScaler:
            mean = np.asarray(part.mean_, dtype="float64") if part.with_mean else None
            scale = np.asarray(part.scale_, dtype="float64") if part.with_std else None
        else:
            return None
    return NumericBlock(columns, fill, indicate, mean, scale)


def _text(step: Any, columns: tuple[str, ...]) -> TextBlock | None:
    if not isinstance(step, Pipeline) or len(step.steps) != 2:
        return None
    imputer, encoder = step.steps[0][1], step.steps[1][1]
    if type(imputer) is not SimpleImputer or imputer.strategy != "constant" or not _nan(imputer.missing_values):
        return None
    if imputer.add_indicator or type(encoder) is not OneHotEncoder or encoder.handle_unknown != "ignore":
        return None
    if encoder.drop is not None or encoder.sparse_output or encoder.min_frequency or encoder.max_categories:
        return None
    if np.dtype(encoder.dtype) != np.float64:
        return None
    lookups = []
    for categories in encoder.categories_:
        values = categories.tolist()
        if any(value is not None and type(value) is not str for value in values):
            return None
        lookups.append({value: index for index, value in enumerate(values)})
    fill = tuple(imputer.statistics_.tolist())
    indexes = tuple(pd.Index(list(lookup), dtype=object) for lookup in lookups)
    return TextBlock(columns, fill, tuple(lookups), indexes, sum(len(lookup) for lookup in lookups))


def _is_passthrough(step: Any) -> bool:
    if isinstance(step, str):
        return step == "passthrough"
    return type(step) is FunctionTransformer and step.func is None and not step.validate


def _nan(value: Any) -> bool:
    return isinstance(value, float) and value != value


def probe_columns(compiled: CompiledPreprocessor) -> dict[str, np.ndarray]:
    """Rows that reach every branch of the replay: each category, None, NaN and an unseen text; numbers at the
    imputed values, missing, negative, large and fractional."""
    text = [len(lookup) for b in compiled.blocks if isinstance(b, TextBlock) for lookup in b.categories]
    rows = max(6, max(text, default=0) + 2)
    columns: dict[str, np.ndarray] = {}
    for block in compiled.blocks:
        if isinstance(block, NumericBlock):
            for index, name in enumerate(block.columns):
                fill = 0.0 if block.fill is None or np.isnan(block.fill[index]) else float(block.fill[index])
                pattern = [fill, np.nan, -3.5, 1e6, fill + 0.25, 0.0]
                columns[name] = np.array([pattern[(row + index) % len(pattern)] for row in range(rows)])
        else:
            for name, lookup in zip(block.columns, block.categories, strict=True):
                pattern: list[Any] = [*lookup, np.nan, "\x00never seen in training"]
                columns[name] = np.array([pattern[row % len(pattern)] for row in range(rows)], dtype=object)
    return columns


def compile_verified(pipeline: Any) -> CompiledPreprocessor | None:
    """The replay, kept only where it reproduces scikit-learn's output exactly on the probe rows."""
    compiled = compile_preprocessor(pipeline)
    if compiled is None or not compiled.blocks:
        return None
    transformer = pipeline.steps[0][1]
    names = list(getattr(transformer, "feature_names_in_", []))
    small = probe_columns(compiled)
    if sorted(names) != sorted(small):  # fitted on columns the replay does not read: keep to the pipeline
        return None
    rows = len(next(iter(small.values())))
    large = {name: np.tile(column, VECTORISED_ROWS // rows + 1) for name, column in small.items()}
    for probe in (small, large):  # both ways of encoding text
        replayed = compiled.transform(probe)
        try:
            expected = transformer.transform(pd.DataFrame(probe)[names])
        except Exception:  # a probe scikit-learn refuses: keep to the pipeline
            return None
        if replayed is None or not np.array_equal(np.asarray(expected, dtype="float64"), replayed, equal_nan=True):
            return None
    return compiled
