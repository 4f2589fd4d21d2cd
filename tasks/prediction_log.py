"""The prediction log: every prediction, online or batch, as Parquet under <storage>/predictions/date=YYYY-MM-DD/.

Monitoring reads it back by time window; the columns are the model's inputs as sent, so they compare directly
with the training snapshot.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from tasks import storage
from tasks.settings import Settings

LOG_COLUMNS = [
    "request_id",
    "record_index",
    "logged_at",
    "model_name",
    "model_version",
    "variant",
    "prediction",
    "probabilities",
]


def log_root(settings: Settings) -> str:
    return storage.join(settings.storage_url, "predictions")


def log_columns(
    inputs: Mapping[str, Any],
    predictions: Sequence[Any],
    probabilities: Sequence[str | None],
    *,
    request_id: str,
    model_name: str,
    model_version: str,
    variant: str,
    logged_at: datetime | None = None,
    first_index: int = 0,
) -> dict[str, Any]:
    """Log rows as columns: the inputs as validated, the outputs, which version and variant produced them.

    Column-wise because the serving path logs every record of every request: one small array per column per
    request, joined into one table when written (table_from_chunks)."""
    n = len(predictions)
    at = (logged_at or datetime.now(UTC)).astimezone(UTC).replace(tzinfo=None)
    return {
        **inputs,
        "request_id": np.full(n, request_id, dtype=object),
        "record_index": np.arange(first_index, first_index + n),
        "logged_at": np.full(n, np.datetime64(at, "us")),
        "model_name": np.full(n, model_name, dtype=object),
        "model_version": np.full(n, str(model_version), dtype=object),
        "variant": np.full(n, variant, dtype=object),
        "prediction": np.asarray(predictions),
        "probabilities": np.array(probabilities, dtype=object),
    }


def table_from_chunks(chunks: list[dict[str, Any]]) -> pa.Table:
    """One Arrow table from many log_columns chunks; a field one request did not send is null in its rows.

    Straight to Arrow, not through a pandas frame: a serving replica builds this every few seconds beside the
    requests it answers, and pandas' frame construction was half of that cost."""
    names = list(dict.fromkeys(name for chunk in chunks for name in chunk))
    sizes = [len(chunk["request_id"]) for chunk in chunks]
    columns = {
        name: np.concatenate(
            [
                chunk[name] if name in chunk else np.full(size, None, dtype=object)
                for chunk, size in zip(chunks, sizes, strict=True)
            ]
        )
        for name in names
    }
    # from_pandas: NaN and pd.NA become nulls, as they did when this went through a pandas frame.
    # logged_at: log_columns stamps naive UTC times; the files say so, and read back timezone-aware.
    types = {"logged_at": pa.timestamp("us", tz="UTC")}
    return pa.table({name: pa.array(col, type=types.get(name), from_pandas=True) for name, col in columns.items()})


def write(rows: pa.Table, settings: Settings, writer: str = "serving") -> list[str]:
    """Write log rows (table_from_chunks) as one Parquet file per day."""
    if rows.num_rows == 0:
        return []
    # numpy day arithmetic: strftime on every row took a fifth of a serving replica's time under load
    days = rows["logged_at"].to_numpy().astype("datetime64[D]")
    written = []
    for day in np.unique(days):
        part = rows.filter(pa.array(days == day))
        name = f"{writer}-{datetime.now(UTC):%H%M%S}-{uuid.uuid4().hex[:8]}.parquet"
        uri = storage.join(log_root(settings), f"date={day}", name)
        buffer = io.BytesIO()
        pq.write_table(part, buffer)
        storage.write_bytes(uri, buffer.getvalue(), settings)
        written.append(uri)
    return written


def read(settings: Settings, since: datetime | None = None, until: datetime | None = None) -> pd.DataFrame:
    """Rows logged in [since, until), reading only the day partitions that can hold them."""
    fs, root = storage.filesystem(log_root(settings), settings)
    if not fs.exists(root):
        return pd.DataFrame(columns=LOG_COLUMNS)
    first_day = since.strftime("%Y-%m-%d") if since else ""
    last_day = until.strftime("%Y-%m-%d") if until else "9999"
    files = [
        path
        for day_dir in sorted(fs.ls(root, detail=False))
        if first_day <= day_dir.rsplit("date=", 1)[-1] <= last_day
        for path in sorted(fs.ls(day_dir, detail=False))
        if path.endswith(".parquet")
    ]
    if not files:
        return pd.DataFrame(columns=LOG_COLUMNS)
    frames = []
    for path in files:
        with fs.open(path, "rb") as fh:
            frames.append(pd.read_parquet(fh))
    frame = pd.concat(frames, ignore_index=True)
    if since is not None:
        frame = frame[frame["logged_at"] >= pd.Timestamp(since)]
    if until is not None:
        frame = frame[frame["logged_at"] < pd.Timestamp(until)]
    return frame.sort_values("logged_at").reset_index(drop=True)
