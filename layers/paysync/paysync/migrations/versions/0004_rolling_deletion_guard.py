"""Rolling deletion guard: each sync records the live rows its table held before it.

`live_before` is NULL for runs recorded before this revision; the guard then
derives the window's starting count from the runs' counts instead.

Revision ID: 0004
Revises: 0002
Create Date: 2026-11-27
"""

from alembic import op

revision = "0004"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE sync_runs ADD COLUMN live_before bigint")
    # The rolling guard reads the applied syncs of one entity within a recent time window.
    op.execute(
        "CREATE INDEX sync_runs_guard_window_idx ON sync_runs (entity, finished)"
        " WHERE status = 'applied' AND NOT dry_run"
    )


def downgrade() -> None:
    op.execute("DROP INDEX sync_runs_guard_window_idx")
    op.execute("ALTER TABLE sync_runs DROP COLUMN live_before")
