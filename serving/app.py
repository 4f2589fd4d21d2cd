"""The Ray Serve application: one deployment that validates, batches, predicts and routes.

    serve run serving/config.yaml          # local Ray, blocks; `make serve`
    serve deploy serving/config.yaml       # to a running Ray cluster

Each replica loads `models:/NAME@champion` (and `@challenger` while traffic goes to it) in its constructor,
never at import. Requests are checked against the version's own training schema, then join a dynamic batch:
one model call per batch. Replicas follow the aliases: a moved alias is loaded beside the old version and
swapped in atomically, so no request fails during the switch and every response names the version that
produced it. They follow the traffic split the same way: the registry's setting (registry.Traffic, which a
rollout moves) wins over this config's `mode` and `challenger_weight`. A request the challenger cannot answer
(invalid for its schema, or its model call fails) is answered by the champion, and the failure is logged.

The model lives in the ingress replica itself: on small CPU machines a second hop (proxy -> ingress -> model
replica) costs more than the model call. Scale by adding replicas of this one deployment.
"""

# No `from __future__ import annotations` here: Ray's ingress re-binds the FastAPI routes and the postponed
# annotations (Request) then fail to resolve when /openapi.json is generated.
import asyncio
import hmac
import json
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import yaml
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from ray import serve

from serving.routing import Mode, PredictionBuffer, choose_variant, sticky_key
from tasks.runtime.loaded import Scored, predict_grouped
from tasks.runtime.online import Missing
from tasks.runtime.validation import Columns, RequestValidationError
from tasks.settings import Settings
from tasks.store import prediction_log


class ServeConfig(BaseModel):
    """Application arguments (the `args:` block of serving/config.yaml); a misspelt key is refused."""

    model_config = ConfigDict(extra="forbid")

    models: list[str] = Field(
        default_factory=list,
        description="Registered models to serve, each at /models/<name>/predict; the first also at /predict. "
        "Default: TABLOOP_MODEL_NAME, else every model declared in the models folder, else the demo's model.",
    )
    champion_alias: str = "champion"
    challenger_alias: str = "challenger"
    mode: Mode = Field(
        "champion",
        description="champion: all traffic to @champion; ab: split by weight; "
        "shadow: @challenger sees a copy of traffic, its answers are logged, not returned.",
    )
    challenger_weight: float = Field(0.1, ge=0, le=1, description="Share of A/B keys sent to @challenger.")
    # mode and challenger_weight apply while the registry holds no traffic setting for the model
    sticky_header: str = Field("x-entity-key", description="Header whose value keeps a caller on one variant.")
    poll_interval_s: float = Field(5.0, gt=0, description="How often replicas check whether an alias moved.")
    max_batch_size: int = Field(64, ge=1)
    batch_wait_timeout_s: float = Field(
        0.0,
        ge=0,
        description="How long a batch waits for more requests. 0: none; a batch takes the requests that queued "
        "while the previous model call ran, so a lone request is not held back and a busy replica still batches.",
    )
    max_body_bytes: int = Field(1_000_000, ge=1024, description="Larger request bodies get 413.")
    max_records: int = Field(10_000, ge=1, description="More records in one request get 413.")
    api_token_env: str = Field("TABLOOP_API_TOKEN", description="When this variable is set, /predict needs it.")
    missing_features: Missing = Field(
        "refuse",
        description="A model with feature-store inputs, for an entity the online store has no values for: "
        "refuse (422 naming the entity) or impute (score with the values missing, as training saw such rows).",
    )
    log_predictions: bool = True
    log_flush_s: float = Field(2.0, gt=0, description="How often buffered predictions are written to storage.")
    log_max_rows: int = Field(200_000, ge=1, description="Buffer bound while storage is unreachable.")
    settings: dict[str, Any] = Field(default_factory=dict, description="Overrides of TABLOOP_* settings.")


# The OpenAPI document and its UI are routes of the service: they describe each served model's own contract.
api = FastAPI(
    title="tabloop model API",
    description="Predictions from each served model's @champion, validated against its training schema.",
    openapi_url=None,
    docs_url=None,
    redoc_url=None,
)
NOT_READY = {503: {"description": "No version of the model is loaded yet"}}


class AsciiJSONResponse(JSONResponse):
    """JSON with non-ASCII escaped: a client's lone surrogate echoed in an error must not fail the encoding."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")


class FastJSONResponse(JSONResponse):
    """Successful answers: our own values plus the request id header (latin-1, never a lone surrogate), so
    orjson can render them, several times faster than json.dumps."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


# Any ASCII digit -> "0", anything else -> " ": a run of 17 zeros is a number with more digits than a float64
# holds exactly. translate and a substring search cost a tenth of the regex r"\d{17,}" on a 100-record body.
DIGITS_AS_ZEROS = bytes(ord("0") if ord("0") <= byte <= ord("9") else ord(" ") for byte in range(256))
LONG_NUMBER = b"0" * 17


def parse_json(body: bytes) -> Any:
    """orjson for speed; what it refuses (NaN, lone surrogates, deep nesting) goes to the standard parser, so
    such values still reach validation and get a field-level answer. So does a body with very long numbers:
    orjson reads an integer beyond 64 bits as a rounded float, which could slip under a bound it is over."""
    if LONG_NUMBER in body.translate(DIGITS_AS_ZEROS):
        return json.loads(body)
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return json.loads(body)


def _error(status: int, message: str, request_id: str, **extra: Any) -> JSONResponse:
    return AsciiJSONResponse({"error": message, "request_id": request_id, **extra}, status_code=status)


@dataclass
class Served:
    """One model the app serves: its @champion, its @challenger (loaded while traffic goes to it), the split."""

    name: str
    slots: dict[str, Any]  # variant -> AliasSlot
    traffic: Any  # TrafficSlot
    default_split: tuple[str, float]  # the config's mode and challenger weight

    @property
    def champion(self) -> Any:
        return self.slots["champion"]

    @property
    def challenger(self) -> Any:
        return self.slots["challenger"]

    def split(self) -> tuple[str, float]:
        """The traffic mode and the challenger's share: the registry's setting, else the config's."""
        setting = self.traffic.current
        return (setting.mode, setting.challenger_share) if setting is not None else self.default_split


def follow_model(settings: Settings, name: str, config: ServeConfig) -> Served:
    """Start following one model's aliases and traffic setting."""
    from tasks.runtime.loaded import AliasSlot, TrafficSlot

    poll = config.poll_interval_s
    traffic = TrafficSlot(settings, name, poll)
    served = Served(name, {}, traffic, (config.mode, config.challenger_weight))
    served.slots["champion"] = AliasSlot(settings, name, config.champion_alias, poll)
    served.slots["challenger"] = AliasSlot(
        settings, name, config.challenger_alias, poll, wanted=lambda: served.split()[0] != "champion"
    )
    return served


class FeatureStoreUnavailable(RuntimeError):
    """The online feature store did not answer: the request gets a 503, and may be retried."""


def failure_text(err: Exception) -> str:
    if isinstance(err, RequestValidationError):
        return "invalid for this version: " + "; ".join(f"{p.field}: {p.problem}" for p in err.problems[:5])
    return f"{type(err).__name__}: {err}"


def default_models(settings: Settings) -> list[str]:
    """With no `models` in the config: TABLOOP_MODEL_NAME, else every declared model, else the demo's.

    Above the deployment class: Ray Serve pickles the class when it is decorated, with the module-level names
    defined by then."""
    from tasks import demo
    from tasks.ops import specs

    if settings.model_name:
        return [settings.model_name]
    return list(specs.declared(settings)) or [demo.model_name()]


@serve.deployment(name="model", ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=128)
@serve.ingress(api)
class ModelService:
    def __init__(self, config: dict[str, Any]) -> None:
        from ray.serve import metrics

        from tasks.settings import get_settings

        self.config = ServeConfig(**config)
        settings = get_settings(**self.config.settings)
        names = self.config.models or default_models(settings)
        self.served = {name: follow_model(settings, name, self.config) for name in dict.fromkeys(names)}
        self.default = next(iter(self.served))
        token = os.environ.get(self.config.api_token_env, "")
        self.token = token.encode() if token else None
        self.log = None
        if self.config.log_predictions:
            self.log = PredictionBuffer(
                settings, self.config.log_flush_s, self.config.log_max_rows, writer=f"serving-{uuid.uuid4().hex[:6]}"
            )
        self.settings = settings
        self.online: Any = None  # the online feature store's client, made when a model needs it
        self._start_online_features()
        for batched in (self.predict_batch, self.lookup_batch):
            batched.set_max_batch_size(self.config.max_batch_size)
            batched.set_batch_wait_timeout_s(self.config.batch_wait_timeout_s)
        self.requests = metrics.Counter(
            "tabloop_requests",
            description="Prediction requests by model, version, variant and outcome.",
            tag_keys=("model", "model_version", "variant", "outcome"),
        )
        self.records = metrics.Counter(
            "tabloop_predicted_records",
            description="Records scored, by model, version and variant.",
            tag_keys=("model", "model_version", "variant"),
        )
        self.latency = metrics.Histogram(
            "tabloop_predict_latency_ms",
            description="Time from request parsed to predictions ready.",
            boundaries=[1, 2, 5, 10, 20, 50, 100, 200, 500, 1000],
            tag_keys=("model", "variant"),
        )

    def check_health(self) -> None:
        """Ray restarts a replica whose alias- or traffic-following thread has died."""
        for served in self.served.values():
            for slot in [*served.slots.values(), served.traffic]:
                if not slot.alive:
                    raise RuntimeError(f"{served.name}: {slot._thread.name} thread stopped")

    @api.get("/health", summary="Liveness: the process answers")
    async def health(self) -> dict[str, str]:
        return {"status": "ok"}

    @api.get("/ready", summary="Readiness: every served model has a version loaded", responses=NOT_READY)
    async def ready(self) -> JSONResponse:
        models = {name: self._readiness(served) for name, served in self.served.items()}
        state = {**models[self.default], "ready": all(m["ready"] for m in models.values()), "models": models}
        return JSONResponse(state, status_code=200 if state["ready"] else 503)

    @api.get("/models/{name}/ready", include_in_schema=False)
    async def model_ready(self, name: str) -> JSONResponse:
        served = self.served.get(name)
        if served is None:
            return self._unknown(name)
        state = self._readiness(served)
        return JSONResponse(state, status_code=200 if state["ready"] else 503)

    @api.get("/metadata", summary="The default model: version, alias, contract, traffic", responses=NOT_READY)
    async def metadata(self) -> JSONResponse:
        return self._metadata(self.served[self.default])

    @api.get("/models/{name}/metadata", include_in_schema=False)
    async def model_metadata(self, name: str) -> JSONResponse:
        served = self.served.get(name)
        return self._unknown(name) if served is None else self._metadata(served)

    @api.post("/predict", summary="Predict with the default model for one record or a list of records")
    async def predict(self, request: Request) -> JSONResponse:
        return await self._predict(request, self.served[self.default])

    @api.post("/models/{name}/predict", include_in_schema=False)
    async def model_predict(self, name: str, request: Request) -> JSONResponse:
        served = self.served.get(name)
        return self._unknown(name) if served is None else await self._predict(request, served)

    @api.get("/openapi.json", include_in_schema=False)
    async def openapi(self, request: Request) -> JSONResponse:
        from fastapi.openapi.utils import get_openapi

        from tasks.runtime.openapi import predict_operation

        app = request.app
        document = get_openapi(title=app.title, version="1", description=app.description, routes=app.routes)
        for name, served in self.served.items():
            model = served.champion.current
            if model is None:
                continue
            operation = predict_operation(name, model.contract, self.config.max_records, f"Predict with {name}")
            document["paths"][f"/models/{name}/predict"] = {"post": operation}
            for route in ("ready", "metadata"):
                get = {
                    "summary": f"{name}: {route}",
                    "operationId": f"{route}_{name}",
                    "responses": {
                        "200": {"description": "OK", "content": {"application/json": {"schema": {"type": "object"}}}},
                        "503": NOT_READY[503],
                    },
                }
                document["paths"][f"/models/{name}/{route}"] = {"get": get}
            if name == self.default:
                document["paths"]["/predict"] = {"post": {**operation, "operationId": "predict"}}
        return JSONResponse(document)

    @api.get("/docs", include_in_schema=False)
    async def docs(self) -> Any:
        from fastapi.openapi.docs import get_swagger_ui_html

        return get_swagger_ui_html(openapi_url="openapi.json", title="tabloop model API")

    def _readiness(self, served: Served) -> dict[str, Any]:
        model = served.champion.current
        return {"ready": model is not None, "version": model.version if model else None, "error": served.champion.error}

    def _metadata(self, served: Served) -> JSONResponse:
        slot = served.champion
        if slot.current is None:
            return JSONResponse({"error": slot.error or "no version loaded yet"}, status_code=503)
        mode, share = served.split()
        challenger = served.challenger.current
        return JSONResponse(
            {
                **slot.current.describe(),
                "traffic": {
                    "mode": mode,
                    "challenger_weight": share,
                    "challenger_version": challenger.version if challenger else None,
                    "set_in": "registry" if served.traffic.current is not None else "config",
                },
            }
        )

    async def _predict(self, request: Request, served: Served) -> JSONResponse:
        request_id = request.headers.get("x-request-id") or uuid.uuid4().hex
        if self.token is not None and not self._authorized(request):
            return self._refuse(401, "missing or wrong bearer token", request_id, served.name)
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > self.config.max_body_bytes:
            return self._refuse(413, f"body larger than {self.config.max_body_bytes} bytes", request_id, served.name)
        body = await request.body()
        if len(body) > self.config.max_body_bytes:
            return self._refuse(413, f"body larger than {self.config.max_body_bytes} bytes", request_id, served.name)
        try:
            payload = parse_json(body)
        except (ValueError, UnicodeDecodeError, RecursionError) as err:  # RecursionError: nested too deep
            return self._refuse(400, f"body is not valid JSON: {str(err)[:200]}", request_id, served.name)
        records = [payload] if isinstance(payload, dict) else payload
        if not isinstance(records, list) or not records:
            return self._refuse(422, "expected a JSON object or a non-empty list of objects", request_id, served.name)
        if len(records) > self.config.max_records:
            message = f"{len(records)} records; at most {self.config.max_records} per request"
            return self._refuse(413, message, request_id, served.name)

        started = time.perf_counter()
        mode, share = served.split()
        model, challenger, failed = served.champion.current, served.challenger.current, None
        if challenger is not None and self._variant(served, request, records, request_id, mode, share) == "challenger":
            try:
                answered = await self._answer(challenger, "challenger", records, request_id, started)
            except Exception as err:  # whatever goes wrong with the challenger, the champion still answers
                answered = err
            if isinstance(answered, JSONResponse):
                return answered
            failed = answered  # logged once the champion has answered: a request bad for both is the client's

        if model is None:
            return self._refuse(503, served.champion.error or "no model version loaded yet", request_id, served.name)
        try:
            columns = model.validator.validate(await self._assembled(model, records))
        except FeatureStoreUnavailable as err:
            return self._refuse(503, str(err), request_id, served.name)
        except RequestValidationError as err:
            tags = {"model": model.name, "model_version": model.version, "variant": "champion", "outcome": "invalid"}
            self.requests.inc(tags=tags)
            return _error(422, "invalid records", request_id, problems=[p.as_dict() for p in err.problems])
        response = await self._answer(model, "champion", records, request_id, started, columns)
        if isinstance(response, Exception):
            raise response
        if failed is not None:
            self._record_failure(request_id, challenger, "challenger", failed, started)
        if mode == "shadow":
            asyncio.get_running_loop().create_task(self._shadow(served, records, request_id))
        return response

    async def _answer(
        self,
        model: Any,
        variant: str,
        records: list[Any],
        request_id: str,
        started: float,
        columns: Columns | None = None,
    ) -> JSONResponse | Exception:
        """One version's answer to the records, logged; or the exception that kept it from answering."""
        try:
            if columns is None:
                columns = model.validator.validate(await self._assembled(model, records))
        except (RequestValidationError, FeatureStoreUnavailable) as err:
            return err
        scored = await self.predict_batch((model, columns))
        if isinstance(scored, Exception):
            return scored
        elapsed_ms = (time.perf_counter() - started) * 1000
        self._record(request_id, columns, model, scored, variant, elapsed_ms)
        return FastJSONResponse(
            {
                "request_id": request_id,
                "variant": variant,
                "model_name": model.name,
                "model_version": model.version,
                "predictions": scored.records(),
                "latency_ms": round(elapsed_ms, 2),
            }
        )

    @serve.batch(  # ServeConfig's defaults; __init__ sets the configured values
        max_batch_size=ServeConfig.model_fields["max_batch_size"].default,
        batch_wait_timeout_s=ServeConfig.model_fields["batch_wait_timeout_s"].default,
    )
    async def predict_batch(self, items: list[tuple[Any, Columns]]) -> list[Scored | Exception]:
        """Many requests, one model call per version in the batch (two only while a swap or A/B is on).

        Called on the event loop, not in a worker thread: the call is short and holds the GIL anyway, so the
        hand-off to a thread costs more than it frees (benchmarks/serving.py at concurrency 32 shows it)."""
        return predict_grouped(items)

    def _start_online_features(self) -> None:
        """Feast's import and its registry are seconds of work: paid here, before the replica is ready, for the
        models loaded now that look features up (a version swapped in later pays it on its first request)."""

        for served in self.served.values():
            model = served.champion.current
            if model is not None and model.contract.features:
                self._online_client().keys(model.contract.features)

    def _online_client(self) -> Any:
        from tasks.runtime import online

        if self.online is None:
            self.online = online.OnlineFeatures(self.settings)
        return self.online

    async def _assembled(self, model: Any, records: list[Any]) -> list[Any]:
        """The records with the model's feature-store inputs filled in from the online store (one call for the
        requests of a dynamic batch); records without them pass through unchanged."""
        from tasks.runtime import online

        refs = model.contract.features
        indexes = online.to_look_up(records, refs) if refs else []
        if not indexes:
            return records
        keys = self._online_client().keys(refs)
        rows, problems = online.entity_rows(records, indexes, keys)
        if problems:
            raise RequestValidationError(problems)
        values = await self.lookup_batch((tuple(refs), rows))
        if isinstance(values, Exception):
            raise FeatureStoreUnavailable(f"online feature store: {type(values).__name__}: {values}") from values
        records, problems = online.assemble(records, indexes, refs, keys, values, self.config.missing_features)
        if problems:
            raise RequestValidationError(problems)
        return records

    @serve.batch(
        max_batch_size=ServeConfig.model_fields["max_batch_size"].default,
        batch_wait_timeout_s=ServeConfig.model_fields["batch_wait_timeout_s"].default,
    )
    async def lookup_batch(self, items: list[tuple[tuple[str, ...], list[dict]]]) -> list[dict | Exception]:
        """Many requests' entity rows, one online-store call per set of feature references (OnlineFeatures)."""
        return self.online.lookup_grouped(items)

    def _variant(
        self, served: Served, request: Request, records: list[Any], request_id: str, mode: str, share: float
    ) -> str:
        if mode != "ab" or served.champion.current is None:
            return "champion"
        id_columns = served.champion.current.contract.id_columns
        key = sticky_key(request.headers.get(self.config.sticky_header), records, id_columns, request_id)
        return choose_variant("ab", key, share)

    async def _shadow(self, served: Served, records: list[Any], request_id: str) -> None:
        """The challenger's answer to the same records: logged as variant 'shadow', never returned."""
        model = served.challenger.current
        if model is None:
            return
        started = time.perf_counter()
        try:  # its schema may differ from the champion's
            answered = await self._answer(model, "shadow", records, request_id, started)
        except Exception as err:  # a broken challenger must never touch the champion's traffic
            answered = err
        if isinstance(answered, Exception):
            self._record_failure(request_id, model, "shadow", answered, started)

    def _record_failure(self, request_id: str, model: Any, variant: str, err: Exception, started: float) -> None:
        tags = {"model": model.name, "model_version": model.version, "variant": variant, "outcome": "error"}
        self.requests.inc(tags=tags)
        if self.log is not None:
            self.log.add(
                prediction_log.failure_columns(
                    request_id=request_id,
                    model_name=model.name,
                    model_version=model.version,
                    variant=variant,
                    error=failure_text(err),
                    latency_ms=(time.perf_counter() - started) * 1000,
                )
            )

    def _record(
        self,
        request_id: str,
        columns: Columns,
        model: Any,
        scored: Scored,
        variant: str,
        elapsed_ms: float,
    ) -> None:
        self.requests.inc(
            tags={"model": model.name, "model_version": model.version, "variant": variant, "outcome": "ok"}
        )
        self.records.inc(len(scored), tags={"model": model.name, "model_version": model.version, "variant": variant})
        self.latency.observe(elapsed_ms, tags={"model": model.name, "variant": variant})
        if self.log is not None:
            chunk = model.log_columns(columns, scored, request_id=request_id, variant=variant, latency_ms=elapsed_ms)
            self.log.add(chunk)

    def _refuse(self, status: int, message: str, request_id: str, model: str) -> JSONResponse:
        self.requests.inc(tags={"model": model, "model_version": "", "variant": "", "outcome": f"http_{status}"})
        return _error(status, message, request_id)

    def _unknown(self, name: str) -> JSONResponse:
        return _error(404, f"no model {name!r} is served here; served: {sorted(self.served)}", uuid.uuid4().hex)

    def _authorized(self, request: Request) -> bool:
        scheme, _, supplied = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(supplied.encode(), self.token)

    def __del__(self) -> None:
        for served in getattr(self, "served", {}).values():
            for slot in [*served.slots.values(), served.traffic]:
                slot.close()
        if getattr(self, "log", None) is not None:
            self.log.close()


def build_app(args: dict[str, Any]) -> serve.Application:
    """Application builder for `serve run`/`serve deploy`: args come from the config file."""
    return ModelService.bind(ServeConfig(**args).model_dump())


CONFIG_FILE = Path(__file__).with_name("config.yaml")


def shipped_config(path: Path = CONFIG_FILE) -> dict[str, Any]:
    """The one application of a serve config file, as written: its `args` and its deployment's options."""
    (application,) = yaml.safe_load(path.read_text())["applications"]
    return application


def app_from_config(path: Path = CONFIG_FILE, **args: Any) -> serve.Application:
    """The application as `serve run <path>` deploys it (the file's args and deployment options: replicas,
    autoscaling, resources), with `args` overriding the file's: to run the shipped setup from Python."""
    application = shipped_config(path)
    options = {key: value for key, value in application["deployments"][0].items() if key != "name"}
    return ModelService.options(**options).bind(ServeConfig(**{**application.get("args", {}), **args}).model_dump())
