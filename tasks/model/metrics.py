"""The primary metric: which one each task optimises, which class is positive, and how it is computed.

One rule, used by the sweep's folds, the held-out evaluation, the gate and the live metric of monitoring.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd
from sklearn.metrics import f1_score, r2_score, roc_auc_score

TaskType = Literal["binary", "multiclass", "regression"]
PRIMARY_METRIC: dict[str, str] = {"binary": "roc_auc", "multiclass": "f1_macro", "regression": "r2"}


def primary_metric(task_type: TaskType) -> str:
    """ROC AUC for binary tasks, macro F1 for multiclass, R² for regression: higher is better for each."""
    return PRIMARY_METRIC[task_type]


def plain(value: Any) -> Any:
    """numpy scalars as Python values: JSON, MLflow tags and pydantic want them plain."""
    return value.item() if isinstance(value, np.generic) else value


def class_labels(target: pd.Series | np.ndarray) -> list[Any]:
    """A classification target's classes in scikit-learn's order (sorted), as plain values."""
    return [plain(label) for label in np.unique(np.asarray(pd.Series(target).dropna()))]


def positive_class(classes: Sequence[Any]) -> Any:
    """The binary rule: the last class in sorted order, which is scikit-learn's `classes_[1]`: 1 of 0/1, True
    of booleans, 2 of 1/2, "Yes" of "No"/"Yes"."""
    return sorted(classes)[-1]


def positive_mask(truth: pd.Series | np.ndarray, positive: Any) -> np.ndarray:
    """Which rows are of the positive class. Labels read back from files may be typed otherwise than the
    model's classes (text "1" against 1, 1.0 against 1): then both sides compare as numbers, or else as text."""
    values = pd.Series(np.asarray(truth))
    if pd.api.types.is_numeric_dtype(values) and isinstance(positive, int | float):
        return values.to_numpy() == positive
    if not pd.api.types.is_numeric_dtype(values) and isinstance(positive, str):
        return values.astype(str).to_numpy() == positive
    numbers = pd.to_numeric(values, errors="coerce")
    if isinstance(positive, int | float) and numbers.notna().all():
        return numbers.to_numpy() == float(positive)
    return values.astype(str).to_numpy() == str(positive)


def positive_column(classes: Sequence[Any], positive: Any = None) -> int:
    """Where the positive class (None: the rule's, positive_class) sits among a classifier's `classes_`."""
    labels = [plain(c) for c in classes]
    positive = positive_class(labels) if positive is None else positive
    if positive not in labels:
        raise ValueError(f"positive class {positive!r} is not among the model's classes {labels}")
    return labels.index(positive)


def primary_output(model: Any, features: pd.DataFrame, task_type: TaskType, positive: Any = None) -> np.ndarray:
    """What the primary metric reads: the positive class's probability for binary tasks, else predictions."""
    if task_type == "binary":
        return model.predict_proba(features)[:, positive_column(model.classes_, positive)]
    return np.asarray(model.predict(features))


def score_output(truth: pd.Series | np.ndarray, output: np.ndarray, task_type: TaskType, positive: Any = None) -> float:
    """The primary metric of `output` (primary_output's) against the true labels or values."""
    if task_type == "binary":
        positive = positive_class(class_labels(truth)) if positive is None else positive
        return float(roc_auc_score(positive_mask(truth, positive), output))
    if task_type == "multiclass":
        return float(f1_score(truth, output, average="macro"))
    return float(r2_score(truth, output))


def primary_score(
    model: Any, features: pd.DataFrame, truth: pd.Series, task_type: TaskType, positive: Any = None
) -> float:
    """The sweep's objective and the gate's comparison."""
    return score_output(truth, primary_output(model, features, task_type, positive), task_type, positive)
