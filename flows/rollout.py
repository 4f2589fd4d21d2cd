"""Roll a registered version out on live traffic: shadow it, then give it a growing share, judged at each step.

    python flows/rollout.py --version 4 --model-name churn
    python flows/rollout.py --version 4 --labels-uri s3://bucket/labels/ --policy '{"require_better": true}'
    python flows/rollout.py --version 4 --policy '{"shadow_s": 300, "steps": [10, 50, 100], "hold_s": 300}'

The version becomes @challenger; the traffic split lives in the registry, so the serving replicas follow each
step without a redeploy. A failed check (error rate, p99 latency, score shift, a labelled verdict of worse)
sends all traffic back to @champion at once and ends the rollout; after the last step the version is
promoted through the same alias and audit trail as the quality gate, after a person's approval when the
policy asks for one (the form is on the flow run's page in the Prefect UI).
"""

from __future__ import annotations

import getpass
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mlflow.tracking import MlflowClient
from prefect import flow
from pydantic import BaseModel, Field

from tasks import demo
from tasks.model.gate import GateDecision, GatePolicy
from tasks.monitoring.rollout import RolloutPolicy, promotion_reasons
from tasks.monitoring.variants import Comparison
from tasks.ops import cli
from tasks.ops.shell import shell_run
from tasks.settings import Settings, get_settings
from tasks.steps import approval
from tasks.steps import rollout as steps
from tasks.store import registry


class RolloutParams(BaseModel):
    version: str = Field(description="The registered version to roll out.")
    model_name: str | None = Field(None, description="Default TABLOOP_MODEL_NAME, else the demo's.")
    policy: RolloutPolicy = Field(default_factory=RolloutPolicy, description="The steps and their checks, as JSON.")
    labels_uri: str | None = Field(None, description="CSV/Parquet (or s3://, a prefix) of late ground truth.")
    label_key: str | None = Field(None, description="Join key: request_id (default) or an entity id column.")
    actor: str | None = Field(None, description="Who the audit trail names; default the user running it.")


Outcome = Literal["promoted", "kept", "stopped"]


class RolloutResult(BaseModel):
    version: str
    promoted: bool
    outcome: Outcome
    steps_passed: list[str]
    reasons: list[str]
    verdicts: list[str] = Field(default_factory=list, description="Each look at the labels.")


@flow(name="rollout", log_prints=True)
def rollout(params: RolloutParams) -> RolloutResult:
    settings = get_settings()
    name = demo.model_name(params.model_name, settings.model_name)
    actor = params.actor or getpass.getuser()
    policy = params.policy
    client = registry.connect(settings)
    watched = steps.begin(client, name, params.version, actor)
    labels_at = (params.labels_uri, params.label_key)
    lines: list[str] = []
    passed: list[str] = []
    looks: list[Comparison] = []

    plan, approved = policy.plan(), Approved(actor, [])
    with steps.withdrawn_on_failure(client, name, watched, actor):
        # 1. shadow, then each canary share; a failed check ends it with the champion answering everything
        for look, stage in enumerate(plan, start=1):
            if look == len(plan) and policy.require_approval:  # before the version answers everything
                approved = ask(name, watched, lines, policy, settings, actor)
                if not approved.yes:
                    return finish(client, name, watched, "kept", approved.reasons, lines, passed, looks, approved.by)
            entered = steps.enter(client, name, stage, actor)
            check, comparison = steps.hold(settings, name, watched, stage, entered, policy, labels_at, look)
            looks += [comparison] if comparison is not None else []
            lines += check.reasons
            if check.status == "fail":
                return finish(client, name, watched, "stopped", check.reasons, lines, passed, looks, actor)
            steps.passed(client, name, watched, stage, check, actor)
            passed.append(stage.label)

        # 2. promote on the evidence (and the person's approval, when asked)
        promote, reasons = promotion_reasons(looks, policy)
        outcome = "promoted" if promote else "kept"
        return finish(client, name, watched, outcome, [*reasons, *approved.reasons], lines, passed, looks, approved.by)


@dataclass(frozen=True)
class Approved:
    by: str
    reasons: list[str]
    yes: bool = True


def ask(
    name: str, watched: steps.Watched, lines: list[str], policy: RolloutPolicy, settings: Settings, actor: str
) -> Approved:
    """A person's answer (the gate's form and timeout) before the last step, with the evidence so far."""
    gate = GatePolicy(require_approval=True, approval_timeout_s=policy.approval_timeout_s)
    decision = GateDecision(True, lines, 0.0, None, watched.champion.version)
    decision, by = approval.reviewed(decision, name, watched.version, gate, settings, actor)
    return Approved(by, [decision.reasons[-1]], decision.promote)


def finish(
    client: MlflowClient,
    name: str,
    watched: steps.Watched,
    outcome: Outcome,
    reasons: list[str],
    lines: list[str],
    passed: list[str],
    looks: list[Comparison],
    by: str,
) -> RolloutResult:
    """Promote, keep the champion, or stop: the registry, the events and the run's report."""
    ending = {"promoted": steps.promote, "kept": steps.keep, "stopped": steps.abort}[outcome]
    ending(client, name, watched, reasons, by)
    steps.publish(name, watched, [*lines, *reasons] if outcome != "stopped" else lines, outcome)
    return result(watched, outcome == "promoted", outcome, passed, reasons, looks)


def result(
    watched: steps.Watched,
    promoted: bool,
    outcome: Outcome,
    passed: list[str],
    reasons: list[str],
    looks: list[Comparison],
) -> RolloutResult:
    verdicts = [f"look {c.look}: {c.verdict} ({c.reason})" for c in looks]
    return RolloutResult(
        version=watched.version,
        promoted=promoted,
        outcome=outcome,
        steps_passed=passed,
        reasons=reasons,
        verdicts=verdicts,
    )


def main(argv: list[str] | None = None) -> None:
    params = cli.parse(RolloutParams, argv, __doc__)
    with shell_run():
        outcome = rollout(params)
    print(f"v{outcome.version}: {outcome.outcome} after {outcome.steps_passed or 'no step'}")
    for reason in outcome.reasons:
        print(f"  {reason}")


if __name__ == "__main__":
    main()
