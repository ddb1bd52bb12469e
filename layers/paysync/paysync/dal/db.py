"""PostgreSQL connections (pg8000, pure Python).

Read handlers reuse one connection per container (`shared_connection`); syncs
open their own (`connect`) and close it when done, so the session state they
create (temp tables, SET LOCAL, advisory locks) never outlives the sync and an
RDS Proxy pins a client connection only for the length of one sync.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pg8000.native
from pg8000.exceptions import DatabaseError, InterfaceError

from paysync.config import Settings, get_settings
from paysync.errors import DatabaseUnavailable

Connection = pg8000.native.Connection
APPLICATION_NAME = "paysync"
CONNECT_TIMEOUT_SECONDS = 10


@dataclass(frozen=True)
class ConnectionParams:
    user: str
    password: str | None
    database: str
    host: str = "localhost"
    port: int = 5432
    unix_sock: str | None = None
    ssl_context: ssl.SSLContext | None = None

    def as_kwargs(self) -> dict[str, Any]:
        return {
            "user": self.user,
            "password": self.password,
            "database": self.database,
            "host": self.host,
            "port": self.port,
            "unix_sock": self.unix_sock,
            "ssl_context": self.ssl_context,
        }


def parse_database_url(url: str) -> ConnectionParams:
    """postgresql://user:pass@host:port/db[?sslmode=…&host=/socket/dir] -> connection params.

    sslmode: disable (default for localhost and sockets), require (encrypted, not
    verified), verify-full (encrypted and verified against the system CAs).
    """
    parts = urlsplit(url)
    scheme = parts.scheme.split("+", 1)[0]
    if scheme not in ("postgresql", "postgres"):
        raise ValueError("DATABASE_URL must start with postgresql://")
    query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
    socket_dir = query.get("host") if query.get("host", "").startswith("/") else None
    port = parts.port or int(query.get("port", 5432))
    sslmode = query.get("sslmode", "disable")
    if sslmode not in ("disable", "allow", "prefer", "require", "verify-ca", "verify-full"):
        raise ValueError(f"unsupported sslmode {sslmode!r}")
    return ConnectionParams(
        user=unquote(parts.username or "postgres"),
        password=unquote(parts.password) if parts.password else None,
        database=unquote(parts.path.lstrip("/")) or "postgres",
        host=parts.hostname or "localhost",
        port=port,
        unix_sock=f"{socket_dir}/.s.PGSQL.{port}" if socket_dir else None,
        ssl_context=_ssl_context(sslmode),
    )


def _ssl_context(sslmode: str) -> ssl.SSLContext | None:
    if sslmode in ("disable", "allow", "prefer"):
        return None
    context = ssl.create_default_context()
    if sslmode == "require":
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _aws_params(settings: Settings) -> ConnectionParams:
    # Imported here: only AWS needs Secrets Manager (and boto3's import cost).
    from aws_lambda_powertools.utilities.parameters import get_secret

    secret = get_secret(settings.db_secret_arn, transform="json", max_age=300)
    return ConnectionParams(
        user=secret["username"],
        password=secret["password"],
        database=settings.db_name,
        host=settings.db_host or secret["host"],
        port=settings.db_port,
        ssl_context=ssl.create_default_context(),  # RDS Proxy: verified TLS
    )


def connection_params(settings: Settings | None = None) -> ConnectionParams:
    """Where the database is: DATABASE_URL if set, else DB_HOST + DB_SECRET_ARN (AWS)."""
    settings = settings or get_settings()
    if settings.database_url:
        return parse_database_url(settings.database_url)
    if settings.db_secret_arn:
        return _aws_params(settings)
    raise DatabaseUnavailable("no database configured: set DATABASE_URL (or DB_SECRET_ARN in AWS)")


def connect(params: ConnectionParams | None = None) -> Connection:
    """A new connection; DatabaseUnavailable when the server cannot be reached."""
    params = params or connection_params()
    try:
        return Connection(
            **params.as_kwargs(),
            timeout=CONNECT_TIMEOUT_SECONDS,
            application_name=APPLICATION_NAME,
        )
    except (InterfaceError, OSError) as exc:
        raise DatabaseUnavailable("the database is unreachable") from exc


_shared: Connection | None = None


def shared_connection() -> Connection:
    """The container's reusable connection, checked with a ping and replaced when broken."""
    global _shared
    if _shared is not None:
        try:
            _shared.run("SELECT 1")
            return _shared
        except (InterfaceError, DatabaseError, OSError):
            close_quietly(_shared)
            _shared = None
    _shared = connect()
    return _shared


def close_quietly(connection: Connection) -> None:
    """Close, ignoring a connection that is already broken."""
    with suppress(InterfaceError, DatabaseError, OSError):
        connection.close()


@contextmanager
def transaction(connection: Connection) -> Iterator[Connection]:
    """BEGIN … COMMIT, or ROLLBACK when the block raises."""
    connection.run("BEGIN")
    try:
        yield connection
    except BaseException:
        rollback_quietly(connection)
        raise
    connection.run("COMMIT")


def rollback_quietly(connection: Connection) -> None:
    """ROLLBACK, ignoring a connection that is already broken."""
    with suppress(InterfaceError, DatabaseError, OSError):
        connection.run("ROLLBACK")


def rows_as_dicts(connection: Connection, rows: list[list[Any]]) -> list[dict[str, Any]]:
    """Rows of the last statement as dicts keyed by column name."""
    names = [column["name"] for column in connection.columns or []]
    return [dict(zip(names, row, strict=True)) for row in rows]
