"""The Ray Serve application: a FastAPI ingress in front of one model deployment per alias.

    serve run serving/config.yaml          # local Ray, blocks; `make serve`
    serve deploy serving/config.yaml       # to a running Ray cluster

Each model replica loads `models:/NAME@ALIAS` in its constructor (never at import), validates requests with
the version's own training schema, predicts in dynamic batches, and follows the alias: when it moves, the
new version is loaded beside the old one and swapped in atomically, so no request fails during the switch and
every response names the version that produced it.
"""

# No `from __future__ import annotations` here: Ray's ingress re-binds the FastAPI routes and the postponed
# annotations (Request) then fail to resolve when /openapi.json is generated.
import asyncio
import hmac
import json
import logging
import os
import threading
import time
import uuid
from typing import Any

import pandas as pd
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from ray import serve
from ray.serve.handle import DeploymentHandle

from serving.routing import Mode, PredictionBuffer, choose_variant, sticky_key
from serving.validation import RequestValidationError

log = logging.getLogger("ray.serve")


class ServeConfig(BaseModel):
    """Application arguments (the `args:` block of serving/config.yaml)."""

    model_name: str | None = Field(None, description="Registered model; default CHURNOPS_MODEL_NAME.")
    champion_alias: str = "champion"
    challenger_alias: str = "challenger"
    mode: Mode = Field(
        "champion",
        description="champion: all traffic to @champion; ab: split by weight; "
        "shadow: @challenger sees a copy of traffic, its answers are logged, not returned.",
    )
    challenger_weight: float = Field(0.1, ge=0, le=1, description="Share of A/B keys sent to @challenger.")
    sticky_header: str = Field("x-entity-key", description="Header whose value keeps a caller on one variant.")
    log_predictions: bool = True
    log_flush_s: float = Field(2.0, gt=0, description="How often buffered predictions are written to storage.")
    log_max_rows: int = Field(200_000, ge=1, description="Buffer bound while storage is unreachable.")
    poll_interval_s: float = Field(5.0, gt=0, description="How often replicas check whether the alias moved.")
    max_batch_size: int = Field(64, ge=1)
    batch_wait_timeout_s: float = Field(0.005, ge=0)
    max_body_bytes: int = Field(1_000_000, ge=1024, description="Larger request bodies get 413.")
    max_records: int = Field(10_000, ge=1, description="More records in one request get 413.")
    api_token_env: str = Field("CHURNOPS_API_TOKEN", description="When this variable is set, /predict needs it.")
    settings: dict[str, Any] = Field(default_factory=dict, description="Overrides of CHURNOPS_* settings.")


class NotReady(RuntimeError):
    pass


@serve.deployment(name="model", ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=128)
class ModelServer:
    """Holds the current version for one alias and answers batched predictions with it."""

    def __init__(self, alias: str, config: dict[str, Any]) -> None:
        from tasks.registry import connect
        from tasks.settings import get_settings

        self.config = ServeConfig(**config)
        self.settings = get_settings(**self.config.settings)
        self.name = self.config.model_name or self.settings.model_name
        self.alias = alias
        self.client = connect(self.settings)
        self.current = None  # LoadedModel; replaced whole, never mutated, so readers need no lock
        self.load_error: str | None = None
        self._refresh()
        self._stop = threading.Event()
        threading.Thread(target=self._follow_alias, name=f"follow-{alias}", daemon=True).start()
        self.predict_batch.set_max_batch_size(self.config.max_batch_size)
        self.predict_batch.set_batch_wait_timeout_s(self.config.batch_wait_timeout_s)

    def _refresh(self) -> None:
        """Load the version the alias points at, if it is not the one being served."""
        from serving.predictor import load_version, resolve_alias

        try:
            version = resolve_alias(self.client, self.name, self.alias)
            if self.current is None or self.current.version != version:
                loaded = load_version(self.settings, self.name, version, self.alias)
                previous, self.current = self.current, loaded
                log.info(
                    "%s@%s now serves v%s (was %s)",
                    self.name,
                    self.alias,
                    version,
                    previous.version if previous else "nothing",
                )
            self.load_error = None
        except Exception as err:  # keep serving the loaded version; report why the new one is not there
            self.load_error = f"{type(err).__name__}: {err}"
            log.warning("%s@%s: could not refresh: %s", self.name, self.alias, self.load_error)

    def _follow_alias(self) -> None:
        while not self._stop.wait(self.config.poll_interval_s):
            self._refresh()

    def __del__(self) -> None:
        if hasattr(self, "_stop"):
            self._stop.set()

    def ready(self) -> dict[str, Any]:
        model = self.current
        return {"ready": model is not None, "version": model.version if model else None, "error": self.load_error}

    def metadata(self) -> dict[str, Any]:
        model = self.current
        if model is None:
            raise NotReady(self.load_error or f"no version of {self.name}@{self.alias} loaded yet")
        return model.describe()

    async def predict(self, records: list[Any]) -> dict[str, Any]:
        """Validate with the current version's schema, then join a batch. Client mistakes come back as data."""
        model = self.current
        if model is None:
            return {"status": 503, "error": self.load_error or f"no version of {self.name}@{self.alias} loaded"}
        try:
            frame = model.validator.validate(records)
        except RequestValidationError as err:
            return {"status": 422, "error": "invalid records", "problems": [p.as_dict() for p in err.problems]}
        predictions = await self.predict_batch((model, frame))
        return {"status": 200, "model_name": model.name, "model_version": model.version, "predictions": predictions}

    @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.005)
    async def predict_batch(self, items: list[tuple[Any, pd.DataFrame]]) -> list[list[dict[str, Any]]]:
        """Many requests, one model call per version present in the batch (two only during a swap)."""
        return await asyncio.to_thread(_predict_grouped, items)


def _predict_grouped(items: list[tuple[Any, pd.DataFrame]]) -> list[list[dict[str, Any]]]:
    results: list[list[dict[str, Any]]] = [[] for _ in items]
    by_version: dict[str, list[int]] = {}
    for index, (model, _) in enumerate(items):
        by_version.setdefault(model.version, []).append(index)
    for indexes in by_version.values():
        model = items[indexes[0]][0]
        frame = pd.concat([items[i][1] for i in indexes], ignore_index=True)
        rows = model.predict(frame)
        start = 0
        for i in indexes:
            size = len(items[i][1])
            results[i] = rows[start : start + size]
            start += size
    return results


api = FastAPI(
    title="churnops model API",
    description="Predictions from the registered @champion, validated against its training schema.",
)

RECORDS_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "oneOf": [
                        {"type": "array", "items": {"type": "object"}, "minItems": 1},
                        {"type": "object"},
                    ]
                },
                "example": [{"tenure_months": 12, "contract": "month-to-month"}],
            }
        },
    }
}


def _error(status: int, message: str, request_id: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, "request_id": request_id, **extra}, status_code=status)


@serve.deployment(name="ingress", ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=256)
@serve.ingress(api)
class Ingress:
    def __init__(self, champion: DeploymentHandle, challenger: DeploymentHandle | None, config: dict[str, Any]):
        from ray.serve import metrics

        from tasks.settings import get_settings

        self.config = ServeConfig(**config)
        self.handles = {"champion": champion, "challenger": challenger}
        token = os.environ.get(self.config.api_token_env, "")
        self.token = token.encode() if token else None
        self.log = None
        if self.config.log_predictions:
            writer = f"serving-{uuid.uuid4().hex[:6]}"
            self.log = PredictionBuffer(
                get_settings(**self.config.settings), self.config.log_flush_s, self.config.log_max_rows, writer
            )
        self.id_columns: list[str] | None = None  # the champion's entity columns, fetched when A/B first needs them
        self.requests = metrics.Counter(
            "churnops_requests",
            description="Prediction requests by model version, variant and outcome.",
            tag_keys=("model_version", "variant", "outcome"),
        )
        self.records = metrics.Counter(
            "churnops_predicted_records",
            description="Records scored, by model version and variant.",
            tag_keys=("model_version", "variant"),
        )
        self.latency = metrics.Histogram(
            "churnops_predict_latency_ms",
            description="Time from request parsed to predictions ready.",
            boundaries=[1, 2, 5, 10, 20, 50, 100, 200, 500, 1000],
            tag_keys=("variant",),
        )

    @api.get("/health", summary="Liveness: the process answers")
    async def health(self) -> dict[str, str]:
        return {"status": "ok"}

    @api.get("/ready", summary="Readiness: a model version is loaded")
    async def ready(self) -> JSONResponse:
        state = await self.handles["champion"].ready.remote()
        return JSONResponse(state, status_code=200 if state["ready"] else 503)

    @api.get("/metadata", summary="Model name, version, alias, input schema and training data version")
    async def metadata(self) -> JSONResponse:
        try:
            meta = await self.handles["champion"].metadata.remote()
        except NotReady as err:
            return JSONResponse({"error": str(err)}, status_code=503)
        meta["traffic"] = {"mode": self.config.mode, "challenger_weight": self.config.challenger_weight}
        return JSONResponse(meta)

    @api.post("/predict", summary="Predict for one record or a list of records", openapi_extra=RECORDS_BODY)
    async def predict(self, request: Request) -> JSONResponse:
        request_id = request.headers.get("x-request-id") or uuid.uuid4().hex
        if self.token is not None and not self._authorized(request):
            return self._refuse(401, "missing or wrong bearer token", request_id)
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > self.config.max_body_bytes:
            return self._refuse(413, f"body larger than {self.config.max_body_bytes} bytes", request_id)
        body = await request.body()
        if len(body) > self.config.max_body_bytes:
            return self._refuse(413, f"body larger than {self.config.max_body_bytes} bytes", request_id)
        try:
            payload = json.loads(body)
        except (ValueError, UnicodeDecodeError) as err:
            return self._refuse(400, f"body is not valid JSON: {err}", request_id)
        records = [payload] if isinstance(payload, dict) else payload
        if not isinstance(records, list) or not records:
            return self._refuse(422, "expected a JSON object or a non-empty list of objects", request_id)
        if len(records) > self.config.max_records:
            return self._refuse(
                413, f"{len(records)} records; at most {self.config.max_records} per request", request_id
            )

        started = time.perf_counter()
        variant = "champion"
        if self.config.mode == "ab":
            key = sticky_key(request.headers.get(self.config.sticky_header), records, await self._ids(), request_id)
            variant = choose_variant(self.config.mode, key, self.config.challenger_weight)
        result = await self.handles[variant].predict.remote(records)
        if variant == "challenger" and result["status"] == 503:  # challenger missing: the champion answers
            variant, result = "champion", await self.handles["champion"].predict.remote(records)
        if self.config.mode == "shadow" and result["status"] == 200:
            asyncio.get_running_loop().create_task(self._shadow(records, request_id))
        return self._answer(result, variant, records, request_id, started)

    async def _ids(self) -> list[str]:
        """The champion's entity columns, the A/B key when no sticky header is sent (fetched once)."""
        if self.id_columns is None:
            try:
                meta = await self.handles["champion"].metadata.remote()
                self.id_columns = list(meta.get("id_columns") or [])
            except NotReady:
                return []
        return self.id_columns

    def _answer(
        self, result: dict[str, Any], variant: str, records: list[Any], request_id: str, started: float
    ) -> JSONResponse:
        status = result.pop("status")
        if status != 200:
            self.requests.inc(
                tags={"model_version": "", "variant": variant, "outcome": "invalid" if status < 500 else "unavailable"}
            )
            return _error(status, result.pop("error"), request_id, **result)
        elapsed_ms = (time.perf_counter() - started) * 1000
        version = result["model_version"]
        self.requests.inc(tags={"model_version": version, "variant": variant, "outcome": "ok"})
        self.records.inc(len(records), tags={"model_version": version, "variant": variant})
        self.latency.observe(elapsed_ms, tags={"variant": variant})
        self._log(request_id, records, result, variant)
        return JSONResponse(
            {"request_id": request_id, "variant": variant, **result, "latency_ms": round(elapsed_ms, 2)}
        )

    async def _shadow(self, records: list[Any], request_id: str) -> None:
        """The challenger's answer to the same records: logged as variant 'shadow', never returned."""
        try:
            result = await self.handles["challenger"].predict.remote(records)
        except Exception as err:  # a broken challenger must never touch the champion's traffic
            log.warning("shadow prediction failed for %s: %s", request_id, err)
            return
        if result.get("status") == 200:
            self._log(request_id, records, result, "shadow")

    def _log(self, request_id: str, records: list[Any], result: dict[str, Any], variant: str) -> None:
        if self.log is not None:
            from tasks.prediction_log import rows_for

            self.log.add(
                rows_for(
                    request_id, records, result["predictions"], result["model_name"], result["model_version"], variant
                )
            )

    def _refuse(self, status: int, message: str, request_id: str) -> JSONResponse:
        self.requests.inc(tags={"model_version": "", "variant": "", "outcome": "refused"})
        return _error(status, message, request_id)

    def _authorized(self, request: Request) -> bool:
        scheme, _, supplied = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(supplied.encode(), self.token)

    def flush_log(self) -> int:
        """Write buffered predictions now (tests and graceful shutdown)."""
        return self.log.flush() if self.log else 0

    def __del__(self) -> None:
        if getattr(self, "log", None) is not None:
            self.log.close()


def build_app(args: dict[str, Any]) -> serve.Application:
    """Application builder for `serve run`/`serve deploy`: args come from the config file."""
    config = ServeConfig(**args)
    options = config.model_dump()
    champion = ModelServer.options(name="champion").bind(config.champion_alias, options)
    challenger = None
    if config.mode != "champion":
        challenger = ModelServer.options(name="challenger").bind(config.challenger_alias, options)
    return Ingress.bind(champion, challenger, options)
