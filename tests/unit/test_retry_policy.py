"""Which failures the I/O tasks retry: transient network and storage errors, never bad data."""

from __future__ import annotations

import pytest
from botocore.exceptions import EndpointConnectionError, ReadTimeoutError
from mlflow.exceptions import MlflowException

from tasks.steps.retries import is_transient
from tasks.store.data import DataLoadError


def chained(outer: Exception, inner: Exception) -> Exception:
    try:
        try:
            raise inner
        except Exception as cause:
            raise outer from cause
    except Exception as err:
        return err


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (ConnectionError("reset by peer"), True),
        (TimeoutError("read timed out"), True),
        (chained(MlflowException("API request failed"), ConnectionRefusedError()), True),
        (DataLoadError("x.csv: file is empty"), False),
        (chained(DataLoadError("x.csv: file not found"), FileNotFoundError()), False),
        (ValueError("bad parameter"), False),
        (MlflowException("untrusted types"), False),
        # s3fs retried it five times already; a stalled endpoint is not worth three more rounds
        (ReadTimeoutError(endpoint_url="http://s3:9000/b/k"), False),
        (EndpointConnectionError(endpoint_url="http://s3:9000/b/k"), True),  # S3 down or restarting
    ],
)
def test_only_transient_errors_are_retried(error, transient):
    assert is_transient(error) is transient
