"""The monitoring flow on a real Prefect engine and MLflow store, reading a prediction log the test writes
itself (as the serving app would); drift verdicts from Evidently (small references) or the kept profile."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import httpx
import pandas as pd
import pytest

from flows.monitor import MonitorParams, monitor
from flows.train import TrainParams, train
from tasks.demo import TARGET, TIMESTAMP_COLUMN, generate
from tasks.monitoring import drift
from tasks.monitoring.policy import MonitorPolicy
from tasks.runtime.loaded import load_version
from tasks.steps import monitor as monitor_steps
from tasks.store import prediction_log, registry

pytestmark = pytest.mark.integration
NOW = datetime.now(UTC)


@pytest.fixture
def champion(prefect_server, settings, client):
    result = train(TrainParams(demo_rows=800, n_trials=3, cv_folds=2))
    assert result.promoted
    return result


def serve_traffic(settings, n: int, drift: float, seed: int, at: datetime) -> pd.DataFrame:
    """Score demo rows with the champion and log them the way the serving app does; return the true labels."""
    frame = generate(n_rows=n, seed=seed, drift=drift)
    version = str(registry.current_champion(registry.connect(settings), settings.model_name).version)
    model = load_version(settings, settings.model_name, version, "champion")
    records = json.loads(frame.drop(columns=[TARGET, TIMESTAMP_COLUMN]).to_json(orient="records"))
    chunks = []
    for i in range(0, n, 10):  # ten records a request
        columns = model.validator.validate(records[i : i + 10])
        scored = model.score(model.validator.frame(columns))
        chunks.append(
            model.log_columns(columns, scored, request_id=f"req-{seed}-{i}", variant="champion", logged_at=at)
        )
    prediction_log.write(prediction_log.table_from_chunks(chunks), settings, writer="test")
    return frame[["customer_id", TARGET]]


def model_events(api_url: str, model_name: str) -> set[str]:
    body = {"filter": {"event": {"prefix": ["tabloop."]}}, "limit": 50}
    events = httpx.post(f"{api_url}/events/filter", json=body).json()["events"]
    return {e["event"] for e in events if e["resource"]["prefect.resource.id"] == f"tabloop.model.{model_name}"}


def window(**policy) -> MonitorParams:
    return MonitorParams(
        since=NOW - timedelta(hours=1),
        until=NOW + timedelta(minutes=1),
        retrain_trials=3,
        policy=MonitorPolicy(min_samples=200, **policy),
    )


def test_no_drift_gives_no_retrain(champion, settings, client):
    serve_traffic(settings, 600, drift=0.0, seed=101, at=NOW)
    result = monitor(window())
    assert result.samples == 600 and not result.retrain
    assert result.drift_share < 0.3 and "nothing crossed a threshold" in result.reasons[-1]
    assert result.report_uri.endswith("drift.html")
    assert (settings.local_state_dir / result.report_uri.split(str(settings.local_state_dir))[1].lstrip("/")).exists()
    runs = client.search_runs(
        [client.get_experiment_by_name(settings.experiment_name).experiment_id], "tags.monitoring = 'true'"
    )
    assert len(runs) == 1 and runs[0].data.tags["decision"] == "keep"
    assert [v.version for v in client.search_model_versions(f"name = '{settings.model_name}'")] == [1]


def test_drift_runs_the_training_subflow_and_emits_events(champion, settings, client, prefect_server):
    labels = serve_traffic(settings, 600, drift=1.0, seed=102, at=NOW)
    labels_path = settings.local_state_dir / "labels.csv"
    labels.to_csv(labels_path, index=False)
    params = window(cooldown_hours=0).model_copy(update={"labels_uri": str(labels_path), "label_key": "customer_id"})
    result = monitor(params)
    assert result.retrain and result.drift_share >= 0.3 and result.drifted_columns
    assert result.new_version == "2"
    assert "gate.status" in client.get_model_version(settings.model_name, "2").tags
    retrain_rows = pd.read_parquet(next((settings.local_state_dir / "monitoring" / "retrain").glob("*.parquet")))
    assert len(retrain_rows) == 800 + 600, "the reference plus the recent labelled rows"
    expected = {"tabloop.drift.detected", "tabloop.retrain.triggered"}
    names: set[str] = set()
    deadline = time.time() + 30
    while not (expected <= names and names & {"tabloop.model.promoted", "tabloop.model.rejected"}):
        assert time.time() < deadline, f"events seen: {names}"
        time.sleep(1)  # events reach the server asynchronously
        names = model_events(prefect_server, settings.model_name)

    # a second drifted window within the cooldown: the reason is the cooldown, no new version
    serve_traffic(settings, 400, drift=1.0, seed=103, at=NOW)
    again = monitor(
        MonitorParams(
            since=NOW - timedelta(hours=1),
            until=NOW + timedelta(minutes=2),
            policy=MonitorPolicy(min_samples=200, cooldown_hours=24),
        )
    )
    assert not again.retrain and "cooldown" in again.reasons[-1]


def test_retrain_via_event_hands_training_to_the_deployment(champion, settings, client, prefect_server):
    labels = serve_traffic(settings, 600, drift=1.0, seed=107, at=NOW)
    labels_path = settings.local_state_dir / "labels.csv"
    labels.iloc[::2].to_csv(labels_path, index=False)
    update = {"retrain_via": "event", "labels_uri": str(labels_path), "label_key": "customer_id"}
    params = window(cooldown_hours=0).model_copy(update=update)
    started = datetime.now(UTC)  # the session's server also holds the drift events of earlier tests
    result = monitor(params)
    assert result.retrain and result.new_version is None, "no subflow: the deployment trains"
    assert [v.version for v in client.search_model_versions(f"name = '{settings.model_name}'")] == [1]

    body = {
        "filter": {"event": {"name": ["tabloop.drift.detected"]}, "occurred": {"since": started.isoformat()}},
        "limit": 10,
    }
    deadline = time.time() + 30
    while not (found := httpx.post(f"{prefect_server}/events/filter", json=body).json()["events"]):
        assert time.time() < deadline, "no drift event reached the server"
        time.sleep(1)
    (event,) = [e for e in found if e["resource"]["prefect.resource.id"] == f"tabloop.model.{settings.model_name}"]
    assert event["resource"]["tabloop.retrain"] == "requested"  # what the retrain-on-drift trigger matches
    asked = TrainParams.model_validate(event["payload"]["retrain_params"])  # what the deployment will receive
    assert asked.n_trials == 3 and asked.target == TARGET
    assert pd.read_parquet(asked.data_uri).shape[0] == 800 + 300, "the reference plus the labelled half"


def test_drift_without_labels_keeps_the_champion_and_asks_for_labels(champion, settings, client):
    """A retrain adds the window's labelled rows to the champion's training data: with none, it would learn the
    same data again, so the drift is reported and nothing is trained."""
    serve_traffic(settings, 600, drift=1.0, seed=109, at=NOW)
    result = monitor(window(cooldown_hours=0))
    assert result.drift_share >= 0.3 and result.drifted_columns and not result.retrain
    assert "no labelled predictions in the window" in result.reasons[-1]
    assert result.new_version is None
    assert [v.version for v in client.search_model_versions(f"name = '{settings.model_name}'")] == [1]


def test_late_labels_give_live_metrics(champion, settings):
    labels = serve_traffic(settings, 500, drift=0.0, seed=104, at=NOW)
    path = settings.local_state_dir / "labels.parquet"
    labels.to_parquet(path, index=False)
    result = monitor(
        window(max_performance_drop=1.0).model_copy(update={"labels_uri": str(path), "label_key": "customer_id"})
    )
    assert result.live_primary is not None and 0.6 < result.live_primary <= 1.0
    assert any(r.startswith("live primary") for r in result.reasons)


def test_too_few_samples_and_an_empty_log_skip_with_a_reason(champion, settings):
    empty = monitor(window())
    assert not empty.retrain and empty.samples == 0 and "0 predictions" in empty.reasons[0]
    serve_traffic(settings, 50, drift=1.0, seed=105, at=NOW)
    few = monitor(window())
    assert not few.retrain and "50 predictions in the window < min_samples 200" in few.reasons[0]

    assert monitor_steps.read_state.fn(settings, settings.model_name)["last_until"] is None, (
        "a skipped window is read again next time"
    )


def test_missing_reference_is_a_clear_error(champion, settings):
    serve_traffic(settings, 300, drift=0.0, seed=106, at=NOW)
    for snapshot in (settings.local_state_dir / "datasets").rglob("*.parquet"):
        snapshot.unlink()
    with pytest.raises(FileNotFoundError, match=r"reference data for .* is missing"):
        monitor(window())


def test_the_reference_is_profiled_once_and_the_verdicts_are_evidentlys_on_every_row(prefect_server, settings):
    """Above 1,000 reference rows the verdicts come from the kept profile, equal to a full-data Evidently report;
    later runs read the profile, so they no longer need the training snapshot unless they retrain."""
    assert train(TrainParams(demo_rows=3000, n_trials=2, cv_folds=2)).promoted
    serve_traffic(settings, 2500, drift=0.6, seed=108, at=NOW)
    watch_only = window().model_copy(update={"allow_retrain": False})
    first = monitor(watch_only)
    ctx = monitor_steps.champion.fn(registry.connect(settings), settings.model_name)
    kept = settings.local_state_dir / "monitoring" / settings.model_name / "reference" / f"v{ctx.version}"
    assert (kept / "profile.json").exists() and (kept / "sample.parquet").exists()

    reference = monitor_steps.load_reference.fn(ctx, settings)
    since, until = watch_only.since, watch_only.until
    current = prediction_log.served(monitor_steps.load_window.fn(ctx, settings, since, until))
    full = drift.from_snapshot(
        drift.evidently_report(reference, current, ctx.contract.spec, 0.3), ctx.contract.spec.columns, 0.3, 0
    )
    assert first.drifted_columns == full.drifted_columns and first.drifted_columns
    assert first.drift_share == pytest.approx(full.drift_share)

    for snapshot in (settings.local_state_dir / "datasets").rglob("*.parquet"):
        snapshot.unlink()
    again = monitor(watch_only)
    assert again.drifted_columns == first.drifted_columns and again.drift_share == first.drift_share
