"""A schema for bulk first loads: the new table is built there, then swapped in.

A bulk first load builds an unindexed copy of the empty table beside the live
one and moves it into place just before its commit, so reads never wait for
the load. The schema belongs to paysync_owner (the tables' owner), so a sync
login, a member of that role, may build in it without the right to create
schemas; nobody else may use it.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE SCHEMA IF NOT EXISTS paysync_build AUTHORIZATION paysync_owner")
    op.execute("REVOKE ALL ON SCHEMA paysync_build FROM PUBLIC")


def downgrade() -> None:
    op.execute("DROP SCHEMA IF EXISTS paysync_build")
