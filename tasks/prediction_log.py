"""The prediction log: every prediction, online or batch, as Parquet under <storage>/predictions/date=YYYY-MM-DD/.

Monitoring reads it back by time window; the columns are the model's inputs as sent, so they compare directly
with the training snapshot.
"""

from __future__ import annotations

import io
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pandas as pd

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


def rows_for(
    request_id: str,
    records: list[dict[str, Any]],
    predictions: list[dict[str, Any]],
    model_name: str,
    model_version: str,
    variant: str,
    logged_at: datetime | None = None,
) -> list[dict[str, Any]]:
    """One log row per record: its inputs as sent, the output, and which version and variant produced it."""
    at = logged_at or datetime.now(UTC)
    return [
        {
            **record,
            "request_id": request_id,
            "record_index": index,
            "logged_at": at,
            "model_name": model_name,
            "model_version": str(model_version),
            "variant": variant,
            "prediction": output["prediction"],
            "probabilities": json.dumps(output.get("probabilities")) if output.get("probabilities") else None,
        }
        for index, (record, output) in enumerate(zip(records, predictions, strict=True))
    ]


def write(rows: list[dict[str, Any]] | pd.DataFrame, settings: Settings, writer: str = "serving") -> list[str]:
    """Write rows (dicts from rows_for, or a frame with the same columns) as one Parquet file per day."""
    if len(rows) == 0:
        return []
    frame = pd.DataFrame(rows) if isinstance(rows, list) else rows.copy()
    frame["logged_at"] = pd.to_datetime(frame["logged_at"], utc=True)
    written = []
    for day, part in frame.groupby(frame["logged_at"].dt.strftime("%Y-%m-%d")):
        name = f"{writer}-{datetime.now(UTC):%H%M%S}-{uuid.uuid4().hex[:8]}.parquet"
        uri = storage.join(log_root(settings), f"date={day}", name)
        buffer = io.BytesIO()
        part.reset_index(drop=True).to_parquet(buffer, index=False)
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
