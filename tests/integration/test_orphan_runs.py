"""What a training that died leaves behind is settled by the next training on this host."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest
from prefect import flow

from tasks.steps import runs

pytestmark = pytest.mark.integration


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def running_run(client, experiment_id: str, host: str, pid: int, parent: str | None = None) -> str:
    tags = {runs.OWNER_HOST_TAG: host, runs.OWNER_PID_TAG: str(pid)}
    if parent:
        tags = {"mlflow.parentRunId": parent}
    return client.create_run(experiment_id, tags=tags).info.run_id


def version_of(client, settings, run_id: str, tmp_path) -> str:
    if not client.search_registered_models(f"name = '{settings.model_name}'"):
        client.create_registered_model(settings.model_name)
    return client.create_model_version(settings.model_name, source=str(tmp_path / run_id), run_id=run_id).version


def test_runs_of_a_dead_process_are_closed_and_their_undecided_versions_settled(
    prefect_server, settings, client, tmp_path
):
    experiment_id = client.get_experiment_by_name(settings.experiment_name).experiment_id
    host = socket.gethostname()
    killed = running_run(client, experiment_id, host, dead_pid())
    killed_trial = running_run(client, experiment_id, host, 0, parent=killed)
    live = running_run(client, experiment_id, host, os.getpid())  # a training still going in this process
    elsewhere = running_run(client, experiment_id, "another-host", dead_pid())
    failed = running_run(client, experiment_id, host, os.getpid())
    client.set_terminated(failed, "FAILED")  # failed between registering and the gate
    finished = running_run(client, experiment_id, host, os.getpid())
    client.set_terminated(finished, "FINISHED")
    versions = {run: version_of(client, settings, run, tmp_path) for run in (killed, live, failed, finished)}
    decided = version_of(client, settings, killed, tmp_path)
    client.set_model_version_tag(settings.model_name, decided, "gate.status", "rejected")

    @flow
    def settle() -> list[str]:
        return runs.close_abandoned(client, settings.model_name, settings.experiment_name)

    assert settle() == [killed]
    status = {run_id: client.get_run(run_id).info.status for run_id in (killed, killed_trial, live, elsewhere)}
    assert status == {killed: "KILLED", killed_trial: "KILLED", live: "RUNNING", elsewhere: "RUNNING"}
    assert "is gone" in client.get_run(killed).data.tags["tabloop.closed_because"]

    def gate(version: str) -> str | None:
        return client.get_model_version(settings.model_name, version).tags.get("gate.status")

    assert {run: gate(v) for run, v in versions.items()} == {
        killed: "abandoned",
        live: None,
        failed: "abandoned",
        finished: None,
    }
    assert gate(decided) == "rejected"  # a decision already taken stays
    assert settle() == []  # nothing left to close
