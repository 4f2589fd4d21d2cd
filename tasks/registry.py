"""MLflow registry: the quality gate, champion aliases, rollback, and the audit trail they leave."""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

import mlflow
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from pydantic import BaseModel, Field

from tasks.settings import Settings

CHAMPION = "champion"
PREVIOUS_CHAMPION = "previous-champion"
AUDIT_PREFIX = "audit."


def connect(settings: Settings) -> MlflowClient:
    """Point MLflow at the configured store and make sure the experiment exists with our artifact root."""
    if not settings.is_remote_storage:
        settings.local_state_dir.mkdir(parents=True, exist_ok=True)
    # read by MLflow at each request; set here so every flow, worker and replica gets the same budget
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(settings.mlflow_http_max_retries))
    if settings.s3_endpoint_url:
        # MLflow's S3 artifact store reads its endpoint only from the environment
        os.environ.setdefault("MLFLOW_S3_ENDPOINT_URL", settings.s3_endpoint_url)
    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_registry_uri(settings.tracking_uri)
    client = MlflowClient(settings.tracking_uri, settings.tracking_uri)
    if client.get_experiment_by_name(settings.experiment_name) is None:
        # another process may create it between our check and our create
        with contextlib.suppress(MlflowException):
            client.create_experiment(settings.experiment_name, artifact_location=settings.artifact_location)
    mlflow.set_experiment(settings.experiment_name)
    return client


class GatePolicy(BaseModel):
    """What a new version must achieve before it becomes @champion."""

    min_primary: float = Field(0.6, description="Absolute floor for the primary held-out metric.")
    min_metrics: dict[str, float] = Field(default_factory=dict, description="Other floors, e.g. {'recall': 0.5}.")
    max_metrics: dict[str, float] = Field(default_factory=dict, description="Ceilings, e.g. {'log_loss': 0.6}.")
    margin: float = Field(0.0, ge=0, description="How much the primary metric must beat the champion's by.")


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    reasons: list[str]
    candidate_primary: float
    champion_primary: float | None
    champion_version: str | None


def decide(
    candidate: dict[str, float], champion: dict[str, float] | None, champion_version: str | None, policy: GatePolicy
) -> GateDecision:
    """Pure: compare the candidate's held-out metrics with the floors and with the champion's on the same data."""
    failed, passed = [], []
    floors = {"primary": policy.min_primary, **policy.min_metrics}
    for name, floor in floors.items():
        value = candidate.get(name)
        (passed if value is not None and value >= floor else failed).append(
            f"{name} {_fmt(value)} {'>=' if value is not None and value >= floor else '<'} floor {floor:g}"
        )
    for name, ceiling in policy.max_metrics.items():
        value = candidate.get(name)
        ok = value is not None and value <= ceiling
        (passed if ok else failed).append(f"{name} {_fmt(value)} {'<=' if ok else '>'} ceiling {ceiling:g}")
    champion_primary = None if champion is None else champion["primary"]
    if champion_primary is None:
        passed.append("no current champion to beat")
    else:
        needed = champion_primary + policy.margin
        beats = candidate["primary"] > needed or (policy.margin == 0 and candidate["primary"] > champion_primary)
        (passed if beats else failed).append(
            f"primary {candidate['primary']:.4f} {'beats' if beats else 'does not beat'} champion "
            f"v{champion_version} {champion_primary:.4f} + margin {policy.margin:g} on the same held-out data"
        )
    return GateDecision(not failed, failed or passed, candidate["primary"], champion_primary, champion_version)


def _fmt(value: float | None) -> str:
    return "missing" if value is None else f"{value:.4f}"


def current_champion(client: MlflowClient, name: str) -> ModelVersion | None:
    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:  # no registered model yet, or no alias
        return None


@dataclass(frozen=True)
class AuditEvent:
    """One change of champion: stored as a registered-model tag so the whole history reads in one call."""

    seq: int
    at: str
    action: str  # promote | rollback
    version: str
    previous: str | None
    by: str
    reason: str


def history(client: MlflowClient, name: str) -> list[AuditEvent]:
    tags = client.get_registered_model(name).tags
    events = [AuditEvent(**json.loads(v)) for k, v in tags.items() if k.startswith(AUDIT_PREFIX)]
    return sorted(events, key=lambda e: e.seq)


def set_champion(client: MlflowClient, name: str, version: str, action: str, by: str, reason: str) -> AuditEvent:
    """Move @champion to `version`, keep the former one reachable as @previous-champion, and record it all."""
    former = current_champion(client, name)
    previous = str(former.version) if former else None
    if previous == str(version):
        raise ValueError(f"{name} v{version} is already @{CHAMPION}")
    event = AuditEvent(
        seq=len(history(client, name)) + 1,
        at=datetime.now(UTC).isoformat(timespec="seconds"),
        action=action,
        version=str(version),
        previous=previous,
        by=by,
        reason=reason,
    )
    client.set_registered_model_alias(name, CHAMPION, str(version))
    if previous:
        client.set_registered_model_alias(name, PREVIOUS_CHAMPION, previous)
        client.set_model_version_tag(name, previous, "champion.retired_at", event.at)
        client.set_model_version_tag(name, previous, "champion.replaced_by", str(version))
    for key, value in {
        "champion.since": event.at,
        "champion.by": by,
        "champion.reason": reason,
        "champion.action": action,
    }.items():
        client.set_model_version_tag(name, str(version), key, value)
    client.set_registered_model_tag(name, f"{AUDIT_PREFIX}{event.seq:05d}", json.dumps(asdict(event)))
    return event


def rollback_target(events: list[AuditEvent], current: str) -> str:
    """The latest earlier champion that was not itself rolled back from."""
    rolled_back_from = {e.previous for e in events if e.action == "rollback"}
    for event in reversed(events):
        if event.version != current and event.version not in rolled_back_from:
            return event.version
    raise ValueError("no earlier champion to roll back to")


def record_gate(client: MlflowClient, name: str, version: str, decision: GateDecision) -> None:
    client.set_model_version_tag(name, version, "gate.status", "passed" if decision.promote else "rejected")
    client.set_model_version_tag(name, version, "gate.reasons", "; ".join(decision.reasons))
