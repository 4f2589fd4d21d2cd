"""Flows started from a shell: heartbeats only when a Prefect server outlives the run."""

from __future__ import annotations

import pytest
from prefect import flow
from prefect.flow_engine import FlowRunEngine
from prefect.settings import PREFECT_API_URL, PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

from tasks.ops.shell import shell_run


@flow
def noop() -> None:
    return None


def heartbeat_seconds() -> int | None:
    """What Prefect's own flow engine will use for the next flow run."""
    return FlowRunEngine(flow=noop).heartbeat_seconds


def test_no_heartbeats_on_the_temporary_server() -> None:
    with temporary_settings({PREFECT_API_URL: None}):
        assert heartbeat_seconds() is not None  # Prefect's default is on
        with shell_run():
            assert heartbeat_seconds() is None
        assert heartbeat_seconds() is not None  # only inside the block


def test_heartbeats_kept_against_a_real_server() -> None:
    server = {PREFECT_API_URL: "http://127.0.0.1:4200/api", PREFECT_FLOWS_HEARTBEAT_FREQUENCY: 60}
    with temporary_settings(server), shell_run():
        assert heartbeat_seconds() == 60


def test_a_flows_own_user_error_ends_a_shell_run_with_its_message(capsys) -> None:
    class OutputTaken(ValueError):
        pass

    with pytest.raises(SystemExit) as ended, shell_run(more_user_errors=(OutputTaken,)):
        raise OutputTaken("out/ already holds a committed batch")
    assert ended.value.code == 1 and capsys.readouterr().err == "error: out/ already holds a committed batch\n"
    with pytest.raises(KeyError), shell_run(more_user_errors=(OutputTaken,)):  # anything else stays a traceback
        raise KeyError("a bug")
