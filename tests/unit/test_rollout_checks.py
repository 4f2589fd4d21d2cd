"""A rollout's policy and step checks (pure), the traffic setting and rollout audit entries in a real (SQLite)
MLflow registry, and failure rows in the prediction log."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from tasks.monitoring import rollout
from tasks.monitoring.rollout import RolloutPolicy, Step, StepStats, check_step
from tasks.monitoring.variants import Comparison, distribution_shift
from tasks.store import prediction_log, registry

POLICY = RolloutPolicy(shadow_s=60, steps=[5, 50, 100], hold_s=30, min_requests=100, max_step_s=600)
CANARY = Step("canary", 0.05, 30)
HEALTHY = StepStats(requests=150, errors=0, p99_ms=12.0, champion_p99_ms=10.0, score_shift=0.05)


def test_the_plan_is_shadow_then_each_share_and_every_step_is_a_look():
    assert [s.label for s in POLICY.plan()] == ["shadow", "canary 5%", "canary 50%", "canary 100%"]
    assert POLICY.looks().max_looks == 4
    assert [s.kind for s in RolloutPolicy(shadow_s=0, steps=[100]).plan()] == ["canary"]


@pytest.mark.parametrize("steps", [[50, 25, 100], [5, 50], [0, 100], [], [5, 5, 100]])
def test_steps_must_rise_to_all_of_the_traffic(steps):
    with pytest.raises(ValidationError, match="steps"):
        RolloutPolicy(steps=steps)


def test_a_step_waits_for_its_requests_and_its_hold_then_passes():
    few = StepStats(requests=20, errors=5, p99_ms=500.0, champion_p99_ms=10.0, score_shift=0.9)
    waiting = check_step(few, CANARY, elapsed_s=100, policy=POLICY)
    assert waiting.status == "wait" and "20/100 challenger requests" in waiting.reasons[0]
    assert check_step(HEALTHY, CANARY, elapsed_s=10, policy=POLICY).status == "wait"  # not held long enough
    passed = check_step(HEALTHY, CANARY, elapsed_s=31, policy=POLICY)
    assert passed.status == "pass"
    assert any("error rate 0.00% over 150 requests" in r for r in passed.reasons)


def test_a_step_without_enough_traffic_in_its_time_stops():
    starved = StepStats(requests=20, errors=0, p99_ms=None, champion_p99_ms=None, score_shift=None)
    check = check_step(starved, CANARY, elapsed_s=601, policy=POLICY)
    assert check.status == "fail" and "fewer than the 100 it needs" in check.reasons[0]


@pytest.mark.parametrize(
    ("stats", "phrase"),
    [
        (StepStats(150, 3, 12.0, 10.0, 0.05, "invalid for this version: x: field required"), "error rate 2.00%"),
        (StepStats(150, 0, 40.0, 10.0, 0.05), "p99 40.0 ms vs champion 10.0 ms > 20.0 ms allowed"),
        (StepStats(150, 0, 12.0, 10.0, 0.6), "score shift 0.600 > 0.25"),
    ],
)
def test_any_check_outside_the_policy_fails_the_step_at_once(stats, phrase):
    check = check_step(stats, CANARY, elapsed_s=1, policy=POLICY)  # long before the hold is over
    assert check.status == "fail"
    assert any(phrase in r for r in check.reasons), check.reasons


def test_the_failure_names_what_went_wrong():
    stats = StepStats(150, 3, 12.0, 10.0, 0.05, "invalid for this version: x: field required")
    assert "x: field required" in check_step(stats, CANARY, 1, POLICY).reasons[0]


def log_rows(variant: str, version: str, requests: int, records: int, latency: float, errors: int = 0) -> pd.DataFrame:
    """Rows as the serving app logs them: `records` per answered request, one per failed request."""
    answered = [
        {"request_id": f"{variant}-{i}", "record_index": j, "variant": variant, "model_version": version,
         "latency_ms": latency + i % 10, "prediction": 1, "error": None}
        for i in range(requests - errors)
        for j in range(records)
    ]  # fmt: skip
    failed = [
        {"request_id": f"{variant}-bad-{i}", "record_index": 0, "variant": variant, "model_version": version,
         "latency_ms": 1.0, "prediction": None, "error": "boom"}
        for i in range(errors)
    ]  # fmt: skip
    return pd.DataFrame(answered + failed)


def test_step_figures_count_requests_not_records_and_time_only_answers():
    champion = log_rows("champion", "1", requests=300, records=3, latency=5.0)
    challenger = log_rows("challenger", "2", requests=50, records=4, latency=20.0, errors=5)
    stats = rollout.step_stats(champion, challenger, np.zeros(10), np.ones(10))
    assert (stats.requests, stats.errors, stats.first_error) == (50, 5, "boom")
    assert stats.error_rate == pytest.approx(0.1)
    assert stats.p99_ms == pytest.approx(29.0, abs=0.2)  # the failures' 1 ms are not the challenger's speed
    assert stats.champion_p99_ms == pytest.approx(14.0, abs=0.1)
    assert stats.score_shift == 1.0


def test_score_shift_is_ks_for_scores_and_total_variation_for_classes():
    rng = np.random.default_rng(0)
    assert distribution_shift(rng.uniform(size=2000), rng.uniform(size=2000)) < 0.06
    assert distribution_shift(rng.uniform(size=500), rng.uniform(size=500) + 0.5) > 0.4
    classes = distribution_shift(np.array(["a"] * 50 + ["b"] * 50), np.array(["a"] * 80 + ["c"] * 20))
    assert classes == pytest.approx(0.5)  # a: .5 vs .8, b: .5 vs 0, c: 0 vs .2 -> (0.3 + 0.5 + 0.2) / 2
    assert distribution_shift(np.array([]), np.array([1.0])) is None


def comparison(verdict: str) -> Comparison:
    return Comparison("paired", "roc_auc", 1, (600, 600), 0.7, 0.75, 0.05, (0.01, 0.09), verdict, f"it is {verdict}")


def test_a_labelled_verdict_of_worse_stops_a_passed_step():
    passed = check_step(HEALTHY, CANARY, elapsed_s=31, policy=POLICY)
    assert rollout.with_verdict(passed, comparison("worse"), CANARY).status == "fail"
    kept = rollout.with_verdict(passed, comparison("unknown"), CANARY)
    assert kept.status == "pass" and kept.reasons[-1] == "canary 5%: it is unknown"
    assert rollout.with_verdict(passed, None, CANARY) == passed


def test_promotion_needs_a_labelled_win_only_when_the_policy_says_so():
    assert rollout.promotion_reasons([comparison("unknown")], POLICY)[0]
    assert rollout.promotion_reasons([comparison("better")], POLICY.model_copy(update={"require_better": True}))[0]
    promote, reasons = rollout.promotion_reasons([], POLICY.model_copy(update={"require_better": True}))
    assert not promote and "requires the labels to show the challenger better" in reasons[0]


def test_traffic_lives_in_the_registry_and_rollout_entries_do_not_move_rollback(client, settings):
    from tests.unit.test_registry import register_versions

    name = settings.model_name
    v1, v2, v3 = register_versions(3, name)
    assert registry.read_traffic(client, name) is None
    registry.set_traffic(client, name, "ab", 0.25, "ci", "canary 25%")
    traffic = registry.read_traffic(client, name)
    assert (traffic.mode, traffic.challenger_share, traffic.by, traffic.reason) == ("ab", 0.25, "ci", "canary 25%")
    with pytest.raises(ValueError, match="challenger_share"):
        registry.set_traffic(client, name, "ab", 1.5, "ci", "too much")

    registry.set_champion(client, name, v1, "promote", "ci", "first")
    registry.set_champion(client, name, v2, "promote", "ci", "second")
    registry.record(client, name, "rollout-abort", v3, "ci", "error rate 50%")
    trail = registry.history(client, name)
    assert [(e.action, e.version, e.previous) for e in trail][-1] == ("rollout-abort", v3, v2)
    assert registry.rollback_target(trail, v2) == v1  # v3 was never champion


def test_failure_rows_are_logged_and_kept_out_of_the_answers(settings):
    at = datetime.now(UTC)
    answered = prediction_log.log_columns(
        {"x": np.array([1.0, 2.0])},
        np.array([0, 1]),
        None,
        [],
        request_id="ok",
        model_name="churn",
        model_version="2",
        variant="challenger",
        logged_at=at,
        latency_ms=7.5,
    )
    failure = prediction_log.failure_columns(
        request_id="bad", model_name="churn", model_version="2", variant="challenger", error="x: field required",
        latency_ms=1.25,
    )  # fmt: skip
    prediction_log.write(prediction_log.table_from_chunks([answered, failure]), settings)
    log = prediction_log.read(settings, model="churn")
    assert list(log["request_id"]) == ["ok", "ok", "bad"]
    assert list(log["latency_ms"]) == [7.5, 7.5, 1.25]
    assert log["error"].isna().tolist() == [True, True, False]
    assert list(prediction_log.answered(log)["request_id"]) == ["ok", "ok"]
