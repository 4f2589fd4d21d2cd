"""Batch scoring: read a file or prefix chunk by chunk, validate, predict, write, log. Never the whole table."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from tasks.model import schemas
from tasks.runtime.loaded import LoadedModel, Scored
from tasks.settings import Settings
from tasks.store import data, features, prediction_log, storage

AS_OF = "__tabloop_as_of"


def chunks(uri: str, settings: Settings, chunk_rows: int) -> Iterator[pd.DataFrame]:
    """Rows of one file, `chunk_rows` at a time: Parquet by record batches, CSV by pandas' chunked reader."""
    fs, path = storage.filesystem(uri, settings)
    with fs.open(path, "rb") as handle:
        if data.table_format(uri) == "parquet":
            for batch in pq.ParquetFile(handle).iter_batches(batch_size=chunk_rows):
                yield batch.to_pandas()
        else:
            yield from pd.read_csv(handle, chunksize=chunk_rows)


def with_store_features(
    chunk: pd.DataFrame, model: LoadedModel, store: Any, as_of: datetime
) -> tuple[pd.DataFrame, int]:
    """The chunk with the model's feature-store inputs it does not carry itself, by the point-in-time join that
    built its training set: as known at each row's time (the model's timestamp column, when the file has it),
    else at `as_of`. Returns the frame and how many rows had no value known; those are scored with the
    features missing, as training rows with none were (the schema decides whether missing is allowed)."""
    absent = [ref for ref in model.contract.features if features.feature_columns([ref])[0] not in chunk.columns]
    if not absent:
        return chunk, 0
    timestamp = model.contract.timestamp_column
    column = timestamp if timestamp and timestamp in chunk.columns else AS_OF
    rows = chunk if column == timestamp else chunk.assign(**{AS_OF: pd.Timestamp(as_of)})
    joined = features.training_frame(store, rows, absent, column).drop(columns=[AS_OF], errors="ignore")
    joined.index = chunk.index
    unknown = int(joined[features.feature_columns(absent)].isna().all(axis=1).sum())
    return joined, unknown


def validate_chunk(chunk: pd.DataFrame, model: LoadedModel, source: str) -> pd.DataFrame:
    """The model's training schema, vectorised, on the columns it reads (extra columns pass through)."""
    schema = model.validator.schema.select_columns(model.validator.features)
    schema.strict = False
    return schemas.validate(chunk, schema, source)


def score(chunk: pd.DataFrame, model: LoadedModel) -> Scored:
    return model.score(chunk[model.validator.features])


def output_columns(scored: Scored, model: LoadedModel, index: pd.Index) -> pd.DataFrame:
    """Predictions (and one probability column per class) beside the model name and version."""
    out = pd.DataFrame({"prediction": scored.predictions}, index=index)
    if scored.probabilities is not None:
        for position, label in enumerate(scored.classes):
            out[f"{prediction_log.PROBABILITY_PREFIX}{label}"] = scored.probabilities[:, position]
    out["model_name"] = model.name
    out["model_version"] = model.version
    return out


def log_rows(chunk: pd.DataFrame, scored: Scored, model: LoadedModel, request_id: str, offset: int) -> pa.Table:
    """The same columns the serving app logs, built column-wise for millions of rows."""
    inputs = {c: chunk[c].to_numpy() for c in chunk.columns if c in model.validator.known}
    columns = model.log_columns(inputs, scored, request_id=request_id, variant="batch", first_index=offset)
    return prediction_log.table_from_chunks([columns])


def write_part(frame: pd.DataFrame, output_uri: str, part: int, settings: Settings) -> str:
    uri = storage.join(output_uri, f"part-{part:05d}.parquet")
    storage.write_parquet(uri, frame, settings)
    return uri
