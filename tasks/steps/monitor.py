"""The monitoring flow's steps: champion lineage, the window of logged predictions, labels, report, state."""

from __future__ import annotations

import io
import json
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient
from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact

from tasks.model.contract import ModelContract
from tasks.model.metrics import score_output
from tasks.monitoring import drift, ray_window, variants
from tasks.monitoring import profile as profiles
from tasks.monitoring.policy import MonitorDecision
from tasks.ops import events
from tasks.settings import Settings
from tasks.steps.retries import IO_RETRIES, step
from tasks.store import data, prediction_log, ray_cluster, registry, storage


@dataclass(frozen=True)
class Champion:
    """The version monitoring watches: its contract, and the held-out score its live metric is held to."""

    name: str
    version: str
    run_id: str
    contract: ModelContract
    test_primary: float


@step(**IO_RETRIES)
def champion(client: MlflowClient, name: str) -> Champion:
    current = registry.current_champion(client, name)
    if current is None:
        raise ValueError(f"{name} has no @champion to monitor; train one first")
    run = client.get_run(current.run_id)
    return Champion(
        name=name,
        version=str(current.version),
        run_id=current.run_id,
        contract=registry.load_contract(name, str(current.version)),
        test_primary=float(run.data.metrics["test_primary"]),
    )


@step(**IO_RETRIES)
def load_reference(ctx: Champion, settings: Settings) -> pd.DataFrame:
    """The champion's own training snapshot, found through its lineage."""
    uri = ctx.contract.data.uri
    try:
        return data.load_table(uri, settings)
    except data.DataLoadError as err:
        raise FileNotFoundError(
            f"reference data for {ctx.name} v{ctx.version} is missing: its lineage points at {uri} ({err})"
        ) from None


def reference_uri(settings: Settings, ctx: Champion) -> str:
    return storage.join(settings.storage_url, "monitoring", ctx.name, "reference", f"v{ctx.version}")


@step(**IO_RETRIES)
def reference_profile(ctx: Champion, settings: Settings) -> tuple[profiles.ReferenceProfile, pd.DataFrame]:
    """The champion's drift profile and kept reference sample: computed from its training snapshot the first
    time this version is monitored, then read back (one pass over the training data per champion)."""
    base = reference_uri(settings, ctx)
    if storage.exists(f"{base}/sample.parquet", settings):
        kept = pd.read_parquet(io.BytesIO(storage.read_bytes(f"{base}/sample.parquet", settings)))
        return profiles.from_json(storage.read_bytes(f"{base}/profile.json", settings)), kept
    reference = load_reference.fn(ctx, settings)
    meta = {"model": ctx.name, "version": ctx.version, "data": ctx.contract.data.uri}
    profile = profiles.profile_reference(reference, ctx.contract.spec, meta)
    kept = drift.reference_sample(reference, profile)
    buffer = io.BytesIO()
    kept.to_parquet(buffer, index=False)
    storage.write_bytes(f"{base}/profile.json", profiles.to_json(profile), settings)
    storage.write_bytes(f"{base}/sample.parquet", buffer.getvalue(), settings)  # last: its presence means both
    return profile, kept


def state_uri(settings: Settings, model: str) -> str:
    return storage.join(settings.storage_url, "monitoring", model, "state.json")


@step(**IO_RETRIES)
def read_state(settings: Settings, model: str) -> dict[str, Any]:
    """Where the model's last monitoring run stopped, and when it last retrained."""
    uri = state_uri(settings, model)
    if not storage.exists(uri, settings):
        return {"last_until": None, "retrains": []}
    return json.loads(storage.read_bytes(uri, settings))


@step(**IO_RETRIES)
def write_state(settings: Settings, model: str, state: dict[str, Any]) -> None:
    storage.write_bytes(state_uri(settings, model), json.dumps(state, indent=2).encode(), settings)


def window(
    state: dict[str, Any], since: datetime | None, until: datetime | None, default_lookback: timedelta
) -> tuple[datetime, datetime]:
    """Default: from where the last monitoring run stopped (or a lookback) to now."""
    end = until or datetime.now(UTC)
    if since is not None:
        return since, end
    last = state.get("last_until")
    return (datetime.fromisoformat(last) if last else end - default_lookback), end


@step(**IO_RETRIES)
def load_window(
    ctx: Champion, settings: Settings, since: datetime, until: datetime, inputs: bool = True
) -> pd.DataFrame:
    """Every logged answer of the model in the window: the champion's, and a challenger's or shadow's (not the
    rows of requests a challenger failed to answer). Without `inputs`, only what was answered and its keys (the
    Ray engine reads the inputs where they lie)."""
    without = () if inputs else ctx.contract.spec.columns
    return prediction_log.answered(prediction_log.read(settings, since, until, model=ctx.name, without=without))


@dataclass(frozen=True)
class LateLabels:
    """Delayed ground truth, the column it joins on as given (None: label_key chooses) and where it was read."""

    rows: pd.DataFrame
    key: str | None
    uri: str


@step(**IO_RETRIES)
def load_labels(labels_uri: str | None, key: str | None, settings: Settings) -> LateLabels | None:
    """Delayed ground truth: a single file, or every CSV/Parquet file under a prefix; None without a URI."""
    if not labels_uri:
        return None
    rows = pd.concat(
        [data.load_table(uri, settings) for uri in data.input_files(labels_uri, settings)], ignore_index=True
    )
    return LateLabels(rows, key, labels_uri)


def join_labels(current: pd.DataFrame, labels: LateLabels | None, ctx: Champion) -> pd.DataFrame:
    """The labels joined on the request id or an entity key; rows without a label are dropped."""
    if labels is None or current.empty:
        return current.iloc[0:0]
    key = label_key(labels, ctx)
    if key not in current.columns:
        raise ValueError(f"join key {key!r} is not in the prediction log; send it with each request")
    truth = labels.rows[[key, ctx.contract.target]].drop_duplicates(subset=[key], keep="last")
    return current.drop(columns=[ctx.contract.target], errors="ignore").merge(truth, on=key, how="inner")


def label_key(labels: LateLabels, ctx: Champion) -> str:
    """The column the labels join on: as given, else request_id when the labels have it, else the first id."""
    target, id_columns, columns = ctx.contract.target, ctx.contract.id_columns, labels.rows.columns
    key = labels.key or ("request_id" if "request_id" in columns else (id_columns or ["request_id"])[0])
    missing = [c for c in (key, target) if c not in columns]
    if missing:
        raise ValueError(f"{labels.uri}: labels need columns {missing} (join key and target)")
    return key


def live_primary(labelled: pd.DataFrame, ctx: Champion) -> float | None:
    """The primary metric on what was served, from the logged outputs and the late labels (metrics' rule)."""
    contract = ctx.contract
    if labelled.empty or labelled[contract.target].nunique() < 2:
        return None
    return score_output(
        truth_of(labelled, ctx), primary_output_of(labelled, ctx), contract.task_type, contract.positive_class
    )


def truth_of(labelled: pd.DataFrame, ctx: Champion) -> np.ndarray:
    truth = labelled[ctx.contract.target]
    # labels read back from files may be typed otherwise than the log's
    return (truth.astype(str) if ctx.contract.task_type == "multiclass" else truth).to_numpy()


def labelled_outputs(labelled: pd.DataFrame, ctx: Champion) -> tuple[np.ndarray, np.ndarray]:
    """The true labels and what the metric reads, of the labelled rows (none when no label came back)."""
    if labelled.empty or ctx.contract.target not in labelled.columns:
        return np.array([]), np.array([])
    return truth_of(labelled, ctx), primary_output_of(labelled, ctx)


def primary_output_of(rows: pd.DataFrame, ctx: Champion) -> np.ndarray:
    """What the primary metric reads from logged rows: the positive class's probability, else the prediction."""
    task = ctx.contract.task_type
    if task == "regression":
        return rows["prediction"].astype(float).to_numpy()
    if task == "multiclass":
        return rows["prediction"].astype(str).to_numpy()
    return prediction_log.class_probabilities(rows)[str(ctx.contract.positive_class)].to_numpy()


@dataclass(frozen=True)
class VariantReport:
    """The challenger against the champion in the window: shadow (paired) or A/B (unpaired)."""

    variant: str
    version: str
    records: int
    agreement: variants.Agreement | None
    comparison: variants.Comparison

    def line(self) -> str:
        seen = ""
        if self.agreement is not None:
            agree = f"agreement {self.agreement.agreement:.1%}, " if self.agreement.agreement is not None else ""
            seen = f" ({agree}score shift {self.agreement.score_shift:.3f})"
        return f"{self.variant} v{self.version}, {self.records} records{seen}: {self.comparison.reason}"


def compare_variants(
    window: pd.DataFrame,
    labels: LateLabels | None,
    ctx: Champion,
    policy: variants.ComparisonPolicy,
    look: int = 1,
) -> list[VariantReport]:
    """Shadow answers paired with the champion's on the same records; A/B arms side by side; each judged on
    the late labels (tasks/monitoring/variants.py) as the `look`-th look. Monitoring reports these; the
    rollout acts on them."""
    if window.empty:
        return []
    task, positive = ctx.contract.task_type, ctx.contract.positive_class
    reports: list[VariantReport] = []
    pairs = variants.paired_rows(window)
    if len(pairs):
        shadow = variants.challenger_side(pairs)
        seen = variants.agreement(
            pairs["prediction"], shadow["prediction"], primary_output_of(pairs, ctx), primary_output_of(shadow, ctx)
        )
        labelled = join_labels(pairs, labels, ctx)
        truth, champion = labelled_outputs(labelled, ctx)
        _, challenger = labelled_outputs(variants.challenger_side(labelled), ctx)
        comparison = variants.compare_paired(truth, champion, challenger, task, policy, look, positive)
        version = str(pairs["challenger_model_version"].iloc[0])
        reports.append(VariantReport("shadow", version, len(pairs), seen, comparison))
    arms = {v: window[window["variant"] == v].reset_index(drop=True) for v in ("champion", "challenger")}
    if len(arms["challenger"]):
        sides = [labelled_outputs(join_labels(arms[v], labels, ctx), ctx) for v in arms]
        comparison = variants.compare_unpaired(*sides[0], *sides[1], task, policy, look, positive)
        version = str(arms["challenger"]["model_version"].iloc[0])
        reports.append(VariantReport("challenger", version, len(arms["challenger"]), None, comparison))
    return reports


@dataclass(frozen=True)
class WindowDrift:
    result: drift.DriftResult
    labelled: pd.DataFrame  # the window's labelled rows with the inputs the model saw: what a retrain adds
    nodes: int = 0  # the Ray nodes that summarised the window's blocks (0: this process did)


@step(**IO_RETRIES)
def check_drift(
    ctx: Champion,
    settings: Settings,
    profile: profiles.ReferenceProfile,
    reference_sample: pd.DataFrame,
    current: pd.DataFrame,
    labelled: pd.DataFrame,
    labels: LateLabels | None,
    since: datetime,
    until: datetime,
    drift_share: float,
    engine: str = "local",
    ray_address: str | None = None,
) -> WindowDrift:
    """The drift verdicts on every served row of the window, in this process on `current` (read with its
    inputs, and `labelled`: those rows joined to the labels), or on Ray Data (`current` read without them):
    the log's blocks are summarised where Ray puts them, and only their summaries, a sample for the report
    and the labelled rows with their inputs come back here."""
    if engine == "local":
        return WindowDrift(drift.check(reference_sample, current, profile, drift_share), labelled)
    if profile.needs_rows:  # Evidently's small-sample tests need the window's rows themselves
        get_run_logger().info("a reference of at most 1,000 rows: the window is read here, not on Ray")
        current = prediction_log.served(load_window.fn(ctx, settings, since, until))
        result = drift.check(reference_sample, current, profile, drift_share)
        return WindowDrift(result, join_labels(current, labels, ctx))
    keys = None
    if labels is not None:
        column = label_key(labels, ctx)
        keys = ray_window.LabelKeys(column, labels.rows[column].dropna().unique())
    files = prediction_log.window_files(settings, since, until, ctx.name)
    with ray_cluster.connected(ray_address):
        cut = ray_window.WindowCut(profile, ctx.name, since, until, keys, drift.REPORT_ROWS)
        window = ray_window.summarise_on_ray(files, settings, cut)
    get_run_logger().info("drift summarised on Ray: %d rows on %d node(s)", window.rows, window.nodes)
    result = drift.check(reference_sample, window.sample, profile, drift_share, window.summary, rows=window.rows)
    return WindowDrift(result, join_labels(window.labelled, labels, ctx), window.nodes)


@step(**IO_RETRIES)
def publish_report(
    client: MlflowClient,
    settings: Settings,
    ctx: Champion,
    result: drift.DriftResult,
    decision: MonitorDecision,
    samples: int,
    live: float | None,
    since: datetime,
    until: datetime,
    compared: list[VariantReport] | None = None,
) -> str:
    """HTML and JSON report to storage and to an MLflow monitoring run; a Prefect summary linking to it."""
    stamp = until.strftime("%Y%m%dT%H%M%SZ")
    base = storage.join(settings.storage_url, "monitoring", ctx.name, "reports", stamp)
    experiment = client.get_experiment_by_name(settings.experiment_name or ctx.name)
    run = client.create_run(
        experiment.experiment_id,
        run_name=f"monitor-{stamp}",
        tags={
            "monitoring": "true",
            "model.name": ctx.name,
            "model.version": ctx.version,
            "decision": "retrain" if decision.retrain else "keep",
            "decision.reasons": "; ".join(decision.reasons),
            "window.since": since.isoformat(),
            "window.until": until.isoformat(),
        },
    )
    metrics = {"drift_share": result.drift_share, "samples": samples, "drifted_columns": len(result.drifted_columns)}
    if live is not None:
        metrics |= {"live_primary": live, "champion_test_primary": ctx.test_primary}
    for report in compared or []:
        if report.comparison.effect is not None:
            metrics[f"{report.variant}_effect"] = report.comparison.effect
    for key, value in metrics.items():
        client.log_metric(run.info.run_id, key, value)
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("html", "json"):
            path = Path(tmp) / f"drift.{kind}"
            getattr(result.snapshot, f"save_{kind}")(str(path))
            storage.write_bytes(f"{base}/drift.{kind}", path.read_bytes(), settings)
            client.log_artifact(run.info.run_id, str(path), "monitoring")
    client.set_terminated(run.info.run_id, "FINISHED")
    drifted = ", ".join(result.drifted_columns) or "none"
    shown = (
        "every row"
        if result.report_rows >= result.rows
        else f"drawn on {result.report_rows} of the {result.rows} rows; the verdicts above use every row"
    )
    live_line = (
        f"{live:.4f} live vs {ctx.test_primary:.4f} on the champion's held-out data"
        if live is not None
        else "no labels in the window"
    )
    create_markdown_artifact(
        f"# Monitoring {ctx.name} v{ctx.version}: {'retrain' if decision.retrain else 'keep'}\n\n"
        f"Window {since.isoformat(timespec='seconds')} to {until.isoformat(timespec='seconds')}, "
        f"{samples} predictions.\n\n- Drift share {result.drift_share:.2f}; drifted columns: {drifted}\n"
        f"- Primary metric: {live_line}\n- Report: `{base}/drift.html` ({shown})\n"
        + "".join(f"- Variant: {report.line()}\n" for report in compared or [])
        + "\n## Decision\n"
        + "\n".join(f"- {r}" for r in decision.reasons),
        key="monitoring-report",
        description="Drift, live performance and the retrain decision",
    )
    return f"{base}/drift.html"


def emit(event: str, ctx: Champion, retrain_params: dict[str, Any] | None = None, **payload: Any) -> None:
    """A Prefect event about the champion, for automations (e.g. tabloop.drift.detected). With `retrain_params`
    it asks for retraining: the resource is labelled `tabloop.retrain: requested`, which the retrain-on-drift
    trigger matches, and the parameters ride in the payload."""
    if retrain_params is not None:
        payload["retrain_params"] = retrain_params
    labels = {events.RETRAIN_LABEL: "requested"} if retrain_params is not None else {}
    events.model_event(event, ctx.name, ctx.version, labels=labels, **payload)
    get_run_logger().info("event %s %s", event, payload)


@step(**IO_RETRIES)
def fresh_training_data(reference: pd.DataFrame, labelled: pd.DataFrame, ctx: Champion, settings: Settings) -> str:
    """The reference plus the recent labelled rows, in the reference's columns, stored for the train flow."""
    recent, timestamp = labelled.copy(), ctx.contract.timestamp_column
    if timestamp and timestamp not in recent.columns:
        recent[timestamp] = pd.to_datetime(recent["logged_at"], utc=True).dt.tz_localize(None)
    missing = [c for c in reference.columns if c not in recent.columns]
    if missing and not recent.empty:
        raise ValueError(f"labelled predictions lack {missing}: send these fields with each request to retrain on them")
    combined = (
        pd.concat([reference, recent[list(reference.columns)]], ignore_index=True) if not recent.empty else reference
    )
    for column in reference.columns:  # logged JSON numbers arrive as floats; the schema coerces them back
        if pd.api.types.is_datetime64_any_dtype(reference[column]):
            combined[column] = pd.to_datetime(combined[column])
    uri = storage.join(settings.storage_url, "monitoring", "retrain", f"{data.content_hash(combined)}.parquet")
    storage.write_parquet(uri, combined, settings, once=True)
    return uri
