"""The automations that are not deployment triggers, created or updated by `deployments/apply.py`.

- alert-on-failure: any flow run of a `tabloop`-tagged deployment that fails or crashes runs `alert/alert-on-failure`
  (flows/alert.py: stored under <storage>/alerts/, POSTed to TABLOOP_ALERT_WEBHOOK_URL when set).
- smoke-test-on-promotion: every `tabloop.model.promoted` event runs `smoke-test/smoke-test-on-promotion`
  (flows/smoke_test.py: the model API must serve the new version correctly, or it is rolled back).
"""

from __future__ import annotations

from datetime import timedelta
from uuid import UUID

from prefect.automations import Automation
from prefect.events.actions import RunDeployment
from prefect.events.schemas.automations import EventTrigger, Posture

from tasks.ops import events

# Every business deployment in prefect.yaml carries this tag; the alert deployment does not (no alert loops).
ALERT_TAG = "tabloop"
ALERT_DEPLOYMENT = "alert/alert-on-failure"
SMOKE_DEPLOYMENT = "smoke-test/smoke-test-on-promotion"


def alert_on_failure(alert_deployment_id: UUID) -> Automation:
    return _reacting(
        "tabloop-alert-on-failure",
        "A tabloop flow run failed or crashed: store the alert and notify the webhook.",
        EventTrigger(
            expect={"prefect.flow-run.Failed", "prefect.flow-run.Crashed", "prefect.flow-run.TimedOut"},
            match={"prefect.resource.id": "prefect.flow-run.*"},
            match_related={"prefect.resource.role": "tag", "prefect.resource.id": f"prefect.tag.{ALERT_TAG}"},
            posture=Posture.Reactive,
            threshold=1,
            within=timedelta(0),
        ),
        RunDeployment(
            source="selected", deployment_id=alert_deployment_id, parameters={"flow_run": "{{ event.resource.id }}"}
        ),
    )


def smoke_test_on_promotion(smoke_deployment_id: UUID) -> Automation:
    return _reacting(
        "tabloop-smoke-test-on-promotion",
        "A version became @champion: check the model API serves it correctly, or roll it back.",
        EventTrigger(
            expect={events.MODEL_PROMOTED},
            match={"prefect.resource.id": "tabloop.model.*"},
            posture=Posture.Reactive,
            threshold=1,
            within=timedelta(0),
        ),
        RunDeployment(
            source="selected",
            deployment_id=smoke_deployment_id,
            parameters={"version": "{{ event.payload.version }}"},
        ),
    )


def _reacting(name: str, description: str, trigger: EventTrigger, action: RunDeployment) -> Automation:
    return Automation(name=name, description=description, trigger=trigger, actions=[action])


def apply_automations() -> list[str]:
    """Create each automation, or update it in place when one with its name exists."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        alert_id = client.read_deployment_by_name(ALERT_DEPLOYMENT).id
        smoke_id = client.read_deployment_by_name(SMOKE_DEPLOYMENT).id
    applied = []
    for wanted in (alert_on_failure(alert_id), smoke_test_on_promotion(smoke_id)):
        try:
            existing = Automation.read(name=wanted.name)
        except ValueError:
            wanted.create()
        else:
            wanted.id = existing.id
            wanted.update()
        applied.append(wanted.name)
    return applied
