"""Drift and data quality with Evidently 0.7 (the Report/Dataset API), and the verdicts read from it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from tasks.model.features import FeatureSpec, model_input


@dataclass(frozen=True)
class DriftResult:
    drift_share: float  # share of columns whose drift test failed
    drifted_columns: list[str]
    column_scores: dict[str, float]
    dataset_drift: bool
    snapshot: Any = field(repr=False)  # the Evidently Snapshot, for save_html/save_json


MAX_ROWS = 100_000


def run_report(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    spec: FeatureSpec,
    drift_share: float,
    max_rows: int | None = MAX_ROWS,
    seed: int = 0,
) -> DriftResult:
    """Data drift per column and overall, plus a data summary, comparing current rows with the reference.

    Each side is first reduced to a uniform random sample of at most `max_rows` rows: Evidently's cost grows
    with rows while its tests' verdicts settle long before a million (benchmarks/monitoring.py compares the
    verdicts with the full-data run). `max_rows=None` uses every row.
    """
    reference, current = _sample(reference, max_rows, seed), _sample(current, max_rows, seed)
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset, DataSummaryPreset

    definition = DataDefinition(numerical_columns=list(spec.numeric), categorical_columns=list(spec.categorical))
    columns = spec.columns
    snapshot = Report([DataDriftPreset(drift_share=drift_share), DataSummaryPreset()], include_tests=True).run(
        Dataset.from_pandas(model_input(current, spec), data_definition=definition),
        Dataset.from_pandas(model_input(reference, spec), data_definition=definition),
    )
    return read_verdicts(snapshot, columns)


def read_verdicts(snapshot: Any, columns: list[str]) -> DriftResult:
    """Per-column verdicts from Evidently's own tests (FAIL = drifted), scores from its metrics."""
    report = snapshot.dict()
    prefix = "Value Drift for column "
    drifted = [
        test["name"][len(prefix) :]
        for test in report["tests"]
        if test["name"].startswith(prefix) and str(test["status"]).endswith("FAIL")
    ]
    scores = {}
    for metric in report["metrics"]:
        name = metric["metric_name"]
        if name.startswith("ValueDrift(column="):
            scores[name.split("column=", 1)[1].split(",", 1)[0]] = float(metric["value"])
    dataset = next((t for t in report["tests"] if t["name"].startswith("Share of Drifted Columns")), None)
    share = len(drifted) / len(columns) if columns else 0.0
    return DriftResult(
        share, sorted(drifted), scores, bool(dataset and str(dataset["status"]).endswith("FAIL")), snapshot
    )


def _sample(frame: pd.DataFrame, max_rows: int | None, seed: int) -> pd.DataFrame:
    if max_rows is None or len(frame) <= max_rows:
        return frame
    return frame.sample(n=max_rows, random_state=seed)
