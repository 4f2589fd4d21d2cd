"""The gate's decision, the audit trail and rollback, against a real (SQLite) MLflow registry."""

from __future__ import annotations

import mlflow
import pytest
from sklearn.dummy import DummyClassifier

from tasks.model.gate import GatePolicy, decide
from tasks.store import registry

POLICY = GatePolicy(min_primary=0.7, min_metrics={"recall": 0.3}, max_metrics={"log_loss": 0.6}, margin=0.01)
GOOD = {"primary": 0.85, "recall": 0.5, "log_loss": 0.4}


def test_first_model_passes_on_floors_alone():
    decision = decide(GOOD, None, None, POLICY)
    assert decision.promote and "no current champion to beat" in decision.reasons


@pytest.mark.parametrize(
    ("candidate", "reason"),
    [
        ({**GOOD, "primary": 0.65}, "primary 0.6500 < floor 0.7"),
        ({**GOOD, "recall": 0.1}, "recall 0.1000 < floor 0.3"),
        ({**GOOD, "log_loss": 0.9}, "log_loss 0.9000 > ceiling 0.6"),
        ({k: v for k, v in GOOD.items() if k != "recall"}, "recall missing"),
    ],
)
def test_floors_and_ceilings_reject_with_the_reason(candidate, reason):
    decision = decide(candidate, None, None, POLICY)
    assert not decision.promote
    assert any(r.startswith(reason) for r in decision.reasons), decision.reasons


def test_must_beat_champion_by_the_margin():
    assert not decide(GOOD, {"primary": 0.845}, "3", POLICY).promote  # better, but within the margin
    worse = decide(GOOD, {"primary": 0.9}, "3", POLICY)
    assert not worse.promote and "does not beat champion v3" in worse.reasons[0]
    assert decide(GOOD, {"primary": 0.8}, "3", POLICY).promote


def test_equal_score_does_not_beat_the_champion_without_margin():
    policy = GatePolicy(min_primary=0.5, margin=0.0)
    assert not decide({"primary": 0.8}, {"primary": 0.8}, "1", policy).promote


def register_versions(n: int, name: str) -> list[str]:
    versions = []
    for _ in range(n):
        with mlflow.start_run():
            info = mlflow.sklearn.log_model(DummyClassifier().fit([[0], [1]], [0, 1]), name="model")
        versions.append(str(mlflow.register_model(info.model_uri, name).version))
    return versions


def test_champion_history_and_rollback(client, settings):
    name = settings.model_name
    v1, v2, v3 = register_versions(3, name)
    for version in (v1, v2, v3):
        registry.set_champion(client, name, version, "promote", "alice", f"gate passed for v{version}")
    assert str(registry.current_champion(client, name).version) == v3
    assert client.get_model_version_by_alias(name, registry.PREVIOUS_CHAMPION).version == int(v2)

    events = registry.history(client, name)
    target = registry.rollback_target(events, v3)
    assert target == v2
    registry.set_champion(client, name, target, "rollback", "bob", "latency regression")
    assert str(registry.current_champion(client, name).version) == v2
    # a second rollback goes further back, never to the version just rolled back from
    assert registry.rollback_target(registry.history(client, name), v2) == v1
    registry.set_champion(client, name, v1, "rollback", "bob", "still bad")
    with pytest.raises(ValueError, match="no earlier champion"):
        registry.rollback_target(registry.history(client, name), v1)

    trail = registry.history(client, name)
    assert [(e.action, e.version, e.previous) for e in trail] == [
        ("promote", v1, None),
        ("promote", v2, v1),
        ("promote", v3, v2),
        ("rollback", v2, v3),
        ("rollback", v1, v2),
    ]
    assert trail[3].by == "bob" and trail[3].reason == "latency regression"
    tags = client.get_model_version(name, v3).tags
    assert tags["champion.replaced_by"] == v2 and "champion.retired_at" in tags


def test_promoting_the_current_champion_again_is_refused(client, settings):
    (v1,) = register_versions(1, settings.model_name)
    registry.set_champion(client, settings.model_name, v1, "promote", "alice", "first")
    with pytest.raises(ValueError, match="already @champion"):
        registry.set_champion(client, settings.model_name, v1, "promote", "alice", "again")
