"""Loading tables from local paths or s3://, content-hash versioning, and the held-out split."""

from __future__ import annotations

import hashlib
import io
import re
from dataclasses import dataclass

import pandas as pd

from tasks.model import schemas
from tasks.settings import Settings
from tasks.store import storage

READERS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}


class DataLoadError(ValueError):
    """A file could not be turned into a table: missing, empty, unreadable or an unknown format."""


def table_format(uri: str) -> str:
    lowered = uri.lower().split("?")[0]
    for suffix, kind in READERS.items():
        if lowered.endswith(suffix):
            return kind
    raise DataLoadError(f"{uri}: unsupported file type; expected one of {sorted(READERS)}")


def load_table(uri: str, settings: Settings) -> pd.DataFrame:
    """Read a CSV or Parquet file from a local path or s3:// URL, with a specific error for each way it fails."""
    kind = table_format(uri)
    try:
        raw = storage.read_bytes(uri, settings)
    except FileNotFoundError:
        raise DataLoadError(f"{uri}: file not found") from None
    if not raw.strip():
        raise DataLoadError(f"{uri}: file is empty")
    try:
        frame = pd.read_csv(io.BytesIO(raw)) if kind == "csv" else pd.read_parquet(io.BytesIO(raw))
    except UnicodeDecodeError as err:
        raise DataLoadError(f"{uri}: not valid UTF-8 text ({err.reason} at byte {err.start})") from None
    except Exception as err:  # each reader raises its own family of errors for a corrupt file
        raise DataLoadError(f"{uri}: unreadable as {kind}: {type(err).__name__}: {err}") from None
    if frame.columns.duplicated().any() or _renamed_duplicates(frame):
        raise DataLoadError(f"{uri}: duplicated column names in the header: {_renamed_duplicates(frame)}")
    if frame.empty:
        raise DataLoadError(f"{uri}: file has a header but no rows")
    return numbers_despite_blanks(frame) if kind == "csv" else frame


def numbers_despite_blanks(frame: pd.DataFrame) -> pd.DataFrame:
    """A CSV column of numbers with some cells that hold only spaces reads as text; it is numbers with those
    values missing, as pandas reads it when the cells are empty. Other text columns stay as they are."""
    converted = {}
    for name in frame.columns:
        blank = schemas.blank_cells(frame[name])
        if not blank.any():
            continue
        values = frame[name].mask(blank)
        numbers = pd.to_numeric(values, errors="coerce")
        if numbers.notna().sum() == values.notna().sum():
            converted[name] = numbers
    if not converted:
        return frame
    frame = frame.copy()
    for name, numbers in converted.items():
        frame[name] = numbers
    return frame


def input_files(uri: str, settings: Settings) -> list[str]:
    """A single CSV/Parquet file, or every CSV/Parquet file under a prefix, in name order."""
    fs, path = storage.filesystem(uri, settings)
    if not fs.exists(path):
        raise DataLoadError(f"{uri}: not found")
    if fs.isfile(path):
        table_format(uri)  # raises for an unsupported type
        return [uri]
    protocol = uri.split("://", 1)[0] + "://" if "://" in uri else ""
    found = [f"{protocol}{p}" for p in sorted(fs.find(path)) if p.lower().endswith(tuple(READERS))]
    if not found:
        raise DataLoadError(f"{uri}: no CSV or Parquet files under this prefix")
    return found


def _renamed_duplicates(frame: pd.DataFrame) -> list[str]:
    """pandas renames a repeated CSV header `x` to `x.1`; such a name beside `x` betrays a duplicated header."""
    names = {str(c) for c in frame.columns}
    return sorted(n.rsplit(".", 1)[0] for n in names if re.fullmatch(r".+\.\d+", n) and n.rsplit(".", 1)[0] in names)


def content_hash(frame: pd.DataFrame) -> str:
    """A digest of the values, column names and dtypes, independent of file format and row index."""
    digest = hashlib.sha256()
    digest.update("|".join(f"{c}:{t}" for c, t in frame.dtypes.astype(str).items()).encode())
    digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class DataVersion:
    dataset: str
    digest: str
    uri: str
    rows: int
    created: bool  # False when this exact data was already stored


def snapshot(frame: pd.DataFrame, dataset: str, settings: Settings) -> DataVersion:
    """Store the accepted data once under its content hash: the same data never makes a second file."""
    digest = content_hash(frame)
    uri = storage.join(settings.storage_url, "datasets", dataset, f"{digest}.parquet")
    created = storage.write_parquet(uri, frame, settings, once=True)
    return DataVersion(dataset, digest, uri, len(frame), created=created)


def split(frame: pd.DataFrame, test_size: float, key_columns: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Held-out rows chosen by a hash of each row's key (its id columns, else all its values), not by a seed.

    A row therefore lands on the same side in every run and every data version: the champion never trained
    on the rows a challenger is judged on, so the gate compares the two fairly.
    """
    keys = frame[key_columns] if key_columns else frame
    buckets = pd.util.hash_pandas_object(keys, index=False).to_numpy() % 10_000
    is_test = buckets < int(test_size * 10_000)
    if is_test.all() or not is_test.any():
        raise ValueError(f"{len(frame)} rows are too few to hold out {test_size:.0%} and still train")
    return frame[~is_test].reset_index(drop=True), frame[is_test].reset_index(drop=True)
