"""Moving @champion outside the gate (a person, the smoke test): the promote flow's step."""

from __future__ import annotations

from mlflow.tracking import MlflowClient

from tasks.ops import events
from tasks.steps.retries import IO_RETRIES, step
from tasks.store import registry


@step(**IO_RETRIES)
def move_champion(
    client: MlflowClient, name: str, version: str | None, rollback: bool, reason: str, actor: str
) -> registry.AuditEvent:
    """Promote `version` (it must exist) or roll back along the audit trail; then announce the move."""
    if rollback:
        current = registry.current_champion(client, name)
        if current is None:
            raise ValueError(f"{name} has no @champion to roll back from")
        target = registry.rollback_target(registry.history(client, name), str(current.version))
        moved = registry.set_champion(client, name, target, "rollback", actor, reason)
    else:
        client.get_model_version(name, str(version))  # raises a clear 'not found' for a version that does not exist
        moved = registry.set_champion(client, name, str(version), "promote", actor, reason)
    event = events.MODEL_ROLLED_BACK if rollback else events.MODEL_PROMOTED
    events.model_event(event, name, moved.version, previous=moved.previous, reasons=[reason], by=moved.by)
    return moved
