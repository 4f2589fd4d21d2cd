"""Serving under load and faults: what the Ray Serve app holds, measured on this machine.

    python benchmarks/serving_resilience.py [--seconds 60] [--replicas 2]

Registers two versions of a model of the demo data in a throwaway MLflow store, serves @champion with `--replicas`
fixed replicas on a local Ray, finds the peak single-row rate (closed loop, concurrency 32, 10 s), then drives
open-loop load at 80% of that peak (requests sent on a fixed schedule, whatever the answers) through:

  sustained   `--seconds` of load: failed requests and p99
  alias-move  @champion moved v1 -> v2 five seconds in: failed requests; per replica, no v1 answer after its
              first v2 answer; the window in which both versions answered (replicas switch independently)
  replica-kill one replica actor killed five seconds in: failed requests (target: none, or under 0.1%), the
              time until the last failure, and until Serve had the full replica count running again

A failed request is a non-200 answer or a connection error; each is retried once by the client (a prediction
is idempotent), and what still failed is reported apart. The load generator shares the machine's cores
with Ray, as in benchmarks/serving.py.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.serving import drive, free_port, register_model, throwaway_store, wait_http  # noqa: E402


@dataclass(frozen=True)
class Outcome:
    sent_s: float
    done_s: float
    status: int | str  # HTTP status, or the connection error's name
    version: str | None
    retried_status: int | str | None = None  # the answer to one client retry of a failed request

    @property
    def ok(self) -> bool:
        return self.status == 200


async def open_loop(
    url: str, bodies: list[bytes], rate: float, seconds: float, events: list[tuple[float, Callable[[], object]]]
) -> list[Outcome]:
    """Send at `rate` requests/s for `seconds`, whatever the answers; run each event at its second, off the loop."""
    import aiohttp

    outcomes: list[Outcome] = []
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=512), timeout=timeout) as session:
        started = time.perf_counter()

        async def attempt(index: int) -> tuple[int | str, str | None]:
            try:
                async with session.post(
                    url, data=bodies[index % len(bodies)], headers={"content-type": "application/json"}
                ) as response:
                    payload = await response.read()
                    version = json.loads(payload).get("model_version") if response.status == 200 else None
                    return response.status, version
            except Exception as err:  # every way a request can fail counts
                return type(err).__name__, None

        async def one(index: int) -> None:
            sent = time.perf_counter() - started
            status, version = await attempt(index)
            done = time.perf_counter() - started
            retried = None if status == 200 else (await attempt(index))[0]  # predictions are idempotent
            outcomes.append(Outcome(sent, done, status, version, retried))

        pending: list[asyncio.Task] = []
        sent = 0
        waiting = sorted(events, key=lambda e: e[0])
        while (now := time.perf_counter() - started) < seconds:
            while sent < int(now * rate):
                pending.append(asyncio.create_task(one(sent)))
                sent += 1
            while waiting and waiting[0][0] <= now:
                pending.append(asyncio.create_task(asyncio.to_thread(waiting.pop(0)[1])))
            await asyncio.sleep(0.002)
        await asyncio.gather(*pending)
    return outcomes


def summary(name: str, outcomes: list[Outcome]) -> None:
    failed = [o for o in outcomes if not o.ok]
    latency = np.array([o.done_s - o.sent_s for o in outcomes if o.ok]) * 1000
    result = {
        "requests": len(outcomes),
        "failed": len(failed),
        "failed_share": len(failed) / max(len(outcomes), 1),
        "p50_ms": float(np.percentile(latency, 50)) if len(latency) else float("nan"),
        "p99_ms": float(np.percentile(latency, 99)) if len(latency) else float("nan"),
    }
    result["failed_after_retry"] = sum(1 for o in failed if o.retried_status != 200)
    kinds = sorted({str(o.status) for o in failed})
    print(
        f"{name:12s} {result['requests']:6d} requests  failed {result['failed']:4d} ({result['failed_share']:.3%}), "
        f"{result['failed_after_retry']} after one client retry"
        f"  p50 {result['p50_ms']:6.1f} ms  p99 {result['p99_ms']:7.1f} ms" + (f"  failures: {kinds}" if kinds else ""),
        flush=True,
    )


def replica_names(app: str) -> list[str]:
    import ray

    return [
        a["name"]
        for a in ray.util.list_named_actors(all_namespaces=True)
        if a["name"].startswith("SERVE_REPLICA::") and f"{app}#" in a["name"]
    ]


def running_replicas(app: str) -> int:
    from ray import serve

    status = serve.status().applications[app].deployments
    return sum(d.replica_states.get("RUNNING", 0) for d in status.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60, help="length of the sustained-load phase")
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--load", type=float, default=0.8, help="share of the measured peak to send")
    args = parser.parse_args()

    workdir = throwaway_store("tabloop-resilience-")
    from tasks.settings import get_settings
    from tasks.store import registry

    records, _ = register_model(workdir)
    register_model(workdir)  # v2: same data, the alias-move target
    settings = get_settings()
    client = registry.connect(settings)
    client.set_registered_model_alias("bench", "champion", "1")
    bodies = [json.dumps([r]).encode() for r in records[:500]]

    import ray
    from ray import serve

    from serving.app import ModelService, ServeConfig
    from serving.ray_env import use_in_this_process

    use_in_this_process()  # HAProxy and direct ingress, as `make serve` runs it
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=200 * 1024**2, log_to_driver=False)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    app = ModelService.options(num_replicas=args.replicas, ray_actor_options={"num_cpus": 0.5}).bind(
        ServeConfig(poll_interval_s=1).model_dump()
    )
    serve.run(app, name="bench", route_prefix="/")
    url = f"http://127.0.0.1:{port}/predict"
    try:
        wait_http(f"http://127.0.0.1:{port}/ready")
        asyncio.run(drive(url, lambda i: bodies[i % len(bodies)], 8, 3))  # warm up
        peak = asyncio.run(drive(url, lambda i: bodies[i % len(bodies)], 32, 10))["rps"]
        rate = args.load * peak
        print(f"peak {peak:.0f} req/s (closed loop, concurrency 32); open-loop load at {rate:.0f} req/s\n")

        summary("sustained", asyncio.run(open_loop(url, bodies, rate, args.seconds, [])))

        def move() -> None:
            registry.set_champion(client, "bench", "2", "promote", "benchmark", "alias moved under load")

        moved = asyncio.run(open_loop(url, bodies, rate, 20, [(5.0, move)]))
        summary("alias-move", moved)
        answered = sorted((o for o in moved if o.ok), key=lambda o: o.done_s)
        first_v2 = next((o.done_s for o in answered if o.version == "2"), None)
        last_v1 = max((o.done_s for o in answered if o.version == "1"), default=None)
        overlap = max(0.0, last_v1 - first_v2) if first_v2 is not None and last_v1 is not None else float("nan")
        final = {o.version for o in answered[-50:]}
        print(
            f"             first v2 answer at {first_v2:.1f} s; both versions answered for {overlap:.2f} s; "
            f"last 50 answers from {sorted(final)}"
        )

        victims: list[str] = []
        killed_at: list[float] = []
        recovered_at: list[float] = []

        def kill() -> None:
            name = replica_names("bench")[0]
            victims.append(name)
            killed_at.append(time.perf_counter())
            ray.kill(ray.get_actor(name, namespace="serve"), no_restart=True)
            while time.perf_counter() - killed_at[0] < 120:  # a replacement under a new name, all running
                names = replica_names("bench")
                if name not in names and len(names) == args.replicas and running_replicas("bench") == args.replicas:
                    break
                time.sleep(0.25)
            recovered_at.append(time.perf_counter())

        kill_started = time.perf_counter()
        killed = asyncio.run(open_loop(url, bodies, rate, 30, [(5.0, kill)]))
        summary("replica-kill", killed)
        failures = [o.done_s for o in killed if not o.ok]
        kill_s = killed_at[0] - kill_started
        last_failure = f"{max(failures) - kill_s:.1f} s after the kill" if failures else "none"
        print(
            f"             killed {victims[0]}; last failure: {last_failure}; "
            f"{args.replicas} replicas running again {recovered_at[0] - killed_at[0]:.1f} s after the kill"
        )
    finally:
        serve.shutdown()
        ray.shutdown()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
