"""Declared models: one spec file per model in the models folder (`TABLOOP_MODELS_DIR`, default `models/`).

A model's name is its spec's `model_name`, else the file's name: `models/customers.yaml` declares `customers`.
Training takes a spec by file or by that name; monitoring (to retrain with the spec's families, budget and
gate), the serving app (every declared model) and the deployments find it by name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tasks.model.spec import TrainParams
from tasks.ops import cli
from tasks.settings import Settings
from tasks.store import storage

SUFFIXES = (".yaml", ".yml")


def is_file_reference(ref: str) -> bool:
    """A path or URL of a spec file, rather than the name of a declared model."""
    return ref.split("?")[0].endswith(SUFFIXES)


def load(ref: str, settings: Settings, overrides: dict[str, Any] | None = None) -> TrainParams:
    """The spec a file (local or s3://) or a declared model's name refers to, with `overrides` winning."""
    if is_file_reference(ref):
        return parse(storage.read_bytes(ref, settings).decode(), Path(ref.split("?")[0]).stem, overrides)
    known = declared(settings)
    if ref not in known:
        raise ValueError(f"no model named {ref!r} is declared in {settings.models_dir}; declared: {sorted(known)}")
    return parse(known[ref].read_text(), known[ref].stem, overrides)


def parse(text: str, file_stem: str, overrides: dict[str, Any] | None = None) -> TrainParams:
    declared_fields = yaml.safe_load(text) or {}
    if isinstance(declared_fields, dict) and not declared_fields.get("model_name"):
        declared_fields = {**declared_fields, "model_name": file_stem}
    return cli.with_spec(TrainParams, declared_fields, overrides or {})


def declared(settings: Settings) -> dict[str, Path]:
    """Each declared model's name and its spec file, in name order (`churn` before `churn-activity`, whatever
    the file names sort like); a folder that is missing declares none."""
    folder = Path(settings.models_dir)
    found: dict[str, Path] = {}
    for path in sorted(p for p in folder.glob("*") if p.suffix in SUFFIXES) if folder.is_dir() else []:
        try:
            name = parse(path.read_text(), path.stem).model_name
        except ValueError as err:  # pydantic's ValidationError is a ValueError
            raise ValueError(f"{path}: {cli.describe(err)}") from err
        if name in found:
            raise ValueError(f"{found[name]} and {path} both declare the model {name!r}")
        found[name] = path
    return dict(sorted(found.items()))


def find(name: str, settings: Settings) -> TrainParams | None:
    """The declared spec of the model `name`, or None when it was trained without one."""
    path = declared(settings).get(name)
    return parse(path.read_text(), path.stem) if path else None
