"""PostgreSQL databases for the stores that can share one server: Prefect's, MLflow's and Optuna's.

One server URL (`postgresql://user:password@host:5432`, the trust-auth form `postgresql://postgres@host:5432`)
gives each store its own database, created when missing. A server that does not answer fails at once, with a
message that names the databases and the setting, never the password.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit, urlunsplit

from tasks.settings import redact_url

CONNECT_TIMEOUT_S = 5


class DatabaseUnavailable(RuntimeError):
    """The PostgreSQL server cannot be reached or refuses us; the message is safe to print."""


def database_url(server_url: str, name: str, driver: str | None = None) -> str:
    """`server_url` pointed at the database `name`, with an SQLAlchemy driver (`asyncpg`, `psycopg2`) if given."""
    parts = urlsplit(server_url)
    if parts.scheme.split("+")[0] not in ("postgresql", "postgres"):
        raise ValueError(f"not a PostgreSQL URL: {redact_url(server_url)} (expected postgresql://user@host:5432)")
    scheme = "postgresql" + (f"+{driver}" if driver else "")
    return urlunsplit(parts._replace(scheme=scheme, path=f"/{name}"))


def ensure_databases(server_url: str, names: Iterable[str], setting: str) -> list[str]:
    """Create each database that does not exist yet; returns the ones created."""
    names = list(names)
    created: list[str] = []
    with _connect(server_url, names, setting) as connection, connection.cursor() as cursor:
        from psycopg2 import sql

        for name in names:
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cursor.fetchone() is None:
                cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
                created.append(name)
    return created


def drop_databases(server_url: str, names: Iterable[str]) -> None:
    """Drop the databases (and the sessions still on them); for tests and teardown."""
    from psycopg2 import sql

    names = list(names)
    with _connect(server_url, names, "the server URL") as connection, connection.cursor() as cursor:
        for name in names:
            cursor.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


class _Autocommit:
    """A psycopg2 connection in autocommit (CREATE DATABASE cannot run in a transaction), closed on exit."""

    def __init__(self, connection) -> None:
        self.connection = connection
        connection.autocommit = True

    def __enter__(self):
        return self.connection

    def __exit__(self, *exc: object) -> None:
        self.connection.close()


def _connect(server_url: str, names: list[str], setting: str) -> _Autocommit:
    import psycopg2

    parts = urlsplit(server_url)
    maintenance = urlunsplit(parts._replace(scheme="postgresql", path=parts.path or "/postgres"))
    try:
        return _Autocommit(psycopg2.connect(maintenance, connect_timeout=CONNECT_TIMEOUT_S))
    except psycopg2.Error as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if parts.password:
            reason = reason.replace(parts.password, "***")
        raise DatabaseUnavailable(
            f"cannot reach PostgreSQL at {redact_url(server_url)} (from {setting}) to use the databases "
            f"{', '.join(names)}: {reason}"
        ) from None
