"""Patient total ranks by generation: a sync appends its ranks instead of rewriting unique keys.

Each sync that rebuilds the ranks writes them as a new generation, keyed by its own
(reserved) sync id, and deletes the older generations in the same transaction. The
indexes lead with the generation and are not unique: the new entries go to the
indexes' right edge and no insert checks keys against the dead versions of the
generation just deleted. sync_stats.ranks_generation names the generation each row's
figures were computed from, so a read finds the committed generation in the row it
already reads (never by looking for the largest generation in the ranks, whose top
holds a running sync's uncommitted entries).

The ranks a replica already holds become generation 0, and every existing sync_stats
row names it (only the newest row's generation is ever read).

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-27
"""

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # As the tables' owner, like the migration that made them.
    op.execute("SET LOCAL ROLE paysync_owner")
    # A constant default fills the existing rows without rewriting the tables.
    op.execute("ALTER TABLE patient_total_ranks ADD COLUMN generation bigint NOT NULL DEFAULT 0")
    op.execute("ALTER TABLE patient_total_ranks ALTER COLUMN generation DROP DEFAULT")
    op.execute(
        """ALTER TABLE patient_total_ranks
           DROP CONSTRAINT patient_total_ranks_pkey, DROP CONSTRAINT patient_total_ranks_count_key"""
    )
    op.execute("CREATE INDEX patient_total_ranks_total_idx ON patient_total_ranks (generation, total)")
    op.execute("CREATE INDEX patient_total_ranks_count_idx ON patient_total_ranks (generation, patients_at_or_below)")
    op.execute("ALTER TABLE sync_stats ADD COLUMN ranks_generation bigint NOT NULL DEFAULT 0")
    op.execute("ALTER TABLE sync_stats ALTER COLUMN ranks_generation DROP DEFAULT")
    op.execute("RESET ROLE")  # alembic_version belongs to the migrating user


def downgrade() -> None:
    op.execute("SET LOCAL ROLE paysync_owner")
    # Only the generation the newest figures use stays (an earlier one would break the unique keys).
    op.execute(
        """DELETE FROM patient_total_ranks WHERE generation IS DISTINCT FROM (
               SELECT ranks_generation FROM sync_stats WHERE sync_id IS NOT NULL ORDER BY sync_id DESC LIMIT 1)"""
    )
    op.execute("ALTER TABLE sync_stats DROP COLUMN ranks_generation")
    op.execute("DROP INDEX patient_total_ranks_total_idx")
    op.execute("DROP INDEX patient_total_ranks_count_idx")
    op.execute("ALTER TABLE patient_total_ranks DROP COLUMN generation")
    op.execute("ALTER TABLE patient_total_ranks ADD PRIMARY KEY (total)")
    op.execute(
        """ALTER TABLE patient_total_ranks
           ADD CONSTRAINT patient_total_ranks_count_key UNIQUE (patients_at_or_below)"""
    )
    op.execute("RESET ROLE")
