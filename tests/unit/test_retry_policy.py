"""Which failures the I/O tasks retry: transient network and storage errors, never bad data."""

from __future__ import annotations

import pytest
from mlflow.exceptions import MlflowException

from tasks.data import DataLoadError
from tasks.training import is_transient


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
    ],
)
def test_only_transient_errors_are_retried(error, transient):
    assert is_transient(error) is transient
