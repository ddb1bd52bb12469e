"""Alembic environment: runs the migrations on the connection paysync.migrate hands over."""

from alembic import context

from paysync.schema import metadata

MIGRATION_LOCK_KEY = 7_311_000  # concurrent deploys/CLI runs migrate one at a time

connection = context.config.attributes["connection"]
# target_metadata: the models autogenerate compares the database with (tests/integration/test_schema.py).
context.configure(connection=connection, target_metadata=metadata, transaction_per_migration=False)
with context.begin_transaction():
    connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY})")
    context.run_migrations()
