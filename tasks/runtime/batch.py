"""Batch scoring: read a file or prefix chunk by chunk, validate, predict, write, log. Never the whole table."""

from __future__ import annotations

from collections.abc import Iterator

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from tasks.model import schemas
from tasks.runtime.loaded import LoadedModel, Scored
from tasks.settings import Settings
from tasks.store import data, prediction_log, storage


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
