"""How every flow's steps are made Prefect tasks, and the one retry policy for their I/O."""

from __future__ import annotations

from functools import partial
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff

from tasks.store.data import DataLoadError

# Inputs here are frames and clients: hashing them for a cache key costs time and buys nothing.
step = partial(task, cache_policy=NO_CACHE)


def is_transient(exc: BaseException | None) -> bool:
    """Network and filesystem hiccups anywhere in the cause chain; a corrupt file or a bad model is not one.

    An S3 read timeout is not one either: s3fs has already retried it five times, each waiting out the
    configured read timeout, so the endpoint is stalled and another round would only multiply the wait."""
    from botocore.exceptions import ConnectionError as S3ConnectionError
    from botocore.exceptions import ReadTimeoutError

    while exc is not None:
        if isinstance(exc, DataLoadError | ReadTimeoutError):
            return False
        # requests and socket errors derive from OSError; botocore's connection errors do not
        if isinstance(exc, OSError | S3ConnectionError):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _retry_if_transient(task: Any, task_run: Any, state: Any) -> bool:
    return is_transient(state.result(raise_on_failure=False))


IO_RETRIES: dict[str, Any] = {
    "retries": 3,
    "retry_delay_seconds": exponential_backoff(backoff_factor=2),
    "retry_jitter_factor": 0.5,
    "retry_condition_fn": _retry_if_transient,
}
