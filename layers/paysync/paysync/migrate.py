"""Schema migrations (Alembic), applied by `paysync migrate` and by the deploy-time Lambda."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import pg8000.dbapi
from pg8000.exceptions import DatabaseError
from pg8000.native import identifier, literal

from paysync.dal.db import Connection, ConnectionParams, close_quietly, connect, connection_params, transaction

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def _alembic_config(connection: object):
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    return config


def upgrade(params: ConnectionParams | None = None, revision: str = "head") -> str | None:
    """Bring the schema to `revision` (default: the newest); returns the revision now current."""
    from alembic import command
    from alembic.runtime.migration import MigrationContext
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    params = params or connection_params()
    engine = create_engine(
        "postgresql+pg8000://", creator=lambda: pg8000.dbapi.connect(**params.as_kwargs()), poolclass=NullPool
    )
    try:
        with engine.begin() as connection:
            command.upgrade(_alembic_config(connection), revision)
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


# The group roles a login user may join (created by the migrations).
GROUP_ROLES = ("paysync_read", "paysync_sync")
_ROLE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


@dataclass(frozen=True)
class LoginUser:
    """A database login (from a Secrets Manager secret) and the one group role it belongs to."""

    username: str
    password: str = field(repr=False)
    group: str


def ensure_login_users(logins: list[LoginUser], params: ConnectionParams | None = None) -> None:
    """Create each login user (or reset its password to the given one) as a member of its group only.

    Run by the migrating user after `upgrade` (the group roles must exist). The
    password goes into the statement as a literal, so errors are reported
    without the statement.
    """
    for login in logins:
        if not _ROLE_NAME.match(login.username) or login.username in (*GROUP_ROLES, "paysync_owner"):
            raise ValueError(f"not a valid login user name: {login.username!r}")
        if login.group not in GROUP_ROLES:
            raise ValueError(f"unknown group role {login.group!r}; expected one of {', '.join(GROUP_ROLES)}")
    connection = connect(params or connection_params())
    try:
        for login in logins:
            try:
                _ensure_login_user(connection, login)
            except DatabaseError:
                raise RuntimeError(f"could not create or update the login user {login.username}") from None
    finally:
        close_quietly(connection)


def _ensure_login_user(connection: Connection, login: LoginUser) -> None:
    user = identifier(login.username)
    with transaction(connection):
        exists = connection.run("SELECT 1 FROM pg_roles WHERE rolname = :name", name=login.username)
        verb = "ALTER" if exists else "CREATE"
        password = literal(login.password)
        connection.run(f"{verb} ROLE {user} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD {password}")
        for group in GROUP_ROLES:
            if group != login.group:
                connection.run(f"REVOKE {group} FROM {user}")
        connection.run(f"GRANT {login.group} TO {user}")
