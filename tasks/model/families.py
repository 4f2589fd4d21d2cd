"""Model families, their search space, and the one `fit()` used by every trial and by the final model."""

from __future__ import annotations

from typing import Any

import optuna
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.ensemble import (
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import Pipeline

from tasks.model.features import FeatureSpec, build_preprocessor
from tasks.model.metrics import TaskType, plain

FAMILIES = ("linear", "random_forest", "hist_gradient_boosting")
# The types our families put in a pipeline that skops does not trust by default. Tree node arrays are trusted
# because models are only ever loaded from our own registry; nothing outside this list is deserialised.
SKOPS_TRUSTED_TYPES = [
    "numpy.dtype",
    "sklearn.tree._tree.Tree",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
]


def suggest_params(trial: optuna.Trial) -> dict[str, Any]:
    """The search space: a family, then that family's own hyperparameters."""
    family = trial.suggest_categorical("family", FAMILIES)
    if family == "linear":
        return {"family": family, "linear_c": trial.suggest_float("linear_c", 1e-3, 1e2, log=True)}
    if family == "random_forest":
        return {
            "family": family,
            "rf_n_estimators": trial.suggest_int("rf_n_estimators", 50, 250, step=50),
            "rf_max_depth": trial.suggest_int("rf_max_depth", 3, 16),
            "rf_min_samples_leaf": trial.suggest_int("rf_min_samples_leaf", 1, 20, log=True),
            "rf_max_features": trial.suggest_float("rf_max_features", 0.2, 1.0),
        }
    return {
        "family": family,
        "hgb_learning_rate": trial.suggest_float("hgb_learning_rate", 0.01, 0.3, log=True),
        "hgb_max_iter": trial.suggest_int("hgb_max_iter", 50, 300, step=50),
        "hgb_max_leaf_nodes": trial.suggest_int("hgb_max_leaf_nodes", 8, 64, log=True),
        "hgb_l2_regularization": trial.suggest_float("hgb_l2_regularization", 1e-6, 10.0, log=True),
    }


def make_estimator(params: dict[str, Any], task_type: TaskType, seed: int) -> BaseEstimator:
    family = params["family"]
    classify = task_type != "regression"
    if family == "linear":
        if classify:
            return LogisticRegression(C=params["linear_c"], max_iter=2000, random_state=seed)
        return Ridge(alpha=1.0 / params["linear_c"], random_state=seed)
    if family == "random_forest":
        cls = RandomForestClassifier if classify else RandomForestRegressor
        return cls(
            n_estimators=params["rf_n_estimators"],
            max_depth=params["rf_max_depth"],
            min_samples_leaf=params["rf_min_samples_leaf"],
            max_features=params["rf_max_features"],
            n_jobs=1,  # trials are the unit of parallelism; nested threads only fight over cores
            random_state=seed,
        )
    if family == "hist_gradient_boosting":
        cls = HistGradientBoostingClassifier if classify else HistGradientBoostingRegressor
        return cls(
            learning_rate=params["hgb_learning_rate"],
            max_iter=params["hgb_max_iter"],
            max_leaf_nodes=params["hgb_max_leaf_nodes"],
            l2_regularization=params["hgb_l2_regularization"],
            random_state=seed,
        )
    raise ValueError(f"unknown model family {family!r}; expected one of {FAMILIES}")


def fit(
    features: pd.DataFrame,
    target: pd.Series,
    spec: FeatureSpec,
    params: dict[str, Any],
    task_type: TaskType,
    seed: int,
) -> Pipeline:
    """Fit preprocessing and estimator together, so the fitted preprocessing ships inside the model."""
    pipeline = Pipeline([("preprocess", build_preprocessor(spec)), ("model", make_estimator(params, task_type, seed))])
    return pipeline.fit(features, target)


def params_from_trial(trial_params: dict[str, Any]) -> dict[str, Any]:
    """Optuna returns numpy scalars from some storages; MLflow tags and skops want plain Python."""
    return {k: plain(v) for k, v in trial_params.items()}
