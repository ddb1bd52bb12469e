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
from datetime import date, datetime
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pg8000.native
from pg8000 import converters
from pg8000.exceptions import DatabaseError, InterfaceError

from paysync.config import Settings, get_settings
from paysync.errors import DatabaseUnavailable
from paysync.observability import logger

Connection = pg8000.native.Connection
APPLICATION_NAME = "paysync"
CONNECT_TIMEOUT_SECONDS = 10
SYNC_STATEMENT_SECONDS = 900  # Lambda's limit: no sync outlives its invocation
# SQLSTATE class 28, invalid authorization: a wrong password (28P01) or a login the server
# (or RDS Proxy) does not accept (28000).
LOGIN_REFUSED = "28"


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


def _aws_params(settings: Settings, force_fetch: bool = False) -> ConnectionParams:
    # Imported here: only AWS needs Secrets Manager (and boto3's import cost).
    from aws_lambda_powertools.utilities.parameters import get_secret
    from aws_lambda_powertools.utilities.parameters.exceptions import GetParameterError, TransformParameterError

    try:
        secret = get_secret(settings.db_secret_arn, transform="json", max_age=300, force_fetch=force_fetch)
        return ConnectionParams(
            user=secret["username"],
            password=secret["password"],
            database=settings.db_name,
            host=settings.db_host or secret["host"],
            port=settings.db_port,
            ssl_context=ssl.create_default_context(),  # RDS Proxy: verified TLS
        )
    except (GetParameterError, TransformParameterError, KeyError, TypeError) as exc:
        # AWS's messages name the secret, the caller's role or the endpoint: log the kind only.
        error_type, error_code = _aws_error_kind(exc)
        logger.warning("database credentials unavailable", extra={"error_type": error_type, "error_code": error_code})
    # Raised outside the handler: the chained AWS message would reach the Lambda traceback.
    raise DatabaseUnavailable("the database credentials cannot be read; retry later")


def _aws_error_kind(exc: BaseException) -> tuple[str, str | None]:
    """The class name and AWS error code of the botocore error behind `exc` (Powertools wraps
    botocore's errors in its own), else of `exc` itself."""
    seen: BaseException | None = exc
    while seen is not None:
        if type(seen).__module__.startswith("botocore"):
            response = getattr(seen, "response", None)
            code = response.get("Error", {}).get("Code") if isinstance(response, dict) else None
            return type(seen).__name__, code
        seen = seen.__cause__ or seen.__context__
    return type(exc).__name__, None


def connection_params(settings: Settings | None = None) -> ConnectionParams:
    """Where the database is: DATABASE_URL if set, else DB_HOST + DB_SECRET_ARN (AWS)."""
    settings = settings or get_settings()
    if settings.database_url:
        return parse_database_url(settings.database_url)
    if settings.db_secret_arn:
        return _aws_params(settings)
    raise DatabaseUnavailable("no database configured: set DATABASE_URL (or DB_SECRET_ARN in AWS)")


def connect(params: ConnectionParams | None = None) -> Connection:
    """A new connection; DatabaseUnavailable when the server cannot be reached or refuses the login.

    With the configured credentials from Secrets Manager, a refused login means the secret
    may have been rotated since it was cached: it is fetched again, bypassing the cache,
    and the login is tried once more with what changed.
    """
    if params is not None:
        return _open(params)
    settings = get_settings()
    params = connection_params(settings)
    try:
        return _open(params)
    except DatabaseUnavailable as exc:
        if settings.database_url or not _sqlstate_in(exc).startswith(LOGIN_REFUSED):
            raise
        refused = exc
    fresh = _aws_params(settings, force_fetch=True)
    if (fresh.user, fresh.password, fresh.host) == (params.user, params.password, params.host):
        logger.warning("database login refused; the secret is unchanged")
        raise refused
    logger.info("database login refused; retrying with the secret fetched again")
    return _open(fresh)


def _open(params: ConnectionParams) -> Connection:
    where = {"host": params.unix_sock or params.host, "port": params.port}
    try:
        connection = Connection(
            **params.as_kwargs(),
            timeout=CONNECT_TIMEOUT_SECONDS,
            application_name=APPLICATION_NAME,
        )
    except (DatabaseError, InterfaceError, OSError) as exc:
        # Where the database lives is for the operator's log, never for the client; the
        # password and the URL are in neither.
        sqlstate = _sqlstate_in(exc)
        if sqlstate:
            logger.warning("database refused the connection", extra={**where, "sqlstate": sqlstate})
            raise DatabaseUnavailable("the database refused the connection; retry later") from exc
        logger.warning("database unreachable", extra={**where, "error": str(exc)})
        raise DatabaseUnavailable("the database is unreachable; retry later") from exc
    # pg8000 parses dates and timestamps with strptime (~10 µs each: most of the
    # time a 100-row page spends decoding); fromisoformat takes ~0.3 µs.
    connection.register_in_adapter(converters.DATE, _date_in)
    connection.register_in_adapter(converters.TIMESTAMPTZ, _timestamptz_in)
    return connection


def server_error_in(exc: BaseException) -> DatabaseError | None:
    """The server's error behind `exc` (itself, or in its chain), if the server sent one."""
    # pg8000 may raise "network error" after the server's refusal (the socket it closes is
    # already gone); the refusal is still in the exception chain.
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, DatabaseError) and seen.args and isinstance(seen.args[0], dict):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _sqlstate_in(exc: BaseException) -> str:
    """The SQLSTATE of the server's error behind `exc`, or "" when the server sent none."""
    error = server_error_in(exc)
    return str(error.args[0].get("C", "")) if error is not None else ""


def _date_in(text: str) -> date | str:
    try:
        return date.fromisoformat(text)
    except ValueError:  # infinity, BC or 5-digit years: pg8000's own parser decides
        return converters.date_in(text)


def _timestamptz_in(text: str) -> datetime | str:
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return converters.timestamptz_in(text)


def wait_for_long_statements(connection: Connection, seconds: float = SYNC_STATEMENT_SECONDS) -> None:
    """Let each statement run up to `seconds` (a sync's merge takes minutes at scale)."""
    # pg8000 applies its `timeout` to the connect and then to every socket read,
    # so a connection from `connect` gives up on any statement after 10 s.
    connection._usock.settimeout(seconds)


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
