"""Operations on the real local stack, started and stopped with `deployments/stack.py` like users do: moto's S3
server, a Prefect server, an MLflow tracking server with its artifacts in that S3, a Ray head serving the model
API, and a process worker. Deployed with `prefect deploy --all` and the automations, then driven over HTTP.
Every test runs on the stack with Prefect, MLflow and Optuna in the machine's PostgreSQL (databases made for
the test and dropped after it); the SQLite stack (no TABLOOP_DATABASE_URL) keeps its own test of the same path.

Nothing is mocked. The only stand-in is the alert webhook: a small HTTP receiver in this test plays Slack."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.webhook import WebhookReceiver

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SMALL = json.dumps({"demo_rows": 600, "n_trials": 2, "cv_folds": 2})
SERVICES = ("s3", "prefect", "mlflow", "ray", "worker")
POSTGRES = os.environ.get("TABLOOP_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432")
REDIS = "redis://127.0.0.1:6379/12"  # the machine's Redis; this database is the test's, flushed before and after
FEATURE_MODEL = "churn-activity"
FEATURE_REFS = ["customer_activity:tickets_30d", "customer_activity:usage_30d_gb"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Stack:
    env: dict[str, str]  # what a shell gets from `stack.py env`, plus the stack's own settings
    api: str
    serve_url: str
    s3_url: str
    state_dir: Path
    backend: str  # postgresql | sqlite
    database_prefix: str | None = None
    posted: list[dict] = field(default_factory=list)  # what the alert webhook received

    def run(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(args, cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=timeout)
        assert result.returncode == 0, f"{args}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        return result

    def stack(self, command: str) -> subprocess.CompletedProcess[str]:
        return self.run(sys.executable, "deployments/stack.py", command)

    def query(self, path: str, body: dict, patience_s: float = 150) -> list[dict]:
        """A read of the Prefect API, waiting out the stalls of Prefect's SQLite server: two of its own write
        transactions (worker heartbeat, work-queue polling) can hold each other for SQLite's 60 s busy timeout
        (PrefectHQ/prefect#23051), and requests queue behind them. Such a stall is not what these tests check."""
        deadline = time.time() + patience_s
        while True:
            try:
                response = httpx.post(f"{self.api}{path}", json=body, timeout=30)
                if response.status_code < 500:
                    return response.raise_for_status().json()
                problem = f"HTTP {response.status_code}: {response.text[:300]}"
            except httpx.TransportError as err:
                problem = repr(err)
            if time.time() > deadline:
                raise AssertionError(f"Prefect API {path} did not answer within {patience_s} s: {problem}")
            time.sleep(2)

    def deployment_id(self, name: str) -> str:
        return next(d["id"] for d in self.query("/deployments/filter", {}) if d["name"] == name)

    def runs_of(self, deployment: str) -> list[dict]:
        body = {"deployments": {"id": {"any_": [self.deployment_id(deployment)]}}, "sort": "EXPECTED_START_TIME_DESC"}
        return self.query("/flow_runs/filter", body)

    def wait_for_run(self, deployment: str, after: set[str], timeout: float = 300) -> dict:
        """The first run of `deployment` not in `after`, once it reached a final state."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            fresh = [r for r in self.runs_of(deployment) if r["id"] not in after and r["state_type"] != "SCHEDULED"]
            if fresh and fresh[-1]["state_type"] in {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}:
                return fresh[-1]
            time.sleep(2)
        raise AssertionError(f"no finished run of {deployment} within {timeout} s; worker log:\n{self.worker_log()}")

    def worker_log(self) -> str:
        return self.service_log("worker")

    def service_log(self, name: str, chars: int = 5000) -> str:
        path = self.state_dir / "logs" / f"{name}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else f"(no {path})"

    def explain(self, run: dict) -> str:
        """What a failed run says for itself (its last log lines), and the tails of the services' logs."""
        found = self.query("/logs/filter", {"logs": {"flow_run_id": {"any_": [run["id"]]}}, "sort": "TIMESTAMP_DESC"})
        lines = "\n".join(entry["message"][:1000] for entry in reversed(found[:25]))
        services = "\n".join(f"--- {name}.log\n{self.service_log(name, 2000)}" for name in ("mlflow", "worker"))
        return f"{run['state']}\n--- the run's log\n{lines}\n{services}"

    def s3(self):
        from deployments.stack import bucket_filesystem

        return bucket_filesystem(self.s3_url, self.env)

    def s3_keys(self, prefix: str) -> list[str]:
        return self.s3().find(prefix)

    def mlflow(self):
        from mlflow.tracking import MlflowClient

        uri = self.env["TABLOOP_MLFLOW_TRACKING_URI"]
        return MlflowClient(uri, uri)


def declared_models(folder: Path) -> Path:
    """The project's churn model and a small demo model with features from the store (served over Redis)."""
    import yaml

    folder.mkdir(parents=True)
    (folder / "churn.yaml").write_text((ROOT / "models" / "churn.yaml").read_text())
    spec = {"features": FEATURE_REFS, "demo_rows": 600, "n_trials": 2, "cv_folds": 2, "families": ["linear"]}
    (folder / f"{FEATURE_MODEL}.yaml").write_text(yaml.safe_dump(spec))
    return folder


def flush_redis() -> None:
    import redis

    redis.Redis.from_url(REDIS).flushdb()


@pytest.fixture(scope="module", params=["postgresql"])
def stack(request, tmp_path_factory) -> Iterator[Stack]:
    from tasks.store import databases

    receiver = WebhookReceiver()
    state = tmp_path_factory.mktemp("stack")
    ports = {
        name: free_port()
        for name in ("S3", "PREFECT", "MLFLOW", "SERVE", "RAY", "RAY_DASHBOARD", "RAY_AGENT", "RAY_CLIENT")
    }
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("TABLOOP_", "PREFECT_API_URL"))},
        "TABLOOP_STACK_STATE_DIR": str(state),
        "TABLOOP_MODELS_DIR": str(declared_models(state / "models")),
        "TABLOOP_STACK_ONLINE_STORE_URL": REDIS,
        **{f"TABLOOP_STACK_{name}_PORT": str(port) for name, port in ports.items()},
        "TABLOOP_ALERT_WEBHOOK_URL": receiver.url,
        "TABLOOP_PROJECT_DIR": str(ROOT),
    }
    prefix = None
    if request.param == "postgresql":
        prefix = f"test_{uuid.uuid4().hex[:8]}"
        env.update(TABLOOP_DATABASE_URL=POSTGRES, TABLOOP_STACK_DATABASE_PREFIX=prefix)
    printed = subprocess.run(
        [sys.executable, "deployments/stack.py", "env"], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    ).stdout
    env.update(re.findall(r"^export (\w+)=(.*)$", printed, re.MULTILINE))
    urls = env["PREFECT_API_URL"], env["TABLOOP_SERVING_URL"], env["TABLOOP_S3_ENDPOINT_URL"]
    handle = Stack(env, *urls, state, request.param, prefix, receiver.received)
    flush_redis()
    try:
        handle.stack("up")
        yield handle
    finally:
        receiver.shutdown()
        stopped = handle.stack("down").stdout
        gone = [name for name in SERVICES if name not in stopped]
        assert not gone, f"{stopped}\n" + "\n".join(f"--- {n}.log\n{handle.service_log(n, 3000)}" for n in gone)
        assert "nothing was running" in handle.stack("down").stdout  # stopping a stopped stack is harmless
        assert not list(state.glob("*.pid"))
        flush_redis()
        if prefix:
            databases.drop_databases(POSTGRES, [f"{prefix}_{store}" for store in ("prefect", "mlflow", "optuna")])


def test_starting_twice_is_harmless(stack):
    again = stack.stack("up").stdout
    assert all(f"{name:8} already running" in again for name in SERVICES), again
    status = stack.stack("status").stdout
    assert all(f"{name:8} running" in status for name in SERVICES), status
    assert httpx.get(f"{stack.serve_url}/health").json() == {"status": "ok"}


def rows(stack: Stack, store: str, query: str) -> list[tuple]:
    import psycopg2

    with psycopg2.connect(f"{POSTGRES}/{stack.database_prefix}_{store}") as connection, connection.cursor() as cursor:
        cursor.execute(query)
        return cursor.fetchall()


@pytest.mark.parametrize("stack", ["postgresql", "sqlite"], indirect=True)
def test_training_deployment_promotes_then_the_smoke_test_passes_on_the_live_api(stack):
    before = {r["id"] for r in stack.runs_of("smoke-test-on-promotion")}
    stack.run(str(BIN / "prefect"), "deployment", "run", "train/train-weekly", "--param", f"params={SMALL}")
    trained = stack.wait_for_run("train-weekly", after=set())
    assert trained["state_type"] == "COMPLETED", stack.explain(trained)
    scheduled = [r for r in stack.runs_of("train-weekly") if r["state_type"] == "SCHEDULED"]
    assert scheduled, "the weekly cron is scheduled"

    # the promotion event ran the smoke test through the automation, against the Ray Serve app
    smoke = stack.wait_for_run("smoke-test-on-promotion", after=before)
    assert smoke["state_type"] == "COMPLETED", stack.explain(smoke)
    champion = stack.mlflow().get_model_version_by_alias("churn", "champion")
    assert httpx.get(f"{stack.serve_url}/metadata").json()["model_version"] == str(champion.version)

    # everything that is not a database lives in the bucket: model artifacts, data snapshots, prediction logs
    assert any(k.endswith("MLmodel") for k in stack.s3_keys("tabloop/mlartifacts"))
    assert any("/datasets/churn-demo/" in k and k.endswith(".parquet") for k in stack.s3_keys("tabloop/storage"))
    deadline = time.time() + 30
    while not stack.s3_keys("tabloop/storage/predictions"):  # the smoke test's requests, flushed every 2 s
        assert time.time() < deadline, "no prediction log in S3"
        time.sleep(1)

    if stack.backend == "postgresql":  # each store really is in its own PostgreSQL database
        assert ("churn",) in rows(stack, "mlflow", "SELECT name FROM registered_models")
        assert rows(stack, "prefect", "SELECT count(*) FROM flow_run WHERE name IS NOT NULL")[0][0] >= 2
        (study,) = rows(stack, "optuna", "SELECT study_name FROM studies")
        assert study[0].startswith("churn-")
    else:
        assert (stack.state_dir / "mlflow.db").exists() and (stack.state_dir / "prefect" / "prefect.db").exists()


def test_new_data_event_runs_the_retraining_deployment(stack, tmp_path):
    from tasks.demo import generate

    versions = len(stack.mlflow().search_model_versions("name = 'churn'"))
    generate(n_rows=600, seed=77).to_csv(tmp_path / "fresh.csv", index=False)
    new_data = ["flows/new_data.py", str(tmp_path / "fresh.csv"), "--dataset", "churn-upload", "--target", "churned"]
    stack.run(sys.executable, *new_data, "--model", "churn")
    retrained = stack.wait_for_run("retrain-on-new-data", after=set())
    assert retrained["state_type"] == "COMPLETED", stack.explain(retrained)
    assert retrained["parameters"]["params"]["data_uri"] == "s3://tabloop/storage/inbox/churn-upload/fresh.csv"
    assert len(stack.mlflow().search_model_versions("name = 'churn'")) == versions + 1


def test_drift_event_runs_the_retrain_on_drift_deployment(stack, tmp_path):
    """The event monitoring emits with retrain_via="event" (tests/integration/test_monitor_flow.py checks that it
    does): its resource label matches the trigger, and its payload becomes the training run's parameters."""
    from tasks.demo import generate

    versions = len(stack.mlflow().search_model_versions("name = 'churn'"))
    with stack.s3().open("tabloop/storage/monitoring/retrain/drifted.csv", "w") as out:
        generate(n_rows=600, seed=78, drift=1.0).to_csv(out, index=False)
    request = {
        "data_uri": "s3://tabloop/storage/monitoring/retrain/drifted.csv",
        "model_name": "churn",
        "target": "churned",
        "n_trials": 2,
        "cv_folds": 2,
    }
    code = (
        "from prefect import flow\nfrom tasks.ops import events\n"
        "@flow(name='emit-drift')\ndef emit():\n"
        "    events.model_event(events.DRIFT_DETECTED, 'churn', '1', labels={events.RETRAIN_LABEL: 'requested'}, "
        f"drift_share=0.9, retrain_params={request!r})\nemit()\n"
    )
    stack.run(sys.executable, "-c", code)
    retrained = stack.wait_for_run("retrain-on-drift", after=set())
    assert retrained["state_type"] == "COMPLETED", stack.explain(retrained)
    assert retrained["parameters"]["params"]["data_uri"] == request["data_uri"]
    assert len(stack.mlflow().search_model_versions("name = 'churn'")) == versions + 1


def test_a_failed_run_raises_an_alert_and_leaves_the_registry_alone(stack):
    client = stack.mlflow()
    versions = len(client.search_model_versions("name = 'churn'"))
    before = {r["id"] for r in stack.runs_of("alert-on-failure")}
    bad = json.dumps({"data_uri": "s3://tabloop/no-such-file.csv", "target": "churned", "n_trials": 2})
    stack.run(str(BIN / "prefect"), "deployment", "run", "train/train-weekly", "--param", f"params={bad}")
    alert = stack.wait_for_run("alert-on-failure", after=before)
    assert alert["state_type"] == "COMPLETED", f"{alert['state']}\n{stack.worker_log()}"

    (stored,) = [k for k in stack.s3_keys("tabloop/storage/alerts") if k.endswith(".json")]
    assert alert["parameters"]["flow_run"].removeprefix("prefect.flow-run.") in stored
    (posted,) = stack.posted
    assert "train-weekly" in posted["text"] and "no-such-file.csv: file not found" in posted["text"]
    assert posted["alert"]["state"] == "Failed"
    assert len(client.search_model_versions("name = 'churn'")) == versions


def test_features_from_training_to_redis_to_an_id_only_request(stack, tmp_path, monkeypatch):
    """The demo with features on the stack: trained from a point-in-time training set by the deployment, new
    activity announced by flows/new_data.py and materialized to Redis by the triggered deployment, then requests
    that carry the customer id and request-time columns only, answered as the model answers the assembled
    records, with the looked-up values in the prediction log in S3."""
    import mlflow
    import pandas as pd

    from tasks.demo import ID_COLUMN, TARGET, TIMESTAMP_COLUMN, generate
    from tasks.runtime.loaded import load_version
    from tasks.settings import get_settings
    from tasks.store import prediction_log, registry

    trained_before = {r["id"] for r in stack.runs_of("train-weekly")}
    spec = f"spec={FEATURE_MODEL}"
    stack.run(str(BIN / "prefect"), "deployment", "run", "train/train-weekly", "--param", spec)
    trained = stack.wait_for_run("train-weekly", after=trained_before)
    assert trained["state_type"] == "COMPLETED", stack.explain(trained)
    assert trained["parameters"].get("spec") == FEATURE_MODEL, trained["parameters"]
    champion = stack.mlflow().get_model_version_by_alias(FEATURE_MODEL, "champion")

    customers = generate(n_rows=12, seed=91)
    fresh = customers[[ID_COLUMN]].assign(
        **{
            TIMESTAMP_COLUMN: (pd.Timestamp.now(tz="UTC") - pd.Timedelta(hours=1)).isoformat(),
            "tickets_30d": range(12),
            "usage_30d_gb": [2.5 * i for i in range(12)],
        }
    )
    fresh.to_csv(tmp_path / "activity.csv", index=False)
    stack.run(
        sys.executable, "flows/new_data.py", str(tmp_path / "activity.csv"), "--feature-view", "customer_activity"
    )
    materialized = stack.wait_for_run("materialize-on-new-features", after=set())
    assert materialized["state_type"] == "COMPLETED", stack.explain(materialized)
    assert materialized["parameters"]["params"]["views"] == ["customer_activity"]

    url = f"{stack.serve_url}/models/{FEATURE_MODEL}"
    deadline = time.time() + 120
    while httpx.get(f"{url}/ready", timeout=10).status_code != 200:  # replicas follow the alias within a poll
        assert time.time() < deadline, httpx.get(f"{url}/ready").text
        time.sleep(2)
    records = json.loads(customers.drop(columns=[TARGET, TIMESTAMP_COLUMN]).to_json(orient="records"))
    response = httpx.post(f"{url}/predict", json=records, headers={"x-request-id": "stack-features"}, timeout=30)
    assert response.status_code == 200, response.text

    for key, value in stack.env.items():  # this process reads the stack's registry and bucket like a client
        if key.startswith(("TABLOOP_", "AWS_")):
            monkeypatch.setenv(key, value)
    settings = get_settings()
    previous = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", stack.s3_url)  # what connect would set, undone after the test
    registry.connect(settings)  # this process's MLflow client on the stack's server, for load_version
    try:
        model = load_version(settings, FEATURE_MODEL, str(champion.version), "champion")
    finally:
        mlflow.set_tracking_uri(previous[0])
        mlflow.set_registry_uri(previous[1])
    assert model.contract.features == FEATURE_REFS
    assembled = [
        {**r, "tickets_30d": t, "usage_30d_gb": u}
        for r, t, u in zip(records, fresh["tickets_30d"], fresh["usage_30d_gb"], strict=True)
    ]
    own = model.predict(model.validator.frame(model.validator.validate(assembled)))
    answers = response.json()["predictions"]
    assert [a["prediction"] for a in answers] == [o["prediction"] for o in own]
    assert [a["probabilities"]["1"] for a in answers] == pytest.approx([o["probabilities"]["1"] for o in own])

    deadline = time.time() + 30
    while True:
        log = prediction_log.read(settings, model=FEATURE_MODEL)
        logged = log[log["request_id"] == "stack-features"] if len(log) else log
        if len(logged) == len(records) or time.time() > deadline:
            break
        time.sleep(1)
    assert list(logged.sort_values("record_index")["usage_30d_gb"]) == list(fresh["usage_30d_gb"])
