"""Online features at serving: a model trained on a point-in-time training set (real Feast), materialized to
the SQLite online store, served on a real Ray Serve app; requests carry the customer id and the request-time
columns only, and the replicas look the rest up."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import numpy as np
import pytest

from tasks.demo import ID_COLUMN, TARGET, TIMESTAMP_COLUMN
from tasks.store import features, prediction_log
from tests.feature_data import REFS, labelled_with_activity, train_params
from tests.local_ray import local_serve, wait_ready

pytestmark = pytest.mark.integration
MODEL = "churn-features"


@pytest.fixture(scope="module")
def served(prefect_server, tmp_path_factory) -> Iterator[dict]:
    from ray import serve

    from flows.train import train
    from serving.app import build_app
    from serving.ray_env import ray_serve_env
    from tasks.settings import get_settings

    root = tmp_path_factory.mktemp("online")
    env = {
        "TABLOOP_STORAGE_URL": str(root / "storage"),
        "TABLOOP_MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
        "TABLOOP_MODEL_NAME": MODEL,
        "TABLOOP_EXPERIMENT_NAME": MODEL,
    }
    with pytest.MonkeyPatch.context() as patch:
        for key, value in ray_serve_env(env).items():
            patch.setenv(key, value)
        settings = get_settings()
        labelled, _ = labelled_with_activity(settings, root)
        trained = train(train_params(root, model_name=MODEL))
        assert trained.promoted
        store = features.apply(settings)
        features.materialize(
            store,
            ["customer_activity"],
            until=datetime(2026, 12, 1, tzinfo=UTC),
            since=datetime(2025, 1, 1, tzinfo=UTC),
        )

        request_time = labelled.drop(columns=[TARGET, TIMESTAMP_COLUMN])  # what a client knows at request time
        with local_serve(env) as url:
            args = {"poll_interval_s": 0.5, "log_flush_s": 0.5, "models": [MODEL]}
            serve.run(build_app(args), name="refuse", route_prefix="/")
            serve.run(build_app({**args, "missing_features": "impute"}), name="impute", route_prefix="/impute")
            wait_ready(url, f"{url}/impute")
            yield {
                "url": url,
                "settings": settings,
                "store": store,
                "version": trained.model_version,
                "records": json.loads(request_time.head(40).to_json(orient="records")),
            }


def test_requests_with_only_the_id_are_answered_as_the_model_answers_the_assembled_records(served):
    from tasks.runtime.loaded import load_version

    records = served["records"][:25]
    assert not set(features.feature_columns(REFS)) & set(records[0]), "the requests carry no feature values"
    response = httpx.post(f"{served['url']}/predict", json=records, headers={"x-request-id": "online-1"}, timeout=30)
    assert response.status_code == 200, response.text
    answers = response.json()["predictions"]

    online = features.online_features(served["store"], REFS, [{ID_COLUMN: r[ID_COLUMN]} for r in records])
    assembled = [{**r, **{name: online[name][i] for name in online}} for i, r in enumerate(records)]
    model = load_version(served["settings"], MODEL, served["version"], "champion")
    own = model.predict(model.validator.frame(model.validator.validate(assembled)))
    assert [a["prediction"] for a in answers] == [o["prediction"] for o in own]
    np.testing.assert_allclose([a["probabilities"]["1"] for a in answers], [o["probabilities"]["1"] for o in own])

    deadline = time.time() + 30
    while True:
        log = prediction_log.read(served["settings"], model=MODEL)
        logged = log[log["request_id"] == "online-1"] if len(log) else log
        if len(logged) == len(records) or time.time() > deadline:
            break
        time.sleep(0.5)
    served_values = list(logged.sort_values("record_index")["tickets_30d"])
    assert served_values == online["tickets_30d"], "the log holds the values the model saw"


def test_an_unknown_entity_and_a_missing_id_get_a_422_that_says_so_or_the_documented_fallback(served):
    known = served["records"][0]
    unknown = {**known, ID_COLUMN: "C9999-999999"}
    refused = httpx.post(f"{served['url']}/predict", json=[known, unknown])
    assert refused.status_code == 422, refused.text
    (problem,) = refused.json()["problems"]
    assert problem["record"] == 1 and problem["field"] == ID_COLUMN
    assert "no online features for customer_id='C9999-999999'" in problem["problem"]

    without_id = {k: v for k, v in known.items() if k != ID_COLUMN}
    missing = httpx.post(f"{served['url']}/predict", json=without_id)
    assert missing.status_code == 422 and "needed to look up the model's features" in missing.text

    imputed = httpx.post(f"{served['url']}/impute/predict", json=[known, unknown])
    assert imputed.status_code == 200, imputed.text
    assert len(imputed.json()["predictions"]) == 2

    sent = {**unknown, "tickets_30d": 3, "usage_30d_gb": 12.5}  # values a request sends are used as sent
    assert httpx.post(f"{served['url']}/predict", json=sent).status_code == 200
