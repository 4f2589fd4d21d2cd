"""How a flow started from a shell runs on this machine."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from prefect.settings import PREFECT_API_URL, PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings


@contextmanager
def shell_run() -> Iterator[None]:
    """Flow runs inside this block skip heartbeats when no Prefect server is configured.

    With no PREFECT_API_URL, Prefect runs flows on a temporary server that stops with this process, so no one
    is left to act on a missing heartbeat (crash detection needs a server that outlives the run). Prefect 3.8
    still starts a heartbeat thread per flow run and joins it at the run's end, where it sleeps in 1-second
    steps: 0 to 1 s added to every flow and subflow run. Against a real server (deployments, workers,
    `prefect server start`) heartbeats stay on.
    """
    if PREFECT_API_URL.value():
        yield
        return
    with temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        yield
