"""Serving throughput and latency: our Ray Serve app against `mlflow models serve`, same model version.

    python benchmarks/serving.py [--seconds 10] [--concurrency 1 16 32] [--rows 1 100]

Registers one HistGradientBoosting model of the demo data in a throwaway MLflow store, then for each server in turn
(started by this script, on this machine) drives closed-loop load: `concurrency` requests in flight, each of
`rows` records, for `seconds`, from wrk when it is installed (`apt-get install wrk`; a C client in its own
process) or else from an asyncio client in this process (`--client` chooses). Prints requests/s, rows/s, p50
and p99 latency, and ours/mlflow ratios, plus the model's in-process batched rate as the ceiling.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def throwaway_store(prefix: str) -> Path:
    """A temporary storage folder and SQLite MLflow store for model `bench`, set in the environment."""
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    os.environ.update(
        TABLOOP_STORAGE_URL=str(workdir / "storage"),
        TABLOOP_MODEL_NAME="bench",
        TABLOOP_MLFLOW_TRACKING_URI=f"sqlite:///{workdir / 'mlflow.db'}",
        MLFLOW_TRACKING_URI=f"sqlite:///{workdir / 'mlflow.db'}",
        MLFLOW_DISABLE_TELEMETRY="true",
    )
    (workdir / "storage").mkdir()
    return workdir


def register_model(workdir: Path) -> tuple[list[dict], object]:
    """Fit and register one model; return request records and the fitted pipeline."""
    import mlflow

    from tasks import demo
    from tasks.model import contract, schemas
    from tasks.model.families import fit
    from tasks.model.features import feature_spec, model_input
    from tasks.settings import get_settings
    from tasks.steps.train import Candidate, log_and_register
    from tasks.store import data, registry

    settings = get_settings()
    client = registry.connect(settings, settings.model_name)
    schema, target = demo.schema(), demo.TARGET
    frame = schemas.validate(demo.generate(n_rows=5000), schema, "demo")
    train, test = data.split(frame, 0.2, [demo.ID_COLUMN])
    spec = feature_spec(schema, target, exclude=(demo.ID_COLUMN, demo.TIMESTAMP_COLUMN))
    params = {
        "family": "hist_gradient_boosting",
        "hgb_learning_rate": 0.1,
        "hgb_max_iter": 150,
        "hgb_max_leaf_nodes": 31,
        "hgb_l2_regularization": 1.0,
    }
    model = fit(model_input(train, spec), train[target], spec, params, "binary", seed=0)
    run = client.create_run(client.get_experiment_by_name(settings.model_name).experiment_id)
    what = contract.build(
        task_type="binary",
        target=target,
        classes=[0, 1],
        spec=spec,
        schema=schema,
        data=contract.DataLineage(dataset="bench", digest="bench", uri=""),
        id_columns=[demo.ID_COLUMN],
        timestamp_column=demo.TIMESTAMP_COLUMN,
    )
    candidate = Candidate(model, params, {"primary": 0.8})
    version = log_and_register.fn(run.info.run_id, settings.model_name, candidate, what, train)
    client.set_registered_model_alias(settings.model_name, "champion", version)
    mlflow.set_tracking_uri(settings.tracking_uri)
    records = json.loads(test[spec.columns].to_json(orient="records"))
    return records, model


async def drive(url: str, make_body, concurrency: int, seconds: float) -> dict[str, float]:
    import aiohttp

    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker(index: int) -> None:
            nonlocal errors
            body = make_body(index)
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                async with session.post(url, data=body, headers={"content-type": "application/json"}) as resp:
                    await resp.read()
                    if resp.status != 200:
                        errors += 1
                        continue
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(worker(i) for i in range(concurrency)))
        elapsed = time.perf_counter() - started
    lat = np.array(latencies) * 1000 if latencies else np.array([float("nan")])
    return {
        "rps": len(latencies) / elapsed,
        "p50": float(np.percentile(lat, 50)),
        "p99": float(np.percentile(lat, 99)),
        "errors": errors,
    }


WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local file = io.open(os.getenv("BENCH_BODY_FILE"), "rb")
wrk.body = file:read("*a")
file:close()
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %d %d %f %f %d\\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), e.status + e.connect + e.read + e.write + e.timeout))
end
"""


def drive_wrk(url: str, body: bytes, concurrency: int, seconds: float) -> dict[str, float]:
    """The same closed loop from wrk, a C client in its own process: it takes a fraction of the CPU the
    asyncio client needs, which on two shared cores is CPU the servers get back. One body for every request."""
    with tempfile.TemporaryDirectory() as tmp:
        script, body_file = Path(tmp) / "post.lua", Path(tmp) / "body.json"
        script.write_text(WRK_SCRIPT)
        body_file.write_bytes(body)
        out = subprocess.run(
            [
                "wrk",
                "-t1",
                f"-c{concurrency}",
                f"-d{max(1, round(seconds))}s",
                "--timeout",
                "30s",
                "-s",
                str(script),
                url,
            ],
            env={**os.environ, "BENCH_BODY_FILE": str(body_file)},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    requests, duration_us, p50_us, p99_us, errors = next(
        line.split()[1:] for line in out.splitlines() if line.startswith("RESULT ")
    )
    ok = int(requests) - int(errors)
    return {
        "rps": ok / (int(duration_us) / 1e6),
        "p50": float(p50_us) / 1000,
        "p99": float(p99_us) / 1000,
        "errors": int(errors),
    }


def wait_http(url: str, timeout_s: float = 180) -> None:
    import urllib.request

    deadline = time.time() + timeout_s
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"{url} never answered 200")


def running_replicas(app: str = "bench") -> int:
    from ray import serve

    from serving.app import shipped_config

    deployment = shipped_config()["deployments"][0]["name"]
    states = serve.status().applications[app].deployments[deployment].replica_states
    return sum(count for state, count in states.items() if str(state).endswith("RUNNING"))


def warm_up(url: str, body: bytes, concurrency: int, args, limit_s: float = 120) -> int:
    """Load at the top concurrency until the autoscaler has settled (serving/config.yaml), so every cell
    measures the steady state a loaded server reaches, not the first minute of a scale-up."""
    from serving.app import shipped_config

    scaling = shipped_config()["deployments"][0].get("autoscaling_config") or {}
    target = scaling.get("target_ongoing_requests")
    want = min(scaling.get("max_replicas", 1), -(-concurrency // target)) if target else 1
    deadline = time.perf_counter() + limit_s
    while True:
        if args.client == "wrk":
            drive_wrk(url, body, concurrency, 5)
        else:
            asyncio.run(drive(url, lambda i: body, concurrency, 5))
        if running_replicas() >= want or time.perf_counter() > deadline:
            return running_replicas()


def run_matrix(name: str, url: str, body_for_rows, args) -> dict[tuple[int, int], dict[str, float]]:
    results = {}
    asyncio.run(drive(url, body_for_rows(1), 4, 2))  # warm up
    for rows in args.rows:
        for concurrency in args.concurrency:
            if args.client == "wrk":
                result = drive_wrk(url, body_for_rows(rows)(0), concurrency, args.seconds)
            else:
                result = asyncio.run(drive(url, body_for_rows(rows), concurrency, args.seconds))
            results[(rows, concurrency)] = result
            print(
                f"  {name:8s} rows={rows:<4d} conc={concurrency:<3d} {result['rps']:8.1f} req/s "
                f"p50 {result['p50']:7.1f} ms  p99 {result['p99']:7.1f} ms  errors {result['errors']}",
                flush=True,
            )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 32])
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 100])
    parser.add_argument(
        "--ingress",
        choices=["haproxy", "ray-proxy"],
        default="haproxy",
        help="haproxy: as shipped (serving/ray_env.py); ray-proxy: Ray Serve's default Python proxy, for comparison",
    )
    parser.add_argument(
        "--client",
        choices=["auto", "wrk", "asyncio"],
        default="auto",
        help="load generator: wrk (Debian package `wrk`) when installed, else the asyncio client in this process",
    )
    parser.add_argument("--skip-baseline", action="store_true", help="only our app (while iterating; no ratios)")
    args = parser.parse_args()
    if args.client == "auto":
        args.client = "wrk" if shutil.which("wrk") else "asyncio"
    print(f"load generator: {args.client}")

    workdir = throwaway_store("tabloop-serve-bench-")
    records, model = register_model(workdir)

    import pandas as pd

    big = pd.DataFrame((records * (10_000 // len(records) + 1))[:10_000])
    model.predict_proba(big)
    started = time.perf_counter()
    for _ in range(5):
        model.predict_proba(big)
    in_process_rows_s = 5 * len(big) / (time.perf_counter() - started)

    def ours_body(rows: int):
        return lambda i: json.dumps([records[(i * rows + j) % len(records)] for j in range(rows)]).encode()

    def mlflow_body(rows: int):
        return lambda i: json.dumps(
            {"dataframe_records": [records[(i * rows + j) % len(records)] for j in range(rows)]}
        ).encode()

    # (b) mlflow models serve, one uvicorn worker as its default
    base = {} if args.skip_baseline else serve_mlflow(args, mlflow_body)

    # (a) our Ray Serve app as serving/config.yaml deploys it: its args, replicas/autoscaling and resources
    import ray
    from ray import serve

    from serving.app import app_from_config
    from serving.ray_env import use_in_this_process

    if args.ingress == "haproxy":
        use_in_this_process()
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=200 * 1024**2, log_to_driver=False)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(app_from_config(poll_interval_s=30), name="bench", route_prefix="/")
    try:
        url = f"http://127.0.0.1:{port}/predict"
        wait_http(f"http://127.0.0.1:{port}/ready")
        replicas = warm_up(url, ours_body(1)(0), max(args.concurrency), args)
        print(f"ours (Ray Serve app, ingress: {args.ingress}, {replicas} replica(s) after warm-up):")
        ours = run_matrix("ours", url, ours_body, args)
        print(f"  replicas at the end: {running_replicas()}")
    finally:
        serve.shutdown()
        ray.shutdown()

    print(f"\nin-process batched predict_proba: {in_process_rows_s:,.0f} rows/s (10,000-row calls)")
    print(
        f"{'rows':>5} {'conc':>5} {'ours req/s':>11} {'mlflow req/s':>13} {'ratio':>6} {'ours p99':>9} "
        f"{'mlflow p99':>11} {'ours rows/s':>12} {'of in-proc':>10}"
    )
    nan = {"rps": float("nan"), "p99": float("nan")}
    for key, mine in ours.items():
        theirs = base.get(key, nan)
        rows = key[0]
        print(
            f"{rows:>5} {key[1]:>5} {mine['rps']:>11.1f} {theirs['rps']:>13.1f} "
            f"{mine['rps'] / theirs['rps']:>5.1f}x {mine['p99']:>7.1f}ms {theirs['p99']:>9.1f}ms "
            f"{mine['rps'] * rows:>12,.0f} {mine['rps'] * rows / in_process_rows_s:>9.0%}"
        )
    shutil.rmtree(workdir, ignore_errors=True)


def serve_mlflow(args: argparse.Namespace, mlflow_body) -> dict[tuple[int, int], dict[str, float]]:
    port = free_port()
    env = {**os.environ, "PATH": f"{VENV_BIN}:{os.environ['PATH']}"}
    server = subprocess.Popen(
        [
            str(VENV_BIN / "mlflow"),
            "models",
            "serve",
            "-m",
            "models:/bench@champion",
            "--env-manager",
            "local",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/ping")
        print("mlflow models serve (baseline):")
        base = run_matrix("mlflow", f"http://127.0.0.1:{port}/invocations", mlflow_body, args)
    finally:
        server.terminate()
        server.wait(30)

    return base


if __name__ == "__main__":
    main()
