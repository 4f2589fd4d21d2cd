"""One way to reach storage: a local folder or s3:// through fsspec/s3fs, configured from Settings."""

from __future__ import annotations

import io
from typing import Any

import fsspec
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from tasks.settings import Settings


def storage_options(url: str, settings: Settings) -> dict[str, Any]:
    """fsspec/pandas storage options for `url`: for S3, the custom endpoint when one is set, and bounded
    timeouts and retries (botocore's defaults wait 60 s per read, several times over, on a stalled server)."""
    if not url.startswith("s3://"):
        return {}
    options: dict[str, Any] = {
        "config_kwargs": {
            "connect_timeout": settings.s3_connect_timeout_s,
            "read_timeout": settings.s3_read_timeout_s,
            "retries": {"max_attempts": settings.s3_max_attempts, "mode": "standard"},
        }
    }
    if settings.s3_endpoint_url:
        options["client_kwargs"] = {"endpoint_url": settings.s3_endpoint_url}
    return options


def filesystem(url: str, settings: Settings) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem behind `url` and the path inside it."""
    fs, path = fsspec.core.url_to_fs(url, **storage_options(url, settings))
    return fs, path


def join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)])


def write_bytes_once(url: str, data: bytes, settings: Settings) -> bool:
    """Write `data` at `url` unless something is already there. Returns True when it wrote.

    Content-addressed files never change, so an existing file is the same file.
    The write goes to a temporary name first so a killed run leaves no half file under the real name.
    """
    fs, path = filesystem(url, settings)
    if fs.exists(path):
        return False
    parent = path.rsplit("/", 1)[0]
    fs.makedirs(parent, exist_ok=True)
    tmp = f"{path}.partial"
    with fs.open(tmp, "wb") as fh:
        fh.write(data)
    fs.mv(tmp, path)
    return True


def read_bytes(url: str, settings: Settings) -> bytes:
    fs, path = filesystem(url, settings)
    with fs.open(path, "rb") as fh:
        return fh.read()


def exists(url: str, settings: Settings) -> bool:
    fs, path = filesystem(url, settings)
    return fs.exists(path)


def write_bytes(url: str, data: bytes, settings: Settings) -> None:
    fs, path = filesystem(url, settings)
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    with fs.open(path, "wb") as fh:
        fh.write(data)


def write_parquet(url: str, table: pd.DataFrame | pa.Table, settings: Settings, once: bool = False) -> bool:
    """A frame (without its index) or an Arrow table as one Parquet file at `url`. With `once`, a file already
    there is kept (content-addressed names never change); returns whether it wrote."""
    if once and exists(url, settings):
        return False
    buffer = io.BytesIO()
    if isinstance(table, pa.Table):
        pq.write_table(table, buffer)
    else:
        table.to_parquet(buffer, index=False)
    if once:
        return write_bytes_once(url, buffer.getvalue(), settings)
    write_bytes(url, buffer.getvalue(), settings)
    return True


def files_under(url: str, settings: Settings) -> list[str]:
    """Every file under a folder or prefix, as URLs of the same kind, in name order; none if it does not exist."""
    fs, path = filesystem(url, settings)
    if not fs.exists(path):
        return []
    protocol = url.split("://", 1)[0] + "://" if "://" in url else ""
    return [f"{protocol}{found}" for found in sorted(fs.find(path))]


def move(source: str, destination: str, settings: Settings) -> None:
    """One file to another place of the same store (a copy and a delete on S3)."""
    fs, path = filesystem(source, settings)
    _, target = filesystem(destination, settings)
    fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
    fs.mv(path, target)


def remove_tree(url: str, settings: Settings) -> None:
    fs, path = filesystem(url, settings)
    if fs.exists(path):
        fs.rm(path, recursive=True)
