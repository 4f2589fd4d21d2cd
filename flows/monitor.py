"""Monitor: the champion's logged predictions against its training data; retrain when due (a subflow or an event).

python flows/monitor.py                      # window: since the last monitoring run
python flows/monitor.py --model-name customers --labels-uri labels.csv --no-allow-retrain   # --help lists all
python flows/monitor.py --engine ray --ray-address auto   # a month of logs: drift statistics on a Ray cluster
python -c "from flows.monitor import *; monitor(MonitorParams(labels_uri='s3://bucket/labels.parquet'))"
"""

from __future__ import annotations

import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from prefect import flow
from pydantic import BaseModel, Field

from flows.train import TrainParams, train
from tasks import demo
from tasks.monitoring.policy import MonitorPolicy, decide
from tasks.monitoring.variants import ComparisonPolicy
from tasks.ops import cli, events, specs
from tasks.ops.shell import shell_run
from tasks.settings import get_settings
from tasks.steps import monitor as steps
from tasks.store import prediction_log, registry


class MonitorParams(BaseModel):
    model_name: str | None = Field(None, description="The model to watch; default TABLOOP_MODEL_NAME, else the demo's.")
    since: datetime | None = Field(None, description="Window start; default: where the last run stopped.")
    until: datetime | None = Field(None, description="Window end; default: now.")
    lookback_hours: float = Field(24, gt=0, description="Window when there is no earlier monitoring run.")
    labels_uri: str | None = Field(None, description="CSV/Parquet (or s3://) of late ground truth.")
    label_key: str | None = Field(None, description="Join key: request_id (default) or an entity id column.")
    policy: MonitorPolicy = Field(default_factory=MonitorPolicy)
    allow_retrain: bool = True
    retrain_via: Literal["subflow", "event"] = Field(
        "subflow",
        description="subflow: train here, as a subflow. event: emit the drift (or performance) event with the "
        "training parameters and let the retrain-on-drift deployment train, in its own run on a worker.",
    )
    retrain_trials: int = Field(20, ge=1)
    comparison: ComparisonPolicy = Field(
        default_factory=ComparisonPolicy, description="Evidence a challenger's or shadow's verdict needs."
    )
    engine: Literal["local", "ray"] = Field(
        "local",
        description="Where the window's drift statistics are computed. ray: on Ray Data, block by block, for "
        "windows too large for this process (it then holds what was answered, not the inputs).",
    )
    ray_address: str | None = Field(
        None, description="engine ray: a running cluster (auto, ray://head:10001); default RAY_ADDRESS, else local."
    )


class MonitorResult(BaseModel):
    samples: int
    drift_share: float | None
    drifted_columns: list[str]
    live_primary: float | None
    retrain: bool
    reasons: list[str]
    report_uri: str | None = None
    variants: list[str] = Field(default_factory=list, description="Each challenger or shadow against the champion.")
    verdicts: dict[str, str] = Field(default_factory=dict, description="shadow/challenger: better, worse or unknown.")
    drift_nodes: int = Field(0, description="The Ray nodes that summarised the window (0: this process did).")
    new_version: str | None = None
    promoted: bool | None = None


@flow(name="monitor", log_prints=True)
def monitor(params: MonitorParams | None = None) -> MonitorResult:
    params = params or MonitorParams()
    settings = get_settings()
    name = demo.model_name(params.model_name, settings.model_name)
    client = registry.connect(settings, settings.experiment_name or name)
    ctx = steps.champion(client, name)
    state = steps.read_state(settings, name)
    since, until = steps.window(state, params.since, params.until, timedelta(hours=params.lookback_hours))

    # 1. what the champion served in the window, and what it was trained on
    window_log = steps.load_window(ctx, settings, since, until, inputs=params.engine == "local")
    current = prediction_log.served(window_log)
    if len(current) < params.policy.min_samples:
        reason = f"skipped: {len(current)} predictions in the window < min_samples {params.policy.min_samples}"
        print(reason)  # the window is not advanced: these predictions count again next time
        return MonitorResult(
            samples=len(current),
            drift_share=None,
            drifted_columns=[],
            live_primary=None,
            retrain=False,
            reasons=[reason],
        )
    profile, reference_sample = steps.reference_profile(ctx, settings)
    labels = steps.load_labels(params.labels_uri, params.label_key, settings)
    labelled = steps.join_labels(current, labels, ctx)
    live = steps.live_primary(labelled, ctx)
    compared = steps.compare_variants(window_log, labels, ctx, params.comparison)

    # 2. report and decide
    drifted = steps.check_drift(
        ctx,
        settings,
        profile,
        reference_sample,
        current,
        labelled,
        labels,
        since,
        until,
        params.policy.drift_share,
        params.engine,
        params.ray_address,
    )
    result = drifted.result
    retrains = [datetime.fromisoformat(r) for r in state.get("retrains", [])]
    decision = decide(
        samples=len(current),
        drift_share=result.drift_share,
        live_primary=live,
        champion_primary=ctx.test_primary,
        labelled=len(drifted.labelled),
        retrains=retrains,
        now=until,
        policy=params.policy,
    )
    report_uri = steps.publish_report(
        client, settings, ctx, result, decision, len(current), live, since, until, compared
    )
    outcome = MonitorResult(
        samples=len(current),
        drift_share=result.drift_share,
        drifted_columns=result.drifted_columns,
        live_primary=live,
        retrain=decision.retrain and params.allow_retrain,
        reasons=decision.reasons,
        report_uri=report_uri,
        variants=[report.line() for report in compared],
        verdicts={report.variant: report.comparison.verdict for report in compared},
        drift_nodes=drifted.nodes,
    )
    retrain: TrainParams | None = None
    if outcome.retrain:
        state = {**state, "retrains": [*state.get("retrains", []), until.isoformat()]}
        reference = steps.load_reference(ctx, settings)
        fresh = steps.fresh_training_data(reference, drifted.labelled, ctx, settings)
        retrain = retrain_params(ctx, fresh, params.retrain_trials, specs.find(ctx.name, settings))

    # 3. events: with retrain_via="event" the one that caused the retrain carries its parameters, and the
    # retrain-on-drift deployment (prefect.yaml) runs training; otherwise training runs here, as a subflow
    asked = retrain.model_dump(mode="json") if retrain and params.retrain_via == "event" else None
    if decision.drift_detected:
        steps.emit(
            events.DRIFT_DETECTED,
            ctx,
            asked,
            drift_share=result.drift_share,
            drifted_columns=result.drifted_columns,
            report=report_uri,
        )
    if decision.performance_dropped:  # carries the request only when no drift event did: one retraining run
        carried = None if decision.drift_detected else asked
        steps.emit(events.PERFORMANCE_DROPPED, ctx, carried, live_primary=live, champion_primary=ctx.test_primary)
    if retrain is not None and params.retrain_via == "subflow":
        steps.emit(events.RETRAIN_TRIGGERED, ctx, reasons=decision.reasons)
        trained = train(retrain)
        outcome = outcome.model_copy(update={"new_version": trained.model_version, "promoted": trained.promoted})
    steps.write_state(settings, name, {**state, "last_until": until.isoformat()})
    return outcome


def retrain_params(ctx: steps.Champion, data_uri: str, n_trials: int, declared: TrainParams | None) -> TrainParams:
    """Training on the fresh data: the model's declared spec (families, plugins, gate, folds), with what the
    champion's contract says the data is; without a spec, the framework's defaults."""
    contract = ctx.contract
    same_data = {
        "data_uri": data_uri,
        "model_name": ctx.name,
        "dataset_name": contract.data.dataset,
        "target": contract.target,
        "task_type": contract.task_type,
        "id_columns": contract.id_columns,
        "timestamp_column": contract.timestamp_column,
        "positive_class": contract.positive_class,
        "features": contract.features,
        "n_trials": n_trials,
    }
    spec = declared.model_dump(exclude_unset=True) if declared else {"plugins": contract.plugins}
    return TrainParams.model_validate({**spec, **same_data})


def summary(outcome: MonitorResult) -> str:
    """What the shell prints: the window's verdicts, the live metric, and why it retrains or keeps."""
    drifted = f" ({', '.join(outcome.drifted_columns)})" if outcome.drifted_columns else ""
    live = "no labels joined" if outcome.live_primary is None else f"{outcome.live_primary:.4f}"
    lines = [
        f"{outcome.samples} predictions, drift share {outcome.drift_share}{drifted}, live primary {live}",
        *outcome.variants,
        f"retrain: {outcome.retrain}; reasons: {'; '.join(outcome.reasons) or 'none'}",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    parsed = cli.parse(MonitorParams, None, __doc__)
    with shell_run():
        outcome = monitor(parsed)
    print(summary(outcome))
    if outcome.new_version:
        print(f"retrained v{outcome.new_version}: {'promoted' if outcome.promoted else 'kept the champion'}")
