"""The reconcile's SQL: staging, checks, the diff and its set-based application, for both entities.

Every statement runs inside the sync's transaction (see `paysync.reconcile`).
`now()` is the transaction's start time, so every row a sync touches carries
the same `updated` / `deleted` timestamp.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from pg8000.exceptions import DatabaseError

from paysync.dal.db import Connection
from paysync.dal.history import CURRENT_ACTION, versions_table
from paysync.errors import RecordError
from paysync.records import STAGE_COLUMNS, Entity

# pg_advisory_xact_lock keys, one per entity (see `begin_sync`).
LOCK_KEYS: dict[Entity, int] = {"patients": 7_311_001, "payments": 7_311_002}

_STAGE_DDL: dict[Entity, str] = {
    "patients": """
        CREATE TEMP TABLE stage_patients (
            idx bigint NOT NULL,
            external_id text COLLATE "C" NOT NULL,
            first_name text NOT NULL,
            last_name text NOT NULL,
            middle_name text,
            date_of_birth date NOT NULL
        ) ON COMMIT DROP""",
    "payments": """
        CREATE TEMP TABLE stage_payments (
            idx bigint NOT NULL,
            external_id text COLLATE "C" NOT NULL,
            amount numeric(12,2) NOT NULL,
            patient_external_id text COLLATE "C" NOT NULL
        ) ON COMMIT DROP""",
}

_WORK_MEM = re.compile(r"\d+\s*(kB|MB|GB)")


@dataclass(frozen=True)
class Changes:
    """What a snapshot changes in its table (rows of the diff, by kind)."""

    inserted: int = 0
    updated: int = 0
    restored: int = 0
    deleted: int = 0

    @property
    def written(self) -> int:
        return self.inserted + self.updated + self.restored + self.deleted


def begin_sync(connection: Connection, entity: Entity, work_mem: str) -> bool:
    """Serialize syncs and size the merge's memory; call right after BEGIN. Returns whether
    the entity's table is empty (a first load)."""
    if not _WORK_MEM.fullmatch(work_mem):
        raise ValueError(f"merge work_mem {work_mem!r} is not like '256MB'")
    # Every sync takes both entities' locks, always in the same order. A patients
    # sync writes payments (orphan links) and a payments sync writes patients
    # (totals), so two syncs of different entities side by side could deadlock on
    # row locks; and a big first load replaces its table, and possibly the other
    # table's foreign key, at its end (see `swap_in_built_tables`).
    for key in sorted(LOCK_KEYS.values()):
        connection.run("SELECT pg_advisory_xact_lock(:key)", key=key)
    connection.run(f"SET LOCAL work_mem = '{work_mem}'")
    connection.run(f"SET LOCAL maintenance_work_mem = '{work_mem}'")  # index rebuilds of a first load
    # How each patient's live payments move (amount and count), collected as the sync writes
    # payments: totals are then adjusted for those patients only, without reading their payments.
    connection.run("CREATE TEMP TABLE total_moves (patient_id bigint, amount numeric, count bigint) ON COMMIT DROP")
    return connection.run(f"SELECT NOT EXISTS (SELECT 1 FROM {entity})")[0][0]


# The transaction-local setting holding the id reserved for the sync's run (see `reserve_sync_id`).
SYNC_ID_SETTING = "paysync.sync_id"
# A scalar subquery: evaluated once per statement, not once per row.
_SYNC_ID = f"(SELECT CAST(current_setting('{SYNC_ID_SETTING}') AS bigint))"


def reserve_sync_id(connection: Connection) -> int:
    """Take the id of the sync's run now, so that history rows written during the merge can name
    the sync (they read it from a transaction-local setting). The caller keeps the returned id:
    the run is recorded under it, in this transaction or after a rollback."""
    [[sync_id]] = connection.run(
        """SELECT set_config(:setting, CAST(nextval(pg_get_serial_sequence('sync_runs', 'id')) AS text), true)""",
        setting=SYNC_ID_SETTING,
    )
    return int(sync_id)


def load_stage(connection: Connection, entity: Entity, chunks: Iterable[str]) -> None:
    """Create the entity's staging table and COPY the snapshot's valid rows into it."""
    connection.run(_STAGE_DDL[entity])
    columns = ", ".join(STAGE_COLUMNS[entity])
    connection.run(f"COPY stage_{entity} ({columns}) FROM STDIN", stream=chunks)
    # No ANALYZE: the planner sizes a never-analyzed table by its pages, enough to pick hash
    # joins for big snapshots and index lookups for small ones.


def duplicate_errors(connection: Connection, entity: Entity, limit: int) -> tuple[list[RecordError], int]:
    """Records whose externalId appeared earlier in the snapshot (first `limit`), and their count."""
    # A hash aggregate finds the repeated ids; only then are their records looked up.
    rows = connection.run(
        f"""
        WITH repeated AS (
            SELECT external_id, min(idx) AS first_idx
            FROM stage_{entity} GROUP BY external_id HAVING count(*) > 1
        )
        SELECT s.idx, s.external_id, r.first_idx, count(*) OVER () AS total
        FROM stage_{entity} s JOIN repeated r USING (external_id)
        WHERE s.idx <> r.first_idx
        ORDER BY s.idx
        LIMIT :limit""",
        limit=limit,
    )
    errors = [
        RecordError(idx, external_id, "externalId", f"duplicate externalId (first seen at index {first})")
        for idx, external_id, first, _ in rows
    ]
    return errors, (rows[0][3] if rows else 0)


# One full join of the snapshot with the table keeps only the rows that need
# work: new ('i'), changed ('u'), reappearing ('r') and live rows missing from
# the snapshot ('d'). Unchanged rows never leave the join, so an identical
# re-upload yields an empty diff and writes nothing; and inserts read the diff,
# never the table they write to, so no plan can rescan a table as it grows.
# Each row carries the version it supersedes (the `old_` columns): the history
# and the totals are written from the diff alone.
_DIFF_SQL: dict[Entity, str] = {
    "patients": f"""
        CREATE TEMP TABLE diff_patients ON COMMIT DROP AS
        SELECT CASE WHEN t.id IS NULL THEN 'i' WHEN s.external_id IS NULL THEN 'd'
                    WHEN t.deleted IS NOT NULL THEN 'r' ELSE 'u' END AS action,
               t.id, s.idx, s.external_id, s.first_name, s.last_name, s.middle_name, s.date_of_birth,
               t.external_id AS old_external_id, t.first_name AS old_first_name, t.last_name AS old_last_name,
               t.middle_name AS old_middle_name, t.date_of_birth AS old_date_of_birth, t.updated AS old_updated,
               t.version_sync_id AS old_sync_id, {CURRENT_ACTION} AS old_action
        FROM stage_patients s FULL JOIN patients t ON t.external_id = s.external_id
        WHERE t.id IS NULL
           OR (s.external_id IS NULL AND t.deleted IS NULL)
           OR (s.external_id IS NOT NULL
               AND (t.deleted IS NOT NULL
                    OR (t.first_name, t.last_name, t.middle_name, t.date_of_birth)
                       IS DISTINCT FROM (s.first_name, s.last_name, s.middle_name, s.date_of_birth)))""",
    "payments": f"""
        CREATE TEMP TABLE diff_payments ON COMMIT DROP AS
        SELECT CASE WHEN t.id IS NULL THEN 'i' WHEN s.external_id IS NULL THEN 'd'
                    WHEN t.deleted IS NOT NULL THEN 'r' ELSE 'u' END AS action,
               t.id, s.idx, s.external_id, s.amount, s.patient_external_id,
               t.external_id AS old_external_id, t.amount AS old_amount,
               t.patient_external_id AS old_patient_external_id, t.patient_id AS old_patient_id,
               t.updated AS old_updated, t.version_sync_id AS old_sync_id, {CURRENT_ACTION} AS old_action
        FROM stage_payments s FULL JOIN payments t ON t.external_id = s.external_id
        WHERE t.id IS NULL
           OR (s.external_id IS NULL AND t.deleted IS NULL)
           OR (s.external_id IS NOT NULL
               AND (t.deleted IS NOT NULL
                    OR t.amount <> s.amount OR t.patient_external_id <> s.patient_external_id))""",
}

# ANALYZE a table once a sync has rewritten more than this share of it, so that
# reads and the next sync are planned with its real size and value spread.
ANALYZE_AFTER_CHANGED_SHARE = 0.1


def diff_snapshot(connection: Connection, entity: Entity, first_load: bool, received: int) -> Changes:
    """Compare the staged snapshot (`received` rows) with the table; nothing is written to the table yet.

    A first load (the table is empty) inserts every staged row: it makes no diff and the
    apply step reads the stage itself."""
    if first_load:
        return Changes(inserted=received)
    connection.run(_DIFF_SQL[entity])
    # No ANALYZE (0.13 s at 1M payments): the planner sizes the diff by its pages, and the one
    # write whose plan depends on it most, the UPDATE, probes by primary key regardless.
    counts = dict(connection.run(f"SELECT action, count(*) FROM diff_{entity} GROUP BY action"))
    return Changes(
        inserted=counts.get("i", 0), updated=counts.get("u", 0), restored=counts.get("r", 0), deleted=counts.get("d", 0)
    )


def repeats_known_ids(connection: Connection, entity: Entity, received: int, changes: Changes) -> bool:
    """Whether the snapshot repeats an externalId the table holds (a repeated new id is left to the
    table's unique key).

    Without repeats, each staged row that is not new matches its own row of the table: the live
    ones matched ('u', or unchanged and left out of the diff) are the live rows minus the missing
    ('d'), and no deleted row is restored ('r') twice. A count of the live rows and of the restored
    ids costs a fraction of grouping every staged id."""
    [[live, restored_ids]] = connection.run(
        f"""SELECT (SELECT count(*) FROM {entity} WHERE deleted IS NULL),
                   (SELECT count(DISTINCT id) FROM diff_{entity} WHERE action = 'r')"""
    )
    return received - changes.inserted - changes.restored != live - changes.deleted or restored_ids != changes.restored


# A first load at least this big is built in an unindexed copy of the table,
# whose indexes and constraints are built afterwards: one sorted build per
# index instead of millions of random index inserts (and their WAL), several
# times faster.
BULK_LOAD_MIN_ROWS = 100_000

# The schema holding a bulk first load's new table until `swap_in_built_tables` (made by the
# migrations and owned by the tables' owner, so a sync needs no right to create schemas).
BUILD_SCHEMA = "paysync_build"
# Taking the swap's ACCESS EXCLUSIVE locks: each try waits at most this long (a
# waiting lock request queues every read behind it), then lets reads through.
SWAP_LOCK_TIMEOUT = "20ms"
SWAP_LOCK_TRIES = 50
SWAP_LOCK_PAUSE_SECONDS = 0.1


@contextmanager
def _built_beside(connection: Connection, table: str, bulk: bool) -> Iterator[bool]:
    """Within the block (when `bulk` and possible: the block gets True), `table` names an unindexed
    copy of the table; after it, the copy gets the table's indexes and constraints.
    `swap_in_built_tables` puts it in place.

    Why not drop and re-add the indexes in place: every lock lasts until the sync
    commits, and dropping an index or a constraint takes ACCESS EXCLUSIVE on the
    table (and, for a foreign key, on the table it references), which blocks every
    read for the whole load. Here the live table is only read (ACCESS SHARE) until
    the swap; CREATE INDEX locks only the copy (SHARE) and a foreign key added to
    the copy takes SHARE ROW EXCLUSIVE on the referenced table, which blocks
    writers (other syncs wait on the advisory locks anyway), not readers. The swap
    is the only ACCESS EXCLUSIVE moment, and it comes right before the commit.
    """
    if not bulk or not _can_build_beside(connection, table):
        yield False
        return
    # Definitions are read from the catalog, so the migrations stay their only source.
    [[schema, owner]] = connection.run(
        """SELECT relnamespace::regnamespace::text, quote_ident(pg_get_userbyid(relowner))
           FROM pg_class WHERE oid = CAST(:table AS regclass)""",
        table=table,
    )
    build = f"{BUILD_SCHEMA}.{table}"
    # Statements run before the insert (rank 0) or after it, in rank order.
    ddl = connection.run(
        """
        SELECT 0, format('ALTER TABLE %s SET (%s)', CAST(:build AS text), array_to_string(reloptions, ', '))
        FROM pg_class WHERE oid = CAST(:table AS regclass) AND reloptions IS NOT NULL
        UNION ALL
        SELECT 0, format('GRANT %s ON %s TO %s', a.privilege_type, CAST(:build AS text),
                         CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END)
        FROM pg_class c, aclexplode(c.relacl) a
        WHERE c.oid = CAST(:table AS regclass) AND a.grantee <> c.relowner
        UNION ALL
        SELECT 1, format('CREATE %sINDEX %I ON %s USING %s', CASE WHEN i.indisunique THEN 'UNIQUE ' END,
                         c.relname, CAST(:build AS text), substring(pg_get_indexdef(i.indexrelid) FROM ' USING (.*)$'))
        FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
        WHERE i.indrelid = CAST(:table AS regclass)
          AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conrelid = i.indrelid AND k.conindid = i.indexrelid)
        UNION ALL
        -- Foreign keys last: each is one join, run once the keys exist.
        SELECT CASE WHEN contype = 'f' THEN 3 ELSE 2 END,
               format('ALTER TABLE %s ADD CONSTRAINT %I %s', CAST(:build AS text), conname, pg_get_constraintdef(oid))
        FROM pg_constraint WHERE conrelid = CAST(:table AS regclass) AND contype IN ('p', 'u', 'x', 'f')
        ORDER BY 1""",
        table=table,
        build=build,
    )
    connection.run(f"CREATE TABLE {build} (LIKE {schema}.{table} INCLUDING ALL EXCLUDING INDEXES)")
    # The replacement belongs to the live table's owner (with its identity sequence), whoever
    # runs the sync: the sync's login is a member of that role, not the role itself.
    connection.run(f"ALTER TABLE {build} OWNER TO {owner}")
    for rank, statement in ddl:
        if rank == 0:
            connection.run(statement)
    # Until the swap, the rest of the sync (the insert, totals, statistics) finds
    # the new table under the table's own name.
    connection.run(
        "SELECT set_config('search_path', CAST(:schema AS text) || ', ' || current_setting('search_path'), true)",
        schema=BUILD_SCHEMA,
    )
    yield True
    for rank, statement in ddl:
        if rank > 0:
            connection.run(statement)


def _can_build_beside(connection: Connection, table: str) -> bool:
    """Whether the swap can replace `table` safely and at once: no view or trigger
    depends on it, and every other table whose foreign key references it is empty
    (the key is re-added at the swap, where its check must cost nothing)."""
    [[blocked]] = connection.run(
        """
        SELECT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = CAST(:table AS regclass) AND NOT tgisinternal)
            OR EXISTS (SELECT 1 FROM pg_depend WHERE refobjid = CAST(:table AS regclass)
                       AND classid = CAST('pg_rewrite' AS regclass))""",
        table=table,
    )
    referencing = connection.run(
        """SELECT DISTINCT conrelid::regclass::text FROM pg_constraint
           WHERE confrelid = CAST(:table AS regclass) AND conrelid <> confrelid""",
        table=table,
    )
    return not blocked and not any(
        connection.run(f"SELECT EXISTS (SELECT 1 FROM {other})")[0][0] for [other] in referencing
    )


def swap_in_built_tables(connection: Connection) -> None:
    """Put each table a bulk first load built (see `_built_beside`) in place of the live,
    empty one. Call it last before the commit: from here on the tables are locked
    ACCESS EXCLUSIVE, so reads wait until the commit."""
    # A table another built table references goes first (patients before payments): its swap
    # moves the live tables' foreign keys, which must not touch the built table's own.
    built = connection.run(
        """SELECT c.relname, c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE n.nspname = :schema AND c.relkind = 'r'
           ORDER BY EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conrelid = c.oid AND k.contype = 'f'
                            AND k.confrelid IN (SELECT oid FROM pg_class WHERE relnamespace = n.oid)), c.relname""",
        schema=BUILD_SCHEMA,
    )
    if not built:
        return
    connection.run(
        "SELECT set_config('search_path', replace(current_setting('search_path'), :prefix, ''), true)",
        prefix=f"{BUILD_SCHEMA}, ",
    )
    # Everything is prepared before the lock; under it, one statement does the swap.
    locked: set[str] = set()
    swap: list[str] = []
    for table, build_oid in built:
        # The live table, the tables its keys reference and the tables referencing it.
        locked.update(
            name
            for [name] in connection.run(
                """SELECT CAST(:table AS regclass)::text
                   UNION SELECT confrelid::regclass::text FROM pg_constraint
                         WHERE conrelid IN (CAST(:table AS regclass), CAST(:build AS oid)) AND contype = 'f'
                   UNION SELECT conrelid::regclass::text FROM pg_constraint
                         WHERE confrelid = CAST(:table AS regclass) AND contype = 'f'""",
                table=table,
                build=build_oid,
            )
        )
        # Foreign keys of other tables referencing it move to the new table.
        referencing = connection.run(
            """SELECT format('ALTER TABLE %s DROP CONSTRAINT %I', conrelid::regclass, conname),
                      format('ALTER TABLE %s ADD CONSTRAINT %I %s', conrelid::regclass, conname,
                             pg_get_constraintdef(oid))
               FROM pg_constraint WHERE confrelid = CAST(:table AS regclass) AND conrelid <> confrelid""",
            table=table,
        )
        [[schema]] = connection.run(
            "SELECT relnamespace::regnamespace::text FROM pg_class WHERE oid = CAST(:table AS regclass)", table=table
        )
        swap += [drop for drop, _ in referencing]
        swap += [f"DROP TABLE {schema}.{table}", f"ALTER TABLE {BUILD_SCHEMA}.{table} SET SCHEMA {schema}"]
        swap += [add for _, add in referencing]
    restore_lock_timeout = _lock_exclusive(connection, sorted(locked))
    connection.run(f"DO $swap$ BEGIN {'; '.join([*swap, restore_lock_timeout])}; END $swap$")


def _lock_exclusive(connection: Connection, tables: list[str]) -> str:
    """LOCK `tables` IN ACCESS EXCLUSIVE MODE without queueing reads behind a long wait;
    returns the PL/pgSQL statement that puts lock_timeout back.

    A lock request waiting for a long read would make every new read wait too; so
    each try gives up after SWAP_LOCK_TIMEOUT, lets the queued reads run, and tries
    again. After SWAP_LOCK_TRIES it waits as long as it takes.
    """
    statement = f"LOCK TABLE {', '.join(tables)} IN ACCESS EXCLUSIVE MODE"
    [[restore]] = connection.run(
        "SELECT format('PERFORM set_config(%L, %L, true)', 'lock_timeout', current_setting('lock_timeout'))"
    )
    for _ in range(SWAP_LOCK_TRIES):
        connection.run("SAVEPOINT swap_lock")
        connection.run(f"SET LOCAL lock_timeout = '{SWAP_LOCK_TIMEOUT}'")
        try:
            connection.run(statement)
        except DatabaseError as exc:
            if sqlstate(exc) != "55P03":  # lock_not_available
                raise
            connection.run("ROLLBACK TO SAVEPOINT swap_lock")
            time.sleep(SWAP_LOCK_PAUSE_SECONDS)
            continue
        # The savepoint stays open (the commit ends it, keeping its locks): one
        # round trip less while reads wait.
        return restore
    connection.run(statement)
    return restore


UNIQUE_VIOLATION = "23505"


def sqlstate(exc: DatabaseError) -> str | None:
    """The SQLSTATE of a server error (None when it has none)."""
    details = exc.args[0] if exc.args else None
    return details.get("C") if isinstance(details, dict) else None


# The version action each diff action starts.
_NEW_ACTION = "CASE d.action WHEN 'u' THEN 'updated' WHEN 'd' THEN 'deleted' ELSE 'restored' END"


@contextmanager
def _probing_by_id(connection: Connection) -> Iterator[None]:
    """Within the block, joins are nested loops: the diff's rows find theirs by primary key.

    The planner prefers hashing the diff and scanning the whole table, which at 7 % of 1M payments
    took twice as long as the index probes, and grows with the table instead of the diff. The diff's
    rows go in id order, so the table's pages are visited in the order they lie, whatever the
    snapshot's order."""
    connection.run("SELECT set_config('enable_hashjoin', 'off', true), set_config('enable_mergejoin', 'off', true)")
    yield
    connection.run("SELECT set_config('enable_hashjoin', 'on', true), set_config('enable_mergejoin', 'on', true)")


def _keep_if_deleted(column: str) -> str:
    """A column of the one UPDATE that applies 'u', 'r' and 'd' rows: the snapshot's value, or the
    row's own for a row the snapshot no longer holds ('d' rows carry no snapshot values)."""
    return f"CASE WHEN d.action = 'd' THEN t.{column} ELSE d.{column} END"


def apply_patients(
    connection: Connection, first_load: bool = False, bulk: bool = False, keep_history: bool = True
) -> None:
    """Soft-delete missing, update changed, restore reappearing, insert new patients; link waiting payments.

    The versions the sync supersedes go to patient_versions first (when `keep_history`). A
    first load inserts the stage as it is (see `diff_snapshot`)."""
    if not first_load:
        # One statement for all superseded versions, from the diff alone; inserts supersede nothing.
        if keep_history:
            connection.run(
                f"""
                INSERT INTO patient_versions (patient_id, external_id, first_name, last_name, middle_name,
                                              date_of_birth, valid_from, valid_to, sync_started, sync_ended, action)
                SELECT id, old_external_id, old_first_name, old_last_name, old_middle_name, old_date_of_birth,
                       old_updated, now(), old_sync_id, {_SYNC_ID}, old_action
                FROM diff_patients WHERE action IN ('u', 'd', 'r')"""
            )
        # One statement soft-deletes the missing rows and writes the changed and reappearing
        # ones; `updated` moves only here: the diff holds just the rows
        # whose fields differ.
        fields = ("first_name", "last_name", "middle_name", "date_of_birth")
        with _probing_by_id(connection):
            connection.run(
                f"""
                UPDATE patients t
                SET {", ".join(f"{field} = {_keep_if_deleted(field)}" for field in fields)},
                    deleted = CASE WHEN d.action = 'd' THEN now() END, updated = now(),
                    version_sync_id = {_SYNC_ID}, version_action = {_NEW_ACTION}
                FROM (SELECT * FROM diff_patients WHERE action IN ('u', 'r', 'd') ORDER BY id) d
                WHERE t.id = d.id"""
            )
        _record_changed_rows(connection, "patients")
    # Ids only grow: the rows inserted below are the ones above the highest id now.
    [[last_id]] = connection.run("SELECT coalesce(max(id), 0) FROM patients")
    new_rows = "stage_patients" if first_load else "diff_patients WHERE action = 'i'"
    with _built_beside(connection, "patients", bulk) as built:
        _insert_new_rows(
            connection,
            "patients",
            "external_id, first_name, last_name, middle_name, date_of_birth, version_sync_id, version_action",
            f"external_id, first_name, last_name, middle_name, date_of_birth, {_SYNC_ID}, 'inserted'",
            new_rows,
            built,
        )
    # Orphan payments (patient unknown until now) link to their patient; the live ones move
    # its total. A payment is an orphan only while no patient row has its patient's external id,
    # and patient rows are never removed, so only the patients this sync inserted can adopt
    # orphans: both sides are index lookups (the sync's new rows by primary key, the partial index
    # on orphans), proportional to them, not to all patients and payments.
    connection.run(
        """
        WITH linked AS (
            UPDATE payments pay SET patient_id = p.id
            FROM patients p
            WHERE p.id > :last_id AND pay.patient_id IS NULL AND pay.patient_external_id = p.external_id
            RETURNING pay.patient_id, pay.amount, pay.deleted
        )
        INSERT INTO total_moves SELECT patient_id, amount, 1 FROM linked WHERE deleted IS NULL""",
        last_id=last_id,
    )


def apply_payments(
    connection: Connection, first_load: bool = False, bulk: bool = False, keep_history: bool = True
) -> None:
    """Soft-delete missing, update changed, restore reappearing, insert new payments, resolving their patient.

    How the written payments move their patients' totals goes to total_moves. The versions the
    sync supersedes go to payment_versions first (when `keep_history`). A first load inserts the
    stage as it is (see `diff_snapshot`).
    """
    if first_load:
        with _built_beside(connection, "payments", bulk) as built:
            _insert_new_rows(
                connection,
                "payments",
                "external_id, amount, patient_external_id, patient_id, version_sync_id, version_action",
                f"s.external_id, s.amount, s.patient_external_id, p.id, {_SYNC_ID}, 'inserted'",
                "stage_payments s LEFT JOIN patients p ON p.external_id = s.patient_external_id",
                built,
                idx="s.idx",
            )
            # Every patient with a payment gets a new total: rewriting `patients` beside, totals
            # included, costs a fraction of updating each of its rows (and their index entries) in place.
            if built and _patients_with_totals_beside(connection):
                return
        # Every payment is new: the moves are the totals themselves, in one pass.
        connection.run(
            """
            INSERT INTO total_moves
            SELECT patient_id, sum(amount), count(*) FROM payments WHERE patient_id IS NOT NULL GROUP BY patient_id"""
        )
        return
    if keep_history:
        connection.run(
            f"""
            INSERT INTO payment_versions (payment_id, external_id, amount, patient_external_id,
                                          valid_from, valid_to, sync_started, sync_ended, action)
            SELECT id, old_external_id, old_amount, old_patient_external_id,
                   old_updated, now(), old_sync_id, {_SYNC_ID}, old_action
            FROM diff_payments WHERE action IN ('u', 'd', 'r')"""
        )
    # Totals count live payments: a deleted or changed payment leaves its old patient's total,
    # a changed, restored or new one joins its patient's (the same lookup the writes below make;
    # a payments sync does not write patients before the totals).
    connection.run(
        """
        INSERT INTO total_moves
        SELECT old_patient_id, -old_amount, -1 FROM diff_payments
        WHERE action IN ('u', 'd') AND old_patient_id IS NOT NULL
        UNION ALL
        SELECT p.id, d.amount, 1 FROM diff_payments d JOIN patients p ON p.external_id = d.patient_external_id
        WHERE d.action IN ('u', 'r', 'i')"""
    )
    # One statement soft-deletes the missing rows and writes the changed and reappearing ones.
    # A payment links to its patient's row whether or not that
    # patient is currently deleted (external ids are immutable, rows are never removed); totals
    # count live payments of every patient, so a restore is exact.
    with _probing_by_id(connection):
        connection.run(
            f"""
            UPDATE payments t
            SET amount = {_keep_if_deleted("amount")}, patient_external_id = {_keep_if_deleted("patient_external_id")},
                patient_id = CASE WHEN d.action = 'd' THEN t.patient_id ELSE p.id END,
                deleted = CASE WHEN d.action = 'd' THEN now() END, updated = now(),
                version_sync_id = {_SYNC_ID}, version_action = {_NEW_ACTION}
            FROM (SELECT * FROM diff_payments WHERE action IN ('u', 'r', 'd') ORDER BY id) d
                 LEFT JOIN patients p ON p.external_id = d.patient_external_id
            WHERE t.id = d.id"""
        )
    _record_changed_rows(connection, "payments")
    # New rows get ids in snapshot order.
    connection.run(
        f"""
        INSERT INTO payments (external_id, amount, patient_external_id, patient_id,
                              version_sync_id, version_action)
        SELECT d.external_id, d.amount, d.patient_external_id, p.id, {_SYNC_ID}, 'inserted'
        FROM diff_payments d LEFT JOIN patients p ON p.external_id = d.patient_external_id
        WHERE d.action = 'i' ORDER BY d.idx"""
    )


def _record_changed_rows(connection: Connection, entity: Entity) -> None:
    """Name the rows the sync updated, deleted or restored in sync_row_changes, history kept or not
    (GET /syncs/{id}/changes walks them; the live tables do not index the version columns, so
    that an update changing no indexed column writes no index entry)."""
    connection.run(
        f"""
        INSERT INTO sync_row_changes (sync_id, action, row_id)
        SELECT {_SYNC_ID}, {_NEW_ACTION}, d.id FROM diff_{entity} d WHERE d.action IN ('u', 'd', 'r') ORDER BY 2, 3"""
    )


def _insert_new_rows(
    connection: Connection, table: str, columns: str, values: str, source: str, built: bool, idx: str = "idx"
) -> None:
    """INSERT INTO `table` (`columns`) SELECT `values` FROM `source`, with ids in snapshot order.

    Into a copy built beside (empty, with a fresh identity sequence) each row's id is its snapshot
    index + 1 (an applied first load holds indexes 0 to n-1), so no sort is needed, and the sequence
    then carries on after n. Elsewhere the sequence numbers the rows in the order an ORDER BY feeds them.
    """
    if not built:
        connection.run(f"INSERT INTO {table} ({columns}) SELECT {values} FROM {source} ORDER BY {idx}")
        return
    connection.run(
        f"INSERT INTO {table} (id, {columns}) OVERRIDING SYSTEM VALUE SELECT {idx} + 1, {values} FROM {source}"
    )
    if connection.row_count:
        connection.run(
            "SELECT setval(pg_get_serial_sequence(:table, 'id'), :rows)", table=table, rows=connection.row_count
        )


def _patients_with_totals_beside(connection: Connection) -> bool:
    """During a bulk first load of payments (their copy holds every payment), build `patients` beside
    too: a copy of every row, ids and identity sequence kept, each total moved by its new payments.
    Returns False, doing nothing, when `patients` cannot be replaced (see `_can_build_beside`)."""
    [[schema, sequence, columns]] = connection.run(
        """SELECT c.relnamespace::regnamespace::text, pg_get_serial_sequence(c.oid::regclass::text, 'id'),
                  array_agg(quote_ident(a.attname) ORDER BY a.attnum)
           FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
           WHERE c.oid = CAST('patients' AS regclass) GROUP BY c.oid"""
    )
    moved = {
        "payments_total": "p.payments_total + coalesce(m.amount, 0)",
        "payments_count": "p.payments_count + coalesce(m.count, 0)",
    }
    with _built_beside(connection, "patients", True) as built:
        if not built:
            return False
        connection.run(
            f"""
            INSERT INTO patients ({", ".join(columns)}) OVERRIDING SYSTEM VALUE
            SELECT {", ".join(moved.get(column, f"p.{column}") for column in columns)}
            FROM {schema}.patients p LEFT JOIN (
                SELECT patient_id, sum(amount) AS amount, count(*) AS count
                FROM payments WHERE patient_id IS NOT NULL GROUP BY patient_id
            ) m ON m.patient_id = p.id
            ORDER BY p.id"""
        )
        # The copy's identity sequence carries on where the live table's stopped.
        connection.run(
            f"""SELECT setval(pg_get_serial_sequence('patients', 'id'), last_value, is_called)
                FROM {sequence}"""
        )
    connection.run("ANALYZE patients")
    return True


def refresh_totals(connection: Connection) -> int:
    """Move payments_total / payments_count of the patients in total_moves; returns how many moved.

    The totals stay exact: every write to a live payment, or to a payment's patient, goes
    through a sync and records its move."""
    # Totals are derived data: writing them does not bump a patient's `updated`. In id order,
    # the rows (and their index entries) are visited in the order they lie: about 10 % faster.
    connection.run(
        """
        UPDATE patients p SET payments_total = p.payments_total + m.amount, payments_count = p.payments_count + m.count
        FROM (SELECT patient_id, sum(amount) AS amount, sum(count) AS count FROM total_moves
              GROUP BY patient_id ORDER BY patient_id) m
        WHERE p.id = m.patient_id AND (m.amount <> 0 OR m.count <> 0)"""
    )
    return connection.row_count


def refresh_statistics(connection: Connection, table: str, changed: int, columns: str = "") -> None:
    """ANALYZE `table` (only `columns`, when named: the ones the sync wrote) when `changed` rows are a
    large share of it (or it was never analyzed).

    Bulk loads otherwise leave the planner believing the table is empty (or
    all totals are 0) until autovacuum gets to it, and reads pick sorts over
    the index meanwhile. Statistics are transactional: they arrive with the sync.
    """
    if changed <= 0:
        return
    [[estimated_rows]] = connection.run(
        "SELECT reltuples FROM pg_class WHERE oid = CAST(:table AS regclass)", table=table
    )
    if estimated_rows < 0:  # never analyzed: every column
        connection.run(f"ANALYZE {table}")
    elif changed > ANALYZE_AFTER_CHANGED_SHARE * estimated_rows:
        connection.run(f"ANALYZE {table} ({columns})" if columns else f"ANALYZE {table}")


def refresh_history_statistics(connection: Connection, entity: Entity, changes: Changes, keep_history: bool) -> None:
    """ANALYZE sync_row_changes after every sync that wrote to it, and the entity's version table
    like the live tables (see `refresh_statistics`).

    A page of GET /syncs/{id}/changes walks the sync's rows in sync_row_changes and probes the
    version table by row. Statistics that do not know the newest sync make the planner take its
    rows for a handful: it then reads and sorts all of them for one page (50 to 75 ms at 10M
    payments instead of 2 to 4 ms, JIT compilation included). Sampling costs about 0.1 s at that size.
    """
    superseded = changes.updated + changes.deleted + changes.restored
    if not superseded:
        return
    connection.run("ANALYZE sync_row_changes")
    if keep_history:
        refresh_statistics(connection, versions_table(entity), superseded)


def count_orphans(connection: Connection) -> int:
    """Live payments whose patient is not (yet) known."""
    return connection.run("SELECT count(*) FROM payments WHERE patient_id IS NULL AND deleted IS NULL")[0][0]
