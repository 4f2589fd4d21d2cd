"""JSON Schemas of a model's requests and answers, generated from its contract, for the API's OpenAPI document.

The schema says exactly what the record validator accepts (types, nulls, categories, ranges, patterns, no other
fields), so a client generator or a fuzzer learns the real contract from /openapi.json.
"""

from __future__ import annotations

from typing import Any

import pandera.pandas as pa

from tasks.model.contract import ModelContract
from tasks.model.schemas import MAX_MAGNITUDE, column_kind

ERROR_STATUSES = {
    "400": "The body is not valid JSON",
    "401": "Missing or wrong bearer token (when the API has one)",
    "404": "No such model is served here",
    "413": "Body or record count over the limit",
    "422": "Records that break the model's schema: each record, field and problem",
    "503": "No version of the model is loaded yet",
}
ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error", "request_id"],
    "properties": {
        "error": {"type": "string"},
        "request_id": {"type": "string"},
        "problems": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "record": {"type": "integer"},
                    "field": {"type": "string"},
                    "problem": {"type": "string"},
                },
            },
        },
    },
}


def record_schema(contract: ModelContract) -> dict[str, Any]:
    """One record: every feature required, the id and timestamp columns optional, nothing else."""
    schema = contract.schema
    features = contract.spec.columns
    optional = [name for name in contract.passthrough_columns if name in schema.columns]
    return {
        "type": "object",
        "required": features,
        "properties": {name: field_schema(schema.columns[name]) for name in [*features, *optional]},
        "additionalProperties": False,
    }


def field_schema(column: pa.Column) -> dict[str, Any]:
    kind = column_kind(column.dtype)
    field: dict[str, Any]
    if kind in ("number", "integer"):
        field = {"type": kind, "minimum": -MAX_MAGNITUDE, "maximum": MAX_MAGNITUDE}
    elif kind == "boolean":
        field = {"anyOf": [{"type": "boolean"}, {"enum": [0, 1]}]}  # the validator takes 0 and 1 too
    elif kind == "timestamp":
        field = {"type": "string", "format": "date-time"}
    else:
        field = {"type": "string"}
    for check in column.checks:
        _constrain(field, check, kind)
    if column.nullable:
        field = {"anyOf": [field, {"type": "null"}]}
    return field


def _constrain(field: dict[str, Any], check: pa.Check, kind: str) -> None:
    stats, name = check.statistics or {}, check.name
    if name == "isin":
        field["enum"] = sorted(stats["allowed_values"], key=str)
    elif name == "in_range":
        _bound(field, "minimum" if stats.get("include_min", True) else "exclusiveMinimum", stats["min_value"], max)
        _bound(field, "maximum" if stats.get("include_max", True) else "exclusiveMaximum", stats["max_value"], min)
    elif name in ("greater_than_or_equal_to", "greater_than", "less_than_or_equal_to", "less_than"):
        key = {
            "greater_than_or_equal_to": "minimum",
            "greater_than": "exclusiveMinimum",
            "less_than_or_equal_to": "maximum",
            "less_than": "exclusiveMaximum",
        }[name]
        _bound(field, key, next(iter(stats.values())), max if "Minimum" in key or key == "minimum" else min)
    elif name == "str_matches" and kind == "text":
        pattern = stats["pattern"]
        field["pattern"] = pattern if pattern.startswith("^") else f"^(?:{pattern})"  # Python matches from the start


def _bound(field: dict[str, Any], key: str, value: float, tighter: Any) -> None:
    field[key] = tighter(field[key], value) if key in field else value


def request_schema(contract: ModelContract, max_records: int) -> dict[str, Any]:
    record = record_schema(contract)
    return {"oneOf": [record, {"type": "array", "items": record, "minItems": 1, "maxItems": max_records}]}


def response_schema(contract: ModelContract) -> dict[str, Any]:
    """The answer to a prediction request: labels (or values), and class probabilities for classifiers."""
    if contract.task_type == "regression":
        prediction: dict[str, Any] = {
            "type": "object",
            "required": ["prediction"],
            "properties": {"prediction": {"type": "number"}},
        }
    else:
        classes = contract.classes or []
        probability = {"type": "number", "minimum": 0, "maximum": 1}
        prediction = {
            "type": "object",
            "required": ["prediction", "probabilities"],
            "properties": {
                "prediction": {"enum": classes} if classes else {},
                "probabilities": {
                    "type": "object",
                    "properties": {str(label): probability for label in classes},
                    "additionalProperties": probability,
                },
            },
        }
    return {
        "type": "object",
        "required": ["request_id", "variant", "model_name", "model_version", "predictions", "latency_ms"],
        "properties": {
            "request_id": {"type": "string"},
            "variant": {"type": "string", "enum": ["champion", "challenger"]},
            "model_name": {"type": "string"},
            "model_version": {"type": "string"},
            "predictions": {"type": "array", "items": prediction},
            "latency_ms": {"type": "number"},
        },
    }


def predict_operation(name: str, contract: ModelContract, max_records: int, summary: str) -> dict[str, Any]:
    """The OpenAPI operation of one model's predict route."""
    errors = {
        status: {"description": text, "content": {"application/json": {"schema": ERROR_SCHEMA}}}
        for status, text in ERROR_STATUSES.items()
    }
    return {
        "summary": summary,
        "operationId": f"predict_{name}",
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": request_schema(contract, max_records)}},
        },
        "responses": {
            "200": {
                "description": f"Predictions of {name}, with the version that made them",
                "content": {"application/json": {"schema": response_schema(contract)}},
            },
            **errors,
        },
    }
