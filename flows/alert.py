"""Raise an alert about a failed flow run: stored under <storage>/alerts/, POSTed to TABLOOP_ALERT_WEBHOOK_URL
when set, and announced as `tabloop.alert.raised`.

The `alert-on-failure` automation (deployments/automations.py) runs this for every tabloop flow run that
fails or crashes. By hand:  python flows/alert.py <flow-run-id>
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from prefect import flow, task
from prefect.settings import PREFECT_UI_URL

from tasks.ops import alerts, events
from tasks.ops.shell import shell_run
from tasks.settings import get_settings


@task(retries=3, retry_delay_seconds=[2, 5, 10])
def notify(url: str, alert: alerts.Alert) -> None:
    alerts.post_webhook(url, alert)


@flow(name="alert", log_prints=True)
def alert(flow_run: str) -> str:
    """`flow_run`: the failed run's id, or the `prefect.flow-run.<id>` resource of its state event."""
    settings = get_settings()
    raised = alerts.describe_flow_run(alerts.flow_run_id(flow_run), PREFECT_UI_URL.value())
    uri = alerts.store(raised, settings)
    if settings.alert_webhook_url is not None:
        notify(settings.alert_webhook_url.get_secret_value(), raised)
    events.emit_alert(raised.model_dump(mode="json"), uri)
    print(f"ALERT {raised.text()}\nstored at {uri}")
    return uri


if __name__ == "__main__":
    with shell_run():
        alert(sys.argv[1])
