"""Let a sync update a row in place (a HOT update: no new index entries) when no indexed column changes.

Every row a sync wrote used to change an indexed column: the version columns, which the
changes feed found through (version_sync_id, version_action, id) on the live tables, and for a
payment's deletion or restore the `deleted` of the live-rows partial indexes. So each changed
payment got a new entry in each of the table's six indexes. Now:

- sync_row_changes (sync_id, action, row_id) names the rows each sync updated, deleted or
  restored (history kept or not), and sync_runs.last_row_id the table's highest row id when an
  applied sync committed. Row ids only grow and only syncs insert rows, so the rows sync S
  inserted are those above the previous applied sync's last_row_id (same entity), up to S's.
  The changes feed reads these instead of the live tables' version indexes, which go, with
  the version tables' (sync_started, action, row) (the feed finds a row's versions by row).
- payments_live_id_idx goes (the primary key serves the unfiltered list, skipping deleted
  rows), and the per-patient index holds deleted payments too: deleting or restoring a
  payment changes no indexed column.
- fillfactor 90 on patients and payments leaves room on each page for the new versions of
  its rows (a HOT update must stay on its page). Pages already full fill again as updates
  free them; a bulk first load builds its table with the setting.

At M (1M payments, a next day changing 7 %) the payments UPDATE took 0.85 s instead of 1.5 s.

No schema change, but a format one: from this revision a sync keeps one rank of the patients'
totals per 32 patients (see paysync.dal.stats.RANK_STEP), which the code before cannot read; the
downgrade rebuilds the newest generation in full.

The backfill reads both live tables and both version tables once, and the new index's build
takes a SHARE lock (reads go on, syncs wait); only the index drops at the end lock reads out,
until the commit. At 1M payments the whole migration took 2 s.

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-27
"""

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

_TABLES = {"patients": "patient_versions", "payments": "payment_versions"}
_ROW = {"patient_versions": "patient_id", "payment_versions": "payment_id"}
_CHANGES = "('updated', 'deleted', 'restored')"


def upgrade() -> None:
    # As the tables' owner, like the migrations that made the tables (the default privileges
    # grant new tables to the read and sync roles).
    op.execute("SET LOCAL ROLE paysync_owner")
    op.execute(
        f"""
        CREATE TABLE sync_row_changes (
            sync_id bigint NOT NULL,
            action text NOT NULL CONSTRAINT sync_row_changes_action_check CHECK (action IN {_CHANGES}),
            row_id bigint NOT NULL,
            CONSTRAINT sync_row_changes_pkey PRIMARY KEY (sync_id, action, row_id)
        )"""
    )
    op.execute("ALTER TABLE sync_runs ADD COLUMN last_row_id bigint")
    # A sync's changed rows: the current versions it started and the superseded ones.
    sources = []
    for table, versions in _TABLES.items():
        sources.append(f"SELECT version_sync_id, version_action, id FROM {table} WHERE version_action IN {_CHANGES}")
        sources.append(
            f"""SELECT sync_started, action, {_ROW[versions]} FROM {versions}
                WHERE sync_started IS NOT NULL AND action IN {_CHANGES}"""
        )
    op.execute(
        f"""INSERT INTO sync_row_changes {" UNION ALL ".join(sources)}
            ON CONFLICT ON CONSTRAINT sync_row_changes_pkey DO NOTHING"""
    )
    # Each applied sync's last_row_id: the highest id any sync up to it inserted (of its entity).
    inserted = []
    for table, versions in _TABLES.items():
        inserted.append(f"SELECT version_sync_id, max(id) FROM {table} WHERE version_action = 'inserted' GROUP BY 1")
        inserted.append(
            f"""SELECT sync_started, max({_ROW[versions]}) FROM {versions}
                WHERE action = 'inserted' AND sync_started IS NOT NULL GROUP BY 1"""
        )
    # Rows from before the history (their first version names no sync) lie below every range.
    older = {
        table: f"""greatest((SELECT max(id) FROM {table} WHERE version_sync_id IS NULL),
                            (SELECT max({_ROW[versions]}) FROM {versions} WHERE sync_started IS NULL))"""
        for table, versions in _TABLES.items()
    }
    op.execute(
        f"""
        UPDATE sync_runs r
        SET last_row_id = greatest(coalesce(x.last_row_id, 0), coalesce(CASE r.entity
                              WHEN 'patients' THEN {older["patients"]} ELSE {older["payments"]} END, 0))
        FROM (SELECT s.id, max(i.top) OVER (PARTITION BY s.entity ORDER BY s.id) AS last_row_id
              FROM sync_runs s
              LEFT JOIN (SELECT sync_id, max(top) AS top
                         FROM ({" UNION ALL ".join(inserted)}) AS inserted (sync_id, top)
                         GROUP BY sync_id) i ON i.sync_id = s.id
              WHERE s.status = 'applied' AND NOT s.dry_run) x
        WHERE r.id = x.id"""
    )
    op.execute("CREATE INDEX payments_patient_external_idx ON payments (patient_external_id, id)")
    # Last: dropping an index locks its table against reads until the migration commits.
    for table in _TABLES:
        op.execute(f"ALTER TABLE {table} SET (fillfactor = 90)")
        op.execute(f"DROP INDEX {table}_version_sync_idx")
    for versions in _TABLES.values():
        op.execute(f"DROP INDEX {versions}_started_idx")
    op.execute("DROP INDEX payments_live_id_idx")
    op.execute("DROP INDEX payments_live_patient_external_idx")
    op.execute("RESET ROLE")


def downgrade() -> None:
    op.execute("SET LOCAL ROLE paysync_owner")
    # The code before this revision reads a rank for every distinct total (this one keeps one per
    # 32 patients): the generation the newest figures use is rebuilt in full.
    op.execute(
        """
        WITH newest AS (SELECT ranks_generation FROM sync_stats WHERE sync_id IS NOT NULL
                        ORDER BY sync_id DESC LIMIT 1),
             gone AS (DELETE FROM patient_total_ranks)
        INSERT INTO patient_total_ranks (generation, total, patients_at_or_below)
        SELECT (SELECT ranks_generation FROM newest), payments_total,
               CAST(sum(count(*)) OVER (ORDER BY payments_total) AS bigint)
        FROM patients WHERE deleted IS NULL AND EXISTS (SELECT 1 FROM newest) GROUP BY payments_total"""
    )
    op.execute(
        "CREATE INDEX payments_live_patient_external_idx ON payments (patient_external_id, id) WHERE deleted IS NULL"
    )
    op.execute("DROP INDEX payments_patient_external_idx")
    op.execute("CREATE INDEX payments_live_id_idx ON payments (id) WHERE deleted IS NULL")
    for versions, row in _ROW.items():
        op.execute(f"CREATE INDEX {versions}_started_idx ON {versions} (sync_started, action, {row})")
    for table in _TABLES:
        op.execute(f"ALTER TABLE {table} RESET (fillfactor)")
        op.execute(f"CREATE INDEX {table}_version_sync_idx ON {table} (version_sync_id, version_action, id)")
    op.execute("ALTER TABLE sync_runs DROP COLUMN last_row_id")
    op.execute("DROP TABLE sync_row_changes")
    op.execute("RESET ROLE")
