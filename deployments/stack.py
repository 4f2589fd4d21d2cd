"""The whole local stack in one command, and down again. Both are safe to repeat.

    python deployments/stack.py up        # make up
    python deployments/stack.py down      # make down
    python deployments/stack.py status    # make stack-status
    eval "$(python deployments/stack.py env)"   # point this shell (flows, CLIs) at the stack

What `up` starts (logs and pid files under .storage/stack/, or TABLOOP_STACK_STATE_DIR):
  s3       moto in server mode, the S3 API behind bucket `tabloop` (in memory: its contents go at `down`)
  prefect  a Prefect server
  mlflow   an MLflow tracking server, artifacts proxied into s3://tabloop/mlartifacts
  ray      a Ray head node running the Ray Serve app of serving/config.yaml (TABLOOP_STACK_SERVE=false: none)
  worker   a process worker on the tabloop-process pool
and then applies prefect.yaml and the automations (deployments/apply.py). Every process gets the same
TABLOOP_* settings, so data snapshots, reports, prediction logs and alerts live in s3://tabloop/storage.

Feature store: its online store is the Redis at TABLOOP_STACK_ONLINE_STORE_URL (default redis://127.0.0.1:6379/0,
checked at `up`; not started by the stack); set it empty for the embedded SQLite file instead.

Databases: SQLite files in the state folder, or with TABLOOP_DATABASE_URL=postgresql://user@host:5432 one
PostgreSQL server holding Prefect's, MLflow's and the shared Optuna storage's own databases (tabloop_prefect,
tabloop_mlflow, tabloop_optuna; the prefix is TABLOOP_STACK_DATABASE_PREFIX), created when missing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import yaml
from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

if TYPE_CHECKING:
    import s3fs

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT))  # run as a script: `python deployments/stack.py up`

from serving.ray_env import ray_serve_env  # noqa: E402
from tasks.store import databases  # noqa: E402

DATABASE_SETTING = "TABLOOP_DATABASE_URL"


class StackSettings(BaseSettings):
    """Where the local stack keeps its state and which loopback ports it uses."""

    model_config = SettingsConfigDict(env_prefix="TABLOOP_STACK_", extra="ignore")

    state_dir: Path = ROOT / ".storage" / "stack"
    host: str = "127.0.0.1"
    s3_port: int = 5555
    prefect_port: int = 4200
    mlflow_port: int = 5000
    serve_port: int = 8000
    ray_port: int = 6390  # not Ray's default 6379: Redis commonly holds that port
    ray_dashboard_port: int = 8265
    ray_agent_port: int = 52365
    ray_client_port: int = 10001
    bucket: str = "tabloop"
    serve: bool = True
    mlflow_backend_uri: str | None = None
    database_url: str | None = Field(
        None,
        validation_alias=AliasChoices(DATABASE_SETTING),
        description="A PostgreSQL server for Prefect, MLflow and Optuna, each in its own database; None: SQLite.",
    )
    database_prefix: str = "tabloop"
    online_store_url: str | None = Field(
        "redis://127.0.0.1:6379/0", description="The feature store's online store (Redis); empty: a SQLite file."
    )
    start_timeout_s: float = 180

    def database(self, store: str, driver: str | None = None) -> str | None:
        """The URL of one store's PostgreSQL database (prefect, mlflow, optuna), or None on SQLite."""
        if self.database_url is None:
            return None
        return databases.database_url(self.database_url, f"{self.database_prefix}_{store}", driver)

    @property
    def database_names(self) -> list[str]:
        return [f"{self.database_prefix}_{store}" for store in STORES] if self.database_url else []

    @property
    def online_store(self) -> str | None:
        return self.online_store_url or None

    @property
    def s3_url(self) -> str:
        return f"http://{self.host}:{self.s3_port}"

    @property
    def prefect_api_url(self) -> str:
        return f"http://{self.host}:{self.prefect_port}/api"

    @property
    def mlflow_url(self) -> str:
        return f"http://{self.host}:{self.mlflow_port}"

    @property
    def serve_url(self) -> str:
        return f"http://{self.host}:{self.serve_port}"

    @property
    def ray_dashboard_url(self) -> str:
        return f"http://{self.host}:{self.ray_dashboard_port}"

    @property
    def ray_token_path(self) -> Path:
        return self.state_dir / "ray-auth-token"


STORES = ("prefect", "mlflow", "optuna")


def client_env(stack: StackSettings) -> dict[str, str]:
    """What a process needs to work against the stack: the same for the worker, Ray and your shell."""
    optuna = stack.database("optuna", "psycopg2")
    return {
        **({"TABLOOP_OPTUNA_STORAGE": optuna} if optuna else {}),
        **({"TABLOOP_FEATURE_ONLINE_STORE": stack.online_store} if stack.online_store else {}),
        "PREFECT_API_URL": stack.prefect_api_url,
        "TABLOOP_STORAGE_URL": f"s3://{stack.bucket}/storage",
        "TABLOOP_S3_ENDPOINT_URL": stack.s3_url,
        "TABLOOP_MLFLOW_TRACKING_URI": stack.mlflow_url,
        "TABLOOP_SERVING_URL": stack.serve_url,
        # moto accepts any credentials; real ones from the environment win
        "AWS_ACCESS_KEY_ID": os.environ.get("AWS_ACCESS_KEY_ID", "testing"),
        "AWS_SECRET_ACCESS_KEY": os.environ.get("AWS_SECRET_ACCESS_KEY", "testing"),
        "AWS_DEFAULT_REGION": os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
        # Ray's token auth with the stack's own token (ray_token), not whatever ~/.ray holds
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(stack.ray_token_path),
    }


def ray_token(stack: StackSettings) -> None:
    """Create the stack's Ray token once (Ray's own format: 32 random bytes, hex), readable by this user only."""
    path = stack.ray_token_path
    if not path.exists():
        path.touch(mode=0o600)
        path.write_text(secrets.token_hex(32))


@dataclass(frozen=True)
class Service:
    name: str
    argv: list[str]
    ready: Callable[[], bool] | None  # None: up while its process lives
    env: dict[str, str] = field(default_factory=dict)
    stop_grace_s: float = 20


def answers(url: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            return httpx.get(url, timeout=2).status_code < 500
        except httpx.HTTPError:
            return False

    return check


def services(stack: StackSettings) -> list[Service]:
    """In start order; `down` stops them in reverse."""
    state = stack.state_dir
    mlflow_backend = stack.mlflow_backend_uri or stack.database("mlflow") or f"sqlite:///{state / 'mlflow.db'}"
    prefect_database = stack.database("prefect", "asyncpg")
    found: list[Service] = [
        Service("s3", [str(BIN / "moto_server"), "-H", stack.host, "-p", str(stack.s3_port)], answers(stack.s3_url)),
        Service(
            "prefect",
            [str(BIN / "prefect"), "server", "start", "--host", stack.host, "--port", str(stack.prefect_port)],
            answers(f"{stack.prefect_api_url}/health"),
            env={
                "PREFECT_HOME": str(state / "prefect"),
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                **({"PREFECT_SERVER_DATABASE_CONNECTION_URL": prefect_database} if prefect_database else {}),
            },
        ),
        Service(
            "mlflow",
            [
                str(BIN / "mlflow"),
                "server",
                "--host",
                stack.host,
                "--port",
                str(stack.mlflow_port),
                "--workers",
                "1",
                "--artifacts-destination",
                f"s3://{stack.bucket}/mlartifacts",
            ],
            answers(f"{stack.mlflow_url}/health"),
            # one worker and no job runner: 2 processes and ~0.5 GB instead of 10 and ~2 GB (STACK.md)
            env={
                "MLFLOW_S3_ENDPOINT_URL": stack.s3_url,
                "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
                "MLFLOW_BACKEND_STORE_URI": mlflow_backend,  # not in the command line: it may hold a password
            },
        ),
    ]
    if stack.serve:
        found.append(
            Service(
                "ray",
                [
                    str(BIN / "ray"),
                    "start",
                    "--head",
                    "--block",
                    "--disable-usage-stats",
                    "--node-ip-address",
                    stack.host,
                    "--port",
                    str(stack.ray_port),
                    "--dashboard-host",
                    stack.host,
                    "--dashboard-port",
                    str(stack.ray_dashboard_port),
                    "--dashboard-agent-listen-port",
                    str(stack.ray_agent_port),
                    "--ray-client-server-port",
                    str(stack.ray_client_port),
                ],
                answers(f"{stack.ray_dashboard_url}/api/version"),
                env=ray_serve_env(),  # HAProxy and direct ingress (serving/ray_env.py)
                stop_grace_s=45,  # a head node drains for up to 30 s on SIGTERM
            )
        )
    found.append(
        Service(
            "worker",
            [str(BIN / "prefect"), "worker", "start", "--pool", "tabloop-process", "--name", "tabloop-local"],
            ready=None,
            env={"PREFECT_HOME": str(state / "prefect")},
        )
    )
    return found


# --- processes -------------------------------------------------------------------------------------------


def pid_file(stack: StackSettings, name: str) -> Path:
    return stack.state_dir / f"{name}.pid"


def running_pid(stack: StackSettings, service: Service) -> int | None:
    """The pid we started for this service, if that process is still the one we started."""
    path = pid_file(stack, service.name)
    if not path.exists():
        return None
    recorded = json.loads(path.read_text())
    pid = int(recorded["pid"])
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        path.unlink(missing_ok=True)
        return None
    if Path("/proc/self").exists():  # Linux: tell a live service from a zombie or a reused pid
        try:
            exited = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] == "Z"
            reused = is_other_program(Path(f"/proc/{pid}/cmdline").read_bytes(), recorded["argv0"])
        except FileNotFoundError:
            exited, reused = True, False
        if exited or reused:
            path.unlink(missing_ok=True)
            return None
    return pid


def is_other_program(cmdline: bytes, argv0: str) -> bool:
    """Whether /proc/<pid>/cmdline shows a program other than the one we started. An empty one is not
    evidence: a process that has just been started can still be inside exec, its arguments not yet mapped,
    and reading it there once made `make up` report a starting worker as exited (and lose track of it)."""
    return bool(cmdline) and argv0 not in cmdline.decode(errors="replace")


def started_with(stack: StackSettings, service: Service) -> list[str] | None:
    path = pid_file(stack, service.name)
    return json.loads(path.read_text()).get("argv") if path.exists() else None


def start(stack: StackSettings, service: Service, env: dict[str, str]) -> int:
    logs = stack.state_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with open(logs / f"{service.name}.log", "ab") as log:
        # its own session: the service outlives this command, and `down` can stop its whole process group
        process = subprocess.Popen(
            service.argv,
            cwd=ROOT,
            env={**os.environ, **env, **service.env},
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    record = {"pid": process.pid, "argv0": Path(service.argv[0]).name, "argv": service.argv}
    pid_file(stack, service.name).write_text(json.dumps(record))
    return process.pid


def is_up(stack: StackSettings, service: Service) -> bool:
    if service.ready is None:
        return running_pid(stack, service) is not None
    return service.ready()


def wait_ready(stack: StackSettings, service: Service) -> None:
    deadline = time.monotonic() + stack.start_timeout_s
    while not is_up(stack, service):
        if running_pid(stack, service) is None:
            log = stack.state_dir / "logs" / f"{service.name}.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise SystemExit(f"{service.name} exited during start-up; the end of {log}:\n{tail}")
        if time.monotonic() > deadline:
            raise SystemExit(f"{service.name} not ready after {stack.start_timeout_s:.0f} s; see its log")
        time.sleep(0.5)


def stop(stack: StackSettings, service: Service) -> bool:
    """SIGTERM the service, then SIGKILL its process group if it lingers. False when it was not running."""
    pid = running_pid(stack, service)
    if pid is None:
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + service.stop_grace_s
    while time.monotonic() < deadline and running_pid(stack, service) is not None:
        time.sleep(0.25)
        _reap(pid)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)  # children it left behind (flow runs, uvicorn workers, raylets)
    _reap(pid)
    pid_file(stack, service.name).unlink(missing_ok=True)
    return True


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):  # not our child when `up` ran in another process
        os.waitpid(pid, os.WNOHANG)


# --- the stack -------------------------------------------------------------------------------------------


def bucket_filesystem(s3_url: str, env: Mapping[str, str]) -> s3fs.S3FileSystem:
    """The stack's S3 API through s3fs, with the credentials the stack gives its services (client_env)."""
    import s3fs

    return s3fs.S3FileSystem(
        key=env["AWS_ACCESS_KEY_ID"],
        secret=env["AWS_SECRET_ACCESS_KEY"],
        client_kwargs={"endpoint_url": s3_url},
        skip_instance_cache=True,
    )


def ensure_bucket(stack: StackSettings, env: dict[str, str]) -> None:
    fs = bucket_filesystem(stack.s3_url, env)
    if not fs.exists(stack.bucket):
        fs.mkdir(stack.bucket)


def serve_config(stack: StackSettings) -> Path:
    """serving/config.yaml with the stack's HTTP address."""
    config = yaml.safe_load((ROOT / "serving" / "config.yaml").read_text())
    config["http_options"].update(host=stack.host, port=stack.serve_port)
    path = stack.state_dir / "serve-config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def deploy_serving(stack: StackSettings, env: dict[str, str]) -> None:
    command = [str(BIN / "serve"), "deploy", "--address", stack.ray_dashboard_url, str(serve_config(stack))]
    result = subprocess.run(command, cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"serve deploy failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    check = answers(f"{stack.serve_url}/health")
    deadline = time.monotonic() + stack.start_timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"the Ray Serve app did not answer on {stack.serve_url}/health")
        time.sleep(1)


def apply_deployments(env: dict[str, str]) -> None:
    command = [sys.executable, str(ROOT / "deployments" / "apply.py")]
    result = subprocess.run(command, cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"deployments/apply.py failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    print(result.stdout.strip())


def up(stack: StackSettings) -> None:
    stack.state_dir.mkdir(parents=True, exist_ok=True)
    env = client_env(stack)
    by_name = {s.name: s for s in services(stack)}
    fresh: set[str] = set()

    def ensure(names: list[str]) -> None:
        for name in names:  # start together, then wait: the slow starts overlap
            service = by_name[name]
            if running_pid(stack, service) is not None and started_with(stack, service) != service.argv:
                raise SystemExit(f"{name} is running with other settings; `down` first, then `up`")
            if running_pid(stack, service) is None and not is_up(stack, service):
                start(stack, service, env)
                fresh.add(name)
        for name in names:
            wait_ready(stack, by_name[name])
            print(f"{name:8} {'started' if name in fresh else 'already running'}")

    ray_token(stack)
    if stack.database_url:  # before anything starts: an unreachable server fails here, in seconds
        try:
            created = databases.ensure_databases(stack.database_url, stack.database_names, DATABASE_SETTING)
        except databases.DatabaseUnavailable as err:
            raise SystemExit(str(err)) from None
        print(
            f"postgres databases {', '.join(stack.database_names)}"
            + (f" (created {', '.join(created)})" if created else "")
        )
    if stack.online_store:
        check_redis(stack.online_store)
    ensure(["s3"])
    ensure_bucket(stack, env)
    ensure([n for n in ("prefect", "mlflow", "ray") if n in by_name])
    apply_deployments(env)
    if "ray" in by_name:
        deploy_serving(stack, env)
    ensure(["worker"])
    print(describe(stack))


def check_redis(url: str) -> None:
    """The online store answers before anything starts, or `up` says which setting to change."""
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=3).ping()
    except redis.RedisError as err:
        raise SystemExit(
            f"the feature store's Redis at {databases.redact_url(url)} does not answer ({err}); start it, or set "
            "TABLOOP_STACK_ONLINE_STORE_URL= (empty) for the embedded SQLite online store"
        ) from None


def down(stack: StackSettings) -> None:
    ray = next((s for s in services(stack) if s.name == "ray"), None)
    if ray is not None and running_pid(stack, ray) is not None:
        # without Serve's actors the head node shuts down at once instead of draining for 30 s
        command = [str(BIN / "serve"), "shutdown", "--yes", "--address", stack.ray_dashboard_url]
        subprocess.run(command, env={**os.environ, **client_env(stack)}, capture_output=True, timeout=60)
    stopped = [s.name for s in reversed(services(stack)) if stop(stack, s)]
    forget_ray_address(stack)
    print(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")


def forget_ray_address(stack: StackSettings) -> None:
    """`ray start` leaves its address for later `ray.init()` calls to join; a stopped head must not be joined."""
    import tempfile

    address_file = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"
    with contextlib.suppress(OSError):
        if address_file.read_text().strip().endswith(f":{stack.ray_port}"):
            address_file.unlink()


def status(stack: StackSettings) -> dict[str, bool]:
    return {s.name: is_up(stack, s) for s in services(stack)}


def describe(stack: StackSettings) -> str:
    lines = [
        f"Prefect UI   http://{stack.host}:{stack.prefect_port}",
        f"MLflow UI    {stack.mlflow_url}",
        f"S3 API       {stack.s3_url} (bucket {stack.bucket})",
    ]
    if stack.database_url:
        lines.append(f"PostgreSQL   {databases.redact_url(stack.database_url)}: {', '.join(stack.database_names)}")
    if stack.online_store:
        lines.append(f"Online store {databases.redact_url(stack.online_store)} (feature store)")
    if stack.serve:
        lines += [f"Model API    {stack.serve_url}/docs", f"Ray UI       {stack.ray_dashboard_url}"]
    lines.append('Shell        eval "$(python deployments/stack.py env)"')
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["up", "down", "status", "env"])
    command = parser.parse_args(argv).command
    stack = StackSettings()
    if command == "up":
        up(stack)
    elif command == "down":
        down(stack)
    elif command == "env":
        print("\n".join(f"export {key}={value}" for key, value in client_env(stack).items()))
    else:
        states = status(stack)
        for name, ok in states.items():
            print(f"{name:8} {'running' if ok else 'stopped'}")
        raise SystemExit(0 if all(states.values()) else 3)


if __name__ == "__main__":
    main()
