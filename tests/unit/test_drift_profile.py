"""Drift verdicts from summaries (tasks/monitoring/profile.py) against Evidently and scipy on the raw rows."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from tasks.model.features import FeatureSpec
from tasks.monitoring import drift, ray_window
from tasks.monitoring import profile as profiles
from tasks.store import prediction_log

SPEC = FeatureSpec(("steady", "shifted", "scaled", "skewed", "few", "holes"), ("plan", "region"))


def frames(rows: int = 6000, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)

    def make(shift: bool) -> pd.DataFrame:
        holes = rng.normal(10, 2, rows)
        holes[rng.random(rows) < 0.2] = np.nan
        return pd.DataFrame(
            {
                "steady": rng.normal(0, 1, rows),
                "shifted": rng.normal(0.4 if shift else 0, 1, rows),
                "scaled": rng.normal(0, 1.6 if shift else 1, rows),
                "skewed": rng.exponential(3 if shift else 2, rows),
                "few": rng.choice([0.0, 1.0, 2.0], rows, p=[0.2, 0.3, 0.5] if shift else [0.5, 0.3, 0.2]),
                "holes": holes,
                "plan": rng.choice(["basic", "plus", "pro"], rows, p=[0.6, 0.2, 0.2] if shift else [0.3, 0.4, 0.3]),
                "region": rng.choice(["north", "south", "east", "west"], rows),
            }
        )

    return make(False), make(True)


def evidently_verdicts(reference: pd.DataFrame, current: pd.DataFrame) -> drift.DriftResult:
    snapshot = drift.evidently_report(reference, current, SPEC, 0.3)
    return drift.from_snapshot(snapshot, SPEC.columns, 0.3, len(current))


def test_the_verdicts_and_scores_are_evidentlys_on_every_row() -> None:
    reference, current = frames()
    profile = profiles.profile_reference(reference, SPEC)
    ours = drift.check(reference, current, profile, 0.3)
    theirs = evidently_verdicts(reference, current)
    assert ours.drifted_columns == theirs.drifted_columns == ["few", "plan", "scaled", "shifted", "skewed"]
    for column in SPEC.columns:
        assert ours.column_scores[column] == pytest.approx(theirs.column_scores[column], rel=2e-3, abs=1e-6), column
    assert ours.dataset_drift == theirs.dataset_drift is True
    methods = {verdict.column: verdict.method for verdict in ours.columns}
    assert methods["few"] == methods["plan"] == "jensenshannon" and methods["skewed"] == "wasserstein"


@pytest.mark.parametrize(
    "current",
    [
        np.random.default_rng(1).normal(0.05, 1, 20_000),  # close to the reference: the hard case for slots
        np.random.default_rng(2).normal(3, 0.5, 20_000),  # mostly beyond the reference's range
        np.random.default_rng(3).standard_t(2, 20_000),  # heavy tails on both ends
        np.random.default_rng(4).integers(-3, 4, 20_000).astype(float),  # a handful of values, ties on edges
    ],
)
def test_wasserstein_from_slots_matches_scipy_on_the_raw_values(current: np.ndarray) -> None:
    reference = np.random.default_rng(0).normal(0, 1, 30_000)
    spec = FeatureSpec(("x",), ())
    profile = profiles.profile_reference(pd.DataFrame({"x": reference}), spec)
    summary = profiles.summarise(pd.DataFrame({"x": current}), profile)
    ours = profiles.wasserstein(profile.edges["x"], profile.summary.numeric["x"], summary.numeric["x"])
    assert ours == pytest.approx(stats.wasserstein_distance(reference, current), rel=1e-3)


def test_blocks_merge_to_the_whole_and_the_profile_survives_json() -> None:
    reference, current = frames(rows=3000)
    reference["plan"] = reference["plan"].where(reference.index % 7 != 0, "1")
    reference.loc[::11, "region"] = None
    profile = profiles.from_json(profiles.to_json(profiles.profile_reference(reference, SPEC)))
    whole = profiles.summarise(current, profile)
    merged = profiles.summarise_blocks([current.iloc[:1000], current.iloc[1000:1001], current.iloc[1001:]], profile)
    for name in SPEC.numeric:
        assert np.array_equal(whole.numeric[name].counts, merged.numeric[name].counts)
        assert np.allclose(whole.numeric[name].distances, merged.numeric[name].distances)
        assert whole.numeric[name].values == merged.numeric[name].values
    assert whole.categorical == merged.categorical
    assert "1" in profile.summary.categorical["plan"] and 1 not in profile.summary.categorical["plan"]
    assert sum(profile.summary.categorical["region"].values()) == reference["region"].notna().sum()


def test_a_column_with_no_value_in_the_window_counts_as_drifted() -> None:
    reference, current = frames(rows=2000)
    current["holes"] = np.nan
    result = drift.check(reference, current, profiles.profile_reference(reference, SPEC), 0.3)
    assert "holes" in result.drifted_columns
    assert next(v for v in result.columns if v.column == "holes").method == "missing"


def test_a_small_reference_is_left_to_evidentlys_own_small_sample_tests() -> None:
    reference, current = frames(rows=800)
    profile = profiles.profile_reference(reference, SPEC)
    assert profile.needs_rows
    kept = drift.reference_sample(reference, profile)
    assert len(kept) == len(reference)
    ours = drift.check(kept, current, profile, 0.3)
    assert ours.drifted_columns == evidently_verdicts(reference, current).drifted_columns
    assert {verdict.method for verdict in ours.columns} == {"evidently"}


def test_the_report_is_drawn_on_a_sample_and_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(drift, "REPORT_ROWS", 1500)
    reference, current = frames(rows=4000)
    profile = profiles.profile_reference(reference, SPEC)
    kept = drift.reference_sample(reference, profile)
    result = drift.check(kept, current, profile, 0.3)
    assert len(kept) == 1500 and result.report_rows == 1500 and result.rows == 4000
    assert result.drifted_columns == evidently_verdicts(reference, current).drifted_columns


def test_a_column_the_window_never_logged_is_missing_not_an_error() -> None:
    reference, current = frames(rows=2000)
    result = drift.check(reference, current.drop(columns=["region"]), profiles.profile_reference(reference, SPEC), 0.3)
    assert "region" in result.drifted_columns
    assert next(v for v in result.columns if v.column == "region").method == "missing"


def logged(frame: pd.DataFrame, start: datetime, model: str = "churn", variant: str = "champion") -> pd.DataFrame:
    """The frame as the prediction log holds it: one request per ten rows, a minute apart."""
    rows = len(frame)
    return frame.assign(
        request_id=[f"{model}-{variant}-{start:%H%M}-{i // 10}" for i in range(rows)],
        record_index=np.arange(rows) % 10,
        logged_at=pd.Timestamp(start) + pd.to_timedelta(np.arange(rows) // 10, unit="min"),
        model_name=model,
        variant=variant,
        prediction="No",
        error=None,
    )


def test_the_ray_engines_blocks_merge_to_the_in_process_verdicts_over_the_same_window() -> None:
    """What the Ray engine runs on each block, run here on uneven blocks that also hold rows the window leaves out
    (another model's, a shadow's, a failed answer, rows after the window): the merged verdicts and row count are
    the in-process engine's on the served rows, the sample is a uniform draw of them, and the labelled rows are
    the ones the keys name, inputs included."""
    reference, current = frames(rows=6000)
    profile = profiles.profile_reference(reference, SPEC)
    since = datetime(2026, 12, 1, tzinfo=UTC)
    until = since + timedelta(minutes=500)
    log = pd.concat(
        [
            logged(current, since),
            logged(current.head(300), since, model="other"),
            logged(current.head(300), since, variant="shadow"),
            logged(current.head(40), until),  # after the window
        ],
        ignore_index=True,
    )
    log.loc[5, "error"] = "challenger timed out"  # not answered: not traffic
    served = prediction_log.served(prediction_log.in_window(log, since, until, "churn"))
    assert len(served) == 5000 - 1  # 500 minutes of ten rows, one failed

    keys = ray_window.LabelKeys("request_id", np.array(["churn-champion-0000-7", "nowhere"]))
    edges = [0, 700, 2500, 2600, 7000, len(log)]
    cut = ray_window.WindowCut(profile, "churn", since, until, keys, 400, seed=0)
    parts = [ray_window.summarise_block(log.iloc[a:b], cut) for a, b in itertools.pairwise(edges)]
    window = ray_window.merge_parts(parts, 400)
    local = drift.check(reference, served, profile, 0.3)
    on_blocks = drift.check(reference, window.sample, profile, 0.3, window.summary, rows=window.rows)
    assert window.rows == local.rows == len(served)
    assert on_blocks.drifted_columns == local.drifted_columns and on_blocks.drifted_columns
    for column in SPEC.columns:
        assert on_blocks.column_scores[column] == pytest.approx(local.column_scores[column], rel=1e-9), column
    assert len(window.sample) == 400
    assert set(window.sample["request_id"]) <= set(served["request_id"])
    assert window.sample.index.is_unique and ray_window.SAMPLE_KEY not in window.sample
    # every block contributed in proportion (a block's own smallest keys would favour small blocks)
    early = window.sample["logged_at"] < pd.Timestamp(since) + pd.Timedelta(minutes=250)
    assert 0.4 < early.mean() < 0.6
    assert list(window.labelled["request_id"].unique()) == ["churn-champion-0000-7"]
    assert len(window.labelled) == 10 and set(SPEC.columns) <= set(window.labelled.columns)
