"""A training killed outright leaves its MLflow run RUNNING; the next training on this host closes it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from prefect import flow

from tasks import training


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def running_run(client, experiment_id: str, host: str, pid: int, parent: str | None = None) -> str:
    tags = {training.OWNER_HOST_TAG: host, training.OWNER_PID_TAG: str(pid)}
    if parent:
        tags = {"mlflow.parentRunId": parent}
    return client.create_run(experiment_id, tags=tags).info.run_id


def test_only_runs_of_a_dead_process_on_this_host_are_closed(prefect_server, settings, client):
    experiment_id = client.get_experiment_by_name(settings.experiment_name).experiment_id
    host = socket.gethostname()
    killed = running_run(client, experiment_id, host, dead_pid())
    killed_trial = running_run(client, experiment_id, host, 0, parent=killed)
    live = running_run(client, experiment_id, host, os.getpid())  # a training still going in this process
    elsewhere = running_run(client, experiment_id, "another-host", dead_pid())

    @flow
    def close() -> list[str]:
        return training.close_orphan_runs(client, settings)

    assert close() == [killed]
    status = {run_id: client.get_run(run_id).info.status for run_id in (killed, killed_trial, live, elsewhere)}
    assert status == {killed: "KILLED", killed_trial: "KILLED", live: "RUNNING", elsewhere: "RUNNING"}
    assert "is gone" in client.get_run(killed).data.tags["churnops.closed_because"]
    assert close() == []  # nothing left to close
