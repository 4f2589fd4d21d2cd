"""The Ray Serve app on a real local Ray, called over HTTP: predictions, bad requests, token, hot swap."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import mlflow
import pytest

from tasks.demo import ID_COLUMN, TARGET, TIMESTAMP_COLUMN, generate
from tasks.model.gate import GatePolicy
from tasks.store import registry
from tests.local_ray import free_port, local_serve, wait_ready

pytestmark = pytest.mark.integration
TOKEN = "test-token-3f9a"
HEADERS = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def served(prefect_server, tmp_path_factory) -> Iterator[dict]:
    """Two registered versions (v1 @champion, v2 not), and the app serving @champion on a local Ray."""
    from ray import serve

    from flows.train import TrainParams, train
    from serving.app import build_app
    from serving.ray_env import ray_serve_env
    from tasks.settings import get_settings

    root = tmp_path_factory.mktemp("serving")
    env = {
        "TABLOOP_STORAGE_URL": str(root / "storage"),
        "TABLOOP_MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
        "TABLOOP_MODEL_NAME": "churn-serving",
        "TABLOOP_EXPERIMENT_NAME": "churn-serving",
        "TABLOOP_SERVING_TEST_TOKEN": TOKEN,
    }
    with pytest.MonkeyPatch.context() as patch:
        for key, value in ray_serve_env(env).items():
            patch.setenv(key, value)
        small = {"demo_rows": 600, "n_trials": 3, "cv_folds": 2}
        first = train(TrainParams(**small))
        second = train(TrainParams(**small, seed=5, gate=GatePolicy(margin=1.0)))
        assert first.promoted and not second.promoted
        settings = get_settings()

        client = registry.connect(settings)
        client.set_registered_model_alias(settings.model_name, "challenger", second.model_version)

        args = {
            "poll_interval_s": 0.5,
            "api_token_env": "TABLOOP_SERVING_TEST_TOKEN",
            "max_body_bytes": 50_000,
            "max_records": 100,
        }
        with local_serve(env) as url:
            serve.run(build_app(args), name="churn", route_prefix="/")
            wait_ready(url)
            yield {
                "url": url,
                "settings": settings,
                "versions": (first.model_version, second.model_version),
                "args": args,
            }
            serve.delete("churn")


def records(n: int, seed: int = 11) -> list[dict]:
    frame = generate(n_rows=n, seed=seed).drop(columns=[TARGET, TIMESTAMP_COLUMN])
    return json.loads(frame.to_json(orient="records"))


def listening_process(port: int) -> str:
    """The name of the process listening on a loopback TCP port, read from /proc (Linux)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as lines:
            for line in list(lines)[1:]:
                fields = line.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":  # 0A: LISTEN
                    inodes.add(f"socket:[{fields[9]}]")
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if inodes & {os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}:
                return Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:  # a process that ended meanwhile, or one we may not inspect
            continue
    return ""


def test_the_http_port_is_haproxy_not_rays_python_proxy(served):
    """serving/ray_env.py is what makes serving fast; the tests run the app the way it ships."""
    assert listening_process(int(served["url"].rsplit(":", 1)[1])) == "haproxy"


def test_health_ready_metadata(served):
    url = served["url"]
    assert httpx.get(f"{url}/health").json() == {"status": "ok"}
    ready = httpx.get(f"{url}/ready").json()
    assert ready["ready"] and ready["version"] == "1"
    meta = httpx.get(f"{url}/metadata").json()
    assert (meta["model_name"], meta["model_version"], meta["alias"]) == ("churn-serving", "1", "champion")
    assert meta["data_version"] and meta["input_schema"]["contract"]["type"] == "text"
    assert "/predict" in httpx.get(f"{url}/openapi.json").json()["paths"]


def test_predictions_match_the_model_loaded_directly(served):
    batch = records(25)
    response = httpx.post(f"{served['url']}/predict", json=batch, headers=HEADERS)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_version"] == "1" and body["request_id"] and len(body["predictions"]) == 25

    import pandas as pd

    mlflow.set_tracking_uri(served["settings"].tracking_uri)
    model = mlflow.sklearn.load_model("models:/churn-serving/1")
    frame = pd.DataFrame(batch).drop(columns=[ID_COLUMN])
    expected = model.predict_proba(frame[model.feature_names_in_])[:, 1]
    served_proba = [p["probabilities"]["1"] for p in body["predictions"]]
    assert served_proba == pytest.approx(expected.tolist(), abs=1e-9)

    one = httpx.post(f"{served['url']}/predict", json=batch[0], headers=HEADERS).json()
    assert one["predictions"][0]["probabilities"]["1"] == pytest.approx(expected[0], abs=1e-9)


def batch_sizes(metrics_url: str) -> tuple[float, float]:
    """(model calls, model calls that served a single request) from Ray Serve's own batch-size histogram."""
    calls = singles = 0.0
    for line in httpx.get(metrics_url, timeout=10).text.splitlines():
        if line.startswith("ray_serve_actual_batch_size") and 'function_name="predict_batch"' in line:
            if line.startswith("ray_serve_actual_batch_size_count"):
                calls += float(line.rsplit(" ", 1)[1])
            elif 'le="1.0"' in line:
                singles += float(line.rsplit(" ", 1)[1])
    return calls, singles


def test_concurrent_single_row_requests_share_model_calls(served):
    """Dynamic batching with no batch wait: requests that queue while a model call runs form the next batch."""
    import asyncio

    import ray

    metrics_url = f"http://127.0.0.1:{ray._private.worker.global_worker.node.metrics_export_port}/metrics"
    calls, singles = batch_sizes(metrics_url)  # requests so far were sequential: every call served one
    payloads = [records(1, seed=seed) for seed in range(64)]

    async def burst() -> list[int]:
        async with httpx.AsyncClient(timeout=30) as http:
            responses = await asyncio.gather(
                *(http.post(f"{served['url']}/predict", json=payload, headers=HEADERS) for payload in payloads)
            )
        return [response.status_code for response in responses]

    for _ in range(3):
        assert set(asyncio.run(burst())) == {200}
    deadline = time.time() + 60  # Ray reports replica metrics every few seconds
    while time.time() < deadline:
        now_calls, now_singles = batch_sizes(metrics_url)
        if now_calls - now_singles > calls - singles:
            break
        time.sleep(1)
    assert now_calls - now_singles > calls - singles, "no model call served more than one request"
    assert now_calls - calls < 3 * len(payloads), "192 concurrent requests took 192 model calls"


@pytest.mark.parametrize(
    ("body", "status", "phrase"),
    [
        (b"{not json", 400, "not valid JSON"),
        (b"[]", 422, "non-empty list"),
        (b"42", 422, "non-empty list"),
        (json.dumps([{**records(1)[0], "tenure_months": "ten"}]).encode(), 422, "tenure_months"),
        (json.dumps([{k: v for k, v in records(1)[0].items() if k != "contract"}]).encode(), 422, "field required"),
        (json.dumps([{**records(1)[0], "contract": "lifetime"}]).encode(), 422, "unknown category"),
        (json.dumps([{**records(1)[0], "age": 400}]).encode(), 422, "out of range"),
        (json.dumps(records(101)).encode(), 413, "at most 100"),
        (b"[" + b" " * 60_000 + b"]", 413, "larger than"),
    ],
    ids=[
        "bad-json",
        "empty-list",
        "not-a-list",
        "wrong-type",
        "missing-field",
        "unknown-category",
        "out-of-range",
        "too-many-records",
        "body-too-large",
    ],
)
def test_bad_requests_get_a_4xx_that_says_what_is_wrong(served, body, status, phrase):
    response = httpx.post(
        f"{served['url']}/predict", content=body, headers={**HEADERS, "content-type": "application/json"}
    )
    assert response.status_code == status, response.text
    assert phrase in response.text


def test_token_is_required_when_configured(served):
    batch = records(1)
    assert httpx.post(f"{served['url']}/predict", json=batch).status_code == 401
    wrong = {"Authorization": "Bearer nope"}
    assert httpx.post(f"{served['url']}/predict", json=batch, headers=wrong).status_code == 401


@contextmanager
def steady_load(url: str, threads: int, rows: int) -> Iterator[tuple[list[tuple[float, float, str]], list[str]]]:
    """Clients posting `rows`-record requests back to back until the block ends. Yields (answers, failures):
    answers are (sent, answered, model version), appended in no particular order (sort them by the clock);
    failures are non-200 answers and transport errors, so a client thread never dies unnoticed."""
    answers: list[tuple[float, float, str]] = []
    failures: list[str] = []
    stop = threading.Event()

    def post_until_stopped(seed: int) -> None:
        with httpx.Client(timeout=30) as http:
            payload = records(rows, seed=seed)
            while not stop.is_set():
                sent = time.monotonic()
                try:
                    response = http.post(f"{url}/predict", json=payload, headers=HEADERS)
                except httpx.TransportError as err:
                    failures.append(f"{type(err).__name__}: {err}")
                    continue
                if response.status_code == 200:
                    answers.append((sent, time.monotonic(), response.json()["model_version"]))
                else:
                    failures.append(f"{response.status_code}: {response.text[:200]}")

    clients = [threading.Thread(target=post_until_stopped, args=(seed,)) for seed in range(threads)]
    for client in clients:
        client.start()
    try:
        yield answers, failures
    finally:
        stop.set()
        for client in clients:
            client.join()


def test_hot_swap_under_load_fails_no_request(served):
    url, settings = served["url"], served["settings"]
    v1, v2 = served["versions"]
    client = registry.connect(settings)
    try:
        with steady_load(url, threads=6, rows=3) as (answers, failures):
            time.sleep(2)
            registry.set_champion(client, settings.model_name, v2, "promote", "test", "hot swap under load")
            deadline = time.time() + 60
            while v2 not in [version for *_, version in answers[-20:]] and time.time() < deadline:
                time.sleep(0.2)
            time.sleep(1)
    finally:
        registry.set_champion(client, settings.model_name, v1, "rollback", "test", "restore for other tests")
        deadline = time.time() + 60
        while httpx.get(f"{url}/ready").json()["version"] != v1 and time.time() < deadline:
            time.sleep(0.2)

    assert not failures, failures[:5]
    answers.sort()
    assert answers[0][2] == v1 and answers[-1][2] == v2
    switched_at = min(answered for _, answered, version in answers if version == v2)
    after_switch = {version for sent, _, version in answers if sent > switched_at}
    # a request already in a batch when the swap lands may still get v1; one sent after a v2 answer may not
    assert after_switch == {v2}, "once switched, the replica never answers with the old version"
    assert len(answers) > 50


def test_gpu_request_is_carried_by_configuration():
    """No GPU here: check that `num_gpus` in the serve config parses and reaches the replica's resource request."""
    import yaml
    from ray.serve.schema import ServeDeploySchema

    from serving.app import ModelService

    config = yaml.safe_load(Path("serving/config.yaml").read_text())
    champion = next(d for d in config["applications"][0]["deployments"] if d["name"] == "model")
    assert champion["ray_actor_options"]["num_gpus"] == 0, "CPU by default"
    champion["ray_actor_options"]["num_gpus"] = 1
    parsed = ServeDeploySchema.model_validate(config).applications[0].deployments[0]
    options = parsed.ray_actor_options.model_dump(exclude_unset=True)
    assert {key: options[key] for key in ("num_cpus", "num_gpus")} == {"num_cpus": 0.5, "num_gpus": 1}
    assert options["runtime_env"]["env_vars"]["OMP_NUM_THREADS"] == "1", "one OpenMP thread per model call"
    assert ModelService.options(ray_actor_options=options).ray_actor_options["num_gpus"] == 1


def test_app_from_config_deploys_what_the_file_says(tmp_path: Path):
    """Benchmarks run the shipped config through app_from_config: the file's resources, autoscaling and args."""
    import yaml

    from serving.app import app_from_config

    config = yaml.safe_load(Path("serving/config.yaml").read_text())
    deployment = config["applications"][0]["deployments"][0]
    deployment["ray_actor_options"]["num_gpus"] = 1
    deployment["autoscaling_config"]["max_replicas"] = 5
    config["applications"][0]["args"]["max_records"] = 77
    edited = tmp_path / "config.yaml"
    edited.write_text(yaml.safe_dump(config))

    bound = app_from_config(edited, poll_interval_s=3)._bound_deployment
    assert bound.ray_actor_options["num_gpus"] == 1
    assert bound._deployment_config.autoscaling_config.max_replicas == 5
    assert bound.init_args[0]["max_records"] == 77, "the file's args"
    assert bound.init_args[0]["poll_interval_s"] == 3, "overridden by the caller"


def wait_for_log(settings, request_ids: set[str], variants: set[str], timeout_s: float = 30):
    from tasks.store import prediction_log

    deadline = time.time() + timeout_s
    while True:
        log = prediction_log.read(settings)
        log = log[log["request_id"].isin(request_ids)]
        complete = set(log["variant"]) >= variants and log["request_id"].nunique() == len(request_ids)
        if complete or time.time() > deadline:
            return log
        time.sleep(0.5)


def test_prediction_log_has_every_prediction_with_its_version(served):
    batch = records(4, seed=5)
    ids = set()
    for i in range(5):
        response = httpx.post(f"{served['url']}/predict", json=batch, headers={**HEADERS, "x-request-id": f"log-{i}"})
        assert response.status_code == 200
        ids.add(response.json()["request_id"])
    log = wait_for_log(served["settings"], ids, {"champion"})
    assert len(log) == 5 * 4 and set(log["request_id"]) == ids
    assert set(log["model_version"]) == {"1"} and set(log["variant"]) == {"champion"}
    assert list(log.sort_values(["request_id", "record_index"])["tenure_months"][:4]) == [
        r["tenure_months"] for r in batch
    ]


def run_app(name: str, prefix: str, **args) -> str:
    from ray import serve

    from serving.app import build_app

    serve.run(
        build_app({"poll_interval_s": 0.5, "api_token_env": "TABLOOP_SERVING_TEST_TOKEN", "log_flush_s": 0.5, **args}),
        name=name,
        route_prefix=prefix,
    )
    return prefix


def test_ab_split_by_weight_and_sticky_by_key(served):
    from ray import serve

    prefix = run_app("churn-ab", "/ab", mode="ab", challenger_weight=0.5)
    try:
        url = f"{served['url']}{prefix}/predict"
        payload = records(1, seed=8)
        variants = {}
        with httpx.Client(timeout=30) as http:
            for i in range(120):
                body = http.post(url, json=payload, headers={**HEADERS, "x-entity-key": f"k{i}"}).json()
                variants[f"k{i}"] = (body["variant"], body["model_version"])
            for i in range(0, 120, 4):  # the same key lands on the same variant again
                body = http.post(url, json=payload, headers={**HEADERS, "x-entity-key": f"k{i}"}).json()
                assert (body["variant"], body["model_version"]) == variants[f"k{i}"]
        share = sum(v == "challenger" for v, _ in variants.values()) / len(variants)
        assert 0.35 < share < 0.65
        assert {v: m for v, m in variants.values()} == {"champion": "1", "challenger": "2"}
    finally:
        serve.delete("churn-ab")


def test_shadow_sees_a_copy_is_logged_and_not_returned(served):
    from ray import serve

    prefix = run_app("churn-shadow", "/shadow", mode="shadow")
    try:
        ids = set()
        for i in range(10):
            response = httpx.post(
                f"{served['url']}{prefix}/predict",
                json=records(2, seed=i),
                headers={**HEADERS, "x-request-id": f"shadow-{i}"},
            )
            body = response.json()
            assert (response.status_code, body["variant"], body["model_version"]) == (200, "champion", "1")
            ids.add(body["request_id"])
        log = wait_for_log(served["settings"], ids, {"champion", "shadow"})
        by_variant = log.groupby("variant")["model_version"].agg(set).to_dict()
        assert by_variant == {"champion": {"1"}, "shadow": {"2"}}
        assert set(log[log["variant"] == "shadow"]["request_id"]) == ids
    finally:
        serve.delete("churn-shadow")


def test_smoke_test_passes_on_the_served_champion(served, monkeypatch):
    from flows.smoke_test import smoke_test

    monkeypatch.setenv("TABLOOP_API_TOKEN", TOKEN)
    summary = smoke_test(endpoint=served["url"], wait_s=30)
    assert f"serves churn-serving v{served['versions'][0]}" in summary and "answered as registered" in summary


def test_smoke_test_rolls_back_a_version_the_replicas_cannot_load(served, monkeypatch):
    from flows.smoke_test import smoke_test
    from tasks.runtime.smoke import ModelFailure

    monkeypatch.setenv("TABLOOP_API_TOKEN", TOKEN)
    settings, name, v1 = served["settings"], served["settings"].model_name, served["versions"][0]
    client = registry.connect(settings)
    with mlflow.start_run(run_name="broken-model") as run:
        mlflow.log_text("this is not an MLmodel file: [", "model/MLmodel")
    broken = str(mlflow.register_model(f"runs:/{run.info.run_id}/model", name).version)
    registry.set_champion(client, name, broken, "promote", "test", "a version whose artifacts are broken")

    with pytest.raises(ModelFailure, match=f"still serves v{v1} .* after v{broken} became champion"):
        smoke_test(endpoint=served["url"], wait_s=5)
    assert str(registry.current_champion(client, name).version) == v1, "rolled back to the champion before"
    last = registry.history(client, name)[-1]
    assert (last.action, last.version, last.previous, last.by) == ("rollback", v1, broken, "smoke-test")
    assert last.reason.startswith("smoke test failed")
    assert httpx.get(f"{served['url']}/ready").json()["version"] == v1, "traffic never left v1"


def test_smoke_test_against_an_endpoint_that_is_down_fails_without_touching_the_alias(served):
    from flows.smoke_test import smoke_test
    from tasks.runtime.smoke import EndpointUnavailable

    settings = served["settings"]
    client = registry.connect(settings)
    before = registry.current_champion(client, settings.model_name).version
    with pytest.raises(EndpointUnavailable, match="no answer from"):
        smoke_test(endpoint=f"http://127.0.0.1:{free_port()}", wait_s=3)
    assert registry.current_champion(client, settings.model_name).version == before


def test_no_client_input_gets_a_5xx(served):
    """Schema-driven fuzz over HTTP: paths and methods from the app's own OpenAPI document, records built from
    the model's own input contract (/metadata) with every field open to any JSON value, plus raw bytes, deep
    nesting and unbounded numbers. Whatever a client sends, the answer is 2xx or a 4xx that says why."""
    from hypothesis import HealthCheck, given
    from hypothesis import settings as fuzz_settings
    from hypothesis import strategies as st

    url = served["url"]
    spec = httpx.get(f"{url}/openapi.json").json()
    contract = httpx.get(f"{url}/metadata").json()["input_schema"]
    valid = records(1)[0]
    scalars = (
        st.none()
        | st.booleans()
        | st.integers()
        | st.integers(min_value=10**300, max_value=10**320)
        | st.floats(allow_nan=True, allow_infinity=True)
        | st.text(alphabet=st.characters(codec=None), max_size=30)  # lone surrogates too
        | st.sampled_from(["", "2026-13-45", "1e999", "NaN", "true", "\x00"])
    )
    json_values = st.recursive(
        scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    )

    @st.composite
    def mutated_record(draw):
        record = dict(valid)
        for name in draw(st.lists(st.sampled_from(sorted(contract)), max_size=4, unique=True)):
            if draw(st.booleans()):
                record[name] = draw(json_values)
            else:
                record.pop(name, None)
        record.update(draw(st.dictionaries(st.text(max_size=8), json_values, max_size=2)))
        return record

    def encoded(value) -> bytes:
        return json.dumps(value, allow_nan=True).encode()

    bodies = st.one_of(
        st.lists(mutated_record(), min_size=1, max_size=4).map(encoded),
        mutated_record().map(encoded),
        json_values.map(encoded),
        st.binary(max_size=300),
        st.integers(min_value=1, max_value=200_000).map(lambda n: b"[" * n + b"]" * n),
        st.sampled_from([b"1" + b"0" * 5000, b'{"a": 1e999999}', b"\xff\xfe\x00", b'"\\ud800"']),
    )
    operations = [(path, method.upper()) for path, item in spec["paths"].items() for method in item]
    assert ("/predict", "POST") in operations

    with httpx.Client(timeout=30) as http:

        @given(
            operation=st.sampled_from(operations), body=bodies, query=st.dictionaries(st.text(max_size=5), st.text())
        )
        @fuzz_settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(operation, body, query):
            path, method = operation
            response = http.request(
                method,
                f"{url}{path}",
                content=body,
                params=query,
                headers={**HEADERS, "content-type": "application/json"},
            )
            assert response.status_code < 500, (
                f"{method} {path} {body[:200]!r} -> {response.status_code} {response.text[:300]}"
            )
            if response.status_code >= 400:
                assert response.json()["error"], response.text[:300]

        check()


def replica_actors() -> set[str]:
    """The live replica actors of the app (Ray names them SERVE_REPLICA::<app>#<deployment>#<id>)."""
    import ray

    return {
        actor["name"]
        for actor in ray.util.list_named_actors(all_namespaces=True)
        if actor["name"].startswith("SERVE_REPLICA::churn#")
    }


def test_replicas_replaced_by_a_redeploy_under_load_fail_no_request(served):
    """New replica options replace every replica: the old ones drain behind HAProxy while the new ones take over.
    Last in this module: the app keeps running with the new options."""
    from ray import serve

    from serving.app import ModelService, ServeConfig

    before = replica_actors()
    with steady_load(served["url"], threads=4, rows=2) as (answers, failures):
        time.sleep(2)
        options = {"num_cpus": 0.4}  # the decorator asks for 0.5: a changed option replaces the replica
        app = ModelService.options(ray_actor_options=options).bind(ServeConfig(**served["args"]).model_dump())
        serve.run(app, name="churn", route_prefix="/")  # returns once the old replica has drained and stopped
        time.sleep(1)

    after = replica_actors()
    assert before and after and not before & after, f"replicas not replaced: {before} -> {after}"
    assert not failures, failures[:5]
    assert len(answers) > 50
