"""Two models that are not the demo, declared once each (a spec file, flags), trained, served side by side on a
real Ray Serve app over HTTP, fuzzed against their own OpenAPI, batch-scored, monitored, and one retrained and
hot-swapped while the other is untouched."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
import yaml

from tasks.store import prediction_log, registry
from tests.local_ray import local_serve, wait_ready

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def members(n: int, seed: int) -> pd.DataFrame:
    """A renewal table: a text target ("Yes"/"No"), a name per row, a sign-up date, booleans, holes."""
    rng = np.random.default_rng(seed)
    visits = rng.poisson(5, n)
    spend = rng.gamma(2.0, 25.0, n).round(2)
    plan = rng.choice(["basic", "plus", "pro"], n, p=[0.5, 0.3, 0.2])
    active = rng.random(n) < 0.6
    logit = -2.0 + 0.25 * visits + 0.015 * spend + 1.2 * (plan == "pro") + 0.6 * active
    frame = pd.DataFrame(
        {
            "member_name": [f"Member {seed}-{i} {rng.integers(10**6)}" for i in range(n)],
            "joined": pd.Timestamp("2025-01-01") + pd.to_timedelta(rng.integers(0, 600, n), "D"),
            "visits": visits,
            "spend": spend,
            "plan": plan,
            "active": active,
            "renewed": np.where(rng.random(n) < 1 / (1 + np.exp(-logit)), "Yes", "No"),
        }
    )
    frame.loc[rng.random(n) < 0.03, "spend"] = np.nan
    return frame


def prices(n: int, seed: int, flipped: bool = False) -> pd.DataFrame:
    """Flat prices, an integer target; `flipped` turns the size effect around (the drift that retrains)."""
    rng = np.random.default_rng(seed)
    size = rng.uniform(20, 200, n).round(1)
    rooms = rng.integers(1, 6, n)
    district = rng.choice(["north", "south", "east"], n)
    slope = -2500 if flipped else 2500
    base = 700_000 if flipped else 0  # prices stay positive, as the stored schema (>= 0) requires
    price = base + slope * size + 10_000 * rooms + np.where(district == "south", 50_000, 0) + rng.normal(0, 5_000, n)
    flat_id = [f"F{seed}-{i:05d}" for i in range(n)]
    price = price.round().astype(int)
    return pd.DataFrame({"flat_id": flat_id, "size_m2": size, "rooms": rooms, "district": district, "price": price})


def feature_records(frame: pd.DataFrame, drop: list[str]) -> list[dict]:
    return json.loads(frame.drop(columns=drop).to_json(orient="records", date_format="iso"))


@pytest.fixture(scope="module")
def two_models(prefect_server, tmp_path_factory) -> Iterator[dict]:
    from ray import serve

    from flows.train import main
    from serving.app import build_app
    from serving.ray_env import ray_serve_env
    from tasks.settings import get_settings

    root = tmp_path_factory.mktemp("many")
    members(600, seed=1).to_csv(root / "members.csv", index=False)
    prices(500, seed=2).to_parquet(root / "prices.parquet", index=False)
    # both declared in a models folder; members trained by its name, prices from flags (its spec says the same)
    members_spec = {
        "data_uri": str(root / "members.csv"),
        "target": "renewed",
        "task_type": "binary",
        "families": ["xgboost", "lightgbm"],
        "n_trials": 4,
        "cv_folds": 2,
    }
    prices_spec = {
        "data_uri": str(root / "prices.parquet"),
        "target": "price",
        "task_type": "regression",
        "id_columns": ["flat_id"],
        "families": ["linear", "hist_gradient_boosting"],
        "n_trials": 3,
        "cv_folds": 2,
    }
    (root / "models").mkdir()
    (root / "models" / "members.yaml").write_text(yaml.safe_dump(members_spec))
    (root / "models" / "prices.yaml").write_text(yaml.safe_dump(prices_spec))
    env = {
        "TABLOOP_STORAGE_URL": str(root / "storage"),
        "TABLOOP_MLFLOW_TRACKING_URI": f"sqlite:///{root / 'm.db'}",
        "TABLOOP_MODELS_DIR": str(root / "models"),
    }
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("TABLOOP_MODEL_NAME", raising=False)
        patch.delenv("TABLOOP_EXPERIMENT_NAME", raising=False)
        for key, value in ray_serve_env(env).items():
            patch.setenv(key, value)
        first = main(["--spec", "members", "--report", str(root / "members-report.md")])
        flags = "--target price --task-type regression --id-columns flat_id --n-trials 3 --cv-folds 2"
        families = "--families linear hist_gradient_boosting"
        second = main(["--data-uri", str(root / "prices.parquet"), *flags.split(), *families.split()])
        assert first.promoted and second.promoted
        with local_serve(env) as url:
            args = {"poll_interval_s": 0.5, "log_flush_s": 0.5, "max_records": 50}  # serves every declared model
            serve.run(build_app(args), name="many", route_prefix="/")
            wait_ready(url)
            yield {"url": url, "root": root, "settings": get_settings(), "members": first, "prices": second}
            serve.delete("many")


def test_train_from_the_shell_lists_every_parameter():
    shown = subprocess.run(
        [sys.executable, "flows/train.py", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert shown.returncode == 0, shown.stderr
    for flag in ("--spec", "--data-uri", "--target", "--task-type", "--positive-class", "--families", "--gate"):
        assert flag in shown.stdout
    refused = subprocess.run(
        [sys.executable, "flows/train.py", "--data-uri", "x.csv"], cwd=ROOT, capture_output=True, text=True
    )
    assert refused.returncode == 2 and "target is required with data_uri" in refused.stderr


def test_monitor_from_the_shell_takes_flags_and_help_runs_nothing(tmp_path):
    env = {**os.environ, "TABLOOP_STORAGE_URL": str(tmp_path / "nothing-here")}
    shown = subprocess.run(
        [sys.executable, "flows/monitor.py", "--help"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert shown.returncode == 0, shown.stderr
    for flag in ("--model-name", "--labels-uri", "--no-allow-retrain", "--retrain-via"):
        assert flag in shown.stdout
    assert not (tmp_path / "nothing-here").exists(), "--help ran no monitor"
    refused = subprocess.run(
        [sys.executable, "flows/monitor.py", "--lookback-hours", "a day"], cwd=ROOT, capture_output=True, text=True
    )
    assert refused.returncode == 2 and "--lookback-hours" in refused.stderr


def test_each_model_was_trained_under_its_own_name_with_its_own_contract(two_models):
    client = registry.connect(two_models["settings"])
    members_contract = registry.load_contract("members", "1")
    assert (members_contract.classes, members_contract.positive_class) == (["No", "Yes"], "Yes")
    assert members_contract.family in {"xgboost", "lightgbm"}
    assert "member_name" in members_contract.excluded and "joined" in members_contract.excluded
    assert set(members_contract.spec.columns) == {"visits", "spend", "plan", "active"}
    report = (two_models["root"] / "members-report.md").read_text()  # what the CI template posts on a pull request
    assert report.startswith("## members v1: promoted to `@champion`") and "positive class `'Yes'`" in report
    prices_contract = registry.load_contract("prices", "1")
    assert prices_contract.task_type == "regression" and prices_contract.data.dataset == "prices"
    for name in ("members", "prices"):
        assert str(registry.current_champion(client, name).version) == "1"
        assert client.get_experiment_by_name(name) is not None  # runs kept apart too


def test_each_model_answers_under_its_own_route_with_its_own_validation(two_models):
    import mlflow

    url = two_models["url"]
    batch = members(20, seed=9)
    records = feature_records(batch, ["renewed"])
    body = httpx.post(f"{url}/models/members/predict", json=records).json()
    assert (body["model_name"], body["model_version"]) == ("members", "1")
    assert {p["prediction"] for p in body["predictions"]} <= {"Yes", "No"}
    model = mlflow.sklearn.load_model("models:/members/1")
    from tasks.model.features import model_input

    contract = registry.load_contract("members", "1")
    expected = model.predict_proba(model_input(batch, contract.spec))[:, list(model.classes_).index("Yes")]
    served_yes = [p["probabilities"]["Yes"] for p in body["predictions"]]
    assert np.allclose(served_yes, expected, atol=1e-6), "the served P(Yes) is the positive class's probability"
    assert httpx.post(f"{url}/predict", json=records[:2]).json()["model_name"] == "members"  # the first one

    flat = feature_records(prices(5, seed=3), ["price"])
    answer = httpx.post(f"{url}/models/prices/predict", json=flat).json()
    assert answer["model_name"] == "prices" and all(isinstance(p["prediction"], float) for p in answer["predictions"])
    wrong = httpx.post(f"{url}/models/prices/predict", json=records[:1])
    assert wrong.status_code == 422 and {p["field"] for p in wrong.json()["problems"]} >= {"size_m2", "plan"}
    missing = httpx.post(f"{url}/models/nothing/predict", json=flat)
    assert missing.status_code == 404 and "members" in missing.json()["error"]
    meta = httpx.get(f"{url}/models/members/metadata").json()
    assert meta["positive_class"] == "Yes" and meta["input_schema"]["member_name"]["required"] is False


def test_the_openapi_document_describes_each_models_own_request(two_models):
    document = httpx.get(f"{two_models['url']}/openapi.json").json()
    paths = document["paths"]
    assert {"/predict", "/models/members/predict", "/models/prices/predict"} <= set(paths)
    record = paths["/models/members/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    record = record["oneOf"][0]
    assert set(record["required"]) == {"visits", "spend", "plan", "active"} and not record["additionalProperties"]
    assert record["properties"]["plan"]["enum"] == ["basic", "plus", "pro"]
    assert record["properties"]["spend"]["anyOf"][1] == {"type": "null"}  # it had holes
    assert {"400", "401", "413", "422"} <= set(paths["/models/prices/predict"]["post"]["responses"])
    assert "churned" not in json.dumps(document) and "tenure_months" not in json.dumps(document)


def test_schemathesis_finds_no_server_error_and_no_answer_outside_the_schema(two_models):
    """Every check schemathesis has, on every documented operation of the served non-demo models."""
    command = [
        str(Path(sys.executable).parent / "schemathesis"),
        "--config-file",
        str(ROOT / "tests" / "schemathesis.toml"),
        "run",
        f"{two_models['url']}/openapi.json",
        "--checks",
        "all",
        "--max-examples",
        "25",
        "--seed",
        "7",
        "--request-timeout",
        "30",
        "--workers",
        "1",
    ]
    # in the test's folder: schemathesis keeps a cache of past crashes (.schemathesis/) where it runs
    options = {"capture_output": True, "text": True, "timeout": 900, "cwd": two_models["root"]}
    result = subprocess.run(command, env={**os.environ, "NO_COLOR": "1"}, **options)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]


def test_a_boosting_champion_is_batch_scored_like_any_other(two_models):
    from flows.batch_predict import BatchParams, batch_predict

    root = two_models["root"]
    members(300, seed=4).drop(columns=["renewed"]).to_csv(root / "to-score.csv", index=False)
    result = batch_predict(BatchParams(input_uri=str(root / "to-score.csv"), model_name="members", chunk_rows=120))
    assert (result.rows, result.model_version, result.parts) == (300, "1", 3)
    scored = pd.read_parquet(result.output_uri)
    assert {"prediction", "probability_Yes", "probability_No"} <= set(scored.columns)
    assert scored["probability_Yes"].between(0, 1).all()


def test_each_model_is_monitored_on_its_own_and_one_retrains_and_swaps(two_models):
    from flows.monitor import MonitorParams, monitor
    from flows.promote import promote
    from tasks.monitoring.policy import MonitorPolicy

    url, settings, root = two_models["url"], two_models["settings"], two_models["root"]
    started = datetime.now(UTC)
    shifted = prices(300, seed=5, flipped=True)
    for i in range(0, 300, 30):
        chunk = shifted.iloc[i : i + 30]
        httpx.post(f"{url}/models/prices/predict", json=feature_records(chunk, ["price"])).raise_for_status()
    for i in range(0, 200, 25):
        httpx.post(f"{url}/models/members/predict", json=feature_records(members(25, seed=i), ["renewed"]))
    time.sleep(2)  # the replicas flush their logs every 0.5 s
    logged = prediction_log.read(settings, since=started, model="prices")
    assert len(logged) == 300 and set(logged["model_name"]) == {"prices"}

    window = {"since": started, "until": datetime.now(UTC) + timedelta(minutes=1)}
    quiet = monitor(MonitorParams(model_name="members", allow_retrain=False, **window))
    assert quiet.samples == 200 and not quiet.retrain

    # late labels for the flipped prices, joined on the flat id the requests carried: the live R² collapses, so
    # the policy retrains prices, and only prices
    shifted[["flat_id", "price"]].to_parquet(root / "price-labels.parquet", index=False)
    policy = MonitorPolicy(min_samples=100, cooldown_hours=0, max_performance_drop=0.1, drift_share=0.9)
    retrained = monitor(
        MonitorParams(
            model_name="prices",
            labels_uri=str(root / "price-labels.parquet"),
            label_key="flat_id",
            policy=policy,
            retrain_trials=2,
            **window,
        )
    )
    assert retrained.retrain and retrained.new_version == "2", retrained.reasons
    if not retrained.promoted:  # the gate judges on mixed old and new rows; the swap is what is tested here
        promote(version="2", reason="test: swap in the retrained version", model_name="prices")
    deadline = time.time() + 60
    while httpx.get(f"{url}/models/prices/ready").json()["version"] != "2":
        assert time.time() < deadline, "the prices replicas never swapped to v2"
        time.sleep(0.5)
    assert httpx.get(f"{url}/models/members/ready").json()["version"] == "1"
    client = registry.connect(settings)
    assert [v.version for v in client.search_model_versions("name = 'members'")] == [1]
