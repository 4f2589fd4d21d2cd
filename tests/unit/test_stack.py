"""The local stack's process bookkeeping (deployments/stack.py), on the pure part: no services started here;
tests/integration/test_operations.py starts and stops the real stack."""

from __future__ import annotations

from deployments.stack import is_other_program


def test_a_process_still_inside_exec_is_not_taken_for_another_program():
    assert not is_other_program(b"", "prefect")


def test_the_program_we_started_is_recognised():
    cmdline = b"/repo/.venv/bin/python3.11\x00/repo/.venv/bin/prefect\x00worker\x00start\x00"
    assert not is_other_program(cmdline, "prefect")


def test_a_reused_pid_running_something_else_is_detected():
    assert is_other_program(b"/usr/bin/sleep\x0060\x00", "prefect")
