"""Model families as plugins, their search spaces, and the one `fit()` used by every trial and the final model.

A family says how it builds its estimator from trial parameters, which hyperparameters the sweep searches,
whether its estimators take missing values natively, and which types skops must trust to load them. The
scikit-learn families, XGBoost and LightGBM are registered here; a user registers their own from their own
module (`register(Family(...))`) and names that module in the train parameters' `plugins`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.pipeline import Pipeline

from tasks.model.features import FeatureSpec, build_preprocessor
from tasks.model.metrics import TaskType, plain

# Types in every pipeline that skops does not trust by default. Models are only ever loaded from our own
# registry, and only with the types their family declares: nothing outside these lists is deserialised.
BASE_TRUSTED_TYPES = ("numpy.dtype",)
DEFAULT_FAMILIES = ("linear", "random_forest", "hist_gradient_boosting")


@dataclass(frozen=True)
class Family:
    """A kind of model the sweep can choose."""

    name: str
    search_space: Callable[[optuna.Trial], dict[str, Any]]  # the family's hyperparameters, names prefixed
    build: Callable[[dict[str, Any], TaskType, int], BaseEstimator]  # (trial params, task, seed) -> estimator
    handles_missing: bool = False  # NaN reaches the estimator; otherwise numbers are imputed (with an indicator)
    needs_scaling: bool = True
    trusted_types: tuple[str, ...] = ()  # what skops must trust to load its estimators
    packages: tuple[str, ...] = ()  # distributions its models need beyond scikit-learn (the model's requirements)


_REGISTRY: dict[str, Family] = {}


def register(family: Family) -> Family:
    """Make a family available to sweeps in this process (registering the same name again replaces it)."""
    _REGISTRY[family.name] = family
    return family


def get(name: str) -> Family:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown model family {name!r}; registered: {sorted(_REGISTRY)} (name the module that registers it "
            "in `plugins`)"
        ) from None


def load_plugins(modules: Iterable[str]) -> None:
    """Import the modules that register families (a user's own), so their names resolve here too."""
    for module in modules:
        importlib.import_module(module)


def trusted_types(names: Iterable[str]) -> list[str]:
    """What skops may load for models of these families, and nothing else."""
    return sorted({*BASE_TRUSTED_TYPES, *(t for name in names for t in get(name).trusted_types)})


def all_trusted_types() -> set[str]:
    return {*BASE_TRUSTED_TYPES, *(t for family in _REGISTRY.values() for t in family.trusted_types)}


def suggest_params(trial: optuna.Trial, families: tuple[str, ...] = DEFAULT_FAMILIES) -> dict[str, Any]:
    """The search space: a family, then that family's own hyperparameters."""
    family = trial.suggest_categorical("family", families)
    return {"family": family, **get(family).search_space(trial)}


def make_estimator(params: dict[str, Any], task_type: TaskType, seed: int) -> BaseEstimator:
    return get(params["family"]).build(params, task_type, seed)


def fit(
    features: pd.DataFrame,
    target: pd.Series,
    spec: FeatureSpec,
    params: dict[str, Any],
    task_type: TaskType,
    seed: int,
) -> Pipeline:
    """Fit preprocessing and estimator together, so the fitted preprocessing ships inside the model."""
    family = get(params["family"])
    preprocess = build_preprocessor(spec, impute_numbers=not family.handles_missing, scale=family.needs_scaling)
    pipeline = Pipeline([("preprocess", preprocess), ("model", family.build(params, task_type, seed))])
    return pipeline.fit(features, target)


def params_from_trial(trial_params: dict[str, Any]) -> dict[str, Any]:
    """Optuna returns numpy scalars from some storages; MLflow tags and skops want plain Python."""
    return {k: plain(v) for k, v in trial_params.items()}


class EncodedLabels(ClassifierMixin, BaseEstimator):
    """A classifier that only learns class indices 0..n-1 (XGBoost), taught and answering in the real labels:
    text, booleans or any integers, as scikit-learn's own classifiers are."""

    def __init__(self, estimator: BaseEstimator) -> None:
        self.estimator = estimator

    def fit(self, features: Any, target: Any) -> EncodedLabels:
        self.classes_, codes = np.unique(np.asarray(target), return_inverse=True)
        self.estimator_ = clone(self.estimator).fit(features, codes)
        return self

    def predict_proba(self, features: Any) -> np.ndarray:
        return self.estimator_.predict_proba(features)

    def predict(self, features: Any) -> np.ndarray:
        return self.classes_[self.predict_proba(features).argmax(axis=1)]


# --- the families we ship ------------------------------------------------------------------------------------


def _linear(params: dict[str, Any], task_type: TaskType, seed: int) -> BaseEstimator:
    from sklearn.linear_model import LogisticRegression, Ridge

    if task_type != "regression":
        return LogisticRegression(C=params["linear_c"], max_iter=2000, random_state=seed)
    return Ridge(alpha=1.0 / params["linear_c"], random_state=seed)


def _random_forest(params: dict[str, Any], task_type: TaskType, seed: int) -> BaseEstimator:
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

    cls = RandomForestRegressor if task_type == "regression" else RandomForestClassifier
    return cls(
        n_estimators=params["rf_n_estimators"],
        max_depth=params["rf_max_depth"],
        min_samples_leaf=params["rf_min_samples_leaf"],
        max_features=params["rf_max_features"],
        n_jobs=1,  # trials are the unit of parallelism; nested threads only fight over cores
        random_state=seed,
    )


def _hist_gradient_boosting(params: dict[str, Any], task_type: TaskType, seed: int) -> BaseEstimator:
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    cls = HistGradientBoostingRegressor if task_type == "regression" else HistGradientBoostingClassifier
    return cls(
        learning_rate=params["hgb_learning_rate"],
        max_iter=params["hgb_max_iter"],
        max_leaf_nodes=params["hgb_max_leaf_nodes"],
        l2_regularization=params["hgb_l2_regularization"],
        random_state=seed,
    )


def _xgboost(params: dict[str, Any], task_type: TaskType, seed: int) -> BaseEstimator:
    from xgboost import XGBClassifier, XGBRegressor

    cls = XGBRegressor if task_type == "regression" else XGBClassifier
    estimator = cls(
        n_estimators=params["xgb_n_estimators"],
        learning_rate=params["xgb_learning_rate"],
        max_depth=params["xgb_max_depth"],
        subsample=params["xgb_subsample"],
        colsample_bytree=params["xgb_colsample_bytree"],
        reg_lambda=params["xgb_reg_lambda"],
        tree_method="hist",
        n_jobs=1,
        random_state=seed,
    )
    return estimator if task_type == "regression" else EncodedLabels(estimator)


def _lightgbm(params: dict[str, Any], task_type: TaskType, seed: int) -> BaseEstimator:
    from lightgbm import LGBMClassifier, LGBMRegressor

    cls = LGBMRegressor if task_type == "regression" else LGBMClassifier
    return cls(
        n_estimators=params["lgbm_n_estimators"],
        learning_rate=params["lgbm_learning_rate"],
        num_leaves=params["lgbm_num_leaves"],
        min_child_samples=params["lgbm_min_child_samples"],
        subsample=params["lgbm_subsample"],
        subsample_freq=1,
        colsample_bytree=params["lgbm_colsample_bytree"],
        reg_lambda=params["lgbm_reg_lambda"],
        n_jobs=1,
        random_state=seed,
        verbose=-1,
    )


register(
    Family(
        "linear",
        lambda trial: {"linear_c": trial.suggest_float("linear_c", 1e-3, 1e2, log=True)},
        _linear,
    )
)
register(
    Family(
        "random_forest",
        lambda trial: {
            "rf_n_estimators": trial.suggest_int("rf_n_estimators", 50, 250, step=50),
            "rf_max_depth": trial.suggest_int("rf_max_depth", 3, 16),
            "rf_min_samples_leaf": trial.suggest_int("rf_min_samples_leaf", 1, 20, log=True),
            "rf_max_features": trial.suggest_float("rf_max_features", 0.2, 1.0),
        },
        _random_forest,
        trusted_types=("sklearn.tree._tree.Tree",),
    )
)
register(
    Family(
        "hist_gradient_boosting",
        lambda trial: {
            "hgb_learning_rate": trial.suggest_float("hgb_learning_rate", 0.01, 0.3, log=True),
            "hgb_max_iter": trial.suggest_int("hgb_max_iter", 50, 300, step=50),
            "hgb_max_leaf_nodes": trial.suggest_int("hgb_max_leaf_nodes", 8, 64, log=True),
            "hgb_l2_regularization": trial.suggest_float("hgb_l2_regularization", 1e-6, 10.0, log=True),
        },
        _hist_gradient_boosting,
        trusted_types=("sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",),
    )
)
register(
    Family(
        "xgboost",
        lambda trial: {
            "xgb_n_estimators": trial.suggest_int("xgb_n_estimators", 50, 400, step=50),
            "xgb_learning_rate": trial.suggest_float("xgb_learning_rate", 0.01, 0.3, log=True),
            "xgb_max_depth": trial.suggest_int("xgb_max_depth", 2, 10),
            "xgb_subsample": trial.suggest_float("xgb_subsample", 0.5, 1.0),
            "xgb_colsample_bytree": trial.suggest_float("xgb_colsample_bytree", 0.5, 1.0),
            "xgb_reg_lambda": trial.suggest_float("xgb_reg_lambda", 1e-3, 10.0, log=True),
        },
        _xgboost,
        handles_missing=True,
        needs_scaling=False,
        trusted_types=(
            "tasks.model.families.EncodedLabels",
            "xgboost.core.Booster",
            "xgboost.sklearn.XGBClassifier",
            "xgboost.sklearn.XGBRegressor",
        ),
        packages=("xgboost-cpu",),
    )
)
register(
    Family(
        "lightgbm",
        lambda trial: {
            "lgbm_n_estimators": trial.suggest_int("lgbm_n_estimators", 50, 400, step=50),
            "lgbm_learning_rate": trial.suggest_float("lgbm_learning_rate", 0.01, 0.3, log=True),
            "lgbm_num_leaves": trial.suggest_int("lgbm_num_leaves", 8, 128, log=True),
            "lgbm_min_child_samples": trial.suggest_int("lgbm_min_child_samples", 5, 100, log=True),
            "lgbm_subsample": trial.suggest_float("lgbm_subsample", 0.5, 1.0),
            "lgbm_colsample_bytree": trial.suggest_float("lgbm_colsample_bytree", 0.5, 1.0),
            "lgbm_reg_lambda": trial.suggest_float("lgbm_reg_lambda", 1e-3, 10.0, log=True),
        },
        _lightgbm,
        handles_missing=True,
        needs_scaling=False,
        trusted_types=(
            "collections.OrderedDict",
            "lightgbm.basic.Booster",
            "lightgbm.sklearn.LGBMClassifier",
            "lightgbm.sklearn.LGBMRegressor",
        ),
        packages=("lightgbm",),
    )
)
