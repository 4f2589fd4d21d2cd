"""Batch scoring: read a file or prefix chunk by chunk, validate, predict, write, log. Never the whole table."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from serving.predictor import LoadedModel
from tasks import data, schemas, storage
from tasks.settings import Settings


def chunks(uri: str, settings: Settings, chunk_rows: int) -> Iterator[pd.DataFrame]:
    """Rows of one file, `chunk_rows` at a time: Parquet by record batches, CSV by pandas' chunked reader."""
    fs, path = storage.filesystem(uri, settings)
    with fs.open(path, "rb") as handle:
        if data.table_format(uri) == "parquet":
            for batch in pq.ParquetFile(handle).iter_batches(batch_size=chunk_rows):
                yield batch.to_pandas()
        else:
            yield from pd.read_csv(handle, chunksize=chunk_rows)


def validate_chunk(chunk: pd.DataFrame, model: LoadedModel, source: str) -> pd.DataFrame:
    """The model's training schema, vectorised, on the columns it reads (extra columns pass through)."""
    schema = model.validator.schema.select_columns(model.validator.features)
    schema.strict = False
    return schemas.validate(chunk, schema, source)


def score(chunk: pd.DataFrame, model: LoadedModel) -> pd.DataFrame:
    """Predictions (and class probabilities) beside the model name and version, one row per input row."""
    features = chunk[model.validator.features]
    out = pd.DataFrame(index=chunk.index)
    classes = model.classes
    if classes is None:
        out["prediction"] = model.model.predict(features)
    else:
        probabilities = model.model.predict_proba(features)
        out["prediction"] = np.asarray(model.model.classes_)[probabilities.argmax(axis=1)]
        for position, label in enumerate(classes):
            out[f"probability_{label}"] = probabilities[:, position]
    out["model_name"] = model.name
    out["model_version"] = model.version
    return out


def log_rows(
    chunk: pd.DataFrame, scored: pd.DataFrame, model: LoadedModel, request_id: str, offset: int
) -> pd.DataFrame:
    """The same columns the serving app logs, built column-wise for millions of rows."""
    frame = chunk[[c for c in chunk.columns if c in model.validator.rules or c in model.validator.optional]].copy()
    frame["request_id"] = request_id
    frame["record_index"] = np.arange(offset, offset + len(chunk))
    frame["logged_at"] = datetime.now(UTC)
    frame["model_name"] = model.name
    frame["model_version"] = model.version
    frame["variant"] = "batch"
    frame["prediction"] = scored["prediction"].to_numpy()
    proba_columns = [c for c in scored.columns if c.startswith("probability_")]
    if proba_columns:
        names = [c.removeprefix("probability_") for c in proba_columns]
        values = scored[proba_columns].to_numpy()
        frame["probabilities"] = [json.dumps(dict(zip(names, row.tolist(), strict=True))) for row in values]
    else:
        frame["probabilities"] = None
    return frame.reset_index(drop=True)


def write_part(frame: pd.DataFrame, output_uri: str, part: int, settings: Settings) -> str:
    uri = storage.join(output_uri, f"part-{part:05d}.parquet")
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    storage.write_bytes(uri, buffer.getvalue(), settings)
    return uri
