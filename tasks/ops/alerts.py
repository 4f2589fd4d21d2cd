"""Failure alerts: what failed, where to look, stored in storage and optionally POSTed to a webhook."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from uuid import UUID

import httpx
from pydantic import BaseModel

from tasks.settings import Settings
from tasks.store import storage

FLOW_RUN_RESOURCE_PREFIX = "prefect.flow-run."


class Alert(BaseModel):
    flow_run_id: str
    flow_run_name: str
    flow_name: str
    deployment: str | None
    state: str
    message: str
    raised_at: datetime
    url: str | None

    def text(self) -> str:
        where = f" ({self.deployment})" if self.deployment else ""
        link = f"\n{self.url}" if self.url else ""
        return f"tabloop: {self.flow_name}/{self.flow_run_name}{where} {self.state}: {self.message}{link}"


def flow_run_id(resource_id: str) -> UUID:
    """`prefect.flow-run.<uuid>` (an event's resource id) or a bare uuid."""
    return UUID(resource_id.removeprefix(FLOW_RUN_RESOURCE_PREFIX))


def describe_flow_run(run_id: UUID, ui_url: str | None) -> Alert:
    """The failed run as the Prefect API knows it."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        run = client.read_flow_run(run_id)
        flow = client.read_flow(run.flow_id)
        deployment = client.read_deployment(run.deployment_id).name if run.deployment_id else None
    state = run.state
    return Alert(
        flow_run_id=str(run.id),
        flow_run_name=run.name,
        flow_name=flow.name,
        deployment=deployment,
        state=state.name if state else "unknown",
        message=(state.message or "") if state else "",
        raised_at=datetime.now(UTC),
        url=f"{ui_url.rstrip('/')}/runs/flow-run/{run.id}" if ui_url else None,
    )


def store(alert: Alert, settings: Settings) -> str:
    """One JSON file per alert under <storage>/alerts/date=YYYY-MM-DD/."""
    stamp = alert.raised_at
    name = f"{stamp:%H%M%S}-{alert.flow_run_id}.json"
    uri = storage.join(settings.storage_url, "alerts", f"date={stamp:%Y-%m-%d}", name)
    storage.write_bytes(uri, alert.model_dump_json(indent=2).encode(), settings)
    return uri


def post_webhook(url: str, alert: Alert, timeout_s: float = 10) -> None:
    """Slack-compatible body (`text`), plus the alert's fields for other receivers."""
    post_message(url, alert.text(), {"alert": json.loads(alert.model_dump_json())}, timeout_s)


def post_message(url: str, text: str, fields: dict[str, object], timeout_s: float = 10) -> None:
    """A Slack-compatible `{"text": ...}` body with `fields` beside it."""
    httpx.post(url, json={"text": text, **fields}, timeout=timeout_s).raise_for_status()
