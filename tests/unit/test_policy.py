"""The retrain policy: each outcome and the reason it gives."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tasks.monitoring.policy import MonitorPolicy, decide

NOW = datetime(2026, 11, 23, 12, tzinfo=UTC)
POLICY = MonitorPolicy(
    drift_share=0.3, max_performance_drop=0.05, min_samples=100, cooldown_hours=6, max_retrains_per_day=2
)


def run(**overrides):
    args = {
        "samples": 500,
        "drift_share": 0.0,
        "live_primary": None,
        "champion_primary": 0.8,
        "labelled": 300,
        "retrains": [],
        "now": NOW,
        "policy": POLICY,
    } | overrides
    return decide(**args)


def test_no_drift_no_retrain():
    decision = run(drift_share=0.1)
    assert not decision.retrain and "nothing crossed a threshold" in decision.reasons[-1]


def test_drift_retrains():
    decision = run(drift_share=0.5)
    assert decision.retrain and decision.drift_detected and decision.reasons[-1] == "retrain"


def test_performance_drop_retrains_without_drift():
    decision = run(live_primary=0.7)
    assert decision.retrain and decision.performance_dropped and not decision.drift_detected
    assert not run(live_primary=0.77).retrain


def test_too_few_samples_skip_with_reason():
    decision = run(samples=20, drift_share=0.9)
    assert not decision.retrain and "20 predictions < min_samples 100" in decision.reasons[0]


def test_cooldown_and_daily_cap_skip_with_reason():
    recent = run(drift_share=0.9, retrains=[NOW - timedelta(hours=2)])
    assert not recent.retrain and "cooldown" in recent.reasons[-1]
    capped = run(
        drift_share=0.9,
        retrains=[NOW - timedelta(hours=20), NOW - timedelta(hours=10)],
        policy=POLICY.model_copy(update={"cooldown_hours": 1}),
    )
    assert not capped.retrain and "2 retrains in the last 24 h" in capped.reasons[-1]
    assert run(drift_share=0.9, retrains=[NOW - timedelta(hours=30)]).retrain


def test_drift_without_labelled_rows_keeps_the_champion_and_says_why():
    decision = run(drift_share=0.9, labelled=0)
    assert not decision.retrain and decision.drift_detected
    assert "no labelled predictions in the window" in decision.reasons[-1]
    assert run(drift_share=0.9, labelled=1).retrain
