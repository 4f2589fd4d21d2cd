"""A new local Ray instance with Ray Serve's HTTP port on loopback, as the serving tests start it, and the
helpers they share: a free port, and waiting until every app answers /ready."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def local_serve(env: dict[str, str]) -> Iterator[str]:
    """Yields the HTTP base URL. 4 logical CPUs on 2 cores: the apps of a test module side by side, each replica
    asking for a fraction; `env` goes to every replica."""
    import ray
    from ray import serve

    port = free_port()
    ray.init(
        address="local",  # a new local instance, never a cluster some other process started
        num_cpus=4,
        include_dashboard=False,
        object_store_memory=200 * 1024**2,
        runtime_env={"env_vars": env},
        log_to_driver=False,
    )
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()


def wait_ready(*urls: str, timeout_s: float = 120) -> None:
    deadline = time.time() + timeout_s
    for url in urls:
        while httpx.get(f"{url}/ready").status_code != 200:
            assert time.time() < deadline, f"{url} never became ready"
            time.sleep(0.5)
