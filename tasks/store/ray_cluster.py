"""Reaching Ray and our storage from it: the connection the Ray engines share (batch scoring, the monitor's
window), the environment their workers get, and the filesystem Ray Data reads with.

Against a running cluster (`address`, or RAY_ADDRESS) the work spreads over its nodes; with neither, a Ray
instance is started on this machine for the run. Every node must have the project installed (the image does)
and reach the storage, the registry and the feature store the settings name: the driver's TABLOOP_*, AWS_* and
MLFLOW_* variables are passed to the workers.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tasks.settings import Settings
from tasks.store import storage

FORWARDED_ENV = ("TABLOOP_", "AWS_", "MLFLOW_")


def forwarded_env() -> dict[str, str]:
    return {key: value for key, value in os.environ.items() if key.startswith(FORWARDED_ENV)}


@contextmanager
def connected(address: str | None) -> Iterator[bool]:
    """Ray as this process already has it, else the cluster at `address` (or RAY_ADDRESS), else a local
    instance for this run; disconnected at the end only when connected here. Yields whether that local instance
    was started: its CPUs are all there will be (a cluster's autoscaler may add nodes)."""
    import ray

    # Ray Data's usage report asks a Prometheus on localhost:9090 for cluster counters and logs a traceback
    # per query when there is none; the project sends no usage stats anyway
    os.environ.setdefault("RAY_DATA_USAGE_DISABLED", "1")
    if ray.is_initialized():
        yield False
        return
    # "local": a new instance, never a cluster a `ray start` on this machine left its address for
    target = address or os.environ.get("RAY_ADDRESS") or "local"
    ray.init(address=target, log_to_driver=False)
    try:
        yield target == "local"
    finally:
        ray.shutdown()


def arrow_filesystem(uri: str, settings: Settings) -> Any:
    """Our fsspec filesystem (local or S3 with the settings' endpoint) as the pyarrow one Ray Data reads with."""
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    return PyFileSystem(FSSpecHandler(storage.filesystem(uri, settings)[0]))


def read_parquet(uris: list[str], settings: Settings) -> Any:
    """Parquet files (all on one filesystem) as one Ray dataset."""
    import ray

    return ray.data.read_parquet(paths(uris, settings), filesystem=arrow_filesystem(uris[0], settings))


def read_csv(uris: list[str], settings: Settings) -> Any:
    """CSV files (all on one filesystem) as one Ray dataset, with missing values as pandas reads them."""
    import ray

    filesystem = arrow_filesystem(uris[0], settings)
    return ray.data.read_csv(paths(uris, settings), filesystem=filesystem, convert_options=missing_as_pandas_reads())


def paths(uris: list[str], settings: Settings) -> list[str]:
    return [storage.filesystem(uri, settings)[1] for uri in uris]


def missing_as_pandas_reads() -> Any:
    """Arrow reads an empty text cell as "" and knows fewer markers of a missing value than pandas, which the
    in-process engine reads CSV with: the same markers, for text too, give both engines the same missing values."""
    from pandas._libs.parsers import STR_NA_VALUES
    from pyarrow import csv

    return csv.ConvertOptions(null_values=sorted(STR_NA_VALUES), strings_can_be_null=True)
