"""Batch scoring on Ray Data, on a local cluster of two nodes: a head and a second node, each started with
`ray start` as its own process tree, as on two machines (they share this machine's disk, as nodes share a
bucket). The flow connects to the head like a client of a real cluster; nothing is mocked."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from tests.local_ray import free_port

pytestmark = pytest.mark.integration
BIN = Path(sys.executable).parent


def start_node(args: list[str], temp_dir: Path) -> subprocess.Popen:
    command = [str(BIN / "ray"), "start", "--block", "--disable-usage-stats", "--num-cpus", "2", *args]
    command += ["--object-store-memory", str(200 * 1024**2)]
    log = (temp_dir / f"node-{len(list(temp_dir.glob('node-*.log')))}.log").open("w")
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def stop_node(node: subprocess.Popen) -> None:
    node.send_signal(signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        node.wait(45)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(node.pid, signal.SIGKILL)  # raylets and workers it left behind


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[str]:
    import ray

    logs = tmp_path_factory.mktemp("ray-nodes")
    address = f"127.0.0.1:{free_port()}"
    head_args = ["--head", "--node-ip-address", "127.0.0.1", "--port", address.rsplit(":", 1)[1]]
    head_args += ["--include-dashboard", "false", "--ray-client-server-port", str(free_port())]
    nodes = [start_node(head_args, logs)]
    try:
        wait_for_nodes(address, 1, logs)
        nodes.append(start_node(["--address", address, "--node-ip-address", "127.0.0.1"], logs))
        wait_for_nodes(address, 2, logs)
        yield address
    finally:
        if ray.is_initialized():
            ray.shutdown()
        for node in reversed(nodes):
            stop_node(node)
        address_file = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"
        with contextlib.suppress(OSError):  # `ray start` left the address for later ray.init() calls to join
            if address_file.read_text().strip().endswith(address.rsplit(":", 1)[1]):
                address_file.unlink()


def wait_for_nodes(address: str, count: int, logs: Path, timeout_s: float = 120) -> None:
    deadline = time.time() + timeout_s
    while True:
        status = subprocess.run(
            [str(BIN / "ray"), "status", "--address", address],
            capture_output=True,
            text=True,
        )
        alive = status.stdout.split("Pending:")[0].count("node_") if status.returncode == 0 else 0
        if alive >= count:
            return
        if time.time() > deadline:
            node_logs = "\n".join(p.read_text()[-2000:] for p in sorted(logs.glob("*.log")))
            raise AssertionError(
                f"{count} Ray nodes not up in {timeout_s} s:\n{status.stdout}{status.stderr}{node_logs}"
            )
        time.sleep(1)


@pytest.fixture
def inbox(tmp_path) -> Path:
    from tasks.demo import TARGET, generate

    folder = tmp_path / "inbox"
    folder.mkdir()
    generate(n_rows=1300, seed=60).drop(columns=[TARGET]).to_parquet(folder / "a.parquet", index=False)
    generate(n_rows=900, seed=61).drop(columns=[TARGET]).to_parquet(folder / "b.parquet", index=False)
    generate(n_rows=700, seed=62).drop(columns=[TARGET]).to_csv(folder / "c.csv", index=False)
    return folder


def scored(folder: Path) -> pd.DataFrame:
    parts = sorted(folder.glob("part-*.parquet"))
    return pd.concat([pd.read_parquet(p) for p in parts]).sort_values("customer_id")  # ids are unique per seed


def with_gaps(frame: pd.DataFrame) -> pd.DataFrame:
    """What real CSV files hold: missing text, and a column of numbers with cells of only spaces."""
    frame = frame.copy()
    frame.loc[frame.index % 7 == 0, "payment_method"] = None
    total = frame["total_charges"].astype(object)
    total[frame.index % 5 == 0] = " "
    frame["total_charges"] = total
    return frame


def test_the_ray_engine_scores_a_prefix_on_both_nodes_as_the_local_engine_does(
    prefect_server, settings, inbox, tmp_path, cluster
):
    """Trained on a CSV with gaps, and scoring one: both engines read missing text and blank numbers as training
    did (Arrow's CSV reader alone reads empty text as "" and a blank number as text; Ray's pandas batches hold
    pd.NA), so their answers are the same."""
    from flows.batch_predict import BatchParams, batch_predict
    from flows.train import TrainParams, train
    from tasks.demo import ID_COLUMN, TARGET, generate
    from tasks.store import prediction_log

    with_gaps(generate(n_rows=600, seed=59)).to_csv(tmp_path / "customers.csv", index=False)
    with_gaps(generate(n_rows=500, seed=63).drop(columns=[TARGET])).to_csv(inbox / "d.csv", index=False)
    trained = train(
        TrainParams(
            data_uri=str(tmp_path / "customers.csv"),
            target=TARGET,
            id_columns=[ID_COLUMN],
            n_trials=2,
            cv_folds=2,
        )
    )
    local = batch_predict(BatchParams(input_uri=str(inbox), output_uri=str(tmp_path / "local"), chunk_rows=500))
    on_ray = batch_predict(
        BatchParams(
            input_uri=str(inbox),
            output_uri=str(tmp_path / "ray"),
            chunk_rows=300,
            engine="ray",
            ray_address=cluster,
            actors=2,
        )
    )

    assert (on_ray.rows, local.rows, on_ray.model_version) == (3400, 3400, trained.model_version)
    assert on_ray.nodes == 2, "both nodes scored parts"
    mine, theirs = scored(tmp_path / "ray"), scored(tmp_path / "local")
    assert len(mine) == 3400 and list(mine["customer_id"]) == list(theirs["customer_id"])
    assert mine["payment_method"].isna().sum() > 0 and mine["total_charges"].dtype == "float64"
    assert list(mine["prediction"]) == list(theirs["prediction"])
    assert mine["probability_1"].to_numpy() == pytest.approx(theirs["probability_1"].to_numpy(), abs=1e-9)
    assert set(mine["model_version"]) == {trained.model_version}

    manifest = json.loads((tmp_path / "ray" / "_manifest.json").read_text())
    assert manifest["rows"] == 3400 and manifest["engine"] == "ray"
    assert len({part["node"] for part in manifest["parts"]}) == 2
    assert sorted(p.name for p in (tmp_path / "ray").iterdir() if not p.name.startswith("part-")) == [
        "_manifest.json"
    ], "no staging folder left"
    log = prediction_log.read(settings)
    assert len(log) == 2 * 3400 and set(log["variant"]) == {"batch"}


def test_a_bad_block_on_ray_stops_the_run_and_commits_nothing(prefect_server, settings, inbox, tmp_path, cluster):
    from flows.batch_predict import BatchParams, batch_predict
    from flows.train import TrainParams, train
    from tasks.model import schemas

    train(TrainParams(demo_rows=600, n_trials=2, cv_folds=2))
    bad = pd.read_parquet(inbox / "b.parquet")
    bad.loc[450, "contract"] = "lifetime"
    bad.to_parquet(inbox / "b.parquet", index=False)
    output = tmp_path / "ray-bad"
    with pytest.raises(schemas.DataValidationError, match=r"(?s)a block of \d+ rows.*'lifetime'"):
        batch_predict(
            BatchParams(input_uri=str(inbox), output_uri=str(output), chunk_rows=300, engine="ray", ray_address=cluster)
        )
    assert not output.exists() or not any(output.rglob("*")), "nothing committed, nothing staged left"


def test_a_pool_the_local_ray_cannot_hold_is_refused_at_once(prefect_server, settings, inbox, tmp_path):
    """Without an address the run starts its own Ray, whose CPUs will not grow: a pool that leaves Ray Data's
    read tasks no CPU would wait for good, so it is refused before anything is read."""
    from flows.batch_predict import BatchParams, batch_predict
    from flows.train import TrainParams, train
    from tasks.runtime.ray_batch import PoolTooLarge

    train(TrainParams(demo_rows=600, n_trials=2, cv_folds=2))
    output = tmp_path / "too-many"
    with pytest.raises(PoolTooLarge, match=r"1000 scoring actors .* the cluster has \d+ CPUs: at most \d+ actors fit"):
        batch_predict(BatchParams(input_uri=str(inbox), output_uri=str(output), engine="ray", actors=1000))
    assert not output.exists() or not any(output.rglob("*"))


def test_the_monitor_summarises_the_window_on_ray_with_the_in_process_verdicts(
    prefect_server, settings, tmp_path, cluster
):
    """A drifted window logged by batch scoring (many parts), monitored with both engines: the same verdicts,
    samples and live metric; on Ray the driver reads no inputs, and a retrain still gets the labelled rows'
    inputs, which come back from the blocks the labels name."""
    from datetime import UTC, datetime, timedelta

    from flows.batch_predict import BatchParams, batch_predict
    from flows.monitor import MonitorParams, monitor
    from flows.train import TrainParams, train
    from tasks.demo import ID_COLUMN, TARGET, generate
    from tasks.monitoring.policy import MonitorPolicy

    assert train(TrainParams(demo_rows=3000, n_trials=2, cv_folds=2)).promoted
    inbox = tmp_path / "drifted"
    inbox.mkdir()
    served = pd.concat([generate(n_rows=900, seed=80 + i, drift=0.6) for i in range(4)], ignore_index=True)
    for i, part in enumerate(served.groupby(served.index // 900)):
        part[1].drop(columns=[TARGET]).to_parquet(inbox / f"{i}.parquet", index=False)
    batch_predict(BatchParams(input_uri=str(inbox), output_uri=str(tmp_path / "scored"), chunk_rows=300))
    labels = served.iloc[::3][[ID_COLUMN, TARGET]]
    labels.to_csv(tmp_path / "labels.csv", index=False)

    now = datetime.now(UTC)
    params = MonitorParams(
        since=now - timedelta(hours=1),
        until=now + timedelta(minutes=1),
        labels_uri=str(tmp_path / "labels.csv"),
        allow_retrain=False,
        policy=MonitorPolicy(min_samples=200, cooldown_hours=0),
        retrain_trials=2,
    )
    local = monitor(params)
    on_ray = monitor(params.model_copy(update={"engine": "ray", "ray_address": cluster}))
    assert (local.drift_nodes, on_ray.drift_nodes >= 1) == (0, True)
    assert on_ray.samples == local.samples == 3600
    assert on_ray.drifted_columns == local.drifted_columns and local.drifted_columns
    assert on_ray.drift_share == pytest.approx(local.drift_share)
    assert on_ray.live_primary == pytest.approx(local.live_primary) and local.live_primary is not None

    retrained = monitor(params.model_copy(update={"engine": "ray", "ray_address": cluster, "allow_retrain": True}))
    assert retrained.retrain and retrained.new_version
    (fresh,) = (settings.local_state_dir / "monitoring" / "retrain").glob("*.parquet")
    fresh = pd.read_parquet(fresh)
    added = fresh[fresh[ID_COLUMN].isin(labels[ID_COLUMN])].sort_values(ID_COLUMN).reset_index(drop=True)
    expected = served[served[ID_COLUMN].isin(labels[ID_COLUMN])].sort_values(ID_COLUMN).reset_index(drop=True)
    assert len(added) == len(labels) == 1200
    assert list(added[ID_COLUMN]) == list(expected[ID_COLUMN]) and list(added[TARGET]) == list(expected[TARGET])
    for column in ("contract", "monthly_charges", "tenure_months"):
        assert list(added[column]) == list(expected[column]), column
