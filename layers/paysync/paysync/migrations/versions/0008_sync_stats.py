"""Analytics: the figures of every applied sync, and the distribution of patient totals.

- sync_stats: one row per applied (not dry-run) sync, written inside the sync's
  transaction, so GET /stats and GET /stats/history read stored figures and
  never aggregate over the replica. The sync writes its row before its
  sync_runs row exists; the trigger on sync_runs gives the row its sync id
  when that run is inserted in the same transaction.
- patient_total_ranks: for each distinct payments total of the live patients,
  how many live patients have that total or less. Rebuilt by every sync that
  changed the data, it answers "how many totals are <= x" (histograms) and "the
  smallest total reached by k patients" (percentiles) with one index lookup.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-27
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Created as the tables' owner: the default privileges then grant them to the read and sync roles.
    op.execute("SET LOCAL ROLE paysync_owner")
    op.execute(
        """
        CREATE TABLE sync_stats (
            sync_id bigint CONSTRAINT sync_stats_sync_id_key UNIQUE REFERENCES sync_runs (id) ON DELETE CASCADE,
            live_patients bigint NOT NULL,
            live_payments bigint NOT NULL,
            live_payments_sum numeric(22,2) NOT NULL,
            orphan_payments bigint NOT NULL,
            orphan_payments_sum numeric(22,2) NOT NULL,
            deleted_patient_payments bigint NOT NULL,
            deleted_patient_payments_sum numeric(22,2) NOT NULL,
            patients_without_payments bigint NOT NULL,
            live_patients_total numeric(22,2) NOT NULL,
            total_min numeric(22,2),
            total_p10 numeric(22,2),
            total_p25 numeric(22,2),
            total_p50 numeric(22,2),
            total_p75 numeric(22,2),
            total_p90 numeric(22,2),
            total_p99 numeric(22,2),
            total_max numeric(22,2),
            total_mean numeric(22,2),
            computed timestamptz NOT NULL DEFAULT now()
        )"""
    )
    # At most one row waits for its sync id (syncs are serialized), found without a scan.
    op.execute("CREATE UNIQUE INDEX sync_stats_unattached_idx ON sync_stats ((sync_id IS NULL)) WHERE sync_id IS NULL")
    op.execute(
        """
        CREATE TABLE patient_total_ranks (
            total numeric(22,2) PRIMARY KEY,
            patients_at_or_below bigint NOT NULL CONSTRAINT patient_total_ranks_count_key UNIQUE
        )"""
    )
    # A sync rebuilds the ranks with DELETE + INSERT (TRUNCATE would block reads until its commit).
    op.execute("GRANT DELETE ON patient_total_ranks TO paysync_sync")
    op.execute(
        """
        CREATE FUNCTION sync_stats_attach() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            UPDATE sync_stats SET sync_id = NEW.id WHERE sync_id IS NULL;
            RETURN NULL;
        END $$"""
    )
    op.execute(
        """
        CREATE TRIGGER sync_stats_attach AFTER INSERT ON sync_runs FOR EACH ROW
        WHEN (NEW.status = 'applied' AND NOT NEW.dry_run)
        EXECUTE FUNCTION sync_stats_attach()"""
    )
    op.execute("RESET ROLE")  # alembic_version belongs to the migrating user


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS sync_stats_attach ON sync_runs")
    op.execute("DROP FUNCTION IF EXISTS sync_stats_attach()")
    op.execute("DROP TABLE IF EXISTS patient_total_ranks")
    op.execute("DROP TABLE IF EXISTS sync_stats")
