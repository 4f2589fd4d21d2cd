"""Approval by a person: a version that passes the gate waits, paused, for the form in the Prefect UI.

A real Prefect server (the temporary one the tests share) and a real MLflow store. The person is played by
this test: it finds the paused run through the Prefect API and resumes it with the form's input, as the UI's
"Resume" button does. The webhook receiver plays Slack."""

from __future__ import annotations

import threading

import pytest

from tests.paused import paused_run
from tests.webhook import WebhookReceiver

pytestmark = pytest.mark.integration
QUICK = {"demo_rows": 600, "n_trials": 2, "cv_folds": 2}


@pytest.fixture
def webhook(monkeypatch):
    receiver = WebhookReceiver()
    monkeypatch.setenv("TABLOOP_ALERT_WEBHOOK_URL", receiver.url)
    yield receiver.received
    receiver.shutdown()


def train_in_background(timeout_s: int) -> tuple[threading.Thread, dict]:
    from flows.train import TrainParams, train
    from tasks.model.gate import GatePolicy

    outcome: dict = {}
    params = TrainParams(**QUICK, gate=GatePolicy(require_approval=True, approval_timeout_s=timeout_s), actor="ci")

    def run() -> None:
        try:
            outcome["result"] = train(params)
        except BaseException as err:  # reported by the test, not lost in the thread
            outcome["error"] = err

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def finished(thread: threading.Thread, outcome: dict):
    thread.join(timeout=300)
    assert not thread.is_alive(), "the run did not finish after the answer"
    assert "error" not in outcome, outcome.get("error")
    return outcome["result"]


def test_a_person_refuses_does_not_answer_or_approves(prefect_server, settings, webhook):
    """In this order so that each version passes the automatic gate (no champion to beat yet) and reaches the
    person."""
    from uuid import UUID

    from prefect.flow_runs import resume_flow_run

    from tasks.store import registry

    client = registry.connect(settings)
    name = settings.model_name
    seen: set[str] = set()

    # refused: not promoted, and nothing moved while the run waited
    thread, outcome = train_in_background(timeout_s=600)
    run_id = paused_run(seen)
    seen.add(run_id)
    resume_flow_run(UUID(run_id), run_input={"approve": False, "reason": "drift in the segment", "approver": "bob"})
    refused = finished(thread, outcome)
    assert not refused.promoted and refused.reasons == ["refused by bob: drift in the segment"]
    assert registry.current_champion(client, name) is None

    # no answer in time: not promoted, recorded so
    thread, outcome = train_in_background(timeout_s=4)
    unanswered = finished(thread, outcome)
    assert not unanswered.promoted and unanswered.reasons == ["not promoted: no approval within 4 s"]
    assert registry.current_champion(client, name) is None

    # approved: promoted, and the audit trail names the approver and the reason
    thread, outcome = train_in_background(timeout_s=600)
    run_id = paused_run(seen)
    assert registry.current_champion(client, name) is None, "nothing moves while the run waits"
    resume_flow_run(UUID(run_id), run_input={"approve": True, "reason": "checked the card", "approver": "alice"})
    approved = finished(thread, outcome)
    assert approved.promoted and str(registry.current_champion(client, name).version) == approved.model_version
    (promotion,) = [e for e in registry.history(client, name) if e.action == "promote"]
    assert promotion.by == "alice" and "approved by alice: checked the card" in promotion.reason

    requests = [p["approval"] for p in webhook if "approval" in p]
    assert [r["version"] for r in requests] == [v.model_version for v in (refused, unanswered, approved)]
    assert all(r["url"] and "/runs/flow-run/" in r["url"] for r in requests)
