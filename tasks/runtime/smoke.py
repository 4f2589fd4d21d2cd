"""The post-promotion smoke test: the endpoint serves the promoted version, and answers as the registered model
does on the example logged with it."""

from __future__ import annotations

import math
import time
import uuid
from dataclasses import dataclass
from typing import Any

import httpx

from tasks.runtime.loaded import download_version, input_example_records, load_model_dir


class EndpointUnavailable(RuntimeError):
    """The model API did not answer: an operations problem, not the version's fault."""


class ModelFailure(RuntimeError):
    """The served version is broken or never came up: grounds for a rollback."""


@dataclass(frozen=True)
class Expectation:
    records: list[dict[str, Any]]
    predictions: list[dict[str, Any]]


def expectation(name: str, version: str) -> Expectation:
    """The logged example and the registered model's own answers to it, computed here, outside serving."""
    try:
        local = download_version(name, version)
        loaded = load_model_dir(local, name, version, "smoke-test")
        records = input_example_records(local)
        return Expectation(records, loaded.predict(loaded.validator.frame(loaded.validator.validate(records))))
    except Exception as err:  # a version that cannot be loaded here cannot be served either
        raise ModelFailure(f"{name} v{version} cannot be loaded: {type(err).__name__}: {err}") from err


def wait_for_version(url: str, version: str, wait_s: float, headers: dict[str, str]) -> None:
    """Until /ready names `version`: replicas follow the alias within their poll interval."""
    deadline = time.monotonic() + wait_s
    answered, seen, problem = False, None, None
    while time.monotonic() < deadline:
        try:
            ready = httpx.get(f"{url}/ready", headers=headers, timeout=5)  # url: the model's own routes
        except httpx.HTTPError as err:
            problem = f"{type(err).__name__}: {err}"
        else:
            answered = True
            state = ready.json()
            if ready.status_code == 200 and str(state.get("version")) == version:
                return
            seen, problem = state.get("version"), state.get("error")
        time.sleep(1)
    if not answered:
        raise EndpointUnavailable(f"no answer from {url} for {wait_s:.0f} s ({problem}); is the model API running?")
    raise ModelFailure(
        f"{url} still serves v{seen} {wait_s:.0f} s after v{version} became champion"
        + (f"; replicas report: {problem}" if problem else "")
    )


def served_answers(url: str, records: list[dict[str, Any]], headers: dict[str, str], attempts: int = 20) -> dict:
    """POST the records; in A/B mode, new sticky keys until the champion variant answers."""
    for _ in range(attempts):
        try:
            response = httpx.post(
                f"{url}/predict", json=records, headers={**headers, "x-entity-key": uuid.uuid4().hex}, timeout=30
            )
        except httpx.HTTPError as err:
            raise EndpointUnavailable(f"{url}/predict: {type(err).__name__}: {err}") from err
        if response.status_code != 200:
            raise ModelFailure(f"{url}/predict answered {response.status_code}: {response.text[:500]}")
        body = response.json()
        if body.get("variant") == "champion":
            return body
    raise ModelFailure(f"{url}/predict never answered from the champion variant in {attempts} tries")


def differences(expected: list[dict[str, Any]], served: list[dict[str, Any]], tolerance: float = 1e-6) -> list[str]:
    """Where the served predictions differ from the registered model's own: empty means they agree."""
    if len(expected) != len(served):
        return [f"{len(served)} predictions for {len(expected)} records"]
    found = []
    for row, (want, got) in enumerate(zip(expected, served, strict=True)):
        label = got.get("prediction")
        if label != want["prediction"] and not _close(label, want["prediction"], tolerance):
            found.append(f"record {row}: prediction {label!r}, expected {want['prediction']!r}")
        for cls, p in (want.get("probabilities") or {}).items():
            q = (got.get("probabilities") or {}).get(cls)
            if not _close(p, q, tolerance):
                found.append(f"record {row}: P({cls}) {q!r}, expected {p:.6f}")
    return found


def _close(a: Any, b: Any, tolerance: float) -> bool:
    try:
        return math.isclose(float(a), float(b), abs_tol=tolerance)
    except (TypeError, ValueError):
        return False


def check(name: str, version: str, url: str, wait_s: float, token: str | None) -> str:
    """Raises EndpointUnavailable or ModelFailure; returns a one-line summary when the version is healthy."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    url = f"{url}/models/{name}"  # every served model answers under its own name, the default one too
    wait_for_version(url, version, wait_s, headers)
    expected = expectation(name, version)
    body = served_answers(url, expected.records, headers)
    if str(body.get("model_version")) != version:
        raise ModelFailure(f"answered by v{body.get('model_version')}, expected v{version}")
    problems = differences(expected.predictions, body["predictions"])
    if problems:
        raise ModelFailure(f"served answers differ from the registered model: {'; '.join(problems[:5])}")
    return f"{url} serves {name} v{version}; {len(expected.records)} example records answered as registered"
