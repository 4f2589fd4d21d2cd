"""How a flow started from a shell runs on this machine."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from prefect.settings import PREFECT_API_URL, PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

from tasks.model.schemas import DataValidationError
from tasks.store.data import DataLoadError
from tasks.store.databases import DatabaseUnavailable
from tasks.store.features import FeatureError

# What the input or the machine got wrong, and says so itself: the shell gets the message, not a traceback
# (the flow run's log in Prefect keeps the traceback).
USER_ERRORS = (DataValidationError, DataLoadError, DatabaseUnavailable, FeatureError)


@contextmanager
def shell_run(more_user_errors: tuple[type[Exception], ...] = ()) -> Iterator[None]:
    """Flow runs inside this block skip heartbeats when no Prefect server is configured.

    With no PREFECT_API_URL, Prefect runs flows on a temporary server that stops with this process, so no one
    is left to act on a missing heartbeat (crash detection needs a server that outlives the run). Prefect 3.8
    still starts a heartbeat thread per flow run and joins it at the run's end, where it sleeps in 1-second
    steps: 0 to 1 s added to every flow and subflow run. Against a real server (deployments, workers,
    `prefect server start`) heartbeats stay on.

    An error of the input or the machine (USER_ERRORS, and a flow's own `more_user_errors`) ends the process with
    its message and exit status 1. The temporary server's telemetry is off.
    """
    try:
        if PREFECT_API_URL.value():
            yield
            return
        # The temporary server inherits this environment; its telemetry would only log a network error here.
        os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
        with temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
            yield
    except (*USER_ERRORS, *more_user_errors) as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(1) from None
