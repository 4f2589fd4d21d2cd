"""The prediction log: every prediction, online or batch, as Parquet under
<storage>/predictions/model=<name>/date=YYYY-MM-DD/ (logs written before models had their own folder sit in
<storage>/predictions/date=YYYY-MM-DD/ and are still read).

Monitoring reads it back by time window; the columns are the model's inputs as sent, so they compare directly
with the training snapshot.
"""

from __future__ import annotations

import json
import operator
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tasks.settings import Settings
from tasks.store import storage

LOG_COLUMNS = [
    "request_id",
    "record_index",
    "logged_at",
    "model_name",
    "model_version",
    "variant",
    "prediction",
]
# per request, when known: the time to answer (online only), and why a variant failed to answer (its row then
# has no inputs and no prediction; the request was answered by the champion instead)
REQUEST_COLUMNS = ["latency_ms", "error"]
PROBABILITY_PREFIX = "probability_"  # one float column per class, as batch scoring's output has them


def log_root(settings: Settings) -> str:
    return storage.join(settings.storage_url, "predictions")


@dataclass(frozen=True)
class LogChunk:
    """One request's log rows, kept as the request path has them: arrays for what differs per row, single
    values for what the whole request shares. Rows are only spelled out when many chunks become a table."""

    per_row: dict[str, np.ndarray]  # the inputs as validated, the prediction, probability_<class>
    shared: dict[str, Any]  # request_id, logged_at, model_name, model_version, variant
    first_index: int = 0

    @property
    def rows(self) -> int:
        return len(self.per_row["prediction"])


def log_columns(
    inputs: Mapping[str, Any],
    predictions: np.ndarray,
    probabilities: np.ndarray | None,
    classes: Sequence[Any],
    *,
    request_id: str,
    model_name: str,
    model_version: str,
    variant: str,
    logged_at: datetime | None = None,
    first_index: int = 0,
    latency_ms: float | None = None,
) -> LogChunk:
    """Log rows for one request: the inputs as validated, the outputs, which version and variant produced them.

    Nothing here is per row: the serving path logs every record of every request, so the request path only
    keeps references (probabilities: a rows x classes array, one column per class) and table_from_chunks does
    the rest, vectorised, off the request path."""
    at = (logged_at or datetime.now(UTC)).astimezone(UTC).replace(tzinfo=None)
    per_row = {**inputs, "prediction": np.asarray(predictions)}
    if probabilities is not None:
        per_row.update({f"{PROBABILITY_PREFIX}{label}": probabilities[:, i] for i, label in enumerate(classes)})
    shared = {
        "request_id": request_id,
        "logged_at": np.datetime64(at, "us"),
        "model_name": model_name,
        "model_version": str(model_version),
        "variant": variant,
        "latency_ms": latency_ms,
    }
    return LogChunk(per_row, shared, first_index)


def failure_columns(
    *, request_id: str, model_name: str, model_version: str, variant: str, error: str, latency_ms: float | None
) -> LogChunk:
    """One row for a request a variant could not answer (it was answered by another): what went wrong."""
    shared = {
        "request_id": request_id,
        "logged_at": np.datetime64(datetime.now(UTC).replace(tzinfo=None), "us"),
        "model_name": model_name,
        "model_version": str(model_version),
        "variant": variant,
        "latency_ms": latency_ms,
        "error": error[:500],
    }
    return LogChunk({"prediction": np.array([None], dtype=object)}, shared)


def answered(log: pd.DataFrame) -> pd.DataFrame:
    """The rows that carry a prediction (not a variant's failure to answer)."""
    if "error" not in log.columns:
        return log
    return log[log["error"].isna()].reset_index(drop=True)


def table_from_chunks(chunks: list[LogChunk]) -> pa.Table:
    """One Arrow table from many chunks; a field one request did not send (or a class another version does not
    have) is null in its rows.

    Straight to Arrow, not through a pandas frame: a serving replica builds this every few seconds beside the
    requests it answers, and pandas' frame construction was half of that cost."""
    sizes = np.array([chunk.rows for chunk in chunks])
    starts = np.array([chunk.first_index for chunk in chunks])
    offsets = np.cumsum(sizes) - sizes
    # each chunk's record_index runs first_index, first_index + 1, ...: one arange, shifted per chunk
    record_index = np.arange(sizes.sum()) - np.repeat(offsets - starts, sizes)
    per_row = per_row_columns(chunks)
    names = list(per_row)

    types = {"logged_at": pa.timestamp("us", tz="UTC"), "latency_ms": pa.float64(), "error": pa.string()}
    chunk_of_row = pa.array(np.repeat(np.arange(len(chunks)), sizes))

    def repeated(name: str) -> pa.Array:
        # one Arrow value per chunk, then taken per row in Arrow: no Python object per row
        dtype = "datetime64[us]" if name == "logged_at" else object
        values = np.array([chunk.shared.get(name) for chunk in chunks], dtype=dtype)
        return pa.array(values, type=types.get(name), from_pandas=True).take(chunk_of_row)

    def log_column(name: str) -> np.ndarray | pa.Array:
        if name == "record_index":
            return record_index
        return per_row[name] if name in per_row else repeated(name)

    probabilities = [name for name in names if name.startswith(PROBABILITY_PREFIX)]
    request = [name for name in REQUEST_COLUMNS if any(chunk.shared.get(name) is not None for chunk in chunks)]
    columns = {
        **{name: column for name, column in per_row.items() if name not in LOG_COLUMNS and name not in probabilities},
        **{name: log_column(name) for name in LOG_COLUMNS},
        **{name: repeated(name) for name in request},
        **{name: per_row[name] for name in probabilities},
    }
    # from_pandas: NaN and pd.NA become nulls, as they did when this went through a pandas frame.
    # logged_at: log_columns stamps naive UTC times; the files say so, and read back timezone-aware.
    return pa.table(
        {
            name: col if isinstance(col, pa.Array) else pa.array(col, type=types.get(name), from_pandas=True)
            for name, col in columns.items()
        }
    )


def per_row_columns(chunks: list[LogChunk]) -> dict[str, np.ndarray]:
    """Each per-row field over every chunk, null where a chunk lacks it. The chunks of one flush nearly always
    carry the same fields (one version's requests): then each column is one concatenation with no test per
    chunk, which keeps a flush of thousands of single-row requests from holding the GIL for long."""
    fields = [chunk.per_row for chunk in chunks]
    layouts = dict.fromkeys(tuple(row) for row in fields)
    names = list(dict.fromkeys(name for layout in layouts for name in layout))
    if len(layouts) == 1:
        return {name: np.concatenate(list(map(operator.itemgetter(name), fields))) for name in names}
    return {
        name: np.concatenate(
            [
                row[name] if name in row else np.full(chunk.rows, None, dtype=object)
                for row, chunk in zip(fields, chunks, strict=True)
            ]
        )
        for name in names
    }


def write(rows: pa.Table, settings: Settings, writer: str = "serving") -> list[str]:
    """Write log rows (table_from_chunks) as one Parquet file per model and day."""
    if rows.num_rows == 0:
        return []
    # numpy day arithmetic: strftime on every row took a fifth of a serving replica's time under load; and no
    # sort or Python object per row (a replica's flush is one model's rows, nearly always of one day)
    days = rows["logged_at"].to_numpy().astype("datetime64[D]")
    models = pc.unique(rows["model_name"]).to_pylist()
    written = []
    for model in models:
        of_model = rows if len(models) == 1 else rows.filter(pc.equal(rows["model_name"], model))
        model_days = days if len(models) == 1 else of_model["logged_at"].to_numpy().astype("datetime64[D]")
        first, last = model_days.min(), model_days.max()
        for day in [first] if first == last else np.unique(model_days):
            part = of_model if first == last else of_model.filter(pa.array(model_days == day))
            name = f"{writer}-{datetime.now(UTC):%H%M%S}-{uuid.uuid4().hex[:8]}.parquet"
            uri = storage.join(log_root(settings), f"model={model}", f"date={day}", name)
            storage.write_parquet(uri, part, settings)
            written.append(uri)
    return written


def window_files(
    settings: Settings, since: datetime | None = None, until: datetime | None = None, model: str | None = None
) -> list[str]:
    """The log's Parquet files in the partitions that can hold rows of [since, until), of one model or of all."""
    base = log_root(settings)
    fs, root = storage.filesystem(base, settings)
    fs.invalidate_cache()  # s3fs keeps listings per process: parts written since an earlier read would be missed
    if not fs.exists(root):
        return []
    protocol = base.split("://", 1)[0] + "://" if "://" in base else ""
    first_day = since.strftime("%Y-%m-%d") if since else ""
    last_day = until.strftime("%Y-%m-%d") if until else "9999"
    top = sorted(fs.ls(root, detail=False))
    folders = [d for d in top if "date=" in d.rsplit("/", 1)[-1]]  # the layout before per-model folders
    for model_dir in (d for d in top if d.rsplit("/", 1)[-1].startswith("model=")):
        if model is None or model_dir.rsplit("model=", 1)[-1] == model:
            folders += sorted(fs.ls(model_dir, detail=False))
    paths = [
        path
        for day_dir in folders
        if first_day <= day_dir.rsplit("date=", 1)[-1] <= last_day
        for path in sorted(fs.ls(day_dir, detail=False))
        if path.endswith(".parquet")
    ]
    return [protocol + path for path in paths]


def read(
    settings: Settings,
    since: datetime | None = None,
    until: datetime | None = None,
    model: str | None = None,
    without: Sequence[str] = (),
) -> pd.DataFrame:
    """Rows logged in [since, until), of one model or of all, reading only the partitions that can hold them;
    `without`: columns not read (the inputs, when only what was answered is needed)."""
    files = window_files(settings, since, until, model)
    if not files:
        return pd.DataFrame(columns=LOG_COLUMNS)
    frames = []
    for uri in files:
        fs, path = storage.filesystem(uri, settings)
        with fs.open(path, "rb") as fh:
            parquet = pq.ParquetFile(fh)
            columns = [c for c in parquet.schema_arrow.names if c not in set(without)]
            frames.append(parquet.read(columns=columns).to_pandas())
    frame = in_window(pd.concat(frames, ignore_index=True), since, until, model)
    return frame.sort_values("logged_at").reset_index(drop=True)


def in_window(frame: pd.DataFrame, since: datetime | None, until: datetime | None, model: str | None) -> pd.DataFrame:
    """The rows of one model (or all) logged in [since, until): a partition holds a whole day."""
    keep = np.ones(len(frame), dtype=bool)
    if since is not None:
        keep &= (frame["logged_at"] >= pd.Timestamp(since)).to_numpy()
    if until is not None:
        keep &= (frame["logged_at"] < pd.Timestamp(until)).to_numpy()
    if model is not None:
        keep &= (frame["model_name"] == model).to_numpy()
    return frame if keep.all() else frame[keep]


def served(log: pd.DataFrame) -> pd.DataFrame:
    """What clients were answered: the rows with a prediction, shadow answers left out (they are not traffic)."""
    answered_rows = answered(log)
    if answered_rows.empty:
        return answered_rows
    return answered_rows[answered_rows["variant"] != "shadow"].reset_index(drop=True)


def class_probabilities(log: pd.DataFrame) -> pd.DataFrame:
    """Per row, the probability of each class (columns: class labels as text), from the probability_<class>
    columns, or from the JSON text column `probabilities` of logs written before those columns existed."""
    labels = [c.removeprefix(PROBABILITY_PREFIX) for c in log.columns if c.startswith(PROBABILITY_PREFIX)]
    out = pd.DataFrame({label: log[PROBABILITY_PREFIX + label].astype("float64") for label in labels}, index=log.index)
    if "probabilities" in log.columns:
        old = log["probabilities"].dropna().map(json.loads)
        if len(old):
            out = out.combine_first(pd.DataFrame(old.tolist(), index=old.index).astype("float64"))
    return out
