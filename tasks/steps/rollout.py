"""The rollout flow's steps: put a version in as @challenger, move its traffic share, watch each step in the
prediction log, and end by promoting it or by taking all its traffic away. Every move is in the audit trail
and is an event."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact

from tasks.monitoring import rollout as policy_checks
from tasks.monitoring.rollout import RolloutPolicy, Step, StepCheck
from tasks.monitoring.variants import Comparison
from tasks.ops import events
from tasks.settings import Settings
from tasks.steps import monitor
from tasks.steps.retries import IO_RETRIES, step
from tasks.store import prediction_log, registry


@dataclass(frozen=True)
class Watched:
    """The rollout in progress: the champion it is measured against and the challenger going in."""

    champion: monitor.Champion
    version: str
    started: datetime


@step(**IO_RETRIES)
def begin(client: MlflowClient, name: str, version: str, actor: str) -> Watched:
    """Check the version can go in, make it @challenger with no traffic yet, and record the start."""
    client.get_model_version(name, version)  # a clear 'not found' for a version that does not exist
    champion = monitor.champion.fn(client, name)
    if champion.version == version:
        raise ValueError(f"{name} v{version} is already @{registry.CHAMPION}: nothing to roll out")
    registry.set_traffic(client, name, "champion", 0.0, actor, f"rollout of v{version} begins")
    client.set_registered_model_alias(name, registry.CHALLENGER, version)
    registry.record(client, name, "rollout-start", version, actor, f"rollout of v{version} against v{champion.version}")
    events.model_event(events.ROLLOUT_STARTED, name, version, champion=champion.version)
    return Watched(champion, version, datetime.now(UTC))


@step(**IO_RETRIES)
def enter(client: MlflowClient, name: str, stage: Step, actor: str) -> datetime:
    """Send the step's traffic to the challenger; replicas pick it up at their next registry poll."""
    mode = "shadow" if stage.kind == "shadow" else "ab"
    registry.set_traffic(client, name, mode, stage.share, actor, f"rollout step: {stage.label}")
    get_run_logger().info("%s: %s", name, stage.label)
    return datetime.now(UTC)


def load_since(settings: Settings, name: str, since: datetime) -> pd.DataFrame:
    """Every row the model's replicas logged since `since`, failures included. Not a Prefect task: a step
    reads it at every check, and a storage hiccup only delays the next one."""
    return prediction_log.read(settings, since, None, model=name)


def observe(log: pd.DataFrame, watched: Watched, stage: Step, entered: datetime) -> policy_checks.StepStats:
    """The step's figures: the challenger's rows since the step began, the champion's since the rollout did
    (so the last step, where the champion answers nothing, still has its baseline)."""
    ctx = watched.champion
    if log.empty:
        return policy_checks.step_stats(log, log, [], [])
    champion_rows = log[(log["variant"] == "champion") & (log["model_version"] == ctx.version)]
    mine = (log["variant"] == stage.variant) & (log["model_version"] == watched.version)
    challenger_rows = log[mine & (log["logged_at"] >= pd.Timestamp(entered))]
    scores = [
        monitor.primary_output_of(prediction_log.answered(rows), ctx) for rows in (champion_rows, challenger_rows)
    ]
    return policy_checks.step_stats(champion_rows, challenger_rows, *scores)


def verdict(
    log: pd.DataFrame,
    labels: monitor.LateLabels | None,
    watched: Watched,
    policy: RolloutPolicy,
    look: int,
) -> Comparison | None:
    """The step's look at the labels: paired on the shadow's records when the rollout shadowed, else the two
    canary arms side by side. None without labels."""
    if labels is None:
        return None
    answered = prediction_log.answered(log)
    mine = answered[(answered["model_version"] == watched.version) | (answered["variant"] == "champion")]
    reports = monitor.compare_variants(mine, labels, watched.champion, policy.looks(), look)
    by_variant = {report.variant: report.comparison for report in reports}
    return by_variant.get("shadow") or by_variant.get("challenger")


def hold(
    settings: Settings,
    name: str,
    watched: Watched,
    stage: Step,
    entered: datetime,
    policy: RolloutPolicy,
    labels_at: tuple[str | None, str | None],
    look: int,
) -> tuple[StepCheck, Comparison | None]:
    """Check the step every `check_every_s` until it fails or passes; a passed step then takes its look at the
    labels (loaded once per look: label files may keep arriving)."""
    logger = get_run_logger()
    labels_uri, label_key = labels_at
    while True:
        time.sleep(policy.check_every_s)
        try:
            log = load_since(settings, name, watched.started)
        except OSError as err:
            logger.warning("could not read the prediction log, checking again: %s", err)
            continue
        elapsed = (datetime.now(UTC) - entered).total_seconds()
        check = policy_checks.check_step(observe(log, watched, stage, entered), stage, elapsed, policy)
        logger.info("%s: %s", check.status, "; ".join(check.reasons))
        if check.status == "wait":
            continue
        if check.status == "fail":
            return check, None
        found = monitor.load_labels(labels_uri, label_key, settings)
        comparison = verdict(log, found, watched, policy, look)
        return policy_checks.with_verdict(check, comparison, stage), comparison


@step(**IO_RETRIES)
def passed(client: MlflowClient, name: str, watched: Watched, stage: Step, check: StepCheck, actor: str) -> None:
    registry.record(client, name, "rollout-step", watched.version, actor, "; ".join(check.reasons))
    events.model_event(events.ROLLOUT_STEP_PASSED, name, watched.version, step=stage.label, reasons=check.reasons)


@step(**IO_RETRIES)
def withdraw(client: MlflowClient, name: str, version: str, actor: str, reason: str) -> None:
    """All traffic back to the champion at once, and the challenger alias removed (so no config or later
    traffic setting sends it traffic again)."""
    registry.set_traffic(client, name, "champion", 0.0, actor, reason)
    with contextlib.suppress(MlflowException):  # already gone
        client.delete_registered_model_alias(name, registry.CHALLENGER)


@contextlib.contextmanager
def withdrawn_on_failure(client: MlflowClient, name: str, watched: Watched, actor: str) -> Iterator[None]:
    """Whatever stops the run (an error, a cancel, a crash the process survives), the challenger's traffic goes
    back to the champion before it ends; the champion alias is never touched here."""
    try:
        yield
    except BaseException as err:
        reason = f"rollout run ended early: {type(err).__name__}: {err}"
        withdraw.fn(client, name, watched.version, actor, reason)
        registry.record(client, name, "rollout-abort", watched.version, actor, reason)
        raise


@step(**IO_RETRIES)
def abort(client: MlflowClient, name: str, watched: Watched, reasons: list[str], actor: str) -> None:
    reason = "rollout stopped: " + "; ".join(reasons)
    withdraw.fn(client, name, watched.version, actor, reason)
    registry.record(client, name, "rollout-abort", watched.version, actor, reason)
    events.model_event(events.ROLLOUT_ABORTED, name, watched.version, reasons=reasons)
    events.model_event(events.CHALLENGER_LOST, name, watched.version, champion=watched.champion.version)


@step(**IO_RETRIES)
def promote(client: MlflowClient, name: str, watched: Watched, reasons: list[str], actor: str) -> None:
    """The alias first (replicas already answer everything with this version), then the split back to all
    @champion: a replica that sees the split before the alias answers with the old champion for one poll."""
    registry.set_champion(client, name, watched.version, "promote", actor, "rollout: " + "; ".join(reasons))
    withdraw.fn(client, name, watched.version, actor, f"v{watched.version} promoted by its rollout")
    events.model_event(events.MODEL_PROMOTED, name, watched.version, previous=watched.champion.version, reasons=reasons)
    events.model_event(events.CHALLENGER_WON, name, watched.version, champion=watched.champion.version)


@step(**IO_RETRIES)
def keep(client: MlflowClient, name: str, watched: Watched, reasons: list[str], actor: str) -> None:
    """Every step passed but the version is not promoted (no labelled win, or a person said no)."""
    reason = "; ".join(reasons)
    withdraw.fn(client, name, watched.version, actor, reason)
    registry.record(client, name, "rollout-kept-champion", watched.version, actor, reason)
    events.model_event(events.CHALLENGER_LOST, name, watched.version, champion=watched.champion.version)


def publish(name: str, watched: Watched, lines: list[str], outcome: str) -> None:
    create_markdown_artifact(
        f"# Rollout of {name} v{watched.version}: {outcome}\n\nAgainst @champion v{watched.champion.version}, "
        f"from {watched.started.isoformat(timespec='seconds')}.\n\n" + "".join(f"- {line}\n" for line in lines),
        key="rollout-report",
        description="Each step's checks and the rollout's outcome",
    )
