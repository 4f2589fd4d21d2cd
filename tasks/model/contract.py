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
    dropped_missing_target: int = Field(0, description="Rows left out because their target was missing.")


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
    excluded: dict[str, str] = Field(default_factory=dict, description="Columns that are not features, and why.")
    family: str | None = Field(None, description="The model family of the fitted estimator (tasks/model/families).")
    plugins: list[str] = Field(default_factory=list, description="Modules that register the family, when not ours.")
    features: list[str] = Field(
        default_factory=list, description="Feature-store references among the inputs (view:feature), looked up by id."
    )
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
        """Columns a request may carry beside the features: ids (A/B stickiness, label joins), the time, and the
        other columns of the training data that are not features; never the target. They are logged, not scored."""
        named = [*self.id_columns, *([self.timestamp_column] if self.timestamp_column else []), *self.excluded]
        return [name for name in dict.fromkeys(named) if name != self.target]

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
    positive: Any = None,
    excluded: dict[str, str] | None = None,
    plugins: list[str] | None = None,
    features: list[str] | None = None,
) -> ModelContract:
    """The contract of a model trained on `data`. A binary task's positive class is `positive` when given (it
    must be one of the classes), else the rule of metrics.positive_class."""
    return ModelContract(
        task_type=task_type,
        target=target,
        classes=classes,
        positive_class=_positive(task_type, classes, positive, target),
        primary_metric=primary_metric(task_type),
        numeric=list(spec.numeric),
        categorical=list(spec.categorical),
        id_columns=list(id_columns),
        timestamp_column=timestamp_column,
        excluded=dict(excluded or {}),
        plugins=list(plugins or []),
        features=list(features or []),
        input_schema=schemas.schema_to_json(schema),
        data=data,
    )


def _positive(task_type: TaskType, classes: list[Any] | None, positive: Any, target: str) -> Any:
    if task_type != "binary" or classes is None:
        if positive is not None:
            raise ValueError(f"positive_class is only for binary tasks; this one is {task_type}")
        return None
    if positive is None:
        return positive_class(classes)
    if positive in classes and type(positive) is type(classes[classes.index(positive)]):
        return positive
    by_text = [c for c in classes if str(c) == str(positive)]  # "1" from a command line for the class 1
    if len(by_text) == 1:
        return by_text[0]
    raise ValueError(f"positive_class {positive!r} is not one of the classes of {target!r}: {classes}")


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
