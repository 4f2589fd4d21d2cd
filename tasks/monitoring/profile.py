"""Drift statistics that add up: the reference summarised once per champion, the window summarised block by
block (summaries of any blocks merge, in any order), and Evidently's own large-sample tests computed from the
two summaries, so the verdicts are a full-data Evidently report's without holding the data.

Evidently 0.7 picks its test per column (`_get_default_stattest`); for a reference of more than 1,000 rows:
- a numeric column with more than 5 distinct values on both sides together: the Wasserstein distance normed
  by the reference's standard deviation, drift at >= 0.1;
- a categorical column, or a numeric one with at most 5 values: the Jensen-Shannon distance of the value
  frequencies, drift at >= 0.1.
Missing and infinite values are left out on both sides, as Evidently leaves them out. A smaller reference gets
tests that do not summarise (KS, chi-square): `needs_rows` says so, and drift.check runs Evidently itself.

The Wasserstein distance W1 = integral of |F_ref(x) - F_cur(x)| dx is read from counts per slot of shared edges
(the reference's quantiles and an even grid over its range) and, per slot, the sum of each value's distance to
the slot's anchor edge. That gives the integral of each side's F over every slot exactly; the sum of their
absolute differences is W1 exactly wherever the two F do not cross inside a slot, and beyond the reference's
range always. tests/unit/test_drift_profile.py compares it with scipy's on the raw values.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from tasks.model.features import FeatureSpec

BINS = 2000
FEW_VALUES = 5  # a numeric column with at most this many distinct values is compared by Jensen-Shannon
SMALL_REFERENCE = 1000  # at most this many reference rows in a column: Evidently's small-sample tests
THRESHOLD = 0.1  # Evidently's default for both Wasserstein (normed) and Jensen-Shannon


@dataclass(frozen=True)
class NumericSummary:
    """One numeric column of one side: rows per slot of the edges, distance sums to each slot's anchor, and the
    distinct values with their counts while there are at most FEW_VALUES of them (None beyond)."""

    counts: np.ndarray  # int64, len(edges) + 1 slots: x < e0, e0 <= x < e1, ..., x >= e_last
    distances: np.ndarray  # float64, per slot: sum of |anchor - x|, anchor = the slot's right edge (last: e_last)
    values: dict[float, int] | None

    @property
    def rows(self) -> int:
        return int(self.counts.sum())

    def merge(self, other: NumericSummary) -> NumericSummary:
        return NumericSummary(
            self.counts + other.counts, self.distances + other.distances, _merge_values(self.values, other.values)
        )


@dataclass(frozen=True)
class Summary:
    """One side's statistics per column: numeric summaries and categorical value counts."""

    numeric: dict[str, NumericSummary]
    categorical: dict[str, dict[Any, int]]

    def merge(self, other: Summary) -> Summary:
        return Summary(
            {name: part.merge(other.numeric[name]) for name, part in self.numeric.items()},
            {name: _add_counts(counts, other.categorical[name]) for name, counts in self.categorical.items()},
        )


@dataclass(frozen=True)
class ReferenceProfile:
    """What the drift check needs of a champion's training data, computed once: the edges and standard deviation
    of each numeric column, and the reference's own summary on those edges."""

    spec: FeatureSpec
    edges: dict[str, np.ndarray]
    std: dict[str, float]
    summary: Summary
    rows: int
    meta: dict[str, Any] = field(default_factory=dict)  # model, version, data hash: what it was computed from

    @property
    def needs_rows(self) -> bool:
        """True when a column has at most SMALL_REFERENCE reference values: its test needs the rows themselves."""
        sizes = [part.rows for part in self.summary.numeric.values()]
        sizes += [sum(counts.values()) for counts in self.summary.categorical.values()]
        return any(size <= SMALL_REFERENCE for size in sizes)


@dataclass(frozen=True)
class ColumnDrift:
    column: str
    method: str  # wasserstein, jensenshannon; missing: no value in the window (drift); no reference: none in training
    score: float
    drifted: bool


def profile_reference(
    reference: pd.DataFrame, spec: FeatureSpec, meta: dict[str, Any] | None = None
) -> ReferenceProfile:
    def numeric_column(name: str) -> tuple[np.ndarray, float]:
        values = _finite(reference[name])
        return _edges(values), float(np.std(values)) if len(values) else 0.0

    found = dict(zip(spec.numeric, _per_column(numeric_column, spec.numeric), strict=True))
    edges = {name: edges for name, (edges, _) in found.items()}
    std = {name: spread for name, (_, spread) in found.items()}
    profile = ReferenceProfile(spec, edges, std, Summary({}, {}), len(reference), meta or {})
    return ReferenceProfile(spec, edges, std, summarise(reference, profile), len(reference), meta or {})


def summarise(frame: pd.DataFrame, profile: ReferenceProfile) -> Summary:
    """One block's statistics on the reference's edges; blocks merge with Summary.merge in any order. A column
    the block lacks (a log written by another version) counts as missing in it."""
    reference = profile.summary.numeric

    def numeric_column(name: str) -> NumericSummary:
        track_values = not reference or reference[name].values is not None
        values = _finite(frame[name]) if name in frame else np.empty(0)
        return _numeric_summary(values, profile.edges[name], track_values)

    numeric = dict(zip(profile.spec.numeric, _per_column(numeric_column, profile.spec.numeric), strict=True))
    categorical = {name: _value_counts(frame[name]) if name in frame else {} for name in profile.spec.categorical}
    return Summary(numeric, categorical)


def _per_column(work: Callable[[str], Any], columns: tuple[str, ...]) -> list[Any]:
    # numpy's sorting and searching release the GIL: one thread per core reads the columns side by side
    with ThreadPoolExecutor(max_workers=max(1, min(len(columns), os.cpu_count() or 1))) as pool:
        return list(pool.map(work, columns))


def summarise_blocks(blocks: Iterable[pd.DataFrame], profile: ReferenceProfile) -> Summary | None:
    merged = None
    for block in blocks:
        part = summarise(block, profile)
        merged = part if merged is None else merged.merge(part)
    return merged


def compare(profile: ReferenceProfile, current: Summary) -> list[ColumnDrift]:
    """Evidently's default test per column, on the two summaries."""
    results = []
    for name in profile.spec.numeric:
        ref, cur = profile.summary.numeric[name], current.numeric[name]
        if ref.rows == 0:  # nothing to compare with (Evidently refuses the whole report)
            results.append(ColumnDrift(name, "no reference", float("nan"), False))
            continue
        if cur.rows == 0:
            results.append(ColumnDrift(name, "missing", float("nan"), True))
            continue
        union = None if ref.values is None or cur.values is None else set(ref.values) | set(cur.values)
        if union is not None and len(union) <= FEW_VALUES:
            score = jensen_shannon(ref.values, cur.values)
            results.append(ColumnDrift(name, "jensenshannon", score, score >= THRESHOLD))
        else:
            score = wasserstein(profile.edges[name], ref, cur) / max(profile.std[name], 0.001)
            results.append(ColumnDrift(name, "wasserstein", score, score >= THRESHOLD))
    for name in profile.spec.categorical:
        ref_counts, cur_counts = profile.summary.categorical[name], current.categorical[name]
        if not ref_counts:
            results.append(ColumnDrift(name, "no reference", float("nan"), False))
            continue
        if not cur_counts:
            results.append(ColumnDrift(name, "missing", float("nan"), True))
            continue
        score = jensen_shannon(ref_counts, cur_counts)
        results.append(ColumnDrift(name, "jensenshannon", score, score >= THRESHOLD))
    return results


def wasserstein(edges: np.ndarray, ref: NumericSummary, cur: NumericSummary) -> float:
    return float(np.abs(_slot_integrals(edges, ref) - _slot_integrals(edges, cur)).sum())


def jensen_shannon(ref: dict[Any, int], cur: dict[Any, int]) -> float:
    """scipy's jensenshannon (natural log) of the two frequency vectors over the union of values, as Evidently's
    get_binned_data builds them for a column compared by its values."""
    from scipy.spatial import distance

    keys = list(set(ref) | set(cur))
    p = np.array([ref.get(key, 0) for key in keys], dtype=float)
    q = np.array([cur.get(key, 0) for key in keys], dtype=float)
    return float(distance.jensenshannon(p / p.sum(), q / q.sum()))


def _slot_integrals(edges: np.ndarray, side: NumericSummary) -> np.ndarray:
    """Per slot: the integral of F over it (inner slots, and below the first edge) or of 1 - F (above the last).

    Over [a, b): F(a-)(b - a) + sum over the slot's values of (b - x) / n; below e0: sum (e0 - x) / n; above the
    last edge: sum (x - e_last) / n."""
    n = side.rows
    before = (np.cumsum(side.counts) - side.counts) / n
    widths = np.diff(edges)
    inner = before[1:-1] * widths + side.distances[1:-1] / n
    return np.concatenate([[side.distances[0] / n], inner, [side.distances[-1] / n]])


def _numeric_summary(values: np.ndarray, edges: np.ndarray, track_values: bool) -> NumericSummary:
    slots = np.searchsorted(edges, values, side="right")
    anchors = edges[np.minimum(slots, len(edges) - 1)]
    counts = np.bincount(slots, minlength=len(edges) + 1).astype(np.int64)
    distances = np.bincount(slots, weights=np.abs(anchors - values), minlength=len(edges) + 1)
    return NumericSummary(counts, distances, _few_values(values) if track_values else None)


def _edges(values: np.ndarray) -> np.ndarray:
    if not len(values):
        return np.array([0.0])
    grid = np.linspace(values.min(), values.max(), BINS + 1)
    return np.unique(np.concatenate([np.quantile(values, np.linspace(0, 1, BINS + 1)), grid]))


def _finite(column: pd.Series) -> np.ndarray:
    values = pd.to_numeric(column, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    return values[np.isfinite(values)]


def _few_values(values: np.ndarray) -> dict[float, int] | None:
    # a look at the first rows settles most continuous columns before sorting the whole block
    if len(np.unique(values[:1000])) > FEW_VALUES:
        return None
    distinct, counts = np.unique(values, return_counts=True)
    if len(distinct) > FEW_VALUES:
        return None
    return {float(v): int(c) for v, c in zip(distinct, counts, strict=True)}


def _merge_values(a: dict[float, int] | None, b: dict[float, int] | None) -> dict[float, int] | None:
    if a is None or b is None:
        return None
    merged = _add_counts(a, b)
    return merged if len(merged) <= FEW_VALUES else None


def _value_counts(column: pd.Series) -> dict[Any, int]:
    counts = column.dropna().value_counts()
    return {_plain(value): int(count) for value, count in counts.items()}


def _add_counts(a: dict[Any, int], b: dict[Any, int]) -> dict[Any, int]:
    merged = dict(a)
    for key, count in b.items():
        merged[key] = merged.get(key, 0) + count
    return merged


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


# ---- kept with the champion as JSON: values as [value, count] pairs, so 1, "1" and True stay apart


def to_json(profile: ReferenceProfile) -> bytes:
    def numeric(part: NumericSummary) -> dict[str, Any]:
        values = None if part.values is None else [[v, c] for v, c in part.values.items()]
        return {"counts": part.counts.tolist(), "distances": part.distances.tolist(), "values": values}

    body = {
        "spec": {"numeric": list(profile.spec.numeric), "categorical": list(profile.spec.categorical)},
        "rows": profile.rows,
        "meta": profile.meta,
        "edges": {name: edges.tolist() for name, edges in profile.edges.items()},
        "std": profile.std,
        "numeric": {name: numeric(part) for name, part in profile.summary.numeric.items()},
        "categorical": {
            name: [[v, c] for v, c in counts.items()] for name, counts in profile.summary.categorical.items()
        },
    }
    return json.dumps(body).encode()


def from_json(raw: bytes) -> ReferenceProfile:
    body = json.loads(raw)

    def numeric(part: dict[str, Any]) -> NumericSummary:
        values = None if part["values"] is None else {float(v): int(c) for v, c in part["values"]}
        return NumericSummary(
            np.asarray(part["counts"], dtype=np.int64), np.asarray(part["distances"], dtype=float), values
        )

    summary = Summary(
        {name: numeric(part) for name, part in body["numeric"].items()},
        {name: {v: int(c) for v, c in pairs} for name, pairs in body["categorical"].items()},
    )
    return ReferenceProfile(
        spec=FeatureSpec(tuple(body["spec"]["numeric"]), tuple(body["spec"]["categorical"])),
        edges={name: np.asarray(edges, dtype=float) for name, edges in body["edges"].items()},
        std={name: float(value) for name, value in body["std"].items()},
        summary=summary,
        rows=int(body["rows"]),
        meta=body["meta"],
    )
