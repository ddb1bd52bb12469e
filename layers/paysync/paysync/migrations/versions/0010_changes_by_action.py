"""Index a sync's changes by action, so a filtered page of GET /syncs/{id}/changes is an index walk.

The live tables' (version_sync_id, id) and the version tables' (sync_started, row) become
(version_sync_id, version_action, id) and (sync_started, action, row): a page filtered on a rare
action (say the restores of a sync that updated a million rows) no longer reads every row the sync
touched, and an unfiltered page merges one short walk per action. Same number of indexes.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-27
"""

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

_INDEXES = {
    "patients_version_sync_idx": ("patients", "version_sync_id, version_action, id", "version_sync_id, id"),
    "payments_version_sync_idx": ("payments", "version_sync_id, version_action, id", "version_sync_id, id"),
    "patient_versions_started_idx": (
        "patient_versions",
        "sync_started, action, patient_id",
        "sync_started, patient_id",
    ),
    "payment_versions_started_idx": (
        "payment_versions",
        "sync_started, action, payment_id",
        "sync_started, payment_id",
    ),
}


def _rebuild(new: bool) -> None:
    # As the tables' owner, like the migrations that made the tables.
    op.execute("SET LOCAL ROLE paysync_owner")
    for name, (table, with_action, without) in _INDEXES.items():
        op.execute(f"DROP INDEX IF EXISTS {name}")
        op.execute(f"CREATE INDEX {name} ON {table} ({with_action if new else without})")
    op.execute("RESET ROLE")


def upgrade() -> None:
    _rebuild(new=True)


def downgrade() -> None:
    _rebuild(new=False)
