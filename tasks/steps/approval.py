"""A person's approval before @champion moves, when the gate policy asks for one.

The run pauses (Prefect's pause_flow_run with a typed form): the Prefect UI shows the form on the flow run's
page ("Resume" asks for approve, reason, approver), and the request goes out as an event and to the alert
webhook with the link. The run keeps its process while it waits, so nothing it has done (the sweep, the
registered version) is redone when it resumes. No answer within the policy's time means not promoted.
"""

from __future__ import annotations

from dataclasses import dataclass

from prefect import get_run_logger
from prefect.context import FlowRunContext
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL

from tasks.model.gate import GateDecision, GatePolicy, with_approval
from tasks.ops import alerts, events
from tasks.settings import Settings


class ApprovalForm(RunInput):
    """What the person answers in the Prefect UI."""

    approve: bool
    reason: str
    approver: str


@dataclass(frozen=True)
class Approval:
    approved: bool
    approver: str | None
    why: str


def reviewed(
    decision: GateDecision, model_name: str, version: str, policy: GatePolicy, settings: Settings, actor: str
) -> tuple[GateDecision, str]:
    """The decision and who made it: the gate's alone, or, when the policy asks, after a person's answer."""
    if not (decision.promote and policy.require_approval):
        return decision, actor
    answer = ask(model_name, version, decision.reasons, policy.approval_timeout_s, settings)
    return with_approval(decision, answer.approved, answer.why), answer.approver or actor


def ask(model_name: str, version: str, reasons: list[str], timeout_s: int, settings: Settings) -> Approval:
    """Pause the flow run until a person approves or refuses `version`, or the time runs out."""
    link = run_link()
    events.model_event(events.APPROVAL_REQUESTED, model_name, version, reasons=reasons, url=link, timeout_s=timeout_s)
    if settings.alert_webhook_url is not None:
        text = f"tabloop: {model_name} v{version} passed the gate and waits for approval: {link or 'see Prefect'}"
        fields = {"approval": {"model": model_name, "version": version, "reasons": reasons, "url": link}}
        alerts.post_message(settings.alert_webhook_url.get_secret_value(), text, fields)
    get_run_logger().info("waiting up to %d s for approval of %s v%s: %s", timeout_s, model_name, version, link)
    try:
        answer = pause_flow_run(wait_for_input=ApprovalForm, timeout=timeout_s, poll_interval=2)
    except FlowPauseTimeout:
        return Approval(False, None, f"not promoted: no approval within {timeout_s} s")
    verb = "approved" if answer.approve else "refused"
    event = events.APPROVAL_GIVEN if answer.approve else events.APPROVAL_REFUSED
    events.model_event(event, model_name, version, approver=answer.approver, reason=answer.reason)
    return Approval(answer.approve, answer.approver, f"{verb} by {answer.approver}: {answer.reason}")


def run_link() -> str | None:
    context = FlowRunContext.get()
    ui = PREFECT_UI_URL.value() or (PREFECT_API_URL.value() or "").removesuffix("/api") or None
    return f"{ui.rstrip('/')}/runs/flow-run/{context.flow_run.id}" if ui and context and context.flow_run else None
