"""Schema migrations (Alembic), applied by `paysync migrate` and by the deploy-time Lambda."""

from __future__ import annotations

from pathlib import Path

import pg8000.dbapi

from paysync.dal.db import ConnectionParams, connection_params

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
