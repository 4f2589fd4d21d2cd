"""Serving throughput and latency: our Ray Serve app against three baselines, same model version.

    python benchmarks/serving.py [--seconds 10] [--concurrency 1 16 32] [--rows 1 100]

Registers one HistGradientBoosting model of the demo data in a throwaway MLflow store, then for each server in turn
(started by this script, on this machine: `mlflow models serve` as it ships, the same with 2 workers and
OMP_NUM_THREADS=1, and a minimal FastAPI app, benchmarks/baseline_app.py, with 2 uvicorn workers and
OMP_NUM_THREADS=1) drives closed-loop load: `concurrency` requests in flight, each of
`rows` records, for `seconds`, from wrk when it is installed (`apt-get install wrk`; a C client in its own
process) or else from an asyncio client in this process (`--client` chooses). Prints requests/s, rows/s, p50
and p99 latency, and our ratio against the best baseline of each cell, plus the model's in-process batched rate
as the ceiling.

Then the id-only cell (skip it with --skip-id-only): a model trained on a point-in-time training set (the demo's
customers and features/churn.py's activity view) in another throwaway store, materialized to the SQLite online
store, served by the same app; requests carrying only the customer id and the request-time columns (the replica
looks the rest up) against requests carrying every feature, alternated for --id-only-rounds rounds, at
--id-only-concurrency. Target (issue #19): lookups cost at most 25% of throughput and 10 ms of p99.
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
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
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
        measure(url, lambda i: body, concurrency, 5, args)
        if running_replicas() >= want or time.perf_counter() > deadline:
            return running_replicas()


def measure(url: str, body_for_index, concurrency: int, seconds: float, args) -> dict[str, float]:
    """One closed-loop cell from the chosen client (wrk sends the first body for every request)."""
    if args.client == "wrk":
        return drive_wrk(url, body_for_index(0), concurrency, seconds)
    return asyncio.run(drive(url, body_for_index, concurrency, seconds))


@contextmanager
def our_app(ingress: str) -> Iterator[str]:
    """Our Ray Serve app as serving/config.yaml deploys it (its args, replicas/autoscaling and resources) on a
    local Ray; yields its base URL once /ready answers."""
    import ray
    from ray import serve

    from serving.app import app_from_config
    from serving.ray_env import use_in_this_process

    if ingress == "haproxy":
        use_in_this_process()
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=200 * 1024**2, log_to_driver=False)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(app_from_config(poll_interval_s=30), name="bench", route_prefix="/")
    try:
        wait_http(f"http://127.0.0.1:{port}/ready")
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()


def model_call_costs(records: list[dict], repeat: int = 300) -> dict[int, tuple[float, float]]:
    """Milliseconds per call, in this process, for 1 and 100 validated records: predict_proba of the registered
    pipeline on the DataFrame a hand-written app builds, against the replica's call (tasks/model/compiled.py)."""
    import pandas as pd

    from tasks.runtime.loaded import load_version
    from tasks.settings import get_settings

    loaded = load_version(get_settings(), "bench", "1", "champion")

    def per_call_ms(call) -> float:
        call()
        started = time.perf_counter()
        for _ in range(repeat):
            call()
        return (time.perf_counter() - started) / repeat * 1000

    costs = {}
    for rows in (1, 100):
        sent = records[:rows]
        columns = loaded.validator.joined(loaded.validator.validate(sent))
        pipeline = per_call_ms(lambda sent=sent: loaded.model.predict_proba(pd.DataFrame(sent)))
        costs[rows] = (pipeline, per_call_ms(lambda columns=columns: loaded.score_columns(columns)))
    return costs


def run_matrix(name: str, url: str, body_for_rows, args) -> dict[tuple[int, int], dict[str, float]]:
    results = {}
    asyncio.run(drive(url, body_for_rows(1), 4, 2))  # warm up
    for rows in args.rows:
        for concurrency in args.concurrency:
            result = measure(url, body_for_rows(rows), concurrency, args.seconds, args)
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
    parser.add_argument("--skip-id-only", action="store_true", help="leave out the online-feature cell")
    parser.add_argument("--id-only-concurrency", type=int, nargs="+", default=[32])
    parser.add_argument("--id-only-rounds", type=int, default=2, help="each id-only cell this many times, alternating")
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
    call_costs = model_call_costs(records)

    def ours_body(rows: int):
        return lambda i: json.dumps([records[(i * rows + j) % len(records)] for j in range(rows)]).encode()

    def mlflow_body(rows: int):
        return lambda i: json.dumps(
            {"dataframe_records": [records[(i * rows + j) % len(records)] for j in range(rows)]}
        ).encode()

    # (b) the baselines, each given a fair setup: mlflow models serve as it ships (one worker), with 2 workers and
    # OMP_NUM_THREADS=1 (two processes of scikit-learn on two cores otherwise oversubscribe threads), and a
    # minimal hand-written FastAPI app (2 uvicorn workers, OMP_NUM_THREADS=1)
    baselines: dict[str, dict[tuple[int, int], dict[str, float]]] = {}
    if not args.skip_baseline:
        baselines["mlflow"] = serve_baseline(args, "mlflow", mlflow_command(1), "/invocations", mlflow_body, {})
        one_thread = {"OMP_NUM_THREADS": "1"}
        baselines["mlflow-2w"] = serve_baseline(
            args, "mlflow-2w", mlflow_command(2), "/invocations", mlflow_body, one_thread
        )
        fastapi_env = {**one_thread, "BASELINE_MODEL_URI": "models:/bench@champion"}
        baselines["fastapi-2w"] = serve_baseline(
            args, "fastapi-2w", FASTAPI_COMMAND, "/predict", ours_body, fastapi_env
        )

    # (a) our Ray Serve app as serving/config.yaml deploys it
    with our_app(args.ingress) as base:
        url = f"{base}/predict"
        replicas = warm_up(url, ours_body(1)(0), max(args.concurrency), args)
        print(f"ours (Ray Serve app, ingress: {args.ingress}, {replicas} replica(s) after warm-up):")
        ours = run_matrix("ours", url, ours_body, args)
        print(f"  replicas at the end: {running_replicas()}")

    print(f"\nin-process batched predict_proba: {in_process_rows_s:,.0f} rows/s (10,000-row calls)")
    for rows, (pipeline_ms, compiled_ms) in call_costs.items():
        print(
            f"one model call on {rows} row(s), in process: the pipeline on a DataFrame {pipeline_ms:.2f} ms, "
            f"our compiled preprocessing on request columns {compiled_ms:.2f} ms ({pipeline_ms / compiled_ms:.1f}x)"
        )
    print(
        f"{'rows':>5} {'conc':>5} {'ours req/s':>11} {'best baseline':>14} {'its req/s':>10} {'ratio':>6} "
        f"{'ours p99':>9} {'its p99':>9} {'ours rows/s':>12} {'of in-proc':>10}   all baselines (req/s)"
    )
    for key, mine in ours.items():
        rows = key[0]
        found = {name: cells[key] for name, cells in baselines.items() if key in cells}
        best_name = max(found, key=lambda name: found[name]["rps"]) if found else "-"
        best = found.get(best_name, {"rps": float("nan"), "p99": float("nan")})
        every = ", ".join(f"{name} {cell['rps']:.1f}" for name, cell in found.items())
        print(
            f"{rows:>5} {key[1]:>5} {mine['rps']:>11.1f} {best_name:>14} {best['rps']:>10.1f} "
            f"{mine['rps'] / best['rps']:>5.1f}x {mine['p99']:>7.1f}ms {best['p99']:>7.1f}ms "
            f"{mine['rps'] * rows:>12,.0f} {mine['rps'] * rows / in_process_rows_s:>9.0%}   {every}"
        )
    shutil.rmtree(workdir, ignore_errors=True)
    if not args.skip_id_only:
        id_only_cells(args)


FEATURE_REFS = ["customer_activity:tickets_30d", "customer_activity:usage_30d_gb"]


def trained_with_features(workdir: Path) -> tuple[list[dict], list[dict]]:
    """Train and materialize; return (id-only records, the same records with their online feature values)."""
    from flows.train import TrainParams, train
    from tasks.demo import ID_COLUMN, TARGET, TIMESTAMP_COLUMN, generate, publish_activity
    from tasks.ops.shell import shell_run
    from tasks.settings import get_settings
    from tasks.store import features

    settings = get_settings()
    labelled = generate(n_rows=5000, seed=5)
    publish_activity(labelled, settings, seed=6)
    labelled.to_csv(workdir / "labelled.csv", index=False)
    params = TrainParams(
        data_uri=str(workdir / "labelled.csv"),
        target=TARGET,
        id_columns=[ID_COLUMN],
        timestamp_column=TIMESTAMP_COLUMN,
        features=FEATURE_REFS,
        families=["hist_gradient_boosting"],
        n_trials=2,
        cv_folds=2,
    )
    with shell_run():
        assert train(params).promoted
    store = features.apply(settings)
    features.materialize(store, ["customer_activity"], since=datetime(2025, 1, 1, tzinfo=UTC))
    ids_only = json.loads(labelled.drop(columns=[TARGET, TIMESTAMP_COLUMN]).head(2000).to_json(orient="records"))
    online = features.online_features(store, FEATURE_REFS, [{ID_COLUMN: r[ID_COLUMN]} for r in ids_only])
    full = [{**r, **{name: online[name][i] for name in online}} for i, r in enumerate(ids_only)]
    return ids_only, full


def one_record_bodies(records: list[dict]):
    """Request i carries record i (cycling), alone."""
    return lambda i: json.dumps(records[i % len(records) : i % len(records) + 1]).encode()


def id_only_cells(args: argparse.Namespace) -> None:
    """Single-record requests that carry only the id against the same records with every feature, same app."""
    workdir = throwaway_store("tabloop-online-bench-")
    ids_only, full = trained_with_features(workdir)
    cells = (("features sent", full), ("id only", ids_only))
    results: dict[tuple[str, int], list[dict[str, float]]] = {}
    print("\nid-only cell (online feature lookups), same app and model for both:")
    try:
        with our_app(args.ingress) as base:
            url = f"{base}/predict"
            for _, records in cells:  # warm both paths
                asyncio.run(drive(url, one_record_bodies(records), 8, 3))
            for _ in range(args.id_only_rounds):
                for concurrency in args.id_only_concurrency:
                    for name, records in cells:
                        result = measure(url, one_record_bodies(records), concurrency, args.seconds, args)
                        results.setdefault((name, concurrency), []).append(result)
                        print(
                            f"  {name:14s} conc={concurrency:<3d} {result['rps']:8.1f} req/s "
                            f"p50 {result['p50']:7.1f} ms  p99 {result['p99']:7.1f} ms  errors {result['errors']}",
                            flush=True,
                        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    for concurrency in args.id_only_concurrency:
        sent = max(results[("features sent", concurrency)], key=lambda r: r["rps"])
        ids = max(results[("id only", concurrency)], key=lambda r: r["rps"])
        print(
            f"id only, 1 row, conc={concurrency}, best of {args.id_only_rounds}: {ids['rps']:.1f} req/s vs "
            f"{sent['rps']:.1f} ({ids['rps'] / sent['rps']:.0%} of the throughput); p99 {ids['p99']:.1f} vs "
            f"{sent['p99']:.1f} ms ({ids['p99'] - sent['p99']:+.1f} ms)"
        )


FASTAPI_COMMAND = [str(VENV_BIN / "uvicorn"), "benchmarks.baseline_app:app", "--workers", "2", "--log-level", "warning"]
FASTAPI_COMMAND += ["--no-access-log", "--host", "127.0.0.1", "--port", "{port}"]


def mlflow_command(workers: int) -> list[str]:
    command = [str(VENV_BIN / "mlflow"), "models", "serve", "-m", "models:/bench@champion", "--env-manager", "local"]
    return [*command, "--workers", str(workers), "--host", "127.0.0.1", "--port", "{port}"]


def serve_baseline(
    args: argparse.Namespace, name: str, command: list[str], path: str, body_for_rows, env: dict[str, str]
) -> dict[tuple[int, int], dict[str, float]]:
    """Start one baseline server on a free port, run the matrix against it, stop it."""
    port = free_port()
    full_env = {**os.environ, "PATH": f"{VENV_BIN}:{os.environ['PATH']}", **env}
    argv = [part.replace("{port}", str(port)) for part in command]
    server = subprocess.Popen(
        argv,
        cwd=Path(__file__).resolve().parent.parent,
        env=full_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/ping")
        print(
            f"{name} (baseline: {Path(argv[0]).name} {' '.join(argv[1:3])}..., "
            f"OMP_NUM_THREADS={env.get('OMP_NUM_THREADS', 'unset')}):"
        )
        return run_matrix(name, f"http://127.0.0.1:{port}{path}", body_for_rows, args)
    finally:
        server.terminate()
        server.wait(30)


if __name__ == "__main__":
    main()
