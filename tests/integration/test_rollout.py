"""Progressive rollouts on a real Ray Serve app under steady client load, run by the rollout flow on a real
Prefect server (the temporary one the tests share), with a real MLflow registry and prediction log.

The champion is trained on data whose strongest columns were shuffled (so a challenger trained on the real
data is better); one challenger needs a column no client sends (its every answer fails validation), one was
trained on inverted labels (its scores sit far from the champion's). The late labels are the true targets of
the customers the clients send, joined on the customer id."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest

from tasks.demo import ID_COLUMN, TARGET, TIMESTAMP_COLUMN, generate
from tasks.model.gate import GatePolicy
from tasks.store import prediction_log, registry
from tests.local_ray import local_serve, wait_ready

pytestmark = pytest.mark.integration
MODEL = "churn-rollout"
QUICK = {"n_trials": 2, "cv_folds": 2, "families": ["linear"], "target": TARGET, "task_type": "binary"}
# p99 of a few dozen requests on a shared 2-core machine is noise: these tests give it room (the check itself
# is unit-tested, tests/unit/test_rollout_checks.py)
FAST = {"check_every_s": 0.5, "hold_s": 2, "min_requests": 40, "max_step_s": 90, "p99_slack_ms": 1000}


def training_file(root: Path, name: str, seed: int, change=None) -> str:
    frame = generate(n_rows=1500, seed=seed)
    if change is not None:
        frame = change(frame)
    path = root / f"{name}.csv"
    frame.to_csv(path, index=False)
    return str(path)


def shuffled_signal(frame):
    rng = np.random.default_rng(0)
    for column in ("contract", "tenure_months", "total_charges", "support_tickets"):
        frame[column] = rng.permutation(frame[column].to_numpy())
    return frame


def with_extra_column(frame):
    return frame.assign(loyalty_score=np.random.default_rng(1).normal(size=len(frame)))


def inverted(frame):
    return frame.assign(**{TARGET: 1 - frame[TARGET]})


@pytest.fixture(scope="module")
def world(prefect_server, tmp_path_factory) -> Iterator[dict]:
    from ray import serve

    from flows.train import TrainParams, train
    from serving.app import build_app
    from serving.ray_env import ray_serve_env
    from tasks.settings import get_settings

    root = tmp_path_factory.mktemp("rollout")
    env = {
        "TABLOOP_STORAGE_URL": str(root / "storage"),
        "TABLOOP_MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
        "TABLOOP_MODEL_NAME": MODEL,
        "TABLOOP_EXPERIMENT_NAME": MODEL,
    }
    with pytest.MonkeyPatch.context() as patch:
        for key, value in ray_serve_env(env).items():
            patch.setenv(key, value)

        def trained(name: str, change, gate: GatePolicy) -> str:
            uri = training_file(root, name, seed=3, change=change)
            return train(TrainParams(data_uri=uri, id_columns=[ID_COLUMN], **QUICK, gate=gate)).model_version

        never = GatePolicy(min_primary=0.0, margin=1.0)  # registered, never promoted by the gate
        versions = {
            "champion": trained("weak", shuffled_signal, GatePolicy(min_primary=0.5)),
            "better": trained("clean", None, never),
            "erroring": trained("extra", with_extra_column, never),
            "shifted": trained("inverted", inverted, never),
        }
        settings = get_settings()
        client = registry.connect(settings)
        assert str(registry.current_champion(client, MODEL).version) == versions["champion"]

        clients = generate(n_rows=3000, seed=99)
        labels = root / "labels.csv"
        clients[[ID_COLUMN, TARGET]].to_csv(labels, index=False)
        payloads = json.loads(clients.drop(columns=[TARGET, TIMESTAMP_COLUMN]).to_json(orient="records"))
        with local_serve(env) as url:
            serve.run(build_app({"poll_interval_s": 0.5, "log_flush_s": 0.5}), name="rollout", route_prefix="/")
            wait_ready(url)
            yield {
                "url": url,
                "settings": settings,
                "client": client,
                "versions": versions,
                "payloads": payloads,
                "labels": str(labels),
            }


@contextmanager
def steady_load(url: str, payloads: list[dict], threads: int = 4) -> Iterator[dict]:
    """Clients posting 1 to 3 customers per request, back to back, until the block ends; every answer that is
    not a 200 (or a transport error) is kept in `failures`, and each variant's answers are counted."""
    seen: dict = {"failures": [], "variants": {}}
    stop = threading.Event()

    def post(seed: int) -> None:
        rng = np.random.default_rng(seed)
        with httpx.Client(timeout=30) as http:
            while not stop.is_set():
                start = int(rng.integers(0, len(payloads) - 3))
                body = payloads[start : start + int(rng.integers(1, 4))]
                try:
                    response = http.post(f"{url}/predict", json=body)
                except httpx.TransportError as err:
                    seen["failures"].append(repr(err))
                    continue
                if response.status_code != 200:
                    seen["failures"].append(f"{response.status_code}: {response.text[:300]}")
                    continue
                answer = response.json()
                key = (answer["variant"], answer["model_version"])
                seen["variants"][key] = seen["variants"].get(key, 0) + 1

    workers = [threading.Thread(target=post, args=(seed,), daemon=True) for seed in range(threads)]
    for worker in workers:
        worker.start()
    try:
        yield seen
    finally:
        stop.set()
        for worker in workers:
            worker.join()


def run_rollout(world: dict, version: str, **policy) -> object:
    from flows.rollout import RolloutParams, rollout
    from tasks.monitoring.rollout import RolloutPolicy

    params = RolloutParams(
        version=version,
        model_name=MODEL,
        policy=RolloutPolicy(**{**FAST, **policy}),
        labels_uri=world["labels"],
        label_key=ID_COLUMN,
        actor="ci",
    )
    return rollout(params)


def traffic(world: dict) -> registry.Traffic:
    return registry.read_traffic(world["client"], MODEL)


def metadata(world: dict) -> dict:
    return httpx.get(f"{world['url']}/metadata").json()


def test_a_challenger_that_fails_every_request_is_stopped_at_its_first_step_and_no_client_sees_it(world):
    champion, erroring = world["versions"]["champion"], world["versions"]["erroring"]
    with steady_load(world["url"], world["payloads"]) as seen:
        outcome = run_rollout(world, erroring, shadow_s=0, steps=[20, 100])
        time.sleep(1.5)  # replicas drop the challenger's traffic at their next poll
    assert outcome.outcome == "stopped" and outcome.steps_passed == []
    assert "canary 20%" in outcome.reasons[0] and "error rate 100.00%" in outcome.reasons[0], outcome.reasons
    assert "loyalty_score: field required" in outcome.reasons[0]
    assert not seen["failures"], seen["failures"][:5]
    assert set(seen["variants"]) == {("champion", champion)}  # every request it failed, the champion answered

    assert (traffic(world).mode, traffic(world).challenger_share) == ("champion", 0.0)
    assert registry.CHALLENGER not in world["client"].get_registered_model(MODEL).aliases
    assert str(registry.current_champion(world["client"], MODEL).version) == champion
    last = registry.history(world["client"], MODEL)[-1]
    assert (last.action, last.version, last.by) == ("rollout-abort", erroring, "ci")
    assert metadata(world)["traffic"] == {
        "mode": "champion",
        "challenger_weight": 0.0,
        "challenger_version": None,
        "set_in": "registry",
    }
    failures = prediction_log.read(world["settings"], model=MODEL)
    failures = failures[failures["error"].notna()]
    assert set(failures["variant"]) == {"challenger"} and set(failures["model_version"]) == {erroring}


def test_a_challenger_with_shifted_scores_is_stopped_at_its_first_canary_step(world):
    champion, shifted = world["versions"]["champion"], world["versions"]["shifted"]
    with steady_load(world["url"], world["payloads"]) as seen:
        outcome = run_rollout(world, shifted, shadow_s=0, steps=[20, 100])
        time.sleep(1.5)
    assert outcome.outcome == "stopped" and outcome.steps_passed == []
    assert "canary 20%" in outcome.reasons[0] and "score shift" in outcome.reasons[0], outcome.reasons
    assert not seen["failures"], seen["failures"][:5]
    assert seen["variants"].get(("challenger", shifted)), "it did answer some traffic before it was stopped"
    assert str(registry.current_champion(world["client"], MODEL).version) == champion
    assert traffic(world).challenger_share == 0.0


def test_a_better_challenger_is_shadowed_judged_better_on_the_labels_and_promoted(world):
    champion, better = world["versions"]["champion"], world["versions"]["better"]
    policy = {"shadow_s": 3, "steps": [50, 100], "min_requests": 150, "require_better": True, "max_score_shift": 0.6}
    with steady_load(world["url"], world["payloads"]) as seen:
        outcome = run_rollout(world, better, **policy, comparison={"min_labelled": 200, "resamples": 500})
        deadline = time.time() + 30
        while metadata(world)["model_version"] != better and time.time() < deadline:
            time.sleep(0.2)
        time.sleep(1)
    assert outcome.outcome == "promoted", (outcome.reasons, outcome.verdicts)
    assert outcome.steps_passed == ["shadow", "canary 50%", "canary 100%"]
    assert any(": better (challenger better by" in verdict for verdict in outcome.verdicts), outcome.verdicts
    assert not seen["failures"], seen["failures"][:5]
    assert seen["variants"].get(("challenger", better)), "the canary answered clients"

    client = world["client"]
    assert str(registry.current_champion(client, MODEL).version) == better
    trail = registry.history(client, MODEL)
    assert [e.action for e in trail if e.version == better][-3:] == ["rollout-step", "rollout-step", "promote"]
    assert trail[-1].previous == champion and "labels show the challenger better" in trail[-1].reason
    assert metadata(world)["model_version"] == better
    assert metadata(world)["traffic"]["mode"] == "champion"


def test_a_person_is_asked_before_the_last_step_and_a_refusal_keeps_the_champion(world):
    """After the better version's promotion, the weak one is rolled out again, without labels: it passes its
    checks, and the person refuses it before it would answer everything."""
    from uuid import UUID

    from prefect.flow_runs import resume_flow_run

    from tests.paused import paused_run

    better, weak = world["versions"]["better"], world["versions"]["champion"]
    assert str(registry.current_champion(world["client"], MODEL).version) == better
    outcome: dict = {}
    policy = {"shadow_s": 0, "steps": [50, 100], "max_score_shift": 0.6, "require_approval": True}

    def run() -> None:
        from flows.rollout import RolloutParams, rollout
        from tasks.monitoring.rollout import RolloutPolicy

        params = RolloutParams(version=weak, model_name=MODEL, policy=RolloutPolicy(**{**FAST, **policy}), actor="ci")
        try:
            outcome["result"] = rollout(params)
        except BaseException as err:  # reported by the test, not lost in the thread
            outcome["error"] = err

    with steady_load(world["url"], world["payloads"]) as seen:
        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        run_id = paused_run(set(), patience_s=120)
        waiting = traffic(world)
        assert (waiting.mode, waiting.challenger_share) == ("ab", 0.5), "the step before the last holds while it waits"
        resume_flow_run(UUID(run_id), run_input={"approve": False, "reason": "weaker on the card", "approver": "bob"})
        thread.join(timeout=120)
        time.sleep(1.5)
    assert "error" not in outcome, outcome.get("error")
    result = outcome["result"]
    assert result.outcome == "kept" and result.steps_passed == ["canary 50%"]
    assert result.reasons == ["refused by bob: weaker on the card"]
    assert not seen["failures"], seen["failures"][:5]
    assert str(registry.current_champion(world["client"], MODEL).version) == better
    assert traffic(world).challenger_share == 0.0
    last = registry.history(world["client"], MODEL)[-1]
    assert (last.action, last.version, last.by) == ("rollout-kept-champion", weak, "bob")
