"""Least-privilege database roles: paysync_owner, paysync_sync, paysync_read.

The three roles are NOLOGIN groups. The functions log in as users that are
members of exactly one of them (created by the deploy-time migration from
their Secrets Manager secrets; `paysync.migrate.ensure_login_users`):

- paysync_owner owns the replica tables (patients, payments, sync_runs), and
  with them their identity sequences and indexes, and may create objects in
  schema public (building an index needs it). The migrating user is made a
  member, so later migrations can alter those tables.
- paysync_read may connect, and SELECT the replica tables. Nothing else: no
  writes, no temporary tables, no new objects.
- paysync_sync may connect, create temporary tables (the sync's staging and
  diff tables), SELECT/INSERT/UPDATE the replica tables and use their
  sequences, and is a member of paysync_owner. The membership is needed
  because PostgreSQL lets only a table's owner ANALYZE it (a sync refreshes
  the statistics of the tables it rewrote) and drop and re-create its indexes
  and constraints (a bulk first load builds them after the insert; creating
  an index also needs CREATE on the schema). It also means a sync login could
  DELETE, TRUNCATE or DROP the replica tables and create tables in schema
  public; it still cannot read or change alembic_version, create databases
  or manage roles.

Nobody else but the owner of the database may create objects in schema
public or temporary tables. A migration that adds a table should create it as
paysync_owner (`SET LOCAL ROLE paysync_owner` first): the default privileges
below then grant it to the read and sync roles.

Roles belong to the whole server (all databases of a cluster share them), so
they are created only when missing, and the downgrade drops them only when no
other database still uses them.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

TABLES = "patients, payments, sync_runs"
ROLES = ("paysync_owner", "paysync_sync", "paysync_read")
# Privileges of the tables and sequences that later migrations create as paysync_owner.
DEFAULTS = "ALTER DEFAULT PRIVILEGES FOR ROLE paysync_owner IN SCHEMA public"


def _on_database(statement: str) -> None:
    # The database's name is only known at run time.
    op.execute(f"DO $$ BEGIN EXECUTE format('{statement}', current_database()); END $$")


def upgrade() -> None:
    for role in ROLES:
        op.execute(
            f"""
            DO $$ BEGIN
                IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') THEN
                    CREATE ROLE {role} NOLOGIN;
                END IF;
            END $$"""
        )
    # The migrating user may act as the owner (alter the tables in later migrations).
    op.execute("GRANT paysync_owner TO CURRENT_USER")

    _on_database("REVOKE CONNECT, TEMPORARY ON DATABASE %I FROM PUBLIC")
    _on_database("GRANT CONNECT ON DATABASE %I TO paysync_read, paysync_sync")
    _on_database("GRANT TEMPORARY ON DATABASE %I TO paysync_sync")
    op.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
    op.execute("GRANT USAGE ON SCHEMA public TO paysync_read, paysync_sync")

    # CREATE on the schema: taking a table over needs it, and so does building an index.
    op.execute("GRANT CREATE ON SCHEMA public TO paysync_owner")
    for table in TABLES.split(", "):
        op.execute(f"ALTER TABLE {table} OWNER TO paysync_owner")

    op.execute(f"GRANT SELECT ON {TABLES} TO paysync_read")
    op.execute(f"GRANT SELECT, INSERT, UPDATE ON {TABLES} TO paysync_sync")
    op.execute("GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO paysync_sync")
    op.execute("GRANT paysync_owner TO paysync_sync")

    op.execute(f"{DEFAULTS} GRANT SELECT ON TABLES TO paysync_read")
    op.execute(f"{DEFAULTS} GRANT SELECT, INSERT, UPDATE ON TABLES TO paysync_sync")
    op.execute(f"{DEFAULTS} GRANT USAGE, SELECT ON SEQUENCES TO paysync_sync")


def downgrade() -> None:
    op.execute(f"{DEFAULTS} REVOKE ALL ON TABLES FROM paysync_read, paysync_sync")
    op.execute(f"{DEFAULTS} REVOKE ALL ON SEQUENCES FROM paysync_sync")
    for table in TABLES.split(", "):
        op.execute(f"ALTER TABLE {table} OWNER TO CURRENT_USER")
    op.execute(f"REVOKE ALL ON {TABLES} FROM paysync_read, paysync_sync")
    op.execute("REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM paysync_sync")
    op.execute("REVOKE USAGE ON SCHEMA public FROM paysync_read, paysync_sync")
    op.execute("REVOKE CREATE ON SCHEMA public FROM paysync_owner")
    _on_database("REVOKE ALL ON DATABASE %I FROM paysync_read, paysync_sync")
    _on_database("GRANT CONNECT, TEMPORARY ON DATABASE %I TO PUBLIC")
    for role in ROLES:
        # Still used by another database of the server: leave it.
        op.execute(
            f"""
            DO $$ BEGIN
                DROP ROLE IF EXISTS {role};
            EXCEPTION WHEN dependent_objects_still_exist THEN NULL;
            END $$"""
        )
