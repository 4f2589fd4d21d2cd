"""Held-out evaluation: the usual metrics for the task, and the plots that explain them."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: plots are files, never windows

import matplotlib.pyplot as plt
import numpy as np
import optuna
import pandas as pd
from sklearn.metrics import (
    ConfusionMatrixDisplay,
    RocCurveDisplay,
    accuracy_score,
    average_precision_score,
    f1_score,
    log_loss,
    mean_absolute_error,
    precision_score,
    r2_score,
    recall_score,
    roc_auc_score,
    root_mean_squared_error,
)
from sklearn.pipeline import Pipeline

from tasks.model.metrics import TaskType, positive_column, positive_mask, primary_output, score_output


def metrics(
    model: Pipeline, features: pd.DataFrame, target: pd.Series, task_type: TaskType, positive: Any = None
) -> dict[str, float]:
    """Held-out metrics; `primary` is the one the sweep optimised and the gate compares. Binary metrics are
    about `positive` (the contract's positive class), whatever type the labels have."""
    if task_type == "regression":
        predicted = model.predict(features)
        r2 = float(r2_score(target, predicted))
        return {
            "primary": r2,
            "r2": r2,
            "rmse": float(root_mean_squared_error(target, predicted)),
            "mae": float(mean_absolute_error(target, predicted)),
        }
    proba = model.predict_proba(features)
    predicted = np.asarray(model.classes_)[proba.argmax(axis=1)]  # what predict() answers, without a second call
    result = {
        "accuracy": float(accuracy_score(target, predicted)),
        "log_loss": float(log_loss(target, proba, labels=model.classes_)),
    }
    if task_type == "binary":
        scores = proba[:, positive_column(model.classes_, positive)]
        truth, said = positive_mask(target, positive), positive_mask(predicted, positive)
        roc_auc = score_output(target, scores, task_type, positive)
        return result | {
            "primary": roc_auc,
            "roc_auc": roc_auc,
            "average_precision": float(average_precision_score(truth, scores)),
            "f1": float(f1_score(truth, said)),
            "precision": float(precision_score(truth, said, zero_division=0)),
            "recall": float(recall_score(truth, said)),
        }
    f1_macro = score_output(target, predicted, task_type)
    return result | {
        "primary": f1_macro,
        "f1_macro": f1_macro,
        "roc_auc_ovr": float(roc_auc_score(target, proba, multi_class="ovr", labels=model.classes_)),
    }


def feature_importance(
    model: Pipeline,
    features: pd.DataFrame,
    target: pd.Series,
    task_type: TaskType,
    seed: int,
    positive: Any = None,
    n_repeats: int = 3,
    rows_per_call: int = 100_000,
) -> pd.Series:
    """Permutation importance on the input columns: comparable across families, in the user's terms.

    The mean drop in the primary score when one column is shuffled, as sklearn's `permutation_importance`
    computes it, but with the shuffled copies stacked into as few predict calls as `rows_per_call` allows: a
    pipeline call costs ~13 ms whatever its size (the ColumnTransformer on pandas), which sklearn's one call
    per column and repeat paid 33 times for the demo's 11 columns."""
    rng = np.random.default_rng(seed)
    n_rows = len(features)
    baseline = score_output(target, primary_output(model, features, task_type, positive), task_type, positive)
    shuffles = [(column, rng.permutation(n_rows)) for column in features.columns for _ in range(n_repeats)]
    per_call = max(1, rows_per_call // max(n_rows, 1))
    drops: dict[str, list[float]] = {column: [] for column in features.columns}
    for start in range(0, len(shuffles), per_call):
        batch = shuffles[start : start + per_call]
        stacked = pd.concat([_shuffled(features, column, order) for column, order in batch], ignore_index=True)
        output = primary_output(model, stacked, task_type, positive)
        for i, (column, _) in enumerate(batch):
            score = score_output(target, output[i * n_rows : (i + 1) * n_rows], task_type, positive)
            drops[column].append(baseline - score)
    mean_drop = {column: float(np.mean(values)) for column, values in drops.items()}
    return pd.Series(mean_drop, dtype=float).sort_values(ascending=False)


def _shuffled(features: pd.DataFrame, column: str, order: np.ndarray) -> pd.DataFrame:
    copy = features.copy(deep=False)
    copy[column] = features[column].take(order).set_axis(features.index)  # take() keeps a categorical dtype
    return copy


def plot_task(
    model: Pipeline, features: pd.DataFrame, target: pd.Series, task_type: TaskType, out: Path, positive: Any = None
) -> list[Path]:
    """Confusion matrix and ROC for classifiers, residuals for regressors."""
    paths = []
    if task_type == "regression":
        predicted = model.predict(features)
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.scatter(predicted, np.asarray(target) - predicted, s=6, alpha=0.5)
        ax.axhline(0, color="black", linewidth=1)
        ax.set(xlabel="predicted", ylabel="residual (actual - predicted)", title="Residuals on held-out data")
        paths.append(_save(fig, out / "residuals.png"))
        return paths
    fig, ax = plt.subplots(figsize=(5, 4))
    ConfusionMatrixDisplay.from_estimator(model, features, target, ax=ax, colorbar=False)
    ax.set_title("Confusion matrix (held-out)")
    paths.append(_save(fig, out / "confusion_matrix.png"))
    if task_type == "binary":
        fig, ax = plt.subplots(figsize=(5, 4))
        RocCurveDisplay.from_estimator(model, features, target, ax=ax, pos_label=positive)
        ax.set_title("ROC (held-out)")
        paths.append(_save(fig, out / "roc_curve.png"))
    return paths


def plot_importance(importance: pd.Series, out: Path) -> Path:
    top = importance.head(20)[::-1]
    fig, ax = plt.subplots(figsize=(6, 0.3 * len(top) + 1.5))
    ax.barh(top.index, top.to_numpy())
    ax.set(xlabel="mean drop in score when shuffled", title="Permutation feature importance (held-out)")
    return _save(fig, out / "feature_importance.png")


def plot_study(study: optuna.Study, out: Path) -> list[Path]:
    """Optuna's optimisation history and parameter importance, as standalone HTML."""
    paths = []
    history = out / "optuna_history.html"
    optuna.visualization.plot_optimization_history(study).write_html(history, include_plotlyjs=True)
    paths.append(history)
    try:
        with warnings.catch_warnings():  # "some regimes have less than 2 trials" on small sweeps
            warnings.simplefilter("ignore", UserWarning)
            figure = optuna.visualization.plot_param_importances(study)
        importance = out / "optuna_param_importance.html"
        figure.write_html(importance, include_plotlyjs=True)
        paths.append(importance)
    except (ValueError, RuntimeError, ZeroDivisionError):
        pass  # too few completed trials, or a search space with no parameter shared by all of them
    return paths


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
