"""A loaded model version with its request contract: resolve an alias, load, validate, predict.

Plain Python (no Ray), so serving logic is testable on its own and batch scoring can reuse it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient

from serving.validation import RecordValidator
from tasks import schemas
from tasks.settings import Settings


@dataclass(frozen=True)
class LoadedModel:
    name: str
    version: str
    alias: str
    model: Any  # the fitted sklearn Pipeline, preprocessing inside
    validator: RecordValidator
    metadata: dict[str, Any]

    @property
    def classes(self) -> list[Any] | None:
        classes = getattr(self.model, "classes_", None)
        return None if classes is None else [c.item() if isinstance(c, np.generic) else c for c in classes]

    def predict(self, frame: pd.DataFrame) -> list[dict[str, Any]]:
        """One dict per row: the prediction, and class probabilities where the model has them."""
        predictions = self.model.predict(frame)
        classes = self.classes
        if classes is None:
            return [{"prediction": float(p)} for p in predictions]
        probabilities = self.model.predict_proba(frame)
        return [
            {"prediction": _plain(p), "probabilities": {str(c): float(q) for c, q in zip(classes, row, strict=True)}}
            for p, row in zip(predictions, probabilities, strict=True)
        ]

    def describe(self) -> dict[str, Any]:
        return {
            "model_name": self.name,
            "model_version": self.version,
            "alias": self.alias,
            "task_type": self.metadata.get("task_type"),
            "target": self.metadata.get("target"),
            "data_version": self.metadata.get("data_digest"),
            "data_uri": self.metadata.get("data_uri"),
            "classes": self.classes,
            "id_columns": self.metadata.get("id_columns") or [],
            "input_schema": self.validator.input_schema(),
        }


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def resolve_alias(client: MlflowClient, name: str, alias: str) -> str:
    return str(client.get_model_version_by_alias(name, alias).version)


def load_version(settings: Settings, name: str, version: str, alias: str) -> LoadedModel:
    """Load a registered version in the safe skops format with its schema and training metadata."""
    local = Path(mlflow.artifacts.download_artifacts(f"models:/{name}/{version}"))
    model = mlflow.sklearn.load_model(str(local))
    meta = mlflow.models.Model.load(str(local / "MLmodel")).metadata or {}
    schema = schemas.schema_from_json((local / schemas.MODEL_SCHEMA_FILE).read_text())
    features = [*meta.get("numeric", []), *meta.get("categorical", [])]
    optional = [*meta.get("id_columns", []), *([meta["timestamp_column"]] if meta.get("timestamp_column") else [])]
    return LoadedModel(name, version, alias, model, RecordValidator(schema, features, optional), meta)
