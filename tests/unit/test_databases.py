"""PostgreSQL databases for the stores, on the machine's real PostgreSQL (127.0.0.1:5432, trust auth)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg2
import pytest

from tasks.store import databases

SERVER = os.environ.get("TABLOOP_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432")
ROOT = Path(__file__).resolve().parents[2]


def existing(names: list[str]) -> set[str]:
    with psycopg2.connect(f"{SERVER}/postgres") as connection, connection.cursor() as cursor:
        cursor.execute("SELECT datname FROM pg_database WHERE datname = ANY(%s)", (names,))
        return {row[0] for row in cursor.fetchall()}


@pytest.fixture
def names():
    prefix = f"test_{uuid.uuid4().hex[:8]}"
    made = [f"{prefix}_prefect", f"{prefix}_mlflow"]
    yield made
    databases.drop_databases(SERVER, made)
    assert not existing(made)


def test_missing_databases_are_created_once_and_each_url_points_at_its_own(names):
    assert databases.ensure_databases(SERVER, names, "TABLOOP_DATABASE_URL") == names
    assert existing(names) == set(names)
    assert databases.ensure_databases(SERVER, names, "TABLOOP_DATABASE_URL") == []  # harmless to repeat
    url = databases.database_url(SERVER, names[0], "asyncpg")
    assert url == f"postgresql+asyncpg://postgres@127.0.0.1:5432/{names[0]}"
    with psycopg2.connect(databases.database_url(SERVER, names[1])) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT current_database()")
        assert cursor.fetchone() == (names[1],)


def test_an_unreachable_server_fails_fast_naming_the_setting_and_databases_but_not_the_password():
    started = time.monotonic()
    with pytest.raises(databases.DatabaseUnavailable) as failure:
        databases.ensure_databases("postgresql://admin:s3cr3t@127.0.0.1:1", ["tabloop_mlflow"], "TABLOOP_DATABASE_URL")
    message = str(failure.value)
    assert time.monotonic() - started < databases.CONNECT_TIMEOUT_S + 2
    assert "TABLOOP_DATABASE_URL" in message and "tabloop_mlflow" in message and "admin:***@127.0.0.1:1" in message
    assert "s3cr3t" not in message
    with pytest.raises(ValueError, match=r"not a PostgreSQL URL: mysql://u:\*\*\*@h"):
        databases.database_url("mysql://u:pw@h/db", "x")


def test_the_stack_refuses_to_start_on_an_unreachable_database(tmp_path):
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("TABLOOP_")},
        "TABLOOP_DATABASE_URL": "postgresql://admin:s3cr3t@127.0.0.1:1",
        "TABLOOP_STACK_STATE_DIR": str(tmp_path),
    }
    command = [sys.executable, "deployments/stack.py", "up"]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "cannot reach PostgreSQL at postgresql://admin:***@127.0.0.1:1 (from TABLOOP_DATABASE_URL)" in result.stderr
    assert "s3cr3t" not in result.stdout + result.stderr
    assert not list(tmp_path.glob("*.pid")), "nothing was started"
