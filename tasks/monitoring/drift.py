"""Drift verdicts on every row, and the Evidently 0.7 report people read, drawn on a sample.

The verdicts are Evidently's default tests computed from summaries (tasks/monitoring/profile.py): the
champion's reference profile, computed once, and the window's, built block by block. Only a reference too
small for Evidently's large-sample tests is handed to Evidently whole, as it needs the rows.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from tasks.model.features import FeatureSpec, model_input
from tasks.monitoring import profile as profiles

REPORT_ROWS = 20_000  # rows per side in the HTML report; the verdicts use every row
BLOCK_ROWS = 1_000_000  # the window is summarised this many rows at a time


@dataclass(frozen=True)
class DriftResult:
    drift_share: float  # share of columns whose drift test failed
    drifted_columns: list[str]
    column_scores: dict[str, float]
    dataset_drift: bool
    columns: list[profiles.ColumnDrift]
    rows: int  # window rows the verdicts were computed on
    report_rows: int  # window rows in the HTML report
    snapshot: Any = field(repr=False)  # the Evidently Snapshot of the sample, for save_html/save_json


def reference_sample(reference: pd.DataFrame, profile: profiles.ReferenceProfile, seed: int = 0) -> pd.DataFrame:
    """What is kept of the reference beside its profile: all of it when a test needs the rows, else a sample."""
    columns = profile.spec.columns
    if profile.needs_rows:
        return reference[columns]
    return sample(reference[columns], REPORT_ROWS, seed)


def check(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    profile: profiles.ReferenceProfile,
    drift_share: float,
    current_summary: profiles.Summary | None = None,
    seed: int = 0,
    rows: int | None = None,
) -> DriftResult:
    """Drift per column and overall on every row of `current`, and a report on a sample of both sides.

    `reference` is the kept reference sample (reference_sample); `current_summary`, when given, is the window's
    summary already built (by the Ray engine, or apart in benchmarks/monitoring.py), and `current` then only
    feeds the report: it may be a sample of the window, whose size `rows` then gives."""
    spec = profile.spec
    if profile.needs_rows:
        snapshot = evidently_report(reference, current, spec, drift_share)
        return from_snapshot(snapshot, spec.columns, drift_share, len(current))
    summary = current_summary or profiles.summarise_blocks(blocks(current), profile)
    verdicts = profiles.compare(profile, summary)
    shown = sample(current, REPORT_ROWS, seed)
    snapshot = evidently_report(reference, shown, spec, drift_share)
    return from_verdicts(verdicts, drift_share, len(current) if rows is None else rows, len(shown), snapshot)


def evidently_report(reference: pd.DataFrame, current: pd.DataFrame, spec: FeatureSpec, drift_share: float) -> Any:
    """Evidently's drift preset over the columns with values on both sides (it refuses the whole report over one
    empty column; compare() gives such a column its own verdict). Its summary preset is left out: it doubled
    the report's cost and the drift preset's page already shows each column's distribution on both sides."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    spec = comparable(reference, current, spec)
    definition = DataDefinition(numerical_columns=list(spec.numeric), categorical_columns=list(spec.categorical))
    return Report([DataDriftPreset(drift_share=drift_share)], include_tests=True).run(
        Dataset.from_pandas(model_input(current, spec), data_definition=definition),
        Dataset.from_pandas(model_input(reference, spec), data_definition=definition),
    )


def comparable(reference: pd.DataFrame, current: pd.DataFrame, spec: FeatureSpec) -> FeatureSpec:
    def has_values(frame: pd.DataFrame, column: str) -> bool:
        return column in frame and bool(frame[column].replace([np.inf, -np.inf], np.nan).notna().any())

    def keep(columns: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(c for c in columns if has_values(reference, c) and has_values(current, c))

    return FeatureSpec(keep(spec.numeric), keep(spec.categorical))


def from_verdicts(
    verdicts: list[profiles.ColumnDrift], drift_share: float, rows: int, report_rows: int, snapshot: Any
) -> DriftResult:
    drifted = sorted(v.column for v in verdicts if v.drifted)
    share = len(drifted) / len(verdicts) if verdicts else 0.0
    scores = {v.column: v.score for v in verdicts}
    return DriftResult(share, drifted, scores, share >= drift_share, verdicts, rows, report_rows, snapshot)


def from_snapshot(snapshot: Any, columns: list[str], drift_share: float, rows: int) -> DriftResult:
    """Per-column verdicts from Evidently's own tests (FAIL = drifted), scores from its metrics."""
    report = snapshot.dict()
    prefix = "Value Drift for column "
    failed = {
        test["name"][len(prefix) :]
        for test in report["tests"]
        if test["name"].startswith(prefix) and str(test["status"]).endswith("FAIL")
    }
    scores = {}
    for metric in report["metrics"]:
        name = metric["metric_name"]
        if name.startswith("ValueDrift(column="):
            scores[name.split("column=", 1)[1].split(",", 1)[0]] = float(metric["value"])
    verdicts = [
        profiles.ColumnDrift(c, "evidently", scores[c], c in failed)
        if c in scores
        else profiles.ColumnDrift(c, "missing", float("nan"), True)  # left out of the report: no values on a side
        for c in columns
    ]
    return from_verdicts(verdicts, drift_share, rows, rows, snapshot)


def blocks(frame: pd.DataFrame) -> Iterator[pd.DataFrame]:
    for start in range(0, max(len(frame), 1), BLOCK_ROWS):
        yield frame.iloc[start : start + BLOCK_ROWS]


def sample(frame: pd.DataFrame, max_rows: int, seed: int) -> pd.DataFrame:
    if len(frame) <= max_rows:
        return frame
    return frame.sample(n=max_rows, random_state=seed)
