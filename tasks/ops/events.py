"""Prefect events about models and data: what automations (prefect.yaml triggers, deployments/automations.py)
react to. One place for their names and resources."""

from __future__ import annotations

from typing import Any

from prefect.events import emit_event

DATA_ARRIVED = "tabloop.data.arrived"
FEATURES_ARRIVED = "tabloop.features.arrived"
DRIFT_DETECTED = "tabloop.drift.detected"
PERFORMANCE_DROPPED = "tabloop.performance.dropped"
RETRAIN_TRIGGERED = "tabloop.retrain.triggered"
MODEL_PROMOTED = "tabloop.model.promoted"
MODEL_REJECTED = "tabloop.model.rejected"
MODEL_ROLLED_BACK = "tabloop.model.rolled-back"
SMOKE_TEST_PASSED = "tabloop.smoke-test.passed"
SMOKE_TEST_FAILED = "tabloop.smoke-test.failed"
ALERT_RAISED = "tabloop.alert.raised"
APPROVAL_REQUESTED = "tabloop.approval.requested"
APPROVAL_GIVEN = "tabloop.approval.given"
APPROVAL_REFUSED = "tabloop.approval.refused"
ROLLOUT_STARTED = "tabloop.rollout.started"
ROLLOUT_STEP_PASSED = "tabloop.rollout.step-passed"
ROLLOUT_ABORTED = "tabloop.rollout.aborted"
CHALLENGER_WON = "tabloop.challenger.won"
CHALLENGER_LOST = "tabloop.challenger.lost"
RETRAIN_LABEL = "tabloop.retrain"  # resource label on a monitoring event that asks for retraining


def model_resource(model_name: str) -> str:
    return f"tabloop.model.{model_name}"


def model_event(
    event: str, model_name: str, version: str | None, /, labels: dict[str, str] | None = None, **payload: Any
) -> None:
    """An event on the model's resource; `version` is the version the event is about. `labels` go on the
    resource, where automation triggers can match them."""
    resource = {"prefect.resource.id": model_resource(model_name), **(labels or {})}
    if version is not None:
        resource["tabloop.model.version"] = str(version)
    emit_event(event=event, resource=resource, payload={"model": model_name, "version": version, **payload})


def dataset_event(event: str, dataset: str, /, **payload: Any) -> None:
    emit_event(event=event, resource={"prefect.resource.id": f"tabloop.dataset.{dataset}"}, payload=payload)


def feature_view_event(event: str, view: str, /, **payload: Any) -> None:
    emit_event(event=event, resource={"prefect.resource.id": f"tabloop.feature-view.{view}"}, payload=payload)


def emit_alert(alert: dict[str, Any], uri: str) -> None:
    emit_event(
        event=ALERT_RAISED,
        resource={"prefect.resource.id": f"tabloop.alert.{alert['flow_run_id']}"},
        payload={**alert, "uri": uri},
    )
