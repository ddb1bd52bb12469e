"""Row history: every version of a patient or payment that a sync superseded.

- patient_versions / payment_versions: one row per superseded version, its
  replicated fields, when it was current [valid_from, valid_to), the syncs that
  started and ended it and the action that started it (inserted, updated,
  deleted, restored). No foreign keys to the live tables: a bulk first load
  replaces a live table, and it may only do so while no table references it
  with rows.
- patients / payments get version_sync_id and version_action: the sync and the
  action that started the current version. Both are NULL on rows written before
  this migration (their action reads as inserted, or deleted when deleted).

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-27
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_ACTIONS = "CHECK (action IN ('inserted', 'updated', 'deleted', 'restored'))"


def upgrade() -> None:
    # Created as the tables' owner, so the default privileges grant them to the read and sync roles.
    op.execute("SET LOCAL ROLE paysync_owner")
    for table in ("patients", "payments"):
        # Nullable without a default: no rewrite of a big table.
        op.execute(
            f"""ALTER TABLE {table} ADD COLUMN version_sync_id bigint,
                ADD COLUMN version_action text {_ACTIONS.replace("action", "version_action")}"""
        )
        # GET /syncs/{{id}}/changes: the rows a sync inserted, updated, deleted or restored.
        op.execute(f"CREATE INDEX {table}_version_sync_idx ON {table} (version_sync_id, id)")
    op.execute(
        f"""
        CREATE TABLE patient_versions (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            patient_id bigint NOT NULL,
            external_id text NOT NULL,
            first_name text NOT NULL,
            last_name text NOT NULL,
            middle_name text,
            date_of_birth date NOT NULL,
            valid_from timestamptz NOT NULL,
            valid_to timestamptz NOT NULL,
            sync_started bigint,
            sync_ended bigint NOT NULL,
            action text NOT NULL {_ACTIONS}
        )"""
    )
    op.execute(
        f"""
        CREATE TABLE payment_versions (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            payment_id bigint NOT NULL,
            external_id text NOT NULL,
            amount numeric(12,2) NOT NULL,
            patient_external_id text NOT NULL,
            valid_from timestamptz NOT NULL,
            valid_to timestamptz NOT NULL,
            sync_started bigint,
            sync_ended bigint NOT NULL,
            action text NOT NULL {_ACTIONS}
        )"""
    )
    for table, row in (("patient_versions", "patient_id"), ("payment_versions", "payment_id")):
        # A row's history newest first, and the version current at a given time.
        op.execute(f"CREATE INDEX {table}_row_idx ON {table} ({row}, valid_to, id)")
        # A sync's changes: the versions it started and the ones it ended.
        op.execute(f"CREATE INDEX {table}_started_idx ON {table} (sync_started, {row})")
        op.execute(f"CREATE INDEX {table}_ended_idx ON {table} (sync_ended, {row})")
    # The retention purge deletes old versions.
    op.execute("GRANT DELETE ON patient_versions, payment_versions TO paysync_sync")
    op.execute("RESET ROLE")


def downgrade() -> None:
    op.execute("DROP TABLE payment_versions")
    op.execute("DROP TABLE patient_versions")
    for table in ("patients", "payments"):
        op.execute(f"ALTER TABLE {table} DROP COLUMN version_action, DROP COLUMN version_sync_id")
