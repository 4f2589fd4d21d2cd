"""Operations on a real Prefect server: `prefect deploy --all`, a process worker running the training
deployment, and the new-data event triggering the retraining deployment."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tasks import registry

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def prefect_api(tmp_path):
    port = free_port()
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    (tmp_path / "prefect-home").mkdir()
    server = subprocess.Popen(
        [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/api"
    deadline = time.time() + 120
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert time.time() < deadline, "prefect server did not start"
        time.sleep(1)
    yield url
    server.terminate()
    server.wait(30)


def run(args: list[str], env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{args}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def flow_runs(api: str, deployment_id: str) -> list[dict]:
    body = {"deployments": {"id": {"any_": [deployment_id]}}}
    return httpx.post(f"{api}/flow_runs/filter", json=body).json()


def test_deploy_run_through_worker_and_event_trigger(prefect_api, settings, tmp_path):
    env = {**os.environ, "PREFECT_API_URL": prefect_api, "CHURNOPS_PROJECT_DIR": str(ROOT)}
    run([sys.executable, "deployments/apply.py"], env)
    run([sys.executable, "deployments/apply.py"], env)  # applying twice is harmless
    deployments = {d["name"]: d for d in httpx.post(f"{prefect_api}/deployments/filter", json={}).json()}
    assert {"train-weekly", "retrain-on-new-data", "monitor-hourly", "batch-predict-daily"} <= set(deployments)
    assert deployments["train-weekly"]["work_pool_name"] == "churnops-process"

    small = json.dumps({"demo_rows": 600, "n_trials": 2, "cv_folds": 2})
    created = run([str(BIN / "prefect"), "deployment", "run", "train/train-weekly", "--param", f"params={small}"], env)
    run_id = re.search(r"UUID: ([0-9a-f-]{36})", created.stdout).group(1)
    run([str(BIN / "prefect"), "worker", "start", "--pool", "churnops-process", "--run-once"], env)
    first = httpx.get(f"{prefect_api}/flow_runs/{run_id}").json()
    assert first["state_type"] == "COMPLETED", first["state"]
    scheduled = [r for r in flow_runs(prefect_api, deployments["train-weekly"]["id"]) if r["id"] != run_id]
    assert scheduled and {r["state_type"] for r in scheduled} == {"SCHEDULED"}, "the weekly cron is scheduled"
    client = registry.connect(settings)  # tracking *and* registry URI: earlier tests may have set a global one
    assert len(client.search_model_versions(f"name = '{settings.model_name}'")) == 1

    from tasks.demo_data import make_churn_data

    make_churn_data(n_rows=600, seed=77).to_csv(tmp_path / "fresh.csv", index=False)
    run([sys.executable, "flows/new_data.py", str(tmp_path / "fresh.csv"), "--dataset", "churn-upload"], env)
    deadline = time.time() + 90
    while not (triggered := flow_runs(prefect_api, deployments["retrain-on-new-data"]["id"])):
        assert time.time() < deadline, "the new-data event did not trigger the retraining deployment"
        time.sleep(2)
    assert triggered[0]["parameters"]["params"]["data_uri"].endswith("inbox/churn-upload/fresh.csv")
    worker = run([str(BIN / "prefect"), "worker", "start", "--pool", "churnops-process", "--run-once"], env)
    (done,) = flow_runs(prefect_api, deployments["retrain-on-new-data"]["id"])
    assert done["state_type"] == "COMPLETED", done["state"]
    versions = client.search_model_versions(f"name = '{settings.model_name}'")
    assert len(versions) == 2, worker.stdout[-4000:] + worker.stderr[-4000:]
    assert (settings.local_state_dir / "inbox" / "churn-upload" / "fresh.csv").exists()
