"""The demo's labelled customers and their activity in the feature store's source, for the feature tests."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from tasks.demo import ID_COLUMN, TARGET, TIMESTAMP_COLUMN, generate, publish_activity
from tasks.settings import Settings

REFS = ["customer_activity:tickets_30d", "customer_activity:usage_30d_gb"]


def labelled_with_activity(settings: Settings, folder: Path, rows: int = 1200) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Labelled customers written to folder/labelled.csv, their weekly activity to the source of features/churn.py."""
    labelled = generate(n_rows=rows, seed=5)
    events = publish_activity(labelled, settings, seed=6)
    labelled.to_csv(folder / "labelled.csv", index=False)
    return labelled, events


def train_params(folder: Path, **overrides):
    from flows.train import TrainParams

    fields = {
        "data_uri": str(folder / "labelled.csv"),
        "target": TARGET,
        "id_columns": [ID_COLUMN],
        "timestamp_column": TIMESTAMP_COLUMN,
        "features": REFS,
        "families": ["linear"],
        "n_trials": 2,
        "cv_folds": 2,
    }
    return TrainParams(**{**fields, **overrides})
