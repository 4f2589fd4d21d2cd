"""A model family registered from a user's own module (this one) trains, registers, loads and scores like ours;
a model file that asks skops to trust more than its families use is refused."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml

from flows.train import TrainParams, train
from tasks.model.families import Family, register
from tasks.model.features import model_input
from tasks.runtime.loaded import load_model_dir, load_version

pytestmark = pytest.mark.integration


def _nearest_neighbours(params: dict[str, Any], task_type: str, seed: int) -> Any:
    from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor

    cls = KNeighborsRegressor if task_type == "regression" else KNeighborsClassifier
    return cls(n_neighbors=params["knn_k"], weights=params["knn_weights"], algorithm="brute")


# What a user writes in their own module; `plugins=[<that module>]` makes every process that trains, sweeps or
# loads the model import it first.
register(
    Family(
        "nearest_neighbours",
        lambda trial: {
            "knn_k": trial.suggest_int("knn_k", 3, 40),
            "knn_weights": trial.suggest_categorical("knn_weights", ["uniform", "distance"]),
        },
        _nearest_neighbours,
    )
)


def test_a_family_from_a_users_module_trains_and_serves_like_ours(prefect_server, settings, client, tmp_path):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"a": rng.normal(size=400), "b": rng.normal(size=400), "c": rng.choice(["x", "y"], 400)})
    frame["label"] = np.where(frame["a"] + 0.5 * frame["b"] > 0, "good", "bad")
    frame.to_csv(tmp_path / "knn.csv", index=False)
    params = {"families": ["nearest_neighbours"], "plugins": [__name__], "n_trials": 3, "cv_folds": 2}
    result = train(TrainParams(data_uri=str(tmp_path / "knn.csv"), target="label", model_name="knn", **params))
    assert result.promoted and result.best_params["family"] == "nearest_neighbours"

    loaded = load_version(settings, "knn", result.model_version, "champion")
    assert (loaded.contract.family, loaded.contract.plugins) == ("nearest_neighbours", [__name__])
    scored = loaded.score(model_input(frame.head(30), loaded.contract.spec))
    assert set(scored.predictions) <= {"good", "bad"} and scored.probabilities.shape == (30, 2)

    # a model file edited to trust a type no registered family uses is not loaded
    local = Path(mlflow.artifacts.download_artifacts(f"models:/knn/{result.model_version}"))
    tampered = tmp_path / "tampered"
    shutil.copytree(local, tampered)
    mlmodel = yaml.safe_load((tampered / "MLmodel").read_text())
    mlmodel["flavors"]["sklearn"]["skops_trusted_types"] = ["builtins.eval"]
    (tampered / "MLmodel").write_text(yaml.safe_dump(mlmodel))
    with pytest.raises(ValueError, match=r"asks skops to trust \['builtins.eval'\]"):
        load_model_dir(tampered, "knn", result.model_version, "champion")
