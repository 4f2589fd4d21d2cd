"""Command lines generated from a flow's pydantic parameters: one flag per field, or a YAML spec file of them.

    python flows/train.py --spec models/customers.yaml --n-trials 50     # flags override the file
    python flows/train.py --spec customers                               # the declared model of that name

The flags and `--help` come from the same model Prefect validates, so the shell, Python and deployments
accept exactly the same parameters.
"""

from __future__ import annotations

import argparse
import json
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

Params = TypeVar("Params", bound=BaseModel)


SpecLoader = Callable[[str, dict[str, Any]], Any]


def add_arguments(parser: argparse.ArgumentParser, model: type[BaseModel]) -> None:
    """`--spec` and one `--field-name` per field; only flags given on the command line are used."""
    parser.add_argument(
        "--spec", help="a YAML file of these parameters, or a declared model's name (models/<name>.yaml); flags win"
    )
    for name, field in model.model_fields.items():
        flag = "--" + name.replace("_", "-")
        default = "" if field.is_required() else f" (default: {_shown(field.get_default(call_default_factory=True))})"
        text = f"{field.description or ''}{default}".replace("%", "%%")  # argparse formats help with %
        parser.add_argument(flag, dest=name, default=argparse.SUPPRESS, help=text, **_argument(field.annotation))


def parse(
    model: type[Params], argv: list[str] | None, description: str | None = None, load_spec: SpecLoader | None = None
) -> Params:
    """The parameters from the spec, overridden by flags; a clear message (exit 2) when they do not validate.

    `load_spec(ref, flags)` reads what `--spec` names; by default `ref` is a YAML file of parameters."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser, model)
    given = vars(parser.parse_args(argv))
    spec = given.pop("spec", None)
    try:
        if spec is None:
            return model.model_validate(given)
        if load_spec is not None:
            return load_spec(spec, given)
        return with_spec(model, yaml.safe_load(Path(spec).read_text()), given)
    except (OSError, ValueError, ValidationError) as err:
        parser.error(describe(err))
        raise  # parser.error exits; this keeps type checkers satisfied


def with_spec(model: type[Params], declared: Any, overrides: dict[str, Any]) -> Params:
    """The parameters a spec (parsed YAML: parameter names as keys) declares, with `overrides` winning."""
    declared = declared or {}
    if not isinstance(declared, dict):
        raise ValueError("a spec is a YAML mapping of parameter names to values")
    unknown = sorted(set(declared) - set(model.model_fields))
    if unknown:
        raise ValueError(f"the spec names unknown parameters {unknown}; known: {sorted(model.model_fields)}")
    return model.model_validate({**declared, **overrides})


def describe(err: Exception) -> str:
    if isinstance(err, ValidationError):
        return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'parameters'}: {e['msg']}" for e in err.errors())
    return str(err)


def _argument(annotation: Any) -> dict[str, Any]:
    inner = _without_none(annotation)
    origin = typing.get_origin(inner)
    if inner is bool:
        return {"action": argparse.BooleanOptionalAction}
    if origin is Literal:
        return {"choices": list(typing.get_args(inner))}
    if inner in (int, float, str):
        return {"type": inner, "metavar": inner.__name__.upper()}
    if origin in (list, tuple) and typing.get_args(inner) and typing.get_args(inner)[0] in (int, float, str):
        return {"nargs": "+", "type": typing.get_args(inner)[0], "metavar": "VALUE"}
    return {"type": _json_or_text, "metavar": "JSON"}  # nested models, dicts, labels of any type


def _json_or_text(value: str) -> Any:
    """A JSON value (1, true, {"min_primary": 0.7}); anything else as the text it is (a label such as Yes)."""
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


def _without_none(annotation: Any) -> Any:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _shown(value: Any) -> str:
    if isinstance(value, BaseModel):
        return json.dumps(value.model_dump(mode="json"))
    return repr(value) if isinstance(value, str) else str(value)
