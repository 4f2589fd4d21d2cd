"""The model runtime: a loaded version with its contract; resolve an alias, load, validate, score.

Plain Python (no Ray): the serving app, batch scoring and the smoke test all score through it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import mlflow
import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient

from tasks.model import contract as contracts
from tasks.model import families
from tasks.model.compiled import CompiledPreprocessor, compile_verified
from tasks.model.contract import ModelContract
from tasks.model.features import model_input
from tasks.model.metrics import plain
from tasks.runtime.validation import Columns, RecordValidator, rows_in
from tasks.settings import Settings
from tasks.store import prediction_log

Item, Whole, Part = TypeVar("Item"), TypeVar("Whole"), TypeVar("Part")


@dataclass(frozen=True)
class LoadedModel:
    name: str
    version: str
    alias: str
    model: Any  # the fitted sklearn Pipeline, preprocessing inside
    validator: RecordValidator
    contract: ModelContract
    compiled: CompiledPreprocessor | None = None  # the same preprocessing replayed with numpy, where verified

    @property
    def classes(self) -> list[Any] | None:
        classes = getattr(self.model, "classes_", None)
        return None if classes is None else [plain(c) for c in classes]

    def score(self, frame: pd.DataFrame) -> Scored:
        """Predictions for every row, and class probabilities where the model has them. The frame is typed as
        the training data was (features.model_input): missing text is None, a value the model was fitted with,
        whatever the reader made of it (pandas' CSV reader says NaN, which the pipeline would impute instead)."""
        frame = model_input(frame, self.contract.spec)
        inputs = None
        if self.compiled is not None:
            inputs = self.compiled.transform({name: frame[name].to_numpy() for name in self.compiled.columns})
        if inputs is None:
            return self._scored(self.model, frame)
        return self._scored(self.compiled.estimator, inputs)

    def score_columns(self, columns: Columns) -> Scored:
        """`score` for validated request columns (RecordValidator.joined), without building a DataFrame where
        the compiled preprocessing applies."""
        inputs = None if self.compiled is None else self.compiled.transform(columns)
        if inputs is None:
            return self._scored(self.model, self.validator.frame(columns))
        return self._scored(self.compiled.estimator, inputs)

    def _scored(self, predictor: Any, inputs: Any) -> Scored:
        """Classifiers make one predict_proba call and take the most probable class, which is what sklearn's
        predict does: the per-call cost is paid once."""
        classes = self.classes
        if classes is None:
            return Scored(np.asarray(predictor.predict(inputs), dtype="float64"), None, [])
        probabilities = predictor.predict_proba(inputs)
        return Scored(np.asarray(self.model.classes_)[probabilities.argmax(axis=1)], probabilities, classes)

    def log_columns(
        self,
        inputs: Mapping[str, Any],
        scored: Scored,
        *,
        request_id: str,
        variant: str,
        first_index: int = 0,
        logged_at: datetime | None = None,
        latency_ms: float | None = None,
    ) -> prediction_log.LogChunk:
        """Prediction-log rows (prediction_log.log_columns) for rows this version scored."""
        return prediction_log.log_columns(
            inputs,
            scored.predictions,
            scored.probabilities,
            scored.classes,
            request_id=request_id,
            model_name=self.name,
            model_version=self.version,
            variant=variant,
            logged_at=logged_at,
            first_index=first_index,
            latency_ms=latency_ms,
        )

    def predict(self, frame: pd.DataFrame) -> list[dict[str, Any]]:
        """One dict per row, as the API answers."""
        return self.score(frame).records()

    def describe(self) -> dict[str, Any]:
        contract = self.contract
        return {
            "model_name": self.name,
            "model_version": self.version,
            "alias": self.alias,
            "task_type": contract.task_type,
            "target": contract.target,
            "positive_class": contract.positive_class,
            "primary_metric": contract.primary_metric,
            "data_version": contract.data.digest,
            "data_uri": contract.data.uri,
            "classes": self.classes,
            "id_columns": contract.id_columns,
            "input_schema": self.validator.input_schema(),
        }


@dataclass(frozen=True)
class Scored:
    """A model's answers for some rows: labels (or values), and class probabilities for classifiers."""

    predictions: np.ndarray
    probabilities: np.ndarray | None  # rows x classes
    classes: list[Any]

    def __len__(self) -> int:
        return len(self.predictions)

    def records(self) -> list[dict[str, Any]]:
        if self.probabilities is None:
            return [{"prediction": float(p)} for p in self.predictions]
        names = [str(c) for c in self.classes]
        return [
            {"prediction": label, "probabilities": dict(zip(names, row, strict=True))}
            for label, row in zip(self.predictions.tolist(), self.probabilities.tolist(), strict=True)
        ]

    def slice(self, start: int, stop: int) -> Scored:
        probabilities = None if self.probabilities is None else self.probabilities[start:stop]
        return Scored(self.predictions[start:stop], probabilities, self.classes)


def resolve_alias(client: MlflowClient, name: str, alias: str) -> str:
    return str(client.get_model_version_by_alias(name, alias).version)


def load_version(settings: Settings, name: str, version: str, alias: str) -> LoadedModel:
    """Load a registered version in the safe skops format, with its contract."""
    return load_model_dir(download_version(name, version), name, version, alias)


def download_version(name: str, version: str) -> Path:
    return Path(mlflow.artifacts.download_artifacts(f"models:/{name}/{version}"))


def load_model_dir(local: Path, name: str, version: str, alias: str) -> LoadedModel:
    contract = read_contract(local)
    check_trusted_types(local, contract)
    model = mlflow.sklearn.load_model(str(local))
    validator = RecordValidator(contract.schema, contract.spec.columns, contract.passthrough_columns)
    return LoadedModel(name, version, alias, model, validator, contract, compile_verified(model))


def check_trusted_types(local: Path, contract: ModelContract) -> None:
    """skops loads what the model file says to trust: refuse a file that trusts more than the registered
    families (ours, and the plugins its contract names) ever put in a model."""
    families.load_plugins(contract.plugins)
    declared = mlflow.models.Model.load(str(local / "MLmodel")).flavors["sklearn"].get("skops_trusted_types") or []
    unknown = sorted(set(declared) - families.all_trusted_types())
    if unknown:
        raise ValueError(f"{local}: the model asks skops to trust {unknown}, which no registered family uses")


def read_contract(local: Path) -> ModelContract:
    """The contract of a downloaded model version (or of one saved before contracts, by its old files)."""
    metadata = mlflow.models.Model.load(str(local / "MLmodel")).metadata
    return contracts.from_metadata(metadata, lambda: (local / contracts.LEGACY_SCHEMA_FILE).read_text())


def input_example_records(local: Path) -> list[dict[str, Any]]:
    """The input example logged with the model, as the JSON records a client would send."""
    example = mlflow.models.Model.load(str(local / "MLmodel")).load_input_example(str(local))
    return json.loads(pd.DataFrame(example).to_json(orient="records", date_format="iso"))


def call_grouped(
    items: Sequence[Item],
    key: Callable[[Item], Hashable],
    call: Callable[[list[Item]], Whole],
    size: Callable[[Item], int],
    part: Callable[[Whole, int, int], Part],
) -> list[Part | Exception]:
    """One `call` per group of items with the same `key`, its result split back per item in order (`size` rows
    each, cut by `part`). A group whose call fails fails only its own items: they get the exception in place of
    their answer, so one version's (or one store's) fault never fails the rest of a batch."""
    results: list[Part | Exception | None] = [None] * len(items)
    groups: dict[Hashable, list[int]] = {}
    for index, item in enumerate(items):
        groups.setdefault(key(item), []).append(index)
    for indexes in groups.values():
        try:
            whole = call([items[i] for i in indexes])
        except Exception as err:
            for i in indexes:
                results[i] = err
            continue
        start = 0
        for i in indexes:
            stop = start + size(items[i])
            results[i] = part(whole, start, stop)
            start = stop
    return results  # every place is filled by now


def predict_grouped(items: list[tuple[LoadedModel, Columns]]) -> list[Scored | Exception]:
    """Score a batch of validated requests: one frame and one model call per model version present, split back."""

    def score(group: list[tuple[LoadedModel, Columns]]) -> Scored:
        model = group[0][0]
        return model.score_columns(model.validator.joined(*(columns for _, columns in group)))

    return call_grouped(
        items,
        key=lambda item: (item[0].name, item[0].version),
        call=score,
        size=lambda item: rows_in(item[1]),
        part=lambda scored, start, stop: scored.slice(start, stop),
    )


class Following:
    """Something read from the registry, kept current by a background thread that calls `refresh`."""

    def __init__(self, settings: Settings, name: str, poll_interval_s: float, thread_name: str) -> None:
        import logging
        import threading

        from tasks.store.registry import connect

        self.settings, self.name = settings, name
        self.client = connect(settings)
        self.log = logging.getLogger("ray.serve")
        self.error: str | None = None
        self.refresh()
        self._stop = threading.Event()
        self._poll_interval_s = poll_interval_s
        self._thread = threading.Thread(target=self._follow, name=thread_name, daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def refresh(self) -> None:
        raise NotImplementedError

    def _follow(self) -> None:
        while not self._stop.wait(self._poll_interval_s):
            self.refresh()

    def close(self) -> None:
        self._stop.set()


class AliasSlot(Following):
    """The version an alias points at.

    A new version is loaded beside the old one, then the reference is swapped: readers take `slot.current`
    once per batch and never see a half-loaded model. With `wanted`, the alias is only followed (and its
    version kept in memory) while `wanted()` says so: a challenger while traffic goes to it.
    """

    def __init__(
        self,
        settings: Settings,
        name: str,
        alias: str,
        poll_interval_s: float,
        wanted: Callable[[], bool] | None = None,
    ) -> None:
        self.alias, self.wanted = alias, wanted
        self.current: LoadedModel | None = None
        super().__init__(settings, name, poll_interval_s, f"follow-{alias}")

    def refresh(self) -> None:
        if self.wanted is not None and not self.wanted():
            self.current, self.error = None, None
            return
        try:
            version = resolve_alias(self.client, self.name, self.alias)
            if self.current is None or self.current.version != version:
                loaded = load_version(self.settings, self.name, version, self.alias)
                previous, self.current = self.current, loaded
                self.log.info(
                    "%s@%s now serves v%s (was %s)",
                    self.name,
                    self.alias,
                    version,
                    previous.version if previous else "nothing",
                )
            self.error = None
        except Exception as err:  # keep serving what is loaded; say why the alias could not be followed
            self.error = f"{type(err).__name__}: {err}"
            self.log.warning("%s@%s: could not refresh: %s", self.name, self.alias, self.error)


class TrafficSlot(Following):
    """The model's traffic split as set in the registry (registry.Traffic); None while none is set."""

    def __init__(self, settings: Settings, name: str, poll_interval_s: float) -> None:
        from tasks.store.registry import Traffic

        self.current: Traffic | None = None
        super().__init__(settings, name, poll_interval_s, "follow-traffic")

    def refresh(self) -> None:
        from tasks.store.registry import read_traffic

        try:
            found = read_traffic(self.client, self.name)
            if found != self.current:
                self.log.info("%s: traffic now %s (was %s)", self.name, found, self.current)
            self.current, self.error = found, None
        except Exception as err:  # keep the split we had
            self.error = f"{type(err).__name__}: {err}"
            self.log.warning("%s: could not read the traffic setting: %s", self.name, self.error)
