"""MLflow registry: the store, champion aliases, rollback, the audit trail they leave, and model contracts."""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Literal

import mlflow
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from tasks.model import contract as contracts
from tasks.model.contract import ModelContract
from tasks.model.gate import GateDecision
from tasks.settings import Settings

CHAMPION = "champion"
CHALLENGER = "challenger"
PREVIOUS_CHAMPION = "previous-champion"
AUDIT_PREFIX = "audit."
TRAFFIC_TAG = "traffic"
CHAMPION_MOVES = ("promote", "rollback")  # audit actions that moved @champion; the others only record
TrafficMode = Literal["champion", "ab", "shadow"]


def connect(settings: Settings, experiment_name: str | None = None) -> MlflowClient:
    """Point MLflow at the configured store; with `experiment_name`, make sure that experiment exists (with our
    artifact root) and is the active one, for the runs this process writes."""
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
    if experiment_name is None:
        return client
    if client.get_experiment_by_name(experiment_name) is None:
        # another process may create it between our check and our create
        with contextlib.suppress(MlflowException):
            client.create_experiment(experiment_name, artifact_location=settings.artifact_location)
    mlflow.set_experiment(experiment_name)
    return client


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
    action: str  # promote | rollback (CHAMPION_MOVES); rollout-start | rollout-step | rollout-abort record only
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
    event = _next_event(client, name, action, str(version), previous, by, reason)
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
    _write(client, name, event)
    return event


def record(client: MlflowClient, name: str, action: str, version: str, by: str, reason: str) -> AuditEvent:
    """An audit entry that moves no alias (a rollout's start, steps and abort), beside the champion's moves."""
    former = current_champion(client, name)
    event = _next_event(client, name, action, str(version), str(former.version) if former else None, by, reason)
    _write(client, name, event)
    return event


def _next_event(
    client: MlflowClient, name: str, action: str, version: str, previous: str | None, by: str, reason: str
) -> AuditEvent:
    at = datetime.now(UTC).isoformat(timespec="seconds")
    return AuditEvent(len(history(client, name)) + 1, at, action, version, previous, by, reason)


def _write(client: MlflowClient, name: str, event: AuditEvent) -> None:
    client.set_registered_model_tag(name, f"{AUDIT_PREFIX}{event.seq:05d}", json.dumps(asdict(event)))


def rollback_target(events: list[AuditEvent], current: str) -> str:
    """The latest earlier champion that was not itself rolled back from."""
    events = [e for e in events if e.action in CHAMPION_MOVES]
    rolled_back_from = {e.previous for e in events if e.action == "rollback"}
    for event in reversed(events):
        if event.version != current and event.version not in rolled_back_from:
            return event.version
    raise ValueError("no earlier champion to roll back to")


@dataclass(frozen=True)
class Traffic:
    """How serving replicas split a model's traffic, kept in the registry so that a rollout changes it without a
    redeploy: replicas read it as they follow the aliases. Without one, the serving config's mode applies."""

    mode: TrafficMode
    challenger_share: float = 0.0  # of A/B keys, in [0, 1]
    by: str = ""
    reason: str = ""
    at: str = ""

    def __post_init__(self) -> None:
        if not 0 <= self.challenger_share <= 1:
            raise ValueError(f"challenger_share must be in [0, 1], not {self.challenger_share}")


def read_traffic(client: MlflowClient, name: str) -> Traffic | None:
    value = client.get_registered_model(name).tags.get(TRAFFIC_TAG)
    return Traffic(**json.loads(value)) if value else None


def set_traffic(client: MlflowClient, name: str, mode: TrafficMode, share: float, by: str, reason: str) -> Traffic:
    traffic = Traffic(mode, share, by, reason, datetime.now(UTC).isoformat(timespec="seconds"))
    client.set_registered_model_tag(name, TRAFFIC_TAG, json.dumps(asdict(traffic)))
    return traffic


def record_gate(client: MlflowClient, name: str, version: str, decision: GateDecision) -> None:
    client.set_model_version_tag(name, version, "gate.status", "passed" if decision.promote else "rejected")
    client.set_model_version_tag(name, version, "gate.reasons", "; ".join(decision.reasons))


def load_contract(name: str, version: str) -> ModelContract:
    """A registered version's contract, read from its MLmodel file without downloading the model (a version
    saved before contracts is downloaded once, for the schema file it kept)."""
    uri = f"models:/{name}/{version}"
    metadata = mlflow.models.get_model_info(uri).metadata

    def legacy_schema() -> str:
        local = mlflow.artifacts.download_artifacts(uri)
        with open(f"{local}/{contracts.LEGACY_SCHEMA_FILE}") as handle:
            return handle.read()

    return contracts.from_metadata(metadata, legacy_schema)
