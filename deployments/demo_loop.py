"""The whole loop in one command: serve the champion, send drifted traffic, monitor, retrain, hot swap.

    make demo

Uses the configured stores (by default .storage/). Trains a champion first if there is none.
"""

from __future__ import annotations

import json
import socket
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main(rows: int = 1200, drift: float = 0.8) -> None:
    import httpx
    import pandas as pd
    import ray
    from ray import serve

    from flows.monitor import MonitorParams, monitor
    from flows.train import TrainParams, train
    from serving.app import build_app
    from serving.ray_env import use_in_this_process
    from tasks import demo
    from tasks.monitoring.policy import MonitorPolicy
    from tasks.settings import get_settings
    from tasks.store import registry, storage

    settings = get_settings()
    client = registry.connect(settings)
    name = demo.model_name(configured=settings.model_name)
    if registry.current_champion(client, name) is None:
        print("no champion yet: training one on the demo data")
        train(TrainParams(n_trials=10))
    started = datetime.now(UTC)

    print("1/4 serving @champion on a local Ray")
    use_in_this_process()  # HAProxy and direct ingress, as `make serve` runs it
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=200 * 1024**2, log_to_driver=False)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app({"models": [name], "poll_interval_s": 1, "log_flush_s": 1}), name="tabloop", route_prefix="/")
    url = f"http://127.0.0.1:{port}"
    while httpx.get(f"{url}/ready").status_code != 200:
        time.sleep(0.5)
    before = httpx.get(f"{url}/ready").json()["version"]

    try:
        print(f"2/4 sending {rows} drifted records (drift={drift}) to {url}/predict")
        frame = demo.generate(n_rows=rows, seed=int(time.time()) % 10_000, drift=drift)
        records = json.loads(frame.drop(columns=[demo.TARGET, demo.TIMESTAMP_COLUMN]).to_json(orient="records"))
        with httpx.Client(timeout=30) as http:
            for i in range(0, rows, 20):
                http.post(f"{url}/predict", json=records[i : i + 20]).raise_for_status()
        labels_uri = storage.join(settings.storage_url, "demo", f"labels-{started:%Y%m%dT%H%M%S}.parquet")
        storage.write_bytes(labels_uri, frame[[demo.ID_COLUMN, demo.TARGET]].to_parquet(index=False), settings)
        time.sleep(3)  # let the replicas flush their prediction logs

        print("3/4 monitoring: drift report, live metrics from the late labels, the retrain decision")
        outcome = monitor(
            MonitorParams(
                since=started,
                labels_uri=labels_uri,
                model_name=name,
                label_key=demo.ID_COLUMN,
                policy=MonitorPolicy(cooldown_hours=0, max_retrains_per_day=100),
            )
        )
        print(f"    drift share {outcome.drift_share:.2f}, drifted: {', '.join(outcome.drifted_columns) or 'none'}")
        print(f"    live primary metric: {outcome.live_primary}")
        print("    decision: " + "; ".join(outcome.reasons))
        print(f"    report: {outcome.report_uri}")

        print("4/4 serving after the decision")
        if outcome.promoted:
            deadline = time.time() + 60
            while httpx.get(f"{url}/ready").json()["version"] == before and time.time() < deadline:
                time.sleep(0.5)
        answer = httpx.post(f"{url}/predict", json=records[0]).json()
        verdict = "promoted: replicas hot-swapped to it" if outcome.promoted else "rejected by the gate"
        print(f"    retrained v{outcome.new_version}: {verdict}" if outcome.new_version else "    no retrain")
        print(f"    /predict now answers with v{answer['model_version']} (was v{before})")
        print(pd.Series(outcome.model_dump()).to_string())
    finally:
        serve.shutdown()
        ray.shutdown()


if __name__ == "__main__":
    main()
