"""Quality: the train flow's champion against scikit-learn's default HistGradientBoosting and a default XGBoost,
on the same held-out rows of varied datasets, at the default budget.

    python benchmarks/quality.py                  # every dataset, 30 trials each
    python benchmarks/quality.py --trials 10 --only wine breast-cancer-text

Datasets ship inside scikit-learn (breast cancer, wine, diabetes, California-like synthetic data is made here):
nothing is downloaded. Baselines are fitted on the flow's own training rows (the same row-key split) through
the same preprocessing the flow uses (imputation, one-hot), without scaling, with library defaults; every
score is the task's primary metric about the same positive class (tasks/model/metrics.py).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


@dataclass(frozen=True)
class Dataset:
    name: str
    task_type: str
    make: Callable[[], pd.DataFrame]  # a frame with the target in column "target"


def _breast_cancer_text() -> pd.DataFrame:
    from sklearn.datasets import load_breast_cancer

    frame = load_breast_cancer(as_frame=True).frame
    return frame.assign(target=np.where(frame["target"] == 1, "benign", "malignant"))


def _wine() -> pd.DataFrame:
    from sklearn.datasets import load_wine

    frame = load_wine(as_frame=True).frame
    return frame.assign(target=frame["target"].map({0: "cultivar-a", 1: "cultivar-b", 2: "cultivar-c"}))


def _diabetes() -> pd.DataFrame:
    from sklearn.datasets import load_diabetes

    return load_diabetes(as_frame=True).frame


def _imbalanced() -> pd.DataFrame:
    from sklearn.datasets import make_classification

    x, y = make_classification(
        n_samples=4000, n_features=20, n_informative=6, weights=[0.94], flip_y=0.01, random_state=3
    )
    frame = pd.DataFrame(x, columns=[f"x{i}" for i in range(20)]).round(4)
    return frame.assign(target=y)


def _mixed_regression() -> pd.DataFrame:
    """Friedman #1 with a categorical column that shifts the target and missing values."""
    from sklearn.datasets import make_friedman1

    x, y = make_friedman1(n_samples=3000, n_features=8, noise=1.0, random_state=4)
    rng = np.random.default_rng(4)
    frame = pd.DataFrame(x, columns=[f"x{i}" for i in range(8)]).round(4)
    region = rng.choice(["north", "south", "east", "west"], len(frame))
    frame["region"] = region
    frame.loc[rng.random(len(frame)) < 0.05, "x5"] = np.nan
    return frame.assign(target=y + np.select([region == "north", region == "south"], [3.0, -2.0], 0.0))


def _churn_like_text() -> pd.DataFrame:
    """Interactions and a text target: where boosting has the edge over linear models."""
    rng = np.random.default_rng(5)
    n = 5000
    tenure, charges = rng.integers(0, 72, n), rng.uniform(20, 120, n).round(2)
    contract = rng.choice(["monthly", "yearly", "two-year"], n, p=[0.5, 0.3, 0.2])
    logit = -1 + 0.03 * charges - 0.05 * tenure + 1.5 * (contract == "monthly") * (charges > 70)
    churn = np.where(rng.random(n) < 1 / (1 + np.exp(-logit)), "Yes", "No")
    return pd.DataFrame({"tenure": tenure, "charges": charges, "contract": contract, "target": churn})


DATASETS = [
    Dataset("breast-cancer-text", "binary", _breast_cancer_text),
    Dataset("wine", "multiclass", _wine),
    Dataset("diabetes", "regression", _diabetes),
    Dataset("imbalanced-6pct", "binary", _imbalanced),
    Dataset("friedman-mixed", "regression", _mixed_regression),
    Dataset("churn-like-text", "binary", _churn_like_text),
]


def baseline_scores(train: pd.DataFrame, test: pd.DataFrame, contract, seed: int) -> dict[str, float]:
    """Library defaults on the same rows and features: NaN left to the estimators (both take it), one-hot text."""
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.pipeline import Pipeline
    from xgboost import XGBClassifier, XGBRegressor

    from tasks.model.features import build_preprocessor, model_input
    from tasks.model.metrics import score_output

    spec, task, positive = contract.spec, contract.task_type, contract.positive_class
    x_train, x_test = model_input(train, spec), model_input(test, spec)
    y_train, y_test = train[contract.target], test[contract.target]
    regression = task == "regression"
    classes = None if regression else sorted(y_train.unique())
    codes = y_train if regression else y_train.map({label: i for i, label in enumerate(classes)})
    estimators = {
        "hgb_default": (HistGradientBoostingRegressor if regression else HistGradientBoostingClassifier)(
            random_state=seed
        ),
        "xgb_default": (XGBRegressor if regression else XGBClassifier)(random_state=seed),
    }
    scores = {}
    for name, estimator in estimators.items():
        pre = build_preprocessor(spec, impute_numbers=False, scale=False)
        model = Pipeline([("pre", pre), ("model", estimator)]).fit(x_train, codes)
        if task == "binary":
            output = model.predict_proba(x_test)[:, classes.index(positive)]
        elif task == "multiclass":
            output = np.asarray(classes)[model.predict_proba(x_test).argmax(axis=1)]
        else:
            output = model.predict(x_test)
        scores[name] = score_output(y_test, output, task, positive)
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=30, help="the train flow's default budget")
    parser.add_argument("--only", nargs="+", default=None)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="tabloop-quality-"))
    os.environ.update(
        TABLOOP_STORAGE_URL=str(workdir / "storage"),
        TABLOOP_MLFLOW_TRACKING_URI=f"sqlite:///{workdir / 'mlflow.db'}",
        PREFECT_HOME=str(workdir / "prefect"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        MLFLOW_DISABLE_TELEMETRY="true",
    )
    (workdir / "storage").mkdir()
    (workdir / "prefect").mkdir()
    from flows.train import TrainParams, train
    from tasks.model.features import model_input
    from tasks.model.metrics import primary_score
    from tasks.ops.shell import shell_run
    from tasks.runtime.loaded import load_version
    from tasks.settings import get_settings
    from tasks.store import data, registry

    rows = []
    with shell_run():
        for dataset in DATASETS:
            if args.only and dataset.name not in args.only:
                continue
            frame = dataset.make()
            path = workdir / f"{dataset.name}.csv"
            frame.to_csv(path, index=False)
            params = TrainParams(data_uri=str(path), target="target", task_type=dataset.task_type, n_trials=args.trials)
            result = train(params)
            settings = get_settings()
            contract = registry.load_contract(dataset.name, result.model_version)
            accepted = data.load_table(contract.data.uri, settings)
            train_rows, test_rows = data.split(accepted, params.test_size, contract.id_columns)
            champion = load_version(settings, dataset.name, result.model_version, "champion")
            ours = primary_score(
                champion.model,
                model_input(test_rows, contract.spec),
                test_rows["target"],
                contract.task_type,
                contract.positive_class,
            )
            baselines = baseline_scores(train_rows, test_rows, contract, params.seed)
            best = max(baselines.values())
            rows.append(
                {
                    "dataset": dataset.name,
                    "task": dataset.task_type,
                    "rows": len(accepted),
                    "metric": contract.primary_metric,
                    "champion": round(ours, 4),
                    "family": contract.family,
                    **{k: round(v, 4) for k, v in baselines.items()},
                    "champion - best default": round(ours - best, 4),
                }
            )
    table = pd.DataFrame(rows)
    print(f"\nquality at {args.trials} trials (held-out rows of each dataset's row-key split)")
    print(table.to_string(index=False))
    worst = table["champion - best default"].min()
    print(f"\nworst champion - best default: {worst:+.4f} (target: no worse than -0.005)")


if __name__ == "__main__":
    main()
