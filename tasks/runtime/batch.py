"""Batch scoring: read a file or prefix chunk by chunk, validate, predict, write, log. Never the whole table.

Both engines (this process, or Ray Data's actors: tasks/runtime/ray_batch.py) score a chunk with
`score_chunk` into a staging folder beside the output; `commit` moves the parts into place and writes the
manifest last, so an output folder with a manifest is complete, and a failed run leaves no parts in it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from tasks.model import schemas
from tasks.runtime.loaded import LoadedModel, Scored
from tasks.settings import Settings
from tasks.store import data, features, prediction_log, storage

AS_OF = "__tabloop_as_of"
MANIFEST = "_manifest.json"


class OutputTaken(ValueError):
    """The output folder already holds a committed batch."""


@dataclass(frozen=True)
class StagedPart:
    """One scored chunk, written to the staging folder."""

    uri: str
    rows: int
    rows_without_features: int = 0
    node: str = ""  # the Ray node that scored it (empty in this process)


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


def score_chunk(
    chunk: pd.DataFrame,
    model: LoadedModel,
    feature_store: Any,
    as_of: datetime,
    source: str,
    part_uri: str,
    settings: Settings,
    log_as: tuple[str, int] | None,
    node: str = "",
) -> StagedPart:
    """Features looked up (when the model has store inputs), validated, scored, written to `part_uri` beside
    the input columns, and logged as (request id, index of the first row) when `log_as` is given."""
    without = 0
    if feature_store is not None:
        chunk, without = with_store_features(chunk, model, feature_store, as_of)
    accepted = validate_chunk(chunk, model, source)
    scored = model.score(accepted)  # it takes the model's columns, typed as in training (model_input)
    storage.write_parquet(part_uri, accepted.join(output_columns(scored, model, accepted.index)), settings)
    if log_as is not None:
        request_id, first_row = log_as
        prediction_log.write(log_rows(accepted, scored, model, request_id, first_row), settings, writer=request_id)
    return StagedPart(part_uri, len(accepted), without, node)


def staging_uri(output_uri: str, run_id: str) -> str:
    return storage.join(output_uri, f"_staging-{run_id}")


def check_output_free(output_uri: str, settings: Settings) -> None:
    if storage.exists(storage.join(output_uri, MANIFEST), settings):
        raise OutputTaken(f"{output_uri} already holds a committed batch ({MANIFEST}); give another output")


def commit(staged: list[StagedPart], output_uri: str, about: dict[str, Any], settings: Settings) -> list[str]:
    """The staged parts moved to `output_uri` as part-NNNNN.parquet, in the order given, then the manifest."""
    parts = []
    for number, part in enumerate(staged):
        uri = storage.join(output_uri, f"part-{number:05d}.parquet")
        storage.move(part.uri, uri, settings)
        parts.append({**asdict(part), "uri": uri})
    manifest = {
        **about,
        "rows": sum(p.rows for p in staged),
        "parts": parts,
        "committed_at": datetime.now(UTC).isoformat(),
    }
    storage.write_bytes(storage.join(output_uri, MANIFEST), json.dumps(manifest, indent=2).encode(), settings)
    return [p["uri"] for p in parts]


def abandon(staging: str, settings: Settings) -> None:
    """A failed run's staged parts removed: nothing of it stays in the output folder."""
    storage.remove_tree(staging, settings)
