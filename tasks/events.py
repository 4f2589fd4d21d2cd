"""Prefect events about models and data: what automations (prefect.yaml triggers, deployments/automations.py)
react to. One place for their names and resources."""

from __future__ import annotations

from typing import Any

from prefect.events import emit_event

DATA_ARRIVED = "churnops.data.arrived"
DRIFT_DETECTED = "churnops.drift.detected"
PERFORMANCE_DROPPED = "churnops.performance.dropped"
RETRAIN_TRIGGERED = "churnops.retrain.triggered"
MODEL_PROMOTED = "churnops.model.promoted"
MODEL_REJECTED = "churnops.model.rejected"
MODEL_ROLLED_BACK = "churnops.model.rolled-back"
SMOKE_TEST_PASSED = "churnops.smoke-test.passed"
SMOKE_TEST_FAILED = "churnops.smoke-test.failed"
ALERT_RAISED = "churnops.alert.raised"
RETRAIN_LABEL = "churnops.retrain"  # resource label on a monitoring event that asks for retraining


def model_resource(model_name: str) -> str:
    return f"churnops.model.{model_name}"


def model_event(
    event: str, model_name: str, version: str | None, /, labels: dict[str, str] | None = None, **payload: Any
) -> None:
    """An event on the model's resource; `version` is the version the event is about. `labels` go on the
    resource, where automation triggers can match them."""
    resource = {"prefect.resource.id": model_resource(model_name), **(labels or {})}
    if version is not None:
        resource["churnops.model.version"] = str(version)
    emit_event(event=event, resource=resource, payload={"model": model_name, "version": version, **payload})


def dataset_event(event: str, dataset: str, /, **payload: Any) -> None:
    emit_event(event=event, resource={"prefect.resource.id": f"churnops.dataset.{dataset}"}, payload=payload)


def emit_alert(alert: dict[str, Any], uri: str) -> None:
    emit_event(
        event=ALERT_RAISED,
        resource={"prefect.resource.id": f"churnops.alert.{alert['flow_run_id']}"},
        payload={**alert, "uri": uri},
    )
