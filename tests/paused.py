"""Finding a flow run that paused for a person's answer, through the Prefect API, as the UI lists them."""

from __future__ import annotations

import time


def paused_run(seen: set[str], patience_s: float = 300) -> str:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType

    flt = FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=["PAUSED"])))
    deadline = time.time() + patience_s
    with get_client(sync_client=True) as client:
        while time.time() < deadline:
            fresh = [r for r in client.read_flow_runs(flow_run_filter=flt) if str(r.id) not in seen]
            if fresh:
                return str(fresh[0].id)
            time.sleep(1)
    raise AssertionError("no run paused for approval")
