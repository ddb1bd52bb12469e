"""Sync ordering and skipped keys: what orders snapshots that share a second; runs without an entity.

- snapshot_seq: for an S3 object whose key was issued by POST /uploads, the
  key's millisecond time and unique suffix ("<ms>-<suffix>"): it orders two
  objects stored in the same LastModified second.
- s3_sequencer: the S3 event's sequencer: it orders two versions of one key.
- entity becomes nullable: an S3 key that names no entity is recorded as a
  skipped run too.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE sync_runs ADD COLUMN snapshot_seq text, ADD COLUMN s3_sequencer text")
    op.execute("ALTER TABLE sync_runs ALTER COLUMN entity DROP NOT NULL")


def downgrade() -> None:
    op.execute("DELETE FROM sync_runs WHERE entity IS NULL")
    op.execute("ALTER TABLE sync_runs ALTER COLUMN entity SET NOT NULL")
    op.execute("ALTER TABLE sync_runs DROP COLUMN s3_sequencer, DROP COLUMN snapshot_seq")
