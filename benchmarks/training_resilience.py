"""Training under faults, on the real local stack: what is left behind, and how each failure reads.

    python benchmarks/training_resilience.py [--trials 30]

Starts the stack of deployments/stack.py (S3, Prefect server, MLflow server; no Ray, no worker) in a throwaway
folder on free ports, trains once to have a champion, then runs `python flows/train.py` against it through:

  mlflow-down   the MLflow server stopped mid-sweep and kept down: how the run ends, and that no version was
                registered and @champion did not move
  mlflow-blip   the MLflow server stopped mid-sweep for 10 s, then back: does the run finish
  killed        the training process SIGKILLed mid-sweep, then run again on the same data: one data snapshot,
                and the alias on the rerun's version (or kept), never on an orphan
  s3-slow       every S3 exchange of the training delayed (a proxy adds `--s3-delay` seconds to each chunk
                each way): does the run finish, and how much slower than the same run at full speed
  s3-down       the S3 API stopped before a run: retries, then how the failure reads
  s3-stalled    an S3 endpoint that accepts connections and never answers (a hung server or a black-holed
                network): how long until the run fails, and how the failure reads

Prints one line per scenario. Nothing here is timed against a target; the point is what is left behind.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.serving import free_port  # noqa: E402
from deployments import stack as local_stack  # noqa: E402


def start_stack(state: Path) -> tuple[local_stack.StackSettings, dict[str, str]]:
    ports = {f"TABLOOP_STACK_{n}_PORT": str(free_port()) for n in ("S3", "PREFECT", "MLFLOW")}
    os.environ.update(ports, TABLOOP_STACK_STATE_DIR=str(state), TABLOOP_STACK_SERVE="false")
    settings = local_stack.StackSettings()
    env = {**os.environ, **local_stack.client_env(settings)}
    by_name = {s.name: s for s in local_stack.services(settings)}
    state.mkdir(parents=True, exist_ok=True)
    for name in ("s3", "prefect", "mlflow"):
        local_stack.start(settings, by_name[name], env)
    for name in ("s3", "prefect", "mlflow"):
        local_stack.wait_ready(settings, by_name[name])
    local_stack.ensure_bucket(settings, env)
    return settings, env


def service(settings: local_stack.StackSettings, name: str) -> local_stack.Service:
    return next(s for s in local_stack.services(settings) if s.name == name)


def train(env: dict[str, str], trials: int, seed: int = 42) -> subprocess.Popen[str]:
    code = (
        "from flows.train import TrainParams, train; "
        f"r = train(TrainParams(n_trials={trials}, seed={seed})); print('RESULT', r.model_version, r.promoted)"
    )
    return subprocess.Popen(
        [sys.executable, "-c", code], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def trial_runs(env: dict[str, str]) -> int:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(env["TABLOOP_MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name("churn")
    if experiment is None:
        return 0
    return len(client.search_runs([experiment.experiment_id], "tags.mlflow.parentRunId != ''", max_results=5000))


def wait_for_sweep(process: subprocess.Popen[str], env: dict[str, str], timeout_s: float = 180) -> None:
    """Until this run's sweep has logged three trials as nested runs."""
    start = trial_runs(env)
    deadline = time.time() + timeout_s
    while time.time() < deadline and process.poll() is None:
        if trial_runs(env) >= start + 3:
            return
        time.sleep(0.5)
    raise TimeoutError("the sweep never started")


def last_error(output: str) -> str:
    lines = [line for line in output.splitlines() if "Error" in line or "error" in line]
    return (lines[-1] if lines else output.strip().splitlines()[-1])[:300]


def registry_state(env: dict[str, str]) -> tuple[int, str | None]:
    from mlflow.tracking import MlflowClient

    uri = env["TABLOOP_MLFLOW_TRACKING_URI"]
    client = MlflowClient(uri, uri)
    versions = client.search_model_versions("name = 'churn'")
    try:
        champion = str(client.get_model_version_by_alias("churn", "champion").version)
    except Exception:
        champion = None
    return len(versions), champion


class SlowProxy:
    """A TCP proxy in a thread that holds every chunk `delay_s` before passing it on, both ways."""

    def __init__(self, upstream_port: int, delay_s: float) -> None:
        self.upstream_port, self.delay_s = upstream_port, delay_s
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        threading.Thread(target=self._run, args=(ready,), daemon=True).start()
        ready.wait(10)

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", self.port))
        ready.set()
        self.loop.run_until_complete(server.serve_forever())

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while chunk := await src.read(65536):
                    await asyncio.sleep(self.delay_s)
                    dst.write(chunk)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


def timed_run(env: dict[str, str], seed: int) -> tuple[int, float, str]:
    started = time.time()
    run = train(env, 4, seed=seed)
    try:
        out, _ = run.communicate(timeout=1800)
    except subprocess.TimeoutExpired:
        run.kill()
        raise
    return run.returncode, time.time() - started, out


def snapshots(settings: local_stack.StackSettings, env: dict[str, str]) -> int:
    fs = local_stack.bucket_filesystem(settings.s3_url, env)
    return len([k for k in fs.find(f"{settings.bucket}/storage/datasets") if k.endswith(".parquet")])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--s3-delay", type=float, default=0.2, help="seconds added to each S3 chunk, each way")
    args = parser.parse_args()
    state = Path(tempfile.mkdtemp(prefix="tabloop-train-faults-"))
    settings, env = start_stack(state)
    mlflow = service(settings, "mlflow")
    run: subprocess.Popen[str] | None = None
    try:
        first = train(env, 4)
        out, _ = first.communicate(timeout=600)
        assert first.returncode == 0, out[-3000:]
        before = registry_state(env)
        baseline = f"versions {before[0]}, @champion v{before[1]}, snapshots {snapshots(settings, env)}"
        print(f"baseline: {baseline}", flush=True)

        # mlflow-down: stopped mid-sweep, kept down
        run = train(env, args.trials, seed=1)
        wait_for_sweep(run, env)
        stopped_at = time.time()
        local_stack.stop(settings, mlflow)
        out, _ = run.communicate(timeout=900)
        ended = time.time() - stopped_at
        local_stack.start(settings, mlflow, env)
        local_stack.wait_ready(settings, mlflow)
        after = registry_state(env)
        print(
            f"mlflow-down:  exit {run.returncode} {ended:.0f} s after the stop; versions {before[0]} -> {after[0]}, "
            f"@champion v{before[1]} -> v{after[1]}; last error: {last_error(out)}",
            flush=True,
        )

        # mlflow-blip: stopped mid-sweep for 10 s
        before = registry_state(env)
        run = train(env, args.trials, seed=2)
        wait_for_sweep(run, env)
        local_stack.stop(settings, mlflow)
        time.sleep(10)
        local_stack.start(settings, mlflow, env)
        out, _ = run.communicate(timeout=900)
        after = registry_state(env)
        verdict = "finished" if run.returncode == 0 else f"failed: {last_error(out)}"
        print(f"mlflow-blip:  exit {run.returncode}, {verdict}; versions {before[0]} -> {after[0]}", flush=True)

        # killed: SIGKILL mid-sweep, then the same run again
        before, snaps = registry_state(env), snapshots(settings, env)
        run = train(env, args.trials, seed=3)
        wait_for_sweep(run, env)
        os.kill(run.pid, signal.SIGKILL)
        run.communicate()
        middle = registry_state(env)
        again = train(env, args.trials, seed=3)
        out, _ = again.communicate(timeout=900)
        after = registry_state(env)
        result = next((line for line in out.splitlines() if line.startswith("RESULT")), out[-300:])
        print(
            f"killed:       after the kill versions {before[0]} -> {middle[0]}, @champion v{middle[1]}; rerun exit "
            f"{again.returncode} ({result}); versions {after[0]}, @champion v{after[1]}; "
            f"snapshots {snaps} -> {snapshots(settings, env)}",
            flush=True,
        )

        # s3-slow: the same small run at full speed, then with every S3 exchange delayed
        code, fast_s, _ = timed_run(env, seed=6)
        proxy = SlowProxy(settings.s3_port, args.s3_delay)
        slow_env = {**env, "TABLOOP_S3_ENDPOINT_URL": f"http://127.0.0.1:{proxy.port}"}
        slow_code, slow_s, out = timed_run(slow_env, seed=7)
        print(
            f"s3-slow:      +{args.s3_delay * 1000:.0f} ms per chunk each way: exit {slow_code} in {slow_s:.0f} s "
            f"(full speed: exit {code} in {fast_s:.0f} s)"
            + ("" if slow_code == 0 else f"; last error: {last_error(out)}"),
            flush=True,
        )

        # s3-down: the S3 API stopped before a run
        before = registry_state(env)
        local_stack.stop(settings, service(settings, "s3"))
        code, took_s, out = timed_run(env, seed=4)
        after = registry_state(env)
        print(
            f"s3-down:      exit {code} after {took_s:.0f} s; versions {before[0]} -> {after[0]}; "
            f"last error: {last_error(out)}",
            flush=True,
        )

        # s3-stalled: connections accepted, nothing ever answered
        silent = socket.socket()
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        held: list[object] = []
        threading.Thread(target=lambda: [held.append(silent.accept()) for _ in iter(int, 1)], daemon=True).start()
        stalled_env = {**env, "TABLOOP_S3_ENDPOINT_URL": f"http://127.0.0.1:{silent.getsockname()[1]}"}
        code, took_s, out = timed_run(stalled_env, seed=5)
        after = registry_state(env)
        print(
            f"s3-stalled:   exit {code} after {took_s:.0f} s; versions -> {after[0]}; last error: {last_error(out)}",
            flush=True,
        )
    finally:
        if run is not None and run.poll() is None:
            run.kill()
        local_stack.down(settings)
        shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    main()
