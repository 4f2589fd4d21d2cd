"""The model contract: what a model version is, saved with it and loaded with it.

Training writes it into the version's MLmodel metadata; the gate, serving, batch scoring, monitoring, the
smoke test and the model card read it. Versions registered before the contract existed carry a flat dict of
training metadata and a schema file instead: `from_metadata` reads that form, in this one place.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property
from typing import Any

import pandera.pandas as pa
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr

from tasks.model import schemas
from tasks.model.features import FeatureSpec
from tasks.model.metrics import TaskType, positive_class, primary_metric

CONTRACT_KEY = "tabloop_contract"  # the key under the MLmodel file's metadata
CONTRACT_FORMAT = 1
LEGACY_SCHEMA_FILE = "extra_files/schema.json"  # where versions before the contract kept their schema
Label = StrictBool | StrictInt | StrictFloat | StrictStr


class DataLineage(BaseModel):
    """The data version a model was trained on: its dataset, content hash and snapshot."""

    model_config = ConfigDict(frozen=True)

    dataset: str
    digest: str
    uri: str
    rows: int | None = None


class ModelContract(BaseModel):
    """What a model version takes, what it answers, how it is judged, and what it was trained on."""

    model_config = ConfigDict(frozen=True)

    format: int = CONTRACT_FORMAT
    task_type: TaskType
    target: str
    classes: list[Label] | None = Field(None, description="Classifier classes in the model's order.")
    positive_class: Label | None = Field(None, description="Binary tasks: the class whose probability is scored.")
    primary_metric: str
    greater_is_better: bool = True
    numeric: list[str]
    categorical: list[str]
    id_columns: list[str] = Field(default_factory=list)
    timestamp_column: str | None = None
    input_schema: str = Field(description="The Pandera schema (JSON) the training data passed.")
    data: DataLineage

    @cached_property
    def schema(self) -> pa.DataFrameSchema:
        return schemas.schema_from_json(self.input_schema)

    @property
    def spec(self) -> FeatureSpec:
        return FeatureSpec(tuple(self.numeric), tuple(self.categorical))

    @property
    def passthrough_columns(self) -> list[str]:
        """Columns a request may carry beside the features (ids for A/B stickiness and label joins, the time)."""
        return [*self.id_columns, *([self.timestamp_column] if self.timestamp_column else [])]

    def to_metadata(self) -> dict[str, Any]:
        return {CONTRACT_KEY: self.model_dump(mode="json")}


def build(
    *,
    task_type: TaskType,
    target: str,
    classes: list[Any] | None,
    spec: FeatureSpec,
    schema: pa.DataFrameSchema,
    data: DataLineage,
    id_columns: list[str],
    timestamp_column: str | None,
) -> ModelContract:
    """The contract of a model trained on `data`; the positive class follows metrics.positive_class."""
    is_binary = task_type == "binary" and classes is not None
    return ModelContract(
        task_type=task_type,
        target=target,
        classes=classes,
        positive_class=positive_class(classes) if is_binary else None,
        primary_metric=primary_metric(task_type),
        numeric=list(spec.numeric),
        categorical=list(spec.categorical),
        id_columns=list(id_columns),
        timestamp_column=timestamp_column,
        input_schema=schemas.schema_to_json(schema),
        data=data,
    )


def from_metadata(metadata: dict[str, Any] | None, legacy_schema: Callable[[], str]) -> ModelContract:
    """The contract of a version, from its MLmodel metadata. `legacy_schema` is called only for versions
    saved before the contract, to read the schema file they kept beside the model."""
    metadata = metadata or {}
    if CONTRACT_KEY in metadata:
        return ModelContract.model_validate(metadata[CONTRACT_KEY])
    return _from_legacy(metadata, legacy_schema())


def _from_legacy(meta: dict[str, Any], schema_json: str) -> ModelContract:
    """The flat dict of keys the train flow wrote before the contract (data_digest, data_uri, target, task_type,
    id_columns, timestamp_column, numeric, categorical), with the classes read from the schema's target check."""
    schema = schemas.schema_from_json(schema_json)
    task_type = meta["task_type"]
    classes = None
    if task_type != "regression":
        checks = schema.columns[meta["target"]].checks
        allowed = next((c.statistics["allowed_values"] for c in checks if c.name == "isin"), None)
        classes = sorted(allowed) if allowed is not None else None
    uri = meta["data_uri"]
    dataset = uri.rstrip("/").rsplit("/", 2)[-2] if uri.count("/") >= 2 else ""  # <storage>/datasets/<name>/<hash>
    return build(
        task_type=task_type,
        target=meta["target"],
        classes=classes,
        spec=FeatureSpec(tuple(meta["numeric"]), tuple(meta["categorical"])),
        schema=schema,
        data=DataLineage(dataset=dataset, digest=meta["data_digest"], uri=uri),
        id_columns=list(meta.get("id_columns") or []),
        timestamp_column=meta.get("timestamp_column"),
    )
