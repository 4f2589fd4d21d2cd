"""A model spec: everything that says what a model is trained on and how, declared once.

It is the train flow's parameters, from Python, from the shell's flags, or from a YAML file in the models
folder (`models/<name>.yaml`, see tasks/ops/specs.py), where monitoring, serving and the deployments find it
by the model's name.
"""

from __future__ import annotations

import getpass

from pydantic import BaseModel, Field, model_validator

from tasks.model import families
from tasks.model.contract import Label
from tasks.model.gate import GatePolicy
from tasks.model.metrics import TaskType


class TrainParams(BaseModel):
    """What to train on and how hard to search. With no data_uri: the demo data and its defaults."""

    data_uri: str | None = Field(None, description="CSV/Parquet path or s3:// URL; None generates demo data.")
    model_name: str | None = Field(
        None,
        description="Registered model and experiment; default the spec file's name (models/customers.yaml: "
        "customers), else TABLOOP_MODEL_NAME, else the dataset's name.",
    )
    dataset_name: str | None = Field(None, description="Name the data versions are kept under; default from the file.")
    target: str | None = Field(None, description="The column to predict; required with data_uri.")
    task_type: TaskType = "binary"
    positive_class: Label | None = Field(
        None, description="Binary tasks: the class whose probability is scored; default the last in sorted order."
    )
    drop_missing_target: bool = Field(
        False, description="Train without rows whose target is missing, instead of refusing the data."
    )
    id_columns: list[str] | None = Field(None, description="Columns that identify rows and are never features.")
    timestamp_column: str | None = None
    features: list[str] = Field(
        default_factory=list,
        description="Feature-store references (view:feature, declared in features/) joined onto each row as of "
        "its timestamp_column, by the views' entity columns; serving looks them up online.",
    )
    demo_rows: int = Field(5000, ge=100)
    demo_seed: int = 42
    demo_drift: float = Field(0.0, ge=0, le=1)
    families: list[str] = Field(
        list(families.DEFAULT_FAMILIES),
        min_length=1,
        description="Model families the sweep chooses from: linear, random_forest, hist_gradient_boosting, "
        "xgboost, lightgbm, or a family of your own (see plugins).",
    )
    plugins: list[str] = Field(
        default_factory=list, description="Modules to import first: each registers model families of its own."
    )
    n_trials: int = Field(30, ge=1)
    n_jobs: int = Field(1, ge=1, description="Trials run in parallel threads in this process.")
    timeout_s: float | None = Field(None, gt=0, description="Stop starting new trials after this many seconds.")
    cv_folds: int = Field(3, ge=2)
    test_size: float = Field(0.2, gt=0, lt=1)
    seed: int = 42
    optuna_storage: str | None = Field(
        None, description="Shared Optuna storage (sqlite:///..., postgresql://...) so sweep workers can join."
    )
    study_name: str | None = Field(None, description="Defaults to <model>-<data digest>-<seed>-<run>.")
    gate: GatePolicy = Field(default_factory=GatePolicy)
    actor: str = Field(default_factory=getpass.getuser, description="Who the audit trail names.")

    @model_validator(mode="after")
    def _target_with_data(self) -> TrainParams:
        if self.data_uri is not None and not self.target:
            raise ValueError("target is required with data_uri: the column the model learns to predict")
        if self.features and self.data_uri is not None and not self.timestamp_column:
            raise ValueError("features need timestamp_column: each row gets the values known at its time")
        return self

    @property
    def is_demo(self) -> bool:
        return self.data_uri is None
