"""Held-out evaluation: the usual metrics for the task, and the plots that explain them."""

from __future__ import annotations

import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: plots are files, never windows

import matplotlib.pyplot as plt
import numpy as np
import optuna
import pandas as pd
from sklearn.inspection import permutation_importance
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

from tasks.modeling import TaskType, primary_score


def metrics(model: Pipeline, features: pd.DataFrame, target: pd.Series, task_type: TaskType) -> dict[str, float]:
    """Held-out metrics; `primary` is the one the sweep optimised and the gate compares."""
    result = {"primary": primary_score(model, features, target, task_type)}
    if task_type == "regression":
        predicted = model.predict(features)
        return result | {
            "r2": float(r2_score(target, predicted)),
            "rmse": float(root_mean_squared_error(target, predicted)),
            "mae": float(mean_absolute_error(target, predicted)),
        }
    predicted = model.predict(features)
    proba = model.predict_proba(features)
    result |= {
        "accuracy": float(accuracy_score(target, predicted)),
        "log_loss": float(log_loss(target, proba, labels=model.classes_)),
    }
    if task_type == "binary":
        positive = proba[:, 1]
        return result | {
            "roc_auc": float(roc_auc_score(target, positive)),
            "average_precision": float(average_precision_score(target, positive)),
            "f1": float(f1_score(target, predicted)),
            "precision": float(precision_score(target, predicted, zero_division=0)),
            "recall": float(recall_score(target, predicted)),
        }
    return result | {
        "f1_macro": float(f1_score(target, predicted, average="macro")),
        "roc_auc_ovr": float(roc_auc_score(target, proba, multi_class="ovr", labels=model.classes_)),
    }


def feature_importance(
    model: Pipeline, features: pd.DataFrame, target: pd.Series, task_type: TaskType, seed: int
) -> pd.Series:
    """Permutation importance on the input columns: comparable across families, in the user's terms."""
    scoring = {"binary": "roc_auc", "multiclass": "f1_macro", "regression": "r2"}[task_type]
    result = permutation_importance(model, features, target, scoring=scoring, n_repeats=3, random_state=seed)
    return pd.Series(result.importances_mean, index=features.columns).sort_values(ascending=False)


def plot_task(model: Pipeline, features: pd.DataFrame, target: pd.Series, task_type: TaskType, out: Path) -> list[Path]:
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
        RocCurveDisplay.from_estimator(model, features, target, ax=ax)
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
